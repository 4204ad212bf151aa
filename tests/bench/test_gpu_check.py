"""bench/gpu_check.sh on a machine without CUDA, and the wheel list it installs from.

The script's GPU path runs only where a CUDA device is; what is promised everywhere is that
without one it stops at once with exit status 2 and one clear line, before it writes anything.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
WHEELS = REPO / "bench" / "gpu_wheels.txt"


def run(env_extra: dict[str, str], *args: str, python: str = sys.executable):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHON": python, **env_extra}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_it_exits_2_with_one_line(tmp_path):
    proc = run({"TMPDIR": str(tmp_path), "OUT": str(tmp_path / "out")})
    line = one_line_exit_2(proc)
    assert "no CUDA device" in line and f"torch {torch.__version__}" in line
    assert list(tmp_path.iterdir()) == []  # stopped before making its work or results folder


def test_an_interpreter_without_torch_is_named(tmp_path):
    no_site = tmp_path / "python-without-site"
    no_site.write_text(f'#!/bin/sh\nexec {sys.executable} -S -I "$@"\n')  # no site-packages
    no_site.chmod(0o755)
    line = one_line_exit_2(run({}, python=str(no_site)))
    assert "cannot import torch" in line and "set PYTHON" in line
    line = one_line_exit_2(run({}, python=str(tmp_path / "missing")))
    assert "no Python interpreter" in line


@pytest.mark.parametrize(
    ("env", "args", "match"),
    [
        ({"GPU_CHECK_KIMG": "abc"}, (), "GPU_CHECK_KIMG='abc' is not a positive number"),
        ({"GPU_CHECK_KIMG": "0"}, (), "GPU_CHECK_KIMG='0' is not a positive number"),
        ({"GPU_CHECK_SECONDS": "0"}, (), "GPU_CHECK_SECONDS='0'"),
        ({"GPU_CHECK_WORKERS": "two"}, (), "GPU_CHECK_WORKERS='two'"),
        ({"GPU_CHECK_GATE_N": "10"}, (), "GPU_CHECK_GATE_N='10' is not an integer from 100"),
        ({"GPU_CHECK_DEVICE": "tpu"}, (), "GPU_CHECK_DEVICE='tpu': use cuda"),
        ({"GPU_CHECK_BUDGET": "30"}, (), "GPU_CHECK_BUDGET='30' is not a whole number of seconds"),
        ({}, ("--fast",), "unknown argument '--fast'"),
    ],
)
def test_bad_settings_are_named_before_anything_runs(env, args, match):
    assert match in one_line_exit_2(run(env, *args))


def test_help_says_how_to_prepare_and_run_it():
    proc = run({}, "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    text = proc.stdout
    assert "bench/gpu_wheels.sh" in text and "--python-version 3.12" in text
    assert 'carry=[".whl"]' in text and "GAN_BACKEND=torchscript GAN_DEVICE=cuda" in text


def test_wheel_list_pins_one_version_each_and_the_bentoml_we_test_with():
    import bentoml

    pins = [ln for ln in WHEELS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = [re.fullmatch(r"([a-z0-9-]+)==([\w.]+)", p).group(1) for p in pins]
    assert len(names) == len(set(names))  # two versions of one wheel stop the install
    assert f"bentoml=={bentoml.__version__}" in pins
    # What the lent machine's image already has (device README, KINDS.md) is not carried.
    assert not {"numpy", "torch", "onnxruntime", "aiohttp", "uvloop"} & set(names)


# The lent machine's image holds these of what serving/ and gancore/ import (device KINDS.md);
# torch only for GAN_BACKEND=torchscript.
IMAGE_HAS = {"numpy", "onnxruntime", "pillow", "prometheus-client", "torch"}


def test_wheel_list_and_image_cover_what_serving_imports():
    import ast
    from importlib import metadata

    mods = set()
    for pkg in ("serving", "gancore"):
        for file in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
    mods -= set(sys.stdlib_module_names) | {"serving", "gancore"}
    dists = metadata.packages_distributions()
    norm = {m: re.sub(r"[-_.]+", "-", dists[m][0]).lower() for m in mods if m in dists}
    assert set(norm) == mods, f"imported but not installed here: {sorted(mods - set(norm))}"
    pins = [ln for ln in WHEELS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    carried = {p.split("==")[0] for p in pins}
    missing = {m: d for m, d in norm.items() if d not in carried | IMAGE_HAS}
    assert not missing, f"serving/gancore import these, neither carried nor on the image: {missing}"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        proc = subprocess.run(
            ["shellcheck", str(REPO / "bench" / script)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_dry_run_on_cpu_runs_every_step(tmp_path):
    """GPU_CHECK_DEVICE=cpu runs the script's own steps (train, export, gate, engine, a real
    `bentoml serve`, load at 1 and 64 clients) where there is no GPU, so a change in the CLIs,
    the gate or bench/serve_load.py that would break it on the GPU machine breaks here first."""
    import json

    env = {
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_KIMG": "0.064",  # one step of 64: bf16 on the CPU is slow
        "GPU_CHECK_GATE_N": "100",
        "GPU_CHECK_SECONDS": "1",
        "GPU_CHECK_WORKERS": "1",
        "GPU_CHECK_DIR": str(tmp_path / "work"),
        "OUT": str(tmp_path / "out"),
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DRY RUN on the CPU" in proc.stdout and "Traceback" not in proc.stdout
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["dry_run_on_cpu"] and res["serving_backend"] == "torchscript"
    assert res["gate"]["verdict"] in ("passed", "failed")
    assert "torchscript:cpu" in res["gate"]["generated_by"]  # gated on the served backend
    engine = res["engine"]
    assert engine["provider"] == "torchscript:cpu"
    assert engine["fused_img_s_batch64"] > 0 and engine["separate_img_s_batch64"] > 0
    for parity in (engine["parity_tf32_on"], engine["parity_tf32_off"]):
        assert parity["image_max_abs_diff"] <= 1e-4 and parity["logit_max_abs_diff"] <= 1e-4
    serve = res["serve"]
    assert serve["providers"] == ["torchscript:cpu"]
    levels = {r["clients"]: r for r in serve["levels"]}
    assert set(levels) == {1, 64}
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in levels.values())
    assert (tmp_path / "out" / "gpu_check.log").read_text().count("== ") >= 6
