"""`gan-eval import-stats`: published pytorch-fid / TTUR statistics (mu, sigma) become a reference
with provenance; `gan-eval compare` gives the same FD as pytorch-fid's formula."""

import hashlib
import json

import numpy as np
import pytest
import scipy.linalg

from training.eval.cli import main as eval_main
from training.eval.inception import WEIGHTS_SHA256
from training.eval.stats import RefStats, load_ref

D = 2048
BLOCK = 96


def _stats_pair(seed: int):
    """Two pytorch-fid-style (mu, sigma) pairs whose covariances do not commute. Each sigma is a
    dense BLOCK x BLOCK block plus a diagonal, shuffled by one random permutation shared by both,
    so the oracle below can take pytorch-fid's sqrtm on the block (seconds, not a minute at 2048)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(D)
    out = []
    for _ in range(2):
        a = rng.standard_normal((BLOCK, BLOCK + 8)) / 4
        block = a @ a.T
        diag = rng.uniform(0.1, 2.0, D - BLOCK)
        sigma = np.zeros((D, D))
        sigma[:BLOCK, :BLOCK] = block
        sigma[BLOCK:, BLOCK:] = np.diag(diag)
        mu = rng.standard_normal(D)
        out.append((mu, sigma, block, diag))
    shuffled = [(mu[perm], s[np.ix_(perm, perm)]) for mu, s, _, _ in out]
    return shuffled, out, perm


def pytorch_fid_formula(mu1, s1, mu2, s2, blocks) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 sqrtm(Σ1 Σ2)), as pytorch-fid computes it (scipy's
    sqrtm of the product); the block structure gives Tr sqrtm(Σ1 Σ2) block by block."""
    (b1, d1), (b2, d2) = blocks
    covmean, _ = scipy.linalg.sqrtm(b1 @ b2, disp=False)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    tr_covmean = np.trace(covmean) + np.sqrt(d1 * d2).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _run(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = eval_main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else None), cap.err


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")
def test_imported_stats_give_pytorch_fids_distance(tmp_path, capsys):
    (a, b), raw, _ = _stats_pair(0)
    fa, fb = tmp_path / "fid_stats_a.npz", tmp_path / "fid_stats_b.npz"
    np.savez(fa, mu=a[0], sigma=a[1])  # exactly what pytorch-fid --save-stats writes
    np.savez(fb, mu=b[0], sigma=b[1])
    rc, out, err = _run(
        capsys, "import-stats", fa, "--extractor", "inception", "--out", tmp_path / "a.npz",
        "--dataset", "cifar10", "--resolution", "32",
    )  # fmt: skip
    assert rc == 0, err
    assert "imported" in err and "KID and precision/recall cannot" in err
    assert out["source"] == {
        "file": str(fa.resolve()),
        "sha256": hashlib.sha256(fa.read_bytes()).hexdigest(),
        "format": "pytorch-fid / TTUR statistics (mu, sigma)",
        "extractor": "inception-v3-fid-tf2015",
    }
    ref = load_ref(tmp_path / "a.npz")
    assert ref.source == out["source"] and ref.id == out["id"]
    assert ref.extractor["id"] == "inception-v3-fid-tf2015"
    assert ref.extractor["sha256"] == WEIGHTS_SHA256 and ref.extractor["dim"] == D
    assert (ref.dataset, ref.resolution, ref.split) == ("cifar10", 32, "train")
    assert ref.features is None and ref.n == 0
    np.testing.assert_array_equal(ref.mu, a[0])
    np.testing.assert_array_equal(ref.sigma, a[1])

    rc, _, err = _run(capsys, "-q", "import-stats", fb, "--extractor", "inception",
                      "--out", tmp_path / "b.npz")  # fmt: skip
    assert rc == 0 and err == ""
    rc, cmp, err = _run(capsys, "compare", tmp_path / "a.npz", tmp_path / "b.npz")
    assert rc == 0, err
    expected = pytorch_fid_formula(
        a[0], a[1], b[0], b[1], [(raw[0][2], raw[0][3]), (raw[1][2], raw[1][3])]
    )
    assert cmp["metric"] == "FID" and expected > 100
    assert cmp["fd"] == pytest.approx(expected, rel=1e-9)


def test_imported_stats_are_not_compared_with_a_classifier_reference(tmp_path, capsys):
    rng = np.random.default_rng(1)
    f = tmp_path / "fid_stats.npz"
    a = rng.standard_normal((D, D + 4)) / 40
    np.savez(f, mu=rng.standard_normal(D), sigma=a @ a.T)
    assert _run(capsys, "import-stats", f, "--extractor", "inception", "--out",
                tmp_path / "inc.npz")[0] == 0  # fmt: skip
    cls = RefStats(
        mu=np.zeros(D),
        sigma=np.eye(D),
        n=100,
        extractor={"name": "classifier", "id": "classifier:digits", "sha256": "ab" * 32,
                   "preprocessing": {"input_size": 32}, "dim": D, "metric": "FD-classifier"},
        dataset="digits",
        resolution=32,
        split="heldout",
    )  # fmt: skip
    cls.save(tmp_path / "cls.npz")
    rc, _, err = _run(capsys, "compare", tmp_path / "inc.npz", tmp_path / "cls.npz")
    assert rc == 2 and err.startswith("error: feature extractor mismatch")
    assert "'classifier:digits'" in err and "'inception-v3-fid-tf2015'" in err


def test_import_stats_bad_inputs(tmp_path, capsys):
    def expect(argv, match):
        rc, _, err = _run(capsys, "import-stats", *argv)
        assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
        assert match in err, err

    out = tmp_path / "r.npz"
    good = tmp_path / "good.npz"
    np.savez(good, mu=np.zeros(D), sigma=np.eye(D))
    expect([good, "--extractor", "classifier", "--out", out], "use --extractor inception")
    expect([good, "--extractor", "inception", "--out", tmp_path / "r.json"], "must end in .npz")
    expect([tmp_path / "nope.npz", "--extractor", "inception", "--out", out], "does not exist")
    np.savez(tmp_path / "mu_only.npz", mu=np.zeros(D))
    expect([tmp_path / "mu_only.npz", "--extractor", "inception", "--out", out],
           "has no sigma array (it holds mu)")  # fmt: skip
    np.savez(tmp_path / "small.npz", mu=np.zeros(64), sigma=np.eye(64))
    expect([tmp_path / "small.npz", "--extractor", "inception", "--out", out],
           "holds mu (64,) and sigma (64, 64), but inception-v3-fid-tf2015 statistics are "
           "mu (2048,)")  # fmt: skip
    np.save(tmp_path / "arr.npy", np.zeros(3))
    expect([tmp_path / "arr.npy", "--extractor", "inception", "--out", out], "single .npy array")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    expect([tmp_path / "junk.npz", "--extractor", "inception", "--out", out], "cannot read")
    asym = np.eye(D)
    asym[0, 1] = 1.0
    np.savez(tmp_path / "asym.npz", mu=np.zeros(D), sigma=asym)
    expect([tmp_path / "asym.npz", "--extractor", "inception", "--out", out], "not symmetric")
    expect([good, "--extractor", "inception", "--out", out, "--resolution", "32"],
           "--resolution describes --dataset")  # fmt: skip
    assert not out.exists()
