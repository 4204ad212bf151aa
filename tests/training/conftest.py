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


def run_cli(*args: str, timeout: int = 300, env: dict | None = None):
    """Run ``python -m training.cli`` in a subprocess (as a user would)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and on a shared 2-core machine two threads per
    process oversubscribe the cores (measured: 30x slower under load). Opt-in per module
    (``pytestmark``) and restored afterwards, so other tests keep torch's default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
