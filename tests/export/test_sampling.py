"""Sampling rules shared by gan-sample, the gate and the server (pure numpy)."""

import numpy as np
import pytest

from export import filters, images, sampling
from export.errors import ExportError


def test_parse_seeds_ranges_and_lists():
    assert sampling.parse_seeds("0-3,42") == [0, 1, 2, 3, 42]
    assert sampling.parse_seeds(" 7 ") == [7]


@pytest.mark.parametrize("bad", ["5-3", "abc", "-1", "1,,2", "", "1-"])
def test_parse_seeds_rejects_bad_input(bad):
    with pytest.raises(ExportError):
        sampling.parse_seeds(bad)


def test_z_from_seed_is_the_documented_rule():
    z = sampling.z_from_seed(5, 32)
    ref = np.random.Generator(np.random.PCG64(5)).standard_normal(32, dtype=np.float32)
    assert z.dtype == np.float32 and np.array_equal(z, ref)
    assert np.array_equal(sampling.z_from_seeds([3, 5], 32)[1], ref)


def test_z_truncation_resamples_tails_from_the_same_seed():
    z = sampling.z_from_seed(11, 4096, truncation=0.5)
    assert np.abs(z).max() <= 1.0
    full = sampling.z_from_seed(11, 4096)
    keep = np.abs(full) <= 1.0
    assert np.array_equal(z[keep], full[keep])  # only the tails are redrawn
    assert np.array_equal(z, sampling.z_from_seed(11, 4096, truncation=0.5))
    assert np.array_equal(sampling.z_from_seed(11, 64, 1.0), sampling.z_from_seed(11, 64))
    with pytest.raises(ExportError):
        sampling.z_from_seed(1, 8, truncation=1.5)


def test_truncate_w_with_cutoff():
    ws = np.ones((2, 6, 4), np.float32)
    avg = np.zeros(4, np.float32)
    out = sampling.truncate_w(ws, avg, 0.5, cutoff=2)
    assert np.allclose(out[:, :2], 0.5) and np.allclose(out[:, 2:], 1.0)
    assert np.allclose(sampling.truncate_w(ws, avg, 0.0), 0.0)


def test_labels_and_styles_validation():
    assert sampling.check_labels([0, 9], 10).dtype == np.int64
    for bad in ([-1], [10], [0.5]):
        with pytest.raises(ExportError, match="class|integers"):
            sampling.check_labels(bad, 10)
    assert list(sampling.labels_for_seeds([3, 14], 10)) == [3, 4]
    ranges = {"coarse": [0, 2], "middle": [2, 4], "fine": [4, 6]}
    assert sampling.parse_styles("coarse,5", 6, ranges) == [0, 1, 5]
    assert sampling.parse_styles("0-3", 6, ranges) == [0, 1, 2, 3]
    with pytest.raises(ExportError, match="outside 0..5"):
        sampling.parse_styles("0-6", 6, ranges)


def test_drs_filter_maths():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=10_000)
    cal = filters.calibrate(logits)
    assert cal["max_logit"] == pytest.approx(logits.max())
    p = filters.drs_acceptance(logits, cal)
    assert np.all((p > 0) & (p < 1))
    # Monotone in the logit, and ~1/2 at the gamma percentile.
    order = np.argsort(logits)
    assert np.all(np.diff(p[order]) >= -1e-12)
    f = filters.drs_f(logits, cal["max_logit"])
    assert p[np.argmin(np.abs(f - cal["drs"]["gamma"]))] == pytest.approx(0.5, abs=1e-3)
    keep = filters.drs_accept(logits, list(range(logits.size)), cal)
    assert keep.mean() == pytest.approx(cal["drs"]["expected_acceptance"], abs=0.02)
    assert logits[keep].mean() > logits.mean()
    assert list(filters.top_k([0.1, 3.0, 2.0, 3.0], 2)) == [1, 3]


def test_images_grid_and_png():
    x = np.linspace(-1, 1, 5 * 1 * 4 * 4, dtype=np.float32).reshape(5, 1, 4, 4)
    u8 = images.to_uint8(x)
    assert u8.shape == (5, 4, 4, 1) and u8.min() == 0 and u8.max() == 255
    grid = images.make_grid(x, nrow=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1)
    png = images.encode_png(grid)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = images.make_grid(np.zeros((2, 3, 4, 4), np.float32))
    assert images.encode_png(rgb)[:4] == b"\x89PNG"
