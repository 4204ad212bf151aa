"""The gate measures the exported ONNX generator as the server delivers it (8-bit pixels): a
trained digits model passes, an untrained one with the same architecture fails at the same
threshold; its score equals the score of the PNGs the encoder writes; it writes a readable report."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from export.cli import main as export_main
from export.exporter import export_run
from export.gate import GateRules, run_gate
from gancore import bundle as bundle_mod
from gancore import images, sampling
from gancore.errors import BundleError
from tests.conftest import one_torch_thread, train_run
from training.eval.score import load_ref, score_images

# Same architecture for both; "untrained" = one step. FD-classifier measured at N=500 with the
# 2-epoch test classifier: trained (20 kimg) ~45, untrained ~185, real-vs-real floor ~1.2.
ARCH = {"g_width": 16, "d_width": 16, "latent_dim": 32, "batch_size": 64}
THRESHOLD = 100.0
N = 500
# These tests are about the distance rule and the mechanics: the other rules are off here (each
# rule is tested alone in test_gate_rules.py).
ONLY_FD = {"min_precision": 0, "min_recall": 0, "min_cond_accuracy": 0, "min_class_recall": 0}


def _gate(bundle, ref, extractor, n, with_filters=True, **distance_rule):
    """``run_gate`` on one torch thread with only the distance rule on (``max_fd=`` or
    ``max_fd_ratio=``), 10 KID subsets."""
    with one_torch_thread():
        return run_gate(
            bundle,
            ref,
            rules=GateRules.make(**distance_rule, **ONLY_FD),
            n=n,
            with_filters=with_filters,
            extractor=extractor,
            kid_subsets=10,
        )


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
    gate = _gate(dcgan_pair["trained"], digits_ref, digits_extractor, N, max_fd=THRESHOLD)
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
    rel = _gate(
        dcgan_pair["trained"],
        digits_ref,
        digits_extractor,
        N,
        with_filters=False,
        max_fd_ratio=1000.0,
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
                *[x for k, v in ONLY_FD.items() for x in ("--" + k.replace("_", "-"), str(v))],
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
    assert "FAIL  fd" in out.out and "the gate failed (fd)" in out.err
    failed = json.loads((dcgan_pair["untrained"] / "gate.json").read_text())
    assert failed["verdict"] == "failed" and failed["distance"] > THRESHOLD
    with pytest.raises(BundleError, match="gate failed"):
        bundle_mod.load(dcgan_pair["untrained"])
    assert not bundle_mod.load(dcgan_pair["untrained"], require_gate=False).deployable


def _decoded_pngs(b, seeds) -> np.ndarray:
    """What a client gets: each image through the encoder's to_uint8 + encode_png, read by PIL."""
    x = sampling.generate(b, seeds, sampling.labels_for_seeds(seeds, b.num_classes))
    out = []
    for pic in images.to_uint8(x):
        arr = np.asarray(Image.open(io.BytesIO(images.encode_png(pic))))
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32) / 127.5 - 1.0, x


KEYS = ("fd", "kid_mean", "precision", "recall", "cond_accuracy", "per_class_recall")


def test_gate_scores_exactly_the_pngs_the_encoder_writes(
    tiny_bundles, digits_ref, digits_extractor, tmp_path
):
    import shutil

    bundle = tmp_path / "cgan"
    shutil.copytree(tiny_bundles["cgan"], bundle)
    n = 200
    gate = _gate(bundle, digits_ref, digits_extractor, n, with_filters=False, max_fd=1e9)
    with one_torch_thread():
        b = bundle_mod.load(bundle, require_gate=False)
        seeds = list(range(n))
        decoded, floats = _decoded_pngs(b, seeds)
        labels = sampling.labels_for_seeds(seeds, b.num_classes)
        ref = load_ref(digits_ref)
        png = score_images(decoded, labels, ref=ref, extractor=digits_extractor, kid_subsets=10)
        raw = score_images(floats, labels, ref=ref, extractor=digits_extractor, kid_subsets=10)
    for key in KEYS:
        assert gate[key] == pytest.approx(png[key], rel=1e-6, abs=1e-9), key
    assert gate["is"]["metric"] == png["is"]["metric"] == "IS-classifier"
    assert gate["is"]["mean"] == pytest.approx(png["is"]["mean"], rel=1e-6)
    print(f"\ngate FD {gate['fd']:.6f} = PNG FD {png['fd']:.6f}; float images {raw['fd']:.6f}")
    assert raw["fd"] != png["fd"]  # quantisation is applied (and measurable)
    assert gate["quantised"].startswith("uint8")


def test_report_has_rules_figures_and_one_grid_row_per_class(
    tiny_bundles, digits_ref, digits_extractor, tmp_path
):
    import shutil

    bundle = tmp_path / "cgan"
    shutil.copytree(tiny_bundles["cgan"], bundle)
    gate = _gate(bundle, digits_ref, digits_extractor, 300, max_fd=1e9)
    assert set(gate["grids"]) == {"raw", "top_k", "drs"}
    report = (bundle / gate["report"]).read_text()
    for text in ("**Verdict: PASSED**", "| fd |", "| raw |", "| top_k |", "| drs |"):
        assert text in report, text
    assert "IS-classifier" in report and "Per-class recall" in report
    res = bundle_mod.load(bundle).resolution
    scale = max(1, 96 // res)
    for name, file in gate["grids"].items():
        assert f"![{name}]({file})" in report
        w, h = Image.open(bundle / file).size
        # 10 classes -> 10 rows, 8 seeds each (2 px padding), upscaled for reading.
        assert (w, h) == (scale * (8 * (res + 2) + 2), scale * (10 * (res + 2) + 2)), name
    # The filters are scored on their own selections of the candidate pool.
    # Filters: N/2 images each, selected from the same candidate pool as the raw N.
    assert gate["filters"]["top_k"]["n"] == gate["filters"]["drs"]["n"] == 150
    assert gate["filters"]["top_k"]["candidates"] == 300
    assert 0 < gate["filters"]["drs"]["acceptance_rate"] < 1
    assert gate["candidates"] >= 300 and set(gate["cost_seconds"]) >= {"generate", "features"}


def test_report_of_a_dcgan_with_a_latent_code_has_one_grid_row_per_code_value(
    digits_ref, digits_extractor, tmp_path
):
    """A DCGAN trained with --latent-code carries the code in its manifest, and the gate's
    grids put each seed in the row of the code its z gives (the rows a person compares)."""
    run = train_run("dcgan", tmp_path / "run", latent_code=10)
    bundle = export_run(run, tmp_path / "bundle", formats="onnx", calibration_n=200)
    b = bundle_mod.load(bundle, require_gate=False)
    assert b.latent_code == 10 and b.manifest["latent_code"] == 10
    gate = _gate(bundle, digits_ref, digits_extractor, 300, with_filters=False, max_fd=1e9)
    assert gate["latent_code"] == 10
    report = (bundle / gate["report"]).read_text()
    assert "One row per value of the generator's latent code (10 values, read from z)" in report
    w, h = Image.open(bundle / gate["grids"]["raw"]).size
    scale, res = max(1, 96 // b.resolution), b.resolution
    assert (w, h) == (scale * (8 * (res + 2) + 2), scale * (10 * (res + 2) + 2))
    # Row r holds the first 8 seeds (of 0..299) whose z's code is r, in seed order.
    z = sampling.z_from_seeds(range(300), b.latent_dim)
    codes = z[:, :10].argmax(axis=1)
    tiles = np.asarray(Image.open(bundle / gate["grids"]["raw"]).convert("L"))[::scale, ::scale]
    first = int(np.flatnonzero(codes == 3)[0])
    want = images.to_uint8(sampling.generate(b, [first], None))[0, :, :, 0]
    got = tiles[3 * (res + 2) + 2 : 3 * (res + 2) + 2 + res, 2 : 2 + res]
    assert np.array_equal(got, want)
