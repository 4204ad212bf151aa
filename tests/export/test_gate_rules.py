"""The gate's rules: each one alone decides, each threshold is range-checked, and a generator that
ignores z (a few fixed images per class) is refused by the recall rules, through the real gate."""

import json
import shutil

import numpy as np
import pytest
import torch

from export.cli import main as export_main
from export.gate import GateRules, evaluate_rules, run_gate
from gancore import bundle as bundle_mod
from gancore.errors import ExportError
from tests.conftest import one_torch_thread

GOOD = {
    "fd": 1.0,
    "precision": 0.8,
    "recall": 0.8,
    "cond_accuracy": 0.99,
    "min_class_recall": 0.7,
}
BAD = {"fd": 100.0, "precision": 0.3, "recall": 0.1, "cond_accuracy": 0.5, "min_class_recall": 0.0}
FLOOR = 0.6


def _failed(res, conditional=True, rules=None):
    checked = evaluate_rules(rules or GateRules(), res, conditional, FLOOR)
    return [r["rule"] for r in checked if not r["passed"]]


def test_good_figures_pass_every_rule():
    assert _failed(GOOD) == []
    checked = evaluate_rules(GateRules(), GOOD, True, FLOOR)
    assert checked[0]["threshold"] == pytest.approx(6.0 * FLOOR)
    assert "6.0 x real-vs-real floor 0.6" in checked[0]["text"]


@pytest.mark.parametrize("rule", sorted(GOOD))
def test_each_rule_alone_fails_the_gate(rule):
    assert _failed(GOOD | {rule: BAD[rule]}) == [rule]


def test_conditional_rules_apply_only_to_conditional_models():
    res = GOOD | {"cond_accuracy": 0.1, "min_class_recall": 0.0}
    assert _failed(res, conditional=False) == []
    assert _failed(res, conditional=True) == ["cond_accuracy", "min_class_recall"]


def test_rule_boundaries_and_unmeasured_figures():
    rules = GateRules()
    at = {"fd": 6.0 * FLOOR, "precision": 0.6, "recall": 0.6}
    assert _failed(at | {"cond_accuracy": 0.9, "min_class_recall": 0.5}) == []
    failed = evaluate_rules(rules, GOOD | {"precision": None}, False, FLOOR)
    assert [r["rule"] for r in failed if not r["passed"]] == ["precision"]
    assert "not measured" in failed[1]["text"]
    absolute = GateRules.make(max_fd=2.0)
    assert absolute.max_fd_ratio is None
    assert _failed(GOOD | {"fd": 2.5}, rules=absolute) == ["fd"]


def test_default_rules_refuse_todays_demo_models_and_accept_the_goals():
    """Figures from the README / issue 9 (N = 5,000, k = 3), FD as a multiple of the floor."""
    today = {
        "dcgan": {"fd": 10 * FLOOR, "precision": 0.45, "recall": 0.85},
        "cgan": {"fd": 15 * FLOOR, "precision": 0.77, "recall": 0.16, "cond_accuracy": 0.99},
        "stylegan": {"fd": 37 * FLOOR, "precision": 0.50, "recall": 0.38},
    }
    assert _failed(today["cgan"] | {"min_class_recall": 0.05}) == [
        "fd",
        "recall",
        "min_class_recall",
    ]
    assert _failed(today["stylegan"], conditional=False) == ["fd", "precision", "recall"]
    assert _failed(today["dcgan"], conditional=False) == ["fd", "precision"]
    goals = {"fd": 4 * FLOOR, "precision": 0.7, "recall": 0.7}
    assert _failed(goals | {"cond_accuracy": 0.95, "min_class_recall": 0.6}) == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_fd_ratio": -1.0}, "--max-fd-ratio must be a positive number, got -1.0"),
        ({"max_fd_ratio": float("nan")}, "--max-fd-ratio must be a positive number"),
        ({"max_fd": 0.0}, "--max-fd must be a positive number, got 0.0"),
        ({"max_fd": 3.0, "max_fd_ratio": 4.0}, "at most one distance threshold"),
        ({"min_recall": 1.5}, r"--min-recall must be a number in \[0, 1\], got 1.5"),
        ({"min_precision": -0.1}, r"--min-precision must be a number in \[0, 1\]"),
        ({"min_cond_accuracy": 2.0}, "--min-cond-accuracy"),
        ({"min_class_recall": float("inf")}, "--min-class-recall"),
    ],
)
def test_thresholds_outside_their_range_are_refused(kwargs, match):
    with pytest.raises(ExportError, match=match):
        GateRules.make(**kwargs)


class Collapsed(torch.nn.Module):
    """cGAN generator(z, label) that ignores z: one fixed real digit per class."""

    def __init__(self, bank: torch.Tensor):
        super().__init__()
        self.register_buffer("bank", bank)

    def forward(self, z, label):
        return self.bank[label] + 0.0 * z[:, :1, None, None]


def collapsed_bundle(src, dst, resolution: int):
    """A copy of the tiny cGAN bundle whose ONNX generator is :class:`Collapsed`."""
    from export.exporter import GraphSpec, export_onnx
    from training.datasets import load_dataset

    shutil.copytree(src, dst)
    x, y = load_dataset("digits", resolution, "heldout").as_tensors()
    bank = torch.stack([x[int(np.flatnonzero(y.numpy() == c)[0])] for c in range(10)])
    m = json.loads((dst / "manifest.json").read_text())
    nz = m["latent_dim"]
    spec = GraphSpec(
        "generator",
        Collapsed(bank).eval(),
        [("z", ["batch", nz], "float32"), ("label", ["batch"], "int64")],
        [("image", ["batch", 1, resolution, resolution], "float32")],
    )
    fname = m["graphs"]["generator"]["files"]["onnx"]
    export_onnx(spec, (torch.randn(4, nz), torch.arange(4)), dst / fname)
    m["files"][fname] = {
        "sha256": bundle_mod.sha256_file(dst / fname),
        "bytes": (dst / fname).stat().st_size,
    }
    # The fused render graph still holds the trained generator: drop it, so that every graph of
    # this bundle (what the gate scores and what a server would run) is the collapsed one.
    for f in m["graphs"].pop("render", {}).get("files", {}).values():
        m["files"].pop(f, None)
        (dst / f).unlink(missing_ok=True)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


@pytest.fixture(scope="module")
def collapsed(tiny_bundles, tmp_path_factory):
    from tests.conftest import TINY_RES

    return collapsed_bundle(
        tiny_bundles["cgan"], tmp_path_factory.mktemp("collapsed") / "cgan", TINY_RES
    )


def test_collapsed_generator_is_refused_by_the_recall_rules(
    collapsed, digits_ref, digits_extractor
):
    with one_torch_thread():
        gate = run_gate(
            collapsed, digits_ref, n=500, with_filters=False, extractor=digits_extractor
        )
    print("\ncollapsed cGAN:", "; ".join(r["text"] for r in gate["rules"]))
    assert gate["verdict"] == "failed" and not gate["deployable"]
    assert {"recall", "min_class_recall"} <= set(gate["failed_rules"])
    # It copies real digits of the right class: precision and accuracy alone would pass it.
    assert gate["precision"] > 0.9 and gate["cond_accuracy"] > 0.9
    assert "precision" not in gate["failed_rules"]
    assert "cond_accuracy" not in gate["failed_rules"]
    assert max(gate["per_class_recall"]) < 0.2
    on_disk = json.loads((collapsed / "gate.json").read_text())
    assert on_disk["failed_rules"] == gate["failed_rules"]
    report = (collapsed / "gate.md").read_text()
    assert "**Verdict: FAILED** — failed: " in report and "min_class_recall" in report
    # The distance-only shorthand keeps the other default rules.
    with one_torch_thread():
        short = run_gate(
            collapsed, digits_ref, max_fd=1e9, n=300, with_filters=False, extractor=digits_extractor
        )
    assert short["thresholds"] == GateRules.make(max_fd=1e9).to_dict()
    assert "fd" not in short["failed_rules"] and "recall" in short["failed_rules"]


def test_cli_names_each_failing_rule_and_bad_thresholds_write_nothing(
    collapsed, tiny_bundles, digits_ref, digits_classifier, tmp_path, capsys
):
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_bundles["cgan"], fresh)
    (fresh / "gate.json").unlink(missing_ok=True)
    before = sorted(p.name for p in fresh.iterdir())
    for flags, match in (
        (["--min-recall", "1.5"], "--min-recall must be a number in [0, 1], got 1.5"),
        (["--max-fd-ratio", "-2"], "--max-fd-ratio must be a positive number, got -2.0"),
        (["--max-fd", "3", "--max-fd-ratio", "4"], "at most one distance threshold"),
        (["--min-class-recall", "-0.5"], "--min-class-recall must be a number in [0, 1]"),
    ):
        rc = export_main(["gate", str(fresh), "--ref", str(digits_ref), *flags, "-q"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and match in err, err
        assert "Traceback" not in err
    assert sorted(p.name for p in fresh.iterdir()) == before  # nothing written

    argv = ["gate", str(collapsed), "--ref", str(digits_ref), "-n", "300", "--no-filters"]
    with one_torch_thread():
        rc = export_main([*argv, "--classifier", str(digits_classifier), "--kid-subsets", "5"])
    out = capsys.readouterr()
    assert rc == 1
    assert "FAIL  recall" in out.out and "FAIL  min_class_recall" in out.out
    assert "pass  precision" in out.out and "IS-classifier" in out.out
    assert "the gate failed (" in out.err and "recall" in out.err and "not deployable" in out.err
    assert "gate: generate + score" in out.err  # the tqdm bar
    # The reason a server gives for refusing it names exactly the failing rules, with figures.
    from gancore.bundle import MANIFEST, read_gate, sha256_file

    gate, deployable, reason = read_gate(collapsed, sha256_file(collapsed / MANIFEST))
    assert not deployable and "recall" in gate["failed_rules"], reason
    assert all(f"{rule} " in reason for rule in gate["failed_rules"]), reason
    assert "precision" not in reason and "precision" not in gate["failed_rules"], reason
