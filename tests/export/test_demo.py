"""`make demo` reuses a gated bundle only while it is current for its run (export.demo)."""

from __future__ import annotations

import json
import shutil

import torch

from export.demo import _current_verdict
from export.gate import DEFAULT_N, GateRules
from training.checkpoint import latest_checkpoint


def _gate_is_current(bundle, run_dir) -> bool:
    """The demo reuses ``bundle`` as deployable for the run's latest checkpoint."""
    return _current_verdict(bundle, run_dir) == "passed"


def _as_if_default_rules(bundle, dst):
    """A copy of ``bundle`` whose passing gate.json says it was made with the default rules."""
    shutil.copytree(bundle, dst)
    gate = json.loads((dst / "gate.json").read_text())
    gate.update(thresholds=GateRules().to_dict(), n=DEFAULT_N)
    (dst / "gate.json").write_text(json.dumps(gate))
    return dst


def test_gate_is_current_only_for_a_passing_gate_of_the_latest_checkpoint(
    gated_bundle, tiny_runs, tmp_path
):
    run = tiny_runs["dcgan"]
    current = _as_if_default_rules(gated_bundle("dcgan", passing=True), tmp_path / "b")
    assert _gate_is_current(current, run)
    # Passed, but under looser rules than the demo's defaults: gated again.
    assert not _gate_is_current(gated_bundle("dcgan", passing=True), run)
    # A failed gate is never reused: the demo exports and gates again.
    assert not _gate_is_current(gated_bundle("dcgan", passing=False), run)

    # A newer checkpoint in the run (training went on) makes the bundle stale.
    newer_run = tmp_path / "run"
    shutil.copytree(run, newer_run)
    last = latest_checkpoint(newer_run)
    step = int(last.stem.split("-")[1])
    state = torch.load(last, weights_only=True)
    state["step"] = step + 1
    torch.save(state, last.with_name(f"ckpt-{step + 1:08d}.pt"))
    assert not _gate_is_current(current, newer_run)
    # A run retrained in the same folder ends on a checkpoint of the same name: compared by
    # content, the bundle is stale (an upgrade that changes the demo recipe retrains there).
    retrained = tmp_path / "retrained"
    shutil.copytree(run, retrained)
    last = latest_checkpoint(retrained)
    state = torch.load(last, weights_only=True)
    state["step"] = step  # same name, same step, other bytes
    state["retrained"] = torch.ones(1)
    torch.save(state, last)
    assert not _gate_is_current(current, retrained)


def test_a_refused_gate_of_the_same_checkpoint_is_kept_as_refused(
    gated_bundle, tiny_runs, tmp_path
):
    """A second ``make demo`` does not export and gate a refused family again when nothing
    changed (same checkpoint, same default rules): the verdict would be the same."""
    run = tiny_runs["dcgan"]
    refused = _as_if_default_rules(gated_bundle("dcgan", passing=False), tmp_path / "f")
    assert _current_verdict(refused, run) == "failed" and not _gate_is_current(refused, run)
    passed = _as_if_default_rules(gated_bundle("dcgan", passing=True), tmp_path / "p")
    assert _current_verdict(passed, run) == "passed"
    # Refused under other rules (the fixture's impossible threshold, not the defaults): gate again.
    assert _current_verdict(gated_bundle("dcgan", passing=False), run) is None
    # A gate.json that belongs to another manifest says nothing about this bundle.
    manifest = refused / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"kind"', '"kind" ', 1))
    assert _current_verdict(refused, run) is None


def test_gate_is_current_is_false_without_a_gate(tiny_bundles, tiny_runs):
    assert not _gate_is_current(tiny_bundles["dcgan"], tiny_runs["dcgan"])
