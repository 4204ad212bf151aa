"""Shared session fixtures: tiny trained runs, their exported bundles, gated bundles.

Exporting is slow (seconds per graph), so every test reuses these session fixtures:

- ``tiny_runs``: kind -> run dir (dcgan, cgan, stylegan; digits at 16x16, tiny widths, 4 steps)
- ``tiny_bundles``: kind -> bundle dir (ONNX + TorchScript), exported once per session
- ``digits_classifier``: a quickly trained digits classifier (extractor) in a session temp dir
- ``digits_ref``: reference statistics (.npz) of the digits held-out split at 16x16
- ``gated_bundle(kind, passing=True)``: a copy of the tiny bundle with a gate.json (N=500, loose
  threshold when passing, impossible threshold when failing)

The session also points ``BENTOML_HOME`` at a temp dir and sets ``BENTOML_DO_NOT_TRACK=1``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["BENTOML_DO_NOT_TRACK"] = "1"
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="ganforge-bentoml-"))

REPO = Path(__file__).resolve().parents[1]
KINDS = ("dcgan", "cgan", "stylegan")
TINY_RES = 16
TINY_ARGS = {
    "--dataset": "digits",
    "--resolution": str(TINY_RES),
    "--g-width": "8",
    "--d-width": "8",
    "--latent-dim": "16",
    "--w-dim": "16",
    "--batch-size": "32",
    "--eval-every": "0",
    "--sample-every": "1000",
    "--ckpt-every": "1000",
}


def one_torch_thread():
    """Small torch work runs several times faster on one thread on the 2 shared cores."""
    from training.threads import torch_threads

    return torch_threads(1)


def train_run(kind: str, out: Path, kimg: float = 0.128, **overrides: str) -> Path:
    """Train a run with ``gan-train`` in-process (digits, 16x16, tiny widths by default)."""
    from training.cli import main

    args = {**TINY_ARGS, "--model": kind, "--kimg": str(kimg), "--out": str(out)}
    args.update({f"--{k.replace('_', '-')}": str(v) for k, v in overrides.items()})
    with one_torch_thread():
        rc = main([x for kv in args.items() for x in kv])
    assert rc == 0, f"gan-train failed for {kind}"
    return out


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {k: train_run(k, root / k) for k in KINDS}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_runs, tmp_path_factory) -> dict[str, Path]:
    from export.exporter import export_run

    root = tmp_path_factory.mktemp("bundles")
    return {
        k: export_run(run, root / k, formats=("onnx", "torchscript"))
        for k, run in tiny_runs.items()
    }


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory) -> Path:
    """A digits classifier trained for 2 epochs (enough to rank trained vs untrained models)."""
    from training.eval.classifier import train_classifier

    path = tmp_path_factory.mktemp("classifier") / "digits.safetensors"
    with one_torch_thread():
        train_classifier("digits", out=path, epochs=2, log=None)
    return path


@pytest.fixture(scope="session")
def digits_extractor(digits_classifier):
    from training.eval.features import get_extractor

    return get_extractor("classifier", dataset="digits", classifier_path=digits_classifier)


@pytest.fixture(scope="session")
def digits_ref(digits_extractor, tmp_path_factory) -> Path:
    from training.eval.score import reference_stats

    path = tmp_path_factory.mktemp("refs") / f"digits-{TINY_RES}.npz"
    with one_torch_thread():
        reference_stats(digits_extractor, "digits", TINY_RES, "heldout").save(path)
    return path


@pytest.fixture(scope="session")
def gated_bundle(tiny_bundles, digits_ref, digits_extractor, tmp_path_factory):
    """``gated_bundle(kind, passing=True) -> Path``: a tiny bundle copy with a cheap gate.json."""
    from export.gate import GateRules, run_gate

    root = tmp_path_factory.mktemp("gated")
    cache: dict[tuple[str, bool], Path] = {}

    def make(kind: str, passing: bool = True) -> Path:
        key = (kind, passing)
        if key not in cache:
            dst = root / f"{kind}-{'pass' if passing else 'fail'}"
            shutil.copytree(tiny_bundles[kind], dst)
            with one_torch_thread():
                run_gate(
                    dst,
                    digits_ref,
                    # Only the distance decides here: tiny models are not meant to be good.
                    rules=GateRules.make(
                        max_fd=1e9 if passing else 1e-9,
                        min_precision=0,
                        min_recall=0,
                        min_cond_accuracy=0,
                        min_class_recall=0,
                    ),
                    n=500,
                    with_filters=False,
                    extractor=digits_extractor,
                    kid_subsets=10,
                )
            cache[key] = dst
        return cache[key]

    return make


def pytest_addoption(parser):
    parser.addoption(
        "--gpu-image",
        action="store_true",
        help="run the GPU image's tests (gpu_image marker; `make container-check` builds it)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu-image"):
        return
    skip = pytest.mark.skip(reason="the GPU image's test: run by `make container-check`")
    for item in items:
        if "gpu_image" in item.keywords:
            item.add_marker(skip)
