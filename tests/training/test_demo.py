"""The demo's training stage trains each family once and reuses finished runs."""

import pytest

from training import demo
from training.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"resolution": 16, "g_width": 8, "d_width": 8, "latent_dim": 16, "kimg": 0.064,
        "batch_size": 32, "eval_every": 0}  # fmt: skip


def test_train_demo_models_reuses_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_OPTIONS", {k: dict(TINY) for k in demo.DEMO_OPTIONS})
    runs = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False)
    assert set(runs) == {"dcgan", "cgan"}
    first = {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in runs.items()}
    again = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False)
    assert again == runs
    assert {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in again.items()} == first
    assert (runs["cgan"] / "samples").is_dir() and (runs["cgan"] / "progress.gif").is_file()
