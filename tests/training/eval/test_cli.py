"""``gan-eval`` end to end through subprocesses: stats, floor, score and the bad inputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import checkpoint_path, save_checkpoint
from training.config import ModelConfig, write_json_atomic
from training.eval.stats import load_ref
from training.models import build_models


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OFFLINE_URL = f"http://127.0.0.1:{_closed_port()}/pt_inception-2015-12-05-6726825d.pth"


def gan_eval(*args, home) -> subprocess.CompletedProcess:
    # Tests never contact the real weights URL: a local port where nothing listens.
    env = dict(
        os.environ,
        GANFORGE_HOME=str(home),
        TORCH_HOME=str(Path(home) / "torch"),
        GANFORGE_INCEPTION_URL=OFFLINE_URL,
    )
    return subprocess.run(
        [sys.executable, "-m", "training.eval.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def make_run(root: Path, resolution: int, kind: str = "dcgan") -> Path:
    torch.manual_seed(0)
    num_classes = 10 if kind == "cgan" else 0
    cfg = ModelConfig(
        kind=kind, resolution=resolution, g_width=16, d_width=16, num_classes=num_classes
    )
    G, D = build_models(cfg)
    run = root / f"{kind}-{resolution}"
    write_json_atomic_dir(
        run,
        {
            "model": cfg.to_dict(),
            "train": {},
            "dataset": {"dataset": "digits", "resolution": resolution},
        },
    )
    save_checkpoint(
        checkpoint_path(run, 7),
        {"G": G.state_dict(), "G_ema": G.state_dict(), "D": D.state_dict(), "step": 7},
    )
    return run


def write_json_atomic_dir(run: Path, cfg: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run / "config.json", cfg)


@pytest.fixture(scope="module")
def env(tmp_path_factory, digits_classifier, ganforge_home):
    root = tmp_path_factory.mktemp("cli")
    ref = root / "refs" / "digits16.npz"
    r = gan_eval(
        "stats",
        "--dataset",
        "digits",
        "--split",
        "heldout",
        "--resolution",
        16,
        "--out",
        ref,
        home=ganforge_home,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["n"] == 359 and info["split"] == "heldout" and info["resolution"] == 16
    assert info["extractor"]["id"] == "classifier:digits"
    return {
        "root": root,
        "ref": ref,
        "home": ganforge_home,
        "run16": make_run(root, 16),
        "cgan16": make_run(root, 16, "cgan"),
        "run32": make_run(root, 32),
    }


def test_stats_file_carries_provenance(env):
    ref = load_ref(env["ref"])
    assert ref.dataset == "digits" and ref.split == "heldout" and ref.resolution == 16
    assert ref.extractor["preprocessing"]["resize"] == "bilinear"
    assert len(ref.extractor["sha256"]) == 64 and ref.mu.shape == (ref.extractor["dim"],)


def test_floor_reports_real_vs_real_distance(env):
    r = gan_eval("floor", "--dataset", "digits", "--resolution", 16, "-n", 300, home=env["home"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["metric"] == "FD-classifier" and out["n"] == 300
    assert out["sample_split"] == "train" and out["ref_split"] == "heldout"
    assert 0 < out["fd"] < 5 and out["precision"] > 0.5


def test_score_prints_one_identical_json_object_twice(env):
    args = ("score", env["cgan16"], "--ref", env["ref"], "-n", 200, "--seed", 3)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: gan_eval(*args, home=env["home"]), range(2))
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    out = json.loads(a.stdout)
    assert out["n"] == 200 and out["seed"] == 3 and out["metric"] == "FD-classifier"
    assert "not comparable with Inception FID" in out["note"]
    for key in ("fd", "kid_mean", "kid_std", "precision", "recall", "cond_accuracy"):
        assert out[key] is not None, key
    assert out["intra_class_fd"]["per_class"] and out["diversity"]["per_class"]
    assert out["extractor"]["id"] == "classifier:digits" and out["reference"]["id"]
    assert out["run"]["step"] == 7 and out["run"]["kind"] == "cgan"
    assert out["is"]["metric"] == "IS-classifier" and out["is"]["splits"] == 10
    assert 1 <= out["is"]["mean"] <= 10
    assert len(out["per_class_recall"]) == 10
    assert out["min_class_recall"] == min(out["per_class_recall"])


def _check_bad(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert match in r.stderr, r.stderr


def test_bad_inputs_are_clear_errors(env, tmp_path):
    run, ref = env["run16"], env["ref"]
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(Path(ref).read_bytes()[:500])
    other = load_ref(ref)
    other.dataset = "mnist"
    other.save(tmp_path / "mnist.npz")
    changed = load_ref(ref)
    changed.extractor = dict(changed.extractor, sha256="0" * 64)
    changed.save(tmp_path / "changed.npz")
    cases = [
        (("score", run, "--ref", tmp_path / "missing.npz"), "do not exist"),
        (("score", env["run32"], "--ref", ref), "resolution 16, not 32"),
        (("score", run, "--ref", ref, "-n", 1), "at least 2"),
        (("stats", "--dataset", "digits", "-n", 5000, "--out", tmp_path / "x.npz"), "larger than"),
        (("score", run, "--ref", corrupt), "corrupt"),
        (("score", run, "--ref", tmp_path / "mnist.npz"), "dataset 'mnist'"),
        (("score", run, "--ref", tmp_path / "changed.npz"), "weights changed"),
        (
            (
                "stats",
                "--dataset",
                "digits",
                "--features",
                "inception",
                "--out",
                tmp_path / "i.npz",
            ),
            f"the download from {OFFLINE_URL} failed",
        ),
    ]
    # Each case is a fresh interpreter (mostly import time): run two at a time.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: gan_eval(*c[0], home=env["home"]), cases))
    for (_, match), r in zip(cases, results):
        _check_bad(r, match)
    assert not (tmp_path / "i.npz").exists()
    assert np.load(ref)["mu"].shape  # the good reference is untouched
