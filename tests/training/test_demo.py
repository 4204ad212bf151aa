"""The demo's training stage trains each family once and reuses finished runs."""

import json

import pytest

from training import demo
from training.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"resolution": 16, "g_width": 8, "d_width": 8, "latent_dim": 16, "kimg": 0.064,
        "batch_size": 32, "eval_every": 0}  # fmt: skip


def test_train_demo_models_reuses_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_OPTIONS", {k: dict(TINY) for k in demo.DEMO_OPTIONS})
    runs = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False, jobs=1)
    assert set(runs) == {"dcgan", "cgan"}
    first = {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in runs.items()}
    again = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False, jobs=1)
    assert again == runs
    assert {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in again.items()} == first
    assert (runs["cgan"] / "samples").is_dir() and (runs["cgan"] / "progress.gif").is_file()


def test_families_train_side_by_side_in_worker_processes(tmp_path):
    """jobs=2: each family trains in its own process, with the options it was given."""
    options = {k: {**TINY, "augment": "translation"} for k in ("dcgan", "cgan")}
    after = []  # the demo exports and gates each family there, while the other still trains

    def record(kind, run_dir):
        after.append((kind, demo._finished(run_dir)))

    runs = demo.train_demo_models(
        tmp_path, kinds=("dcgan", "cgan"), jobs=2, options=options, after=record
    )
    assert list(runs) == ["dcgan", "cgan"]
    assert sorted(after) == [("cgan", True), ("dcgan", True)]  # once each, once trained
    for kind, run_dir in runs.items():
        assert demo._finished(run_dir)
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model"]["kind"] == kind and config["train"]["augment"] == "translation"
