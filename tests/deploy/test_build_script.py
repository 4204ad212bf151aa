"""deploy/container/build.sh's refusals: one line naming what is wrong, exit status 1, before it
builds or writes anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "container" / "build.sh"


def run(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "ENGINE"}
    full.update({"PY": sys.executable, **env})
    if path is not None:
        full["PATH"] = path
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("container: "), proc.stderr
    return lines[0]


def test_an_unknown_flavour_is_named():
    line = one_line(run("tpu"))
    assert "FLAVOR='tpu'" in line and "cpu" in line and "gpu" in line


def test_an_unknown_engine_is_named():
    assert "ENGINE='lxc'" in one_line(run("cpu", ENGINE="lxc"))


def test_no_engine_and_no_root_says_what_to_install(tmp_path):
    """A PATH with no docker, podman or apt-get, and `id -u` answering a normal user."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mkdir"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    line = one_line(run("cpu", path=str(bin_dir)))
    assert "no container engine" in line and "podman" in line and "Docker" in line


def test_no_python_with_bentoml_is_named(tmp_path):
    line = one_line(run("cpu", PY=str(tmp_path / "nope")))
    assert "make venv" in line and str(tmp_path / "nope") in line
