"""The GPU image (`make container FLAVOR=gpu`): ONNX Runtime's CUDA provider and every library it
links resolve inside it, so that on this GPU-less machine only the NVIDIA driver (libcuda.so.1,
which a GPU host mounts into the container) is missing. Run by `make container-check`."""

from __future__ import annotations

import json

import pytest

from tests.deploy.test_container import BUILD, Container, engine

pytestmark = [pytest.mark.slow, pytest.mark.gpu_image]
IMAGE = "ganforge-gan:gpu"
SRC = "/home/bentoml/bento/src"  # the bento's code inside the image
PROVIDER = (
    "/app/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so"
)


@pytest.fixture(scope="module")
def image() -> str:
    if (
        not (BUILD / "engine").is_file()
        or engine("image", "inspect", IMAGE, check=False).returncode
    ):
        pytest.fail(
            f"{IMAGE} is not built: run `make container FLAVOR=gpu` (or make container-check)"
        )
    return IMAGE


def in_image(image: str, *cmd: str, mounts: dict | None = None):
    args = ["run", "--rm", "--network", "none", "-e", f"PYTHONPATH={SRC}"]
    for src, dst in (mounts or {}).items():
        args += ["-v", f"{src}:{dst}:ro"]
    return engine(*args, image, *cmd, check=False)


def test_without_the_preload_a_cuda_library_is_missing(image):
    """The fault this image fixes: the wheels' libraries are not on the loader's path."""
    p = in_image(image, "python", "-c", f"import ctypes; ctypes.CDLL({PROVIDER!r})")
    assert p.returncode != 0 and "cannot open shared object file" in p.stderr, p.stderr
    assert "libcuda.so.1" not in p.stderr.splitlines()[-1], (
        p.stderr
    )  # a CUDA library, not the driver


def test_after_the_preload_only_the_driver_is_missing(image, gated_bundle):
    bundle = gated_bundle("dcgan")
    p = in_image(image, "python", "-m", "gancore.cuda", "/bundle/generator.onnx",
                 mounts={bundle: "/bundle"})  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["cuda_provider_built"] and r["preload"] == "onnxruntime.preload_dlls()"
    assert set(r["unresolved_links"]) <= {"libcuda.so.1"}, r  # every CUDA/cuDNN link resolves
    assert r["missing"] == "libcuda.so.1", r  # the provider fails for want of the driver alone
    assert r["session_providers"] == ["CPUExecutionProvider"]  # no GPU here


def test_gan_device_cuda_refuses_to_start_naming_the_driver(image, gated_bundle):
    c = Container(image, {"dcgan": gated_bundle("dcgan")},
                  {"GAN_BUNDLES": "/bundles/dcgan", "GAN_DEVICE": "cuda"})  # fmt: skip
    try:
        code = c.wait_exit(timeout=120)
        logs = c.logs()
    finally:
        c.remove()
    assert code != 0, logs
    assert "libcuda.so.1" in logs and "no GPU is visible" in logs, logs
    assert "libcublas" not in logs, logs
