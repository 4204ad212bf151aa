import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Tiny settings shared by the fast tests: a few steps of small models at 16x16.
TINY = {
    "dataset": "digits",
    "resolution": 16,
    "g_width": 8,
    "d_width": 8,
    "latent_dim": 16,
    "batch_size": 32,
    "sample_every": 4,
    "ckpt_every": 4,
    "log_every": 2,
}


@pytest.fixture
def tiny():
    return dict(TINY)


def run_cli(*args: str, timeout: int = 120):
    """Run ``python -m training.cli`` in a subprocess (as a user would)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
