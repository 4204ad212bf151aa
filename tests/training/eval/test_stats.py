import numpy as np
import pytest

from training.eval.errors import IncompatibleStats, RefStatsError
from training.eval.stats import FeatureStats, RefStats, check_compatible, load_ref

EXT = {
    "name": "classifier",
    "id": "classifier:digits",
    "sha256": "ab" * 32,
    "dim": 8,
    "preprocessing": {"input_size": 32, "resize": "bilinear"},
    "metric": "FD-classifier",
}


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(0)
    # A large common offset is where naive sum-of-squares loses precision.
    x = rng.standard_normal((1003, 32)) * rng.uniform(0.1, 5, 32) + 1e4
    st = FeatureStats(keep=100)
    for i in range(0, len(x), 97):
        st.update(x[i : i + 97].astype(np.float64))
    np.testing.assert_allclose(st.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-9)
    assert st.n == 1003 and st.features.shape == (100, 32)


def _ref(**kw):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8))
    return RefStats(
        x.mean(0),
        np.cov(x, rowvar=False),
        40,
        dict(EXT),
        dataset="digits",
        resolution=32,
        split="heldout",
        class_names=["a", "b"],
        features=x.astype(np.float32),
        labels=np.arange(40) % 2,
        **kw,
    )


def test_save_load_roundtrip_keeps_provenance(tmp_path):
    ref = _ref()
    p = ref.save(tmp_path / "r.npz")
    back = load_ref(p)
    np.testing.assert_array_equal(back.mu, ref.mu)
    np.testing.assert_array_equal(back.sigma, ref.sigma)
    assert back.extractor == EXT and back.dataset == "digits" and back.split == "heldout"
    assert back.resolution == 32 and back.n == 40 and back.id == ref.id
    assert back.labels.tolist() == ref.labels.tolist()


def test_missing_and_corrupt_files_are_user_errors(tmp_path):
    with pytest.raises(RefStatsError, match="do not exist"):
        load_ref(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RefStatsError, match="corrupt"):
        load_ref(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(RefStatsError, match="corrupt or not a ganforge reference"):
        load_ref(tmp_path / "other.npz")


def test_mismatches_are_refused_naming_what_differs():
    check_compatible(EXT, dict(EXT))
    with pytest.raises(IncompatibleStats, match="feature extractor mismatch"):
        check_compatible(dict(EXT, id="inception"), EXT)
    with pytest.raises(IncompatibleStats, match="weights changed"):
        check_compatible(dict(EXT, sha256="cd" * 32), EXT)
    other = dict(EXT, preprocessing={"input_size": 32, "resize": "nearest"})
    with pytest.raises(IncompatibleStats, match="preprocessing mismatch.*resize"):
        check_compatible(other, EXT)
