"""The FID gate measures the exported ONNX generator: a trained digits model passes, an untrained
one with the same architecture fails at the same threshold."""

import json

import pytest

from export import bundle as bundle_mod
from export.cli import main as export_main
from export.errors import BundleError
from export.exporter import export_run
from export.gate import run_gate
from tests.conftest import one_torch_thread, train_run

# Same architecture for both; "untrained" = one step. FD-classifier measured at N=500 with the
# 2-epoch test classifier: trained (20 kimg) ~45, untrained ~185, real-vs-real floor ~1.2.
ARCH = {"g_width": 16, "d_width": 16, "latent_dim": 32, "batch_size": 64}
THRESHOLD = 100.0
N = 500


@pytest.fixture(scope="module")
def dcgan_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    trained = train_run("dcgan", root / "run-trained", kimg=20, **ARCH)
    untrained = train_run("dcgan", root / "run-untrained", kimg=0.064, **ARCH)
    return {
        name: export_run(run, root / f"bundle-{name}", formats="onnx", calibration_n=1000)
        for name, run in (("trained", trained), ("untrained", untrained))
    }


@pytest.mark.slow
def test_gate_passes_trained_and_fails_untrained(
    dcgan_pair, digits_ref, digits_extractor, digits_classifier, capsys
):
    with one_torch_thread():
        gate = run_gate(
            dcgan_pair["trained"],
            digits_ref,
            max_fd=THRESHOLD,
            n=N,
            extractor=digits_extractor,
            kid_subsets=10,
        )
    assert gate["verdict"] == "passed" and gate["distance"] <= THRESHOLD
    on_disk = json.loads((dcgan_pair["trained"] / "gate.json").read_text())
    assert on_disk == gate
    for key in ("kid_mean", "precision", "recall", "extractor_sha256", "reference_sha256"):
        assert gate[key] is not None
    assert gate["n"] == N and gate["seeds"] == f"0-{N - 1}" and gate["threshold"] == THRESHOLD
    # Each quality filter is measured, not assumed.
    assert set(gate["filters"]) == {"top_k", "drs"}
    assert 0 < gate["filters"]["drs"]["acceptance_rate"] < 1
    assert (dcgan_pair["trained"] / gate["sample_grid"]).read_bytes()[:4] == b"\x89PNG"
    b = bundle_mod.load(dcgan_pair["trained"])  # require_gate=True by default
    assert b.deployable and b.gate["manifest_sha256"] == b.manifest_sha256

    # Relative threshold: R x the real-vs-real floor (train split vs the held-out reference).
    with one_torch_thread():
        rel = run_gate(
            dcgan_pair["trained"],
            digits_ref,
            max_fd_ratio=1000.0,
            n=N,
            with_filters=False,
            extractor=digits_extractor,
            kid_subsets=10,
        )
    assert 0 < rel["real_floor"]["fd"] < rel["distance"]
    assert rel["threshold"] == pytest.approx(1000.0 * rel["real_floor"]["fd"])

    # The untrained model, same threshold, through the CLI: exit 1, not deployable.
    with one_torch_thread():
        rc = export_main(
            [
                "gate",
                str(dcgan_pair["untrained"]),
                "--ref",
                str(digits_ref),
                "--max-fd",
                str(THRESHOLD),
                "-n",
                str(N),
                "--no-filters",
                "--classifier",
                str(digits_classifier),
                "--kid-subsets",
                "10",
                "-q",
            ]
        )
    out = capsys.readouterr()
    assert rc == 1 and "gate failed" in out.out and "not deployable" in out.err
    failed = json.loads((dcgan_pair["untrained"] / "gate.json").read_text())
    assert failed["verdict"] == "failed" and failed["distance"] > THRESHOLD
    with pytest.raises(BundleError, match="gate failed"):
        bundle_mod.load(dcgan_pair["untrained"])
    assert not bundle_mod.load(dcgan_pair["untrained"], require_gate=False).deployable
