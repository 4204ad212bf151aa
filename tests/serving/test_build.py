"""`bentoml build` from the repo: a torch-free bento for ONNX bundles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import REPO

pytestmark = pytest.mark.slow


def test_bentoml_build_makes_a_torch_free_bento(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    env.update(BENTOML_HOME=str(tmp_path / "home"), BENTOML_DO_NOT_TRACK="1")
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (bento,) = list((tmp_path / "home" / "bentos" / "ganforge-gan").glob("*/bento.yaml"))
    root = bento.parent
    requirements = (root / "env" / "python" / "requirements.txt").read_text().lower()
    names = {
        line.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    }
    # the CPU bento; `make container FLAVOR=gpu` swaps in onnxruntime-gpu (tests/deploy)
    assert {"bentoml", "onnxruntime", "numpy", "pillow", "uvloop", "httptools"} <= names
    assert not names & {"torch", "torchvision", "onnxruntime-gpu", "onnx", "onnxscript"}, names
    dockerfile = (root / "env" / "docker" / "Dockerfile").read_text()
    assert "torch" not in dockerfile.lower()
    assert "FROM localhost/ganforge-base:" in dockerfile  # deploy/container/Containerfile.base
    assert "build-essential" not in dockerfile and "install.sh" in dockerfile
    src = root / "src"
    assert (src / "serving" / "service.py").is_file() and (src / "gancore" / "bundle.py").is_file()
    page = {p.name for p in (src / "serving" / "static").iterdir()}  # the playground, offline
    assert page == {"playground.html", "playground.js", "playground.css"}, page
    assert not (src / "training").exists() and not (src / "export").exists()
    packages = {p.name for p in src.iterdir() if p.is_dir()}
    assert packages == {"serving", "gancore"}, packages  # two whole packages, no file list
    assert "entry_service: gan_service" in bento.read_text()
    assert not list(Path(src).rglob("*.onnx"))
