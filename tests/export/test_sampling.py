"""Sampling rules shared by gan-sample, the gate and the server (pure numpy)."""

import numpy as np
import pytest

from gancore import filters, images, sampling
from gancore.errors import ExportError


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


def test_z_truncation_has_a_floor_that_bounds_its_work():
    """Redraws per component grow as 1/psi: psi = 1e-300 (a valid float in (0, 1]) once kept a
    serving worker's event loop redrawing without end. Below the floor is a clear error; at the
    floor every component ends inside the threshold."""
    for psi in (0.0, 1e-300, 1e-6, sampling.MIN_TRUNCATION_Z / 2):
        with pytest.raises(ExportError, match=r"0\.05 <= psi <= 1"):
            sampling.z_from_seed(1, 8, truncation=psi)
    z = sampling.z_from_seeds(range(64), 128, sampling.MIN_TRUNCATION_Z)
    assert np.abs(z).max() <= 2 * sampling.MIN_TRUNCATION_Z


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


# -- one home for each rule (gancore): what the server, gan-sample and the gate all call ---------
def test_export_modules_are_the_gancore_modules():
    import gancore.filters
    import gancore.sampling

    assert sampling.z_from_seeds is gancore.sampling.z_from_seeds
    assert filters.DrsLoop is gancore.filters.DrsLoop
    from gancore.errors import BundleError
    from gancore.errors import BundleError as CoreBundleError

    assert BundleError is CoreBundleError


@pytest.mark.parametrize(
    "psi, kind, ok",
    [(1.0, "dcgan", True), (0.5, "cgan", True), (0.0, "dcgan", False), (1.2, "dcgan", False),
     (-2.0, "stylegan", True), (2.0, "stylegan", True), (2.1, "stylegan", False),
     (float("nan"), "stylegan", False)],
)  # fmt: skip
def test_check_truncation_is_the_one_range_check(psi, kind, ok):
    if ok:
        assert sampling.check_truncation(psi, kind) == psi
    else:
        with pytest.raises(ExportError, match="truncation"):
            sampling.check_truncation(psi, kind)


def test_ws_from_w_broadcasts_and_truncates_towards_w_avg():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    ws = sampling.ws_from_w(w, 4, None)
    assert ws.shape == (2, 4, 3) and (ws == w[:, None, :]).all()
    avg = np.ones(3, np.float32)
    np.testing.assert_allclose(sampling.ws_from_w(w, 4, avg, 0.5)[:, 0], avg + 0.5 * (w - avg))
    cut = sampling.ws_from_w(w, 4, avg, 0.5, cutoff=2)
    assert (cut[:, 2:] == w[:, None, :]).all()
    with pytest.raises(ExportError, match="no w_avg"):
        sampling.ws_from_w(w, 4, None, 0.5)


def test_style_mix_cells_layout():
    row = np.zeros((2, 4, 3), np.float32) + np.arange(2)[:, None, None]  # row seeds: 0, 1
    col = np.full((1, 4, 3), 9, np.float32)
    cells = sampling.style_mix_cells(row, col, [0, 1])
    assert cells.shape == (6, 4, 3)  # (2 + 1) x (1 + 1)
    assert (cells[0] == 0).all() and (cells[1] == 9).all()  # blank corner, column seed
    assert (cells[2] == 0).all() and (cells[3][:2] == 9).all() and (cells[3][2:] == 0).all()
    assert sampling.check_styles("0-1", 4) == [0, 1]
    with pytest.raises(ExportError, match="outside"):
        sampling.check_styles([7], 4)
    with pytest.raises(ExportError, match="empty"):
        sampling.check_styles([], 4)


def test_with_code_is_the_training_rule_in_numpy():
    import torch

    from training.models.code import with_code

    rng = np.random.default_rng(0)
    z = rng.standard_normal((40, 12)).astype(np.float32)
    codes = rng.integers(0, 5, 40)
    got = sampling.with_code(z, codes, 5)
    want = with_code(torch.from_numpy(z), torch.from_numpy(codes), 5).numpy()
    np.testing.assert_array_equal(got, want)
    assert (sampling.latent_codes(got, 5) == codes).all()
    assert (got[:, 5:] == z[:, 5:]).all()  # only the code's components move


class _IdentityMapping:
    """A StyleGAN-lite stand-in whose mapping is w = z, so each style layer of a cell shows the
    z it came from, and with it that z's code."""

    kind, num_classes, latent_dim, w_dim, num_ws, w_avg = "stylegan", 0, 8, 8, 6, None
    channels, resolution, style_ranges = 1, 4, None

    def __init__(self, latent_code: int):
        self.latent_code = latent_code
        self.cells = None

    def mapping(self, z, labels):
        return np.asarray(z, np.float32)

    def synthesis(self, ws):
        self.cells = ws if self.cells is None else np.concatenate([self.cells, ws])
        return np.zeros((len(ws), 1, 4, 4), np.float32)


@pytest.mark.parametrize("styles", [[0, 1], [3, 4, 5]])
def test_style_mix_of_a_coded_model_keeps_one_code_per_cell(styles):
    rows, cols = [1, 2, 3, 4], [5, 6, 7, 8, 9]
    z = sampling.z_from_seeds(rows + cols, 8)
    codes = sampling.latent_codes(z, 4)
    assert len(set(codes[:4].tolist()) | set(codes[4:].tolist())) > 1  # the seeds' codes differ
    b = _IdentityMapping(latent_code=4)
    sampling.style_mix(b, rows, cols, styles)
    cells = b.cells.reshape(len(rows) + 1, len(cols) + 1, 6, 8)
    other = [i for i in range(6) if i not in styles]
    for r in range(len(rows)):
        np.testing.assert_array_equal(cells[r + 1, 0], np.repeat(z[r][None], 6, 0))  # row seed
        for c in range(len(cols)):
            cell = cells[r + 1, c + 1]
            cell_codes = sampling.latent_codes(cell, 4)
            # The cell's code is that of the seed giving it layer 0, on every layer.
            want = codes[4 + c] if 0 in styles else codes[r]
            assert (cell_codes == want).all(), (r, c, cell_codes, want)
            if 0 in styles:  # the column's own z at its layers, the row's z recoded elsewhere
                assert (cell[styles] == z[4 + c]).all()
                assert (cell[other][:, 4:] == z[r, 4:]).all()
            else:
                assert (cell[other] == z[r]).all()
                assert (cell[styles][:, 4:] == z[4 + c, 4:]).all()
    # Without a code: the plain layout, each layer exactly one of the two seeds' z.
    plain = _IdentityMapping(latent_code=0)
    sampling.style_mix(plain, rows, cols, styles)
    cells = plain.cells.reshape(len(rows) + 1, len(cols) + 1, 6, 8)
    assert (cells[1, 1][styles] == z[4]).all() and (cells[1, 1][other] == z[0]).all()


def test_interpolation_path_ends_at_the_seeds():
    z = sampling.interpolation_z(3, 8, 5, 16, "dcgan", 0.7)
    np.testing.assert_allclose(z[0], sampling.z_from_seed(3, 16, 0.7), atol=1e-6)
    np.testing.assert_allclose(z[-1], sampling.z_from_seed(8, 16, 0.7), atol=1e-6)
    zs = sampling.interpolation_z(3, 8, 5, 16, "stylegan", 0.7)  # StyleGAN truncates in w
    np.testing.assert_allclose(zs[0], sampling.z_from_seed(3, 16), atol=1e-6)
    path = sampling.lerp_path(np.zeros(2, np.float32), np.ones(2, np.float32), 5)
    np.testing.assert_allclose(path[:, 0], [0, 0.25, 0.5, 0.75, 1])


def test_drs_loop_keeps_the_first_accepted_seeds_whatever_the_rounds():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=400)
    cal = filters.calibrate(rng.normal(size=500))
    pool = list(range(400))
    every = filters.drs_accept(logits, pool, cal)
    want = [s for s, ok in zip(pool, every) if ok][:20]
    kept, generated = filters.drs_select(lambda seeds: logits[seeds], pool, 20, cal)
    assert kept == want and want[-1] < generated <= len(pool)
    for expected in (0.05, 0.9):  # rounds sized very differently: the same seeds
        cal2 = {**cal, "drs": {**cal["drs"], "expected_acceptance": expected}}
        assert filters.drs_select(lambda seeds: logits[seeds], pool, 20, cal2)[0] == want
    short, used = filters.drs_select(lambda seeds: logits[seeds], pool[:10], 20, cal)
    assert used == 10 and len(short) < 20
    with pytest.raises(ExportError, match="no DRS calibration"):
        filters.DrsLoop(pool, 3, {})


@pytest.mark.parametrize("shape", [(32, 32), (64, 64, 3), (1, 1), (5, 7, 3), (200, 3)])
def test_png_encoder_is_lossless(shape):
    import io

    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(images.encode_png(pixels))))
    assert back.shape == pixels.shape and (back == pixels).all()
    assert (images.upscale(pixels, 3)[::3, ::3] == pixels).all()


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_lossy_formats_and_quality(fmt):
    pixels = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    small, big = images.encode(pixels, fmt, 10), images.encode(pixels, fmt, 95)
    assert len(small) < len(big)
    with pytest.raises(ValueError, match="not supported"):
        images.encode(pixels, "gif")


def test_walk_path_passes_through_every_seed_and_closes_a_loop():
    ends = sampling.z_from_seeds([1, 5, 9], 16)
    open_walk = sampling.walk_path(ends, 4, False, "z")
    assert len(open_walk) == sampling.walk_length(3, 4, False) == 9
    np.testing.assert_array_equal(open_walk[[0, 4, 8]], ends)
    np.testing.assert_allclose(open_walk[2], sampling.slerp(ends[0], ends[1], 0.5))
    loop = sampling.walk_path(ends, 4, True, "z")
    assert len(loop) == sampling.walk_length(3, 4, True) == 12  # no repeated first frame
    np.testing.assert_array_equal(loop[[0, 4, 8]], ends)
    np.testing.assert_allclose(loop[10], sampling.slerp(ends[2], ends[0], 0.5))
    ws = np.stack([np.full((3, 2), v, np.float32) for v in (0.0, 4.0)])
    w_loop = sampling.walk_path(ws, 4, True, "w")  # lerp: 0, 1, 2, 3, 4, 3, 2, 1
    np.testing.assert_array_equal(w_loop[:, 0, 0], [0, 1, 2, 3, 4, 3, 2, 1])


class CountingEngine:
    """An engine that renders z as its first pixels and counts its calls."""

    def __init__(self):
        self.calls = []

    async def mapping(self, info, z, labels):
        self.calls.append(("mapping", len(z)))
        return z[:, :4] * 2

    async def render(self, info, payload, labels):
        self.calls.append(("render", len(payload)))
        return payload.reshape(len(payload), 1, 1, -1), None


def test_walk_flow_renders_every_frame_in_one_engine_call():
    from types import SimpleNamespace

    info = SimpleNamespace(kind="dcgan", latent_dim=4)
    engine = CountingEngine()
    images_, _ = sampling.run_sync(
        sampling.walk_flow(engine, info, [1, 2, 3, 4], 10, True, "z", None, 1.0)
    )
    assert engine.calls == [("render", 40)] and images_.shape == (40, 1, 1, 4)
    style = SimpleNamespace(kind="stylegan", latent_dim=4, num_ws=2, w_avg=None)
    engine = CountingEngine()
    sampling.run_sync(sampling.walk_flow(engine, style, [1, 2], 10, False, "w", None, 1.0))
    assert engine.calls == [("mapping", 2), ("render", 11)]  # only the seeds are mapped


@pytest.mark.parametrize(
    "seeds, frames, fps, match",
    [([1], 4, 12, "at least 2 seeds"), ([1, 2], 0, 12, "frames 0"), ([1, 2], 4, 0, "1..50"),
     ([1, 2], 4, 51, "fps 51"), ([1, 2], 20_000, 12, "at most 10000")],
)  # fmt: skip
def test_check_walk_names_what_is_allowed(seeds, frames, fps, match):
    with pytest.raises(ExportError, match=match):
        sampling.check_walk(seeds, frames, fps)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize("channels", [1, 3])
def test_animations_are_deterministic_and_keep_the_frames(fmt, channels):
    import io

    from PIL import Image, ImageSequence

    rng = np.random.default_rng(0)
    levels = np.array([0, 255], np.uint8)  # two levels per channel: exact even in a GIF palette
    frames = levels[rng.integers(0, 2, (5, 8, 8, channels))]
    data = images.encode_animation(frames, fmt, fps=20, scale=2)
    assert data == images.encode_animation(frames, fmt, fps=20, scale=2)
    anim = Image.open(io.BytesIO(data))
    got = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(anim)]
    assert len(got) == 5 and anim.info["loop"] == 0 and got[0].shape == (16, 16, 3)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g[::2, ::2], np.broadcast_to(f, (8, 8, 3)))
