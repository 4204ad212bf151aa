"""Make ONNX Runtime's CUDA provider find the CUDA and cuDNN libraries that pip installed.

``onnxruntime-gpu[cuda,cudnn]`` brings the NVIDIA libraries as wheels (``site-packages/nvidia/…``),
but the dynamic loader does not look there, so the CUDA provider fails to load
(``libcublasLt.so.13: cannot open shared object file``) and ONNX Runtime quietly runs on the CPU.
:func:`preload` loads them into the process before the first CUDA session is made; then the only
library that may still be missing is the NVIDIA driver's ``libcuda.so.1``, which a GPU host (or a
container runtime's GPU option) provides.

``python -m gancore.cuda [MODEL.onnx]`` prints what loads and what is missing, and exits non-zero
when anything but the driver is missing. Torch-free.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DRIVER = "libcuda.so.1"  # the NVIDIA driver: present only where a GPU is
CUDA_PROVIDER = "CUDAExecutionProvider"
_MISSING = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")


def _ort():
    import onnxruntime

    return onnxruntime


def has_cuda_provider() -> bool:
    """This onnxruntime build has a CUDA provider (onnxruntime-gpu), whether or not it loads."""
    return CUDA_PROVIDER in _ort().get_available_providers()


def provider_library() -> Path | None:
    """ONNX Runtime's CUDA provider library, where this onnxruntime has one."""
    lib = Path(_ort().__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    return lib if lib.is_file() else None


def nvidia_lib_dirs() -> list[Path]:
    """The ``lib`` folders of the NVIDIA wheels (``nvidia/<package>/lib``) on ``sys.path``."""
    dirs: list[Path] = []
    for entry in sys.path:
        root = Path(entry or ".") / "nvidia"
        if root.is_dir():
            dirs += sorted(p for p in root.glob("**/lib") if any(p.glob("*.so*")))
    return list(dict.fromkeys(dirs))


def _load_folders(dirs: list[Path]) -> None:
    """Load every shared object in ``dirs`` globally, retrying those whose dependencies came later
    in the listing, until a pass loads nothing new (onnxruntime < 1.21 has no preload_dlls)."""
    pending = [f for d in dirs for f in sorted(d.glob("*.so*")) if f.is_file()]
    while pending:
        failed = []
        for f in pending:
            try:
                ctypes.CDLL(str(f), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(f)
        if len(failed) == len(pending):
            return
        pending = failed


@functools.cache
def preload() -> str:
    """Load the pip-installed CUDA/cuDNN libraries into this process (once); return how.

    A no-op where onnxruntime has no CUDA provider. Call it before creating a CUDA session.
    """
    if not has_cuda_provider():
        return "none (this onnxruntime has no CUDA provider)"
    ort = _ort()
    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21
        ort.preload_dlls(cuda=True, cudnn=True)
        return "onnxruntime.preload_dlls()"
    _load_folders(nvidia_lib_dirs())
    return "ctypes, from the NVIDIA wheels' lib folders"


def load_error() -> str | None:
    """Why the CUDA provider library does not load in this process (after :func:`preload`), or
    None when it loads. ONNX Runtime dlopens the same file, so this is the reason it would give."""
    lib = provider_library()
    if lib is None:
        return (
            None if not has_cuda_provider() else f"{CUDA_PROVIDER} listed but no provider library"
        )
    preload()
    try:
        ctypes.CDLL(str(lib))
    except OSError as e:
        return str(e)
    return None


def missing_library(error: str | None) -> str | None:
    """The shared object a loader error names as missing (``libcuda.so.1``, …), if any."""
    m = _MISSING.search(error or "")
    return m.group(1) if m else None


def unresolved_links() -> list[str]:
    """Every library the provider links, directly or not, that the loader cannot find when it
    also searches the NVIDIA wheels' folders (``ldd``, where installed); [] if all resolve."""
    lib = provider_library()
    if lib is None or shutil.which("ldd") is None:
        return []
    path = os.pathsep.join([str(d) for d in nvidia_lib_dirs()] + [str(lib.parent)])
    env = {**os.environ, "LD_LIBRARY_PATH": path}
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, env=env).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def refusal(error: str | None) -> str:
    """A user's sentence for a CUDA provider that does not load (for GAN_DEVICE=cuda)."""
    lib = missing_library(error)
    if lib == DRIVER:
        return (
            f"ONNX Runtime's CUDA provider needs {DRIVER}, the NVIDIA driver, and it is missing: "
            "no GPU is visible here (in a container: docker run --gpus all, or podman run "
            "--device nvidia.com/gpu=all with the NVIDIA container toolkit)"
        )
    if lib:
        return (
            f"ONNX Runtime's CUDA provider cannot load: {lib} is missing (a CUDA or cuDNN "
            "library: install onnxruntime-gpu[cuda,cudnn] into this environment)"
        )
    return f"ONNX Runtime's CUDA provider cannot load: {error}"


def report(model: str | None = None) -> dict:
    """What loads: the preload used, the provider library's loader error, ``ldd``'s unresolved
    links and, for ``model``, the providers a CUDA session really got."""
    ort = _ort()
    out = {
        "onnxruntime": ort.__version__,
        "cuda_provider_built": has_cuda_provider(),
        "preload": preload(),
        "nvidia_lib_dirs": [str(d) for d in nvidia_lib_dirs()],
    }
    error = load_error()
    out["provider_load_error"] = error
    out["missing"] = missing_library(error)
    out["unresolved_links"] = unresolved_links()
    if model is not None:
        so = ort.SessionOptions()
        so.log_severity_level = 4  # the fallback is reported below, not logged
        session = ort.InferenceSession(model, so, providers=[CUDA_PROVIDER, "CPUExecutionProvider"])
        out["session_providers"] = session.get_providers()
    # Without a GPU the driver is the one library allowed to be missing.
    out["ok"] = (
        out["cuda_provider_built"]
        and set(out["unresolved_links"]) <= {DRIVER}
        and (error is None or out["missing"] == DRIVER)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m gancore.cuda [MODEL.onnx]", file=sys.stderr)
        return 2
    r = report(args[0] if args else None)
    print(json.dumps(r, indent=2))
    if not r["cuda_provider_built"]:
        print(
            "cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)", file=sys.stderr
        )
    elif r["ok"]:
        print(
            "cuda: every CUDA/cuDNN library resolves"
            + ("" if r["missing"] is None else f"; only {DRIVER} (the GPU driver) is missing"),
            file=sys.stderr,
        )
    else:
        bad = sorted(set(r["unresolved_links"]) - {DRIVER}) or [r["missing"] or "?"]
        print(f"cuda: missing {', '.join(bad)}", file=sys.stderr)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
