"""Sampling rules and the generation flows shared by ``gan-sample``, the FID gate and the server
(numpy only, no torch).

One request -> one image, whoever computes it: seeds become latents *outside* the graphs, every
step is per-seed (no cross-sample operation), so an image does not depend on the backend, the batch
it was computed in, or the seeds next to it.

Rules (also written into every bundle's manifest):

- seed -> z: ``numpy.random.Generator(numpy.random.PCG64(seed)).standard_normal(latent_dim,
  dtype=numpy.float32)``.
- DCGAN/cGAN truncation ψ in [0.05, 1]: truncated-normal resampling of z with threshold τ = 2ψ:
  every component with ``|z_i| > τ`` is redrawn, in index order, from the *same* per-seed generator
  until all components satisfy ``|z_i| ≤ τ``. ψ = 1 means no truncation (z is used as drawn). The
  floor bounds the work: the redraws per component grow as 1/τ (ψ = 0.05: about 0.3 ms for a
  128-dim z; ψ = 1e-6 would redraw for minutes, holding a serving worker's event loop).
- StyleGAN-lite truncation: ``w = w_avg + ψ (w − w_avg)``, on every layer or only on the first
  ``cutoff`` style layers.
- Class labels for a conditional model when no class is asked for: ``seed % num_classes``.
- Images are float32 ``[N, C, R, R]`` clipped to [-1, 1] (StyleGAN-lite's synthesis is unbounded).

The flows (generate, style mixing, interpolation, the quality filter loop) are written once, as
``async`` functions over an :class:`Engine`: the server passes its micro-batched engine, the
synchronous functions at the end pass a :class:`BundleEngine`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from gancore import filters
from gancore.errors import ExportError

SEED_RULE = (
    "z = numpy.random.Generator(numpy.random.PCG64(seed))"
    ".standard_normal(latent_dim, dtype=numpy.float32)"
)
TRUNCATION_RULE_Z = (
    "psi in [0.05, 1]; psi == 1: no truncation. psi < 1: threshold tau = 2*psi; while any |z_i| > tau, "
    "redraw those components (in index order) with the same per-seed generator's "
    "standard_normal(count, dtype=float32)"
)
TRUNCATION_RULE_W = (
    "w = w_avg + psi * (w - w_avg), applied to style layers [0, cutoff) "
    "(all layers when cutoff is null)"
)
LABEL_RULE = "label = seed % num_classes when no class is requested"
MAX_SEED = 2**63 - 1
MIN_TRUNCATION_Z = 0.05  # DCGAN/cGAN: the smallest psi (see the truncation rule above)
MAX_SEEDS = 1_000_000

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_int_ranges(text: str, what: str = "seeds", limit: int = MAX_SEEDS) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``; ranges are inclusive and must go upwards."""
    if not isinstance(text, str) or not text.strip():
        raise ExportError(f"no {what} given; use a list like '0-15,42'")
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise ExportError(
                f"bad {what} {part.strip()!r} in {text!r}: use non-negative integers and "
                "inclusive ranges like '0-15,42'"
            )
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise ExportError(
                f"bad {what} range {part.strip()!r}: the end {b} is below the start {a}"
            )
        if len(out) + (b - a + 1) > limit:
            raise ExportError(f"too many {what} in {text!r}: at most {limit} allowed")
        out.extend(range(a, b + 1))
    return out


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0-15,42"`` into seeds (inclusive ranges, each seed in [0, 2**63))."""
    seeds = parse_int_ranges(text, "seeds")
    for s in seeds:
        if s > MAX_SEED:
            raise ExportError(f"seed {s} is too large; seeds must be in [0, {MAX_SEED}]")
    return seeds


def check_seeds(seeds: Iterable[int]) -> list[int]:
    out = []
    for s in seeds:
        if isinstance(s, bool) or int(s) != s or not 0 <= int(s) <= MAX_SEED:
            raise ExportError(f"seed {s!r} is not allowed; seeds are integers in [0, {MAX_SEED}]")
        out.append(int(s))
    return out


def parse_styles(text: str, num_ws: int, style_ranges: dict[str, Sequence[int]] | None = None):
    """Style layers to take from the column seeds: ``"0-3"``, ``"coarse"``, ``"coarse,5"``..."""
    names = dict(style_ranges or {})
    out: list[int] = []
    for part in str(text).split(","):
        key = part.strip().lower()
        if key in names:
            a, b = names[key]
            out.extend(range(int(a), int(b)))
        else:
            try:
                out.extend(parse_int_ranges(part, "styles", limit=10_000))
            except ExportError:
                raise ExportError(
                    f"bad styles {part.strip()!r}: use layer indices 0..{num_ws - 1}, ranges like "
                    f"'0-3', or names {sorted(names)}"
                ) from None
    bad = [i for i in out if not 0 <= i < num_ws]
    if bad:
        raise ExportError(
            f"styles {bad} are outside 0..{num_ws - 1} (this model has num_ws={num_ws})"
        )
    return sorted(set(out))


def check_truncation(psi: float, kind: str, has_w_avg: bool = True) -> float:
    """The truncation range, the one place it is checked: DCGAN/cGAN ``0.05 <= psi <= 1``,
    StyleGAN-lite ``-2 <= psi <= 2`` (and ``psi != 1`` needs the bundle's ``w_avg``)."""
    psi = _check_psi(psi, kind)
    if kind == "stylegan" and psi != 1.0 and not has_w_avg:
        raise ExportError("this bundle has no w_avg: only truncation 1 is available")
    return psi


def _check_psi(psi: float, kind: str) -> float:
    psi = float(psi)
    if not math.isfinite(psi):
        raise ExportError(f"truncation {psi} is not a finite number")
    if kind in ("dcgan", "cgan") and not MIN_TRUNCATION_Z <= psi <= 1.0:
        raise ExportError(
            f"truncation {psi} not allowed for {kind}: use {MIN_TRUNCATION_Z} <= psi <= 1 "
            "(1 = no truncation)"
        )
    if kind == "stylegan" and not -2.0 <= psi <= 2.0:
        raise ExportError(f"truncation {psi} not allowed: use -2 <= psi <= 2 (1 = no truncation)")
    return psi


def z_from_seed(seed: int, latent_dim: int, truncation: float = 1.0) -> np.ndarray:
    """The latent for ``seed`` (see the module rules); ``truncation < 1`` resamples tails."""
    (seed,) = check_seeds([seed])
    return _z(seed, latent_dim, _check_psi(truncation, "dcgan"))


def _z(seed: int, latent_dim: int, psi: float) -> np.ndarray:
    """:func:`z_from_seed` for a checked seed and truncation."""
    gen = np.random.Generator(np.random.PCG64(seed))
    z = gen.standard_normal(latent_dim, dtype=np.float32)
    if psi < 1.0:
        tau = np.float32(2.0 * psi)
        bad = np.flatnonzero(np.abs(z) > tau)
        while bad.size:
            z[bad] = gen.standard_normal(bad.size, dtype=np.float32)
            bad = bad[np.abs(z[bad]) > tau]
    return z


def z_from_seeds(seeds: Iterable[int], latent_dim: int, truncation: float = 1.0) -> np.ndarray:
    """Stack :func:`z_from_seed` for each seed -> float32 ``[N, latent_dim]``."""
    seeds = check_seeds(seeds)
    if not seeds:
        return np.zeros((0, latent_dim), np.float32)
    psi = _check_psi(truncation, "dcgan")
    if len(seeds) == 1:
        return _z(seeds[0], latent_dim, psi)[None]
    return np.stack([_z(s, latent_dim, psi) for s in seeds])


def check_labels(labels: Any, num_classes: int, n: int | None = None) -> np.ndarray | None:
    """Validate class labels: int64, ``0 <= label < num_classes`` (ORT silently wraps -1)."""
    if num_classes <= 0:
        if labels is not None:
            raise ExportError("this model is unconditional: do not pass a class label")
        return None
    if labels is None:
        raise ExportError(f"this model is conditional: pass class labels in 0..{num_classes - 1}")
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = np.full(n if n is not None else 1, arr)
    integral = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr % 1 == 0))
    )
    if not integral:
        raise ExportError(f"class labels must be integers, got {arr.dtype} values")
    arr = arr.astype(np.int64).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ExportError(f"{arr.shape[0]} class labels given for {n} samples")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ExportError(
            f"class {int(bad[0])} is out of range: this model has {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
    return arr


def labels_for_seeds(
    seeds: Sequence[int], num_classes: int, class_index: int | None = None
) -> np.ndarray | None:
    """One label per seed: ``class_index`` for all, or ``seed % num_classes`` (None if unconditional)."""
    if num_classes <= 0:
        if class_index is not None:
            raise ExportError("this model is unconditional: --class is not allowed")
        return None
    if class_index is not None:
        return check_labels(np.full(len(seeds), class_index), num_classes, len(seeds))
    return np.asarray([s % num_classes for s in seeds], dtype=np.int64)


def latent_codes(z: np.ndarray, values: int) -> np.ndarray:
    """The categorical code a DCGAN or StyleGAN-lite trained with ``--latent-code values`` reads
    from each row of ``z``: the argmax of its first ``values`` components (the graphs compute it
    the same way, ``training.models.code.latent_code``)."""
    return np.asarray(z)[:, :values].argmax(axis=1)


def with_code(z: np.ndarray, codes: np.ndarray, values: int) -> np.ndarray:
    """``z`` with its first ``values`` components permuted so that :func:`latent_codes` reads
    ``codes`` from each row: the row's largest of them swaps places with component ``code``
    (``training.models.code.with_code`` in numpy)."""
    z = np.asarray(z, np.float32)
    codes = np.asarray(codes, np.int64)
    rows = np.arange(z.shape[0])
    top = latent_codes(z, values)
    out = z.copy()
    out[rows, codes] = z[rows, top]
    out[rows, top] = z[rows, codes]
    return out


def style_mix_recoded_z(
    row_z: np.ndarray, col_z: np.ndarray, styles: Sequence[int], values: int
) -> tuple[np.ndarray | None, bool]:
    """A model with a latent code (``values`` > 0) was trained to mix styles only between two
    latents of the same code value, and the code reaches every layer through w: mixing two seeds
    of different codes blends two digits. So each mixed cell takes one code, that of the seed
    that gives it its coarsest layer (ws[0]: the column's when ``styles`` holds layer 0, else
    the row's), and the other seed's z is redrawn in that code.

    Returns the z to map for each mixed cell, row-major ``[R * C, latent]``, and True when they
    replace the row seeds' ws (the code is the column's), False when they replace the column
    seeds'; ``(None, False)`` for a model without a code."""
    if not values:
        return None, False
    row_z, col_z = np.asarray(row_z, np.float32), np.asarray(col_z, np.float32)
    r = np.repeat(np.arange(len(row_z)), len(col_z))
    c = np.tile(np.arange(len(col_z)), len(row_z))
    if 0 in styles:
        return with_code(row_z[r], latent_codes(col_z[c], values), values), True
    return with_code(col_z[c], latent_codes(row_z[r], values), values), False


def truncate_w(
    w: np.ndarray, w_avg: np.ndarray, psi: float, cutoff: int | None = None
) -> np.ndarray:
    """``w_avg + psi (w - w_avg)`` on ``ws [N, num_ws, w_dim]`` (layers < cutoff) or ``w [N, w_dim]``."""
    psi = _check_psi(psi, "stylegan")
    w = np.asarray(w, np.float32)
    if psi == 1.0:
        return w
    w_avg = np.asarray(w_avg, np.float32)
    out = w.copy()
    if w.ndim == 3 and cutoff is not None:
        out[:, :cutoff] = w_avg + np.float32(psi) * (w[:, :cutoff] - w_avg)
    else:
        out = (w_avg + np.float32(psi) * (w - w_avg)).astype(np.float32)
    return out


def ws_from_w(
    w: np.ndarray,
    num_ws: int,
    w_avg: np.ndarray | None,
    truncation: float = 1.0,
    cutoff: int | None = None,
) -> np.ndarray:
    """StyleGAN-lite: mapping output ``w [N, w_dim]`` -> ``ws [N, num_ws, w_dim]``, every style
    layer the same w, truncated towards ``w_avg`` (layers < ``cutoff``) when ``truncation != 1``."""
    psi = check_truncation(truncation, "stylegan", w_avg is not None)
    ws = np.repeat(np.asarray(w, np.float32)[:, None, :], int(num_ws), axis=1)
    return ws if psi == 1.0 else truncate_w(ws, w_avg, psi, cutoff)


def check_styles(
    col_styles: Sequence[int] | str, num_ws: int, style_ranges: dict | None = None
) -> list[int]:
    """The style layers taken from the column seeds: names/ranges (:func:`parse_styles`) or
    indices, each in ``0..num_ws-1``; at least one."""
    if isinstance(col_styles, str):
        styles = parse_styles(col_styles, num_ws, style_ranges)
    else:
        styles = sorted({int(i) for i in col_styles})
        bad = [i for i in styles if not 0 <= i < num_ws]
        if bad:
            raise ExportError(
                f"col_styles {bad} are outside 0..{num_ws - 1} (this model has num_ws={num_ws}); "
                f"or use a named range {sorted(style_ranges or {})}"
            )
    if not styles:
        raise ExportError(
            f"col_styles is empty: choose layers in 0..{num_ws - 1} or a named range "
            f"{sorted(style_ranges or {})}"
        )
    return styles


def style_mix_cells(
    row_ws: np.ndarray,
    col_ws: np.ndarray,
    styles: Sequence[int],
    recoded_ws: np.ndarray | None = None,
    recoded_rows: bool = False,
) -> np.ndarray:
    """The style-mixing grid's ws ``[(R+1) * (C+1), num_ws, w_dim]`` in row-major order (NVlabs'
    layout): a blank corner (zeros; its image is painted black), the column seeds' ws, then per
    row seed its own ws followed by one cell per column seed with layers ``styles`` taken from it.
    ``recoded_ws`` (``[R * C, ...]``, from :func:`style_mix_recoded_z`) replace, cell by cell, the
    row seeds' ws (``recoded_rows``) or the column seeds' in the mixed cells."""
    cells = [np.zeros_like(row_ws[0])]
    cells += list(col_ws)
    idx = list(styles)
    for r in range(len(row_ws)):
        cells.append(row_ws[r])
        for c in range(len(col_ws)):
            base, donor = row_ws[r], col_ws[c]
            if recoded_ws is not None:
                if recoded_rows:
                    base = recoded_ws[r * len(col_ws) + c]
                else:
                    donor = recoded_ws[r * len(col_ws) + c]
            mixed = base.copy()
            mixed[idx] = donor[idx]
            cells.append(mixed)
    return np.stack(cells)


def interpolation_ts(steps: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, int(steps))


def interpolation_z(
    seed_a: int, seed_b: int, steps: int, latent_dim: int, kind: str, truncation: float = 1.0
) -> np.ndarray:
    """The z path from ``seed_a`` to ``seed_b``: slerp over ``steps`` evenly spaced t. DCGAN/cGAN
    truncate each end's z (the truncated-normal rule); StyleGAN-lite truncates in w instead."""
    psi = _check_psi(truncation, kind)
    zpsi = psi if kind != "stylegan" else 1.0
    za = z_from_seed(seed_a, latent_dim, zpsi)
    zb = z_from_seed(seed_b, latent_dim, zpsi)
    return np.stack([slerp(za, zb, t) for t in interpolation_ts(steps)])


def lerp_path(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """Linear path ``(1 - t) a + t b`` over ``steps`` evenly spaced t (interpolation in w)."""
    return np.stack([(1 - t) * a + t * b for t in interpolation_ts(steps)]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation (for Gaussian latents: keeps the norm typical)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    so = np.sin(omega)
    return (np.sin((1 - t) * omega) / so * a64 + np.sin(t * omega) / so * b64).astype(np.float32)


# Latent walks (animations): K >= 2 seeds, ``frames`` per segment, optionally closed into a loop.
WALK_FRAMES = 16  # default frames per segment
WALK_FPS = 12  # default frames per second
MIN_FPS, MAX_FPS = 1, 50  # GIF delays are in 10 ms steps and browsers slow down faster ones
MAX_WALK_FRAMES = 10_000  # offline (gan-sample); the server has its own, smaller limit


def walk_length(n_seeds: int, frames: int, loop: bool) -> int:
    """Frames in a walk: ``frames`` per segment; an open walk ends on its last seed (one more)."""
    segments = n_seeds if loop else n_seeds - 1
    return frames * segments + (0 if loop else 1)


def check_walk(seeds: Sequence[int], frames: int, fps: int, loop: bool = False) -> list[int]:
    """The walk's rules: at least two seeds, at least one frame per segment, ``MIN_FPS..MAX_FPS``,
    at most ``MAX_WALK_FRAMES`` in all."""
    seeds = check_seeds(seeds)
    if len(seeds) < 2:
        raise ExportError(f"a walk needs at least 2 seeds, got {len(seeds)}: e.g. 1,5,9")
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise ExportError(f"frames {frames!r} not allowed: use an integer >= 1 (per segment)")
    if isinstance(fps, bool) or int(fps) != fps or not MIN_FPS <= fps <= MAX_FPS:
        raise ExportError(f"fps {fps!r} not allowed: use an integer in {MIN_FPS}..{MAX_FPS}")
    total = walk_length(len(seeds), frames, loop)
    if total > MAX_WALK_FRAMES:
        raise ExportError(f"a walk of {total} frames is too long: at most {MAX_WALK_FRAMES}")
    return seeds


def walk_path(ends: np.ndarray, frames: int, loop: bool, space: str) -> np.ndarray:
    """The frames' latents through ``ends`` (one per seed): each segment starts on its seed and
    takes ``frames`` evenly spaced steps towards the next (slerp in z, lerp in w); a loop goes
    back to the first seed, an open walk ends on the last one."""
    k = len(ends)
    ts = np.arange(frames) / frames
    path = []
    for i in range(k if loop else k - 1):
        a, b = ends[i], ends[(i + 1) % k]
        for t in ts:
            path.append(slerp(a, b, t) if space == "z" else (1 - t) * a + t * b)
    if not loop:
        path.append(ends[-1])
    return np.stack(path).astype(np.float32)


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _labels(bundle, seeds: Sequence[int], labels) -> np.ndarray | None:
    if bundle.num_classes <= 0:
        return check_labels(labels, 0)
    if labels is None:
        return labels_for_seeds(seeds, bundle.num_classes)
    return check_labels(labels, bundle.num_classes, len(seeds))


def _require_stylegan(bundle, what: str) -> None:
    if bundle.kind != "stylegan":
        raise ExportError(
            f"{what} needs a StyleGAN-lite bundle; {bundle.name!r} is a {bundle.kind} model"
        )


# -- the flows: each written once -------------------------------------------------------------
# A flow composes the rules above with two engine calls: ``mapping`` (StyleGAN-lite z -> w) and
# ``render`` (z or ws -> images and D's logits). The server passes its micro-batched engine
# (serving/engine.py); gan-sample, the gate and the exporter pass a BundleEngine through the
# synchronous functions below. Labels are an int64 array (one per row) or None; the model
# description ``info`` is a Bundle or anything with the same attributes (kind, latent_dim,
# num_ws, w_avg, latent_code).


class Engine(Protocol):
    async def mapping(self, info: Any, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """StyleGAN-lite: ``w [N, w_dim]`` for ``z [N, latent_dim]``."""
        ...

    async def render(
        self, info: Any, payload: np.ndarray, labels: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Images ``[N, C, R, R]`` in [-1, 1] for z (DCGAN/cGAN) or ws (StyleGAN-lite), and D's
        logits ``[N]`` (None when this engine does not score)."""
        ...


async def ws_flow(engine: Engine, info, z, labels, psi: float, cutoff: int | None = None):
    """StyleGAN-lite: z -> (truncated) ``ws [N, num_ws, w_dim]``."""
    w = await engine.mapping(info, z, labels)
    return ws_from_w(w, info.num_ws, info.w_avg, psi, cutoff)


async def generate_flow(
    engine: Engine, info, seeds: Sequence[int], labels, psi: float, cutoff: int | None = None
):
    """(images, logits) for checked seeds: generate and conditional generate."""
    if info.kind == "stylegan":
        z = z_from_seeds(seeds, info.latent_dim)
        payload = await ws_flow(engine, info, z, labels, psi, cutoff)
    else:
        payload = z_from_seeds(seeds, info.latent_dim, psi)
    return await engine.render(info, payload, labels)


async def style_mix_flow(
    engine: Engine, info, row_seeds: Sequence[int], col_seeds: Sequence[int], styles, psi, labels
):
    """(images, logits) of the style-mixing grid, row-major, ``(R+1) * (C+1)`` cells (see
    :func:`style_mix_cells`); ``labels``: one per row seed then per column seed, or None. A cell
    is scored with its row seed's class (the first row's and column's: their seed's own)."""
    n_rows, n_cols = len(row_seeds), len(col_seeds)
    z = z_from_seeds(list(row_seeds) + list(col_seeds), info.latent_dim)
    ws = await ws_flow(engine, info, z, labels, psi)
    # A coded model mixes within one code per cell (see style_mix_recoded_z).
    recoded_z, recoded_rows = style_mix_recoded_z(z[:n_rows], z[n_rows:], styles, info.latent_code)
    recoded = None
    if recoded_z is not None:  # a coded model has no classes: no labels
        recoded = await ws_flow(engine, info, recoded_z, None, psi)
    cells = style_mix_cells(ws[:n_rows], ws[n_rows:], styles, recoded, recoded_rows)
    cell_labels = None
    if labels is not None:
        rows = [[labels[r]] * (n_cols + 1) for r in range(n_rows)]
        cell_labels = np.asarray([labels[0], *labels[n_rows:], *sum(rows, [])], np.int64)
    images, logits = await engine.render(info, cells, cell_labels)
    images[0] = -1.0  # the blank corner (black)
    return images, logits


async def interpolate_flow(
    engine: Engine, info, seed_a: int, seed_b: int, steps: int, space: str, labels, psi: float
):
    """(images, logits) along the path from seed_a to seed_b: slerp in z, or lerp in w
    (StyleGAN-lite); ``labels``: one per step, or None."""
    if space == "w":
        z = z_from_seeds([seed_a, seed_b], info.latent_dim)
        ends = await ws_flow(engine, info, z, None if labels is None else labels[:2], psi)
        payload = lerp_path(ends[0], ends[1], steps)
    else:
        payload = interpolation_z(seed_a, seed_b, steps, info.latent_dim, info.kind, psi)
        if info.kind == "stylegan":
            payload = await ws_flow(engine, info, payload, labels, psi)
    return await engine.render(info, payload, labels)


async def walk_flow(
    engine: Engine, info, seeds: Sequence[int], frames: int, loop: bool, space: str, labels, psi
):
    """(images, logits) of a latent walk's frames (see :func:`walk_path`), rendered in one engine
    call (the engine splits it into batches); ``labels``: one per frame, or None (a walk keeps one
    class)."""
    if space == "w":
        z = z_from_seeds(seeds, info.latent_dim)
        ends = await ws_flow(engine, info, z, None if labels is None else labels[: len(seeds)], psi)
        payload = walk_path(ends, frames, loop, "w")
    else:
        zpsi = psi if info.kind != "stylegan" else 1.0  # StyleGAN-lite truncates in w
        payload = walk_path(z_from_seeds(seeds, info.latent_dim, zpsi), frames, loop, "z")
        if info.kind == "stylegan":
            payload = await ws_flow(engine, info, payload, labels, psi)
    return await engine.render(info, payload, labels)


async def filter_flow(
    engine: Engine,
    info,
    pool: Sequence[int],
    n: int,
    labels_for,
    psi: float,
    method: str,
    calibration,
):
    """The quality filter loop over candidate seeds ``pool``: (images, logits, kept seeds, their
    labels, seeds generated). ``none`` keeps every seed, ``top_k`` the ``n`` best logits (in seed
    order), ``drs`` the first ``n`` seeds DRS accepts (gancore.filters.DrsLoop).
    ``labels_for(seeds)`` gives the seeds' labels (or None)."""
    if method != "drs":
        labels = labels_for(pool)
        images, logits = await generate_flow(engine, info, pool, labels, psi)
        keep = np.arange(len(pool))
        if method == "top_k":
            keep = np.sort(filters.top_k(logits, n))
        kept_labels = None if labels is None else labels[keep]
        return images[keep], logits[keep], [pool[i] for i in keep], kept_labels, len(pool)
    loop = filters.DrsLoop(pool, n, calibration)
    parts = []
    while seeds := loop.next_seeds():
        labels = labels_for(seeds)
        images, logits = await generate_flow(engine, info, seeds, labels, psi)
        keep = loop.accept(seeds, logits)
        parts.append((images[keep], logits[keep], [seeds[i] for i in keep],
                      None if labels is None else labels[keep]))  # fmt: skip
    shape = (0, info.channels, info.resolution, info.resolution)
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros(shape, np.float32)
    logits = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
    kept = [s for p in parts for s in p[2]]
    kept_labels = None
    if parts and parts[0][3] is not None:
        kept_labels = np.concatenate([p[3] for p in parts])
    return images, logits, kept, kept_labels, loop.generated


class BundleEngine:
    """:class:`Engine` over a loaded bundle, ``batch_size`` rows per graph call: the generator's
    (or synthesis') images, without D's logits. Its calls never suspend, so a flow over it runs to
    the end in one step (:func:`run_sync`), inside or outside an event loop."""

    def __init__(self, bundle, batch_size: int = 64):
        self.bundle, self.batch_size = bundle, batch_size

    async def mapping(self, info, z, labels):
        w = np.empty((len(z), self.bundle.w_dim), np.float32)
        for sl in _chunks(len(z), self.batch_size):
            w[sl] = self.bundle.mapping(z[sl], None if labels is None else labels[sl])
        return w

    async def render(self, info, payload, labels):
        b = self.bundle
        if b.kind == "stylegan":
            return synthesize(b, payload, self.batch_size), None
        out = np.empty((len(payload), b.channels, b.resolution, b.resolution), np.float32)
        for sl in _chunks(len(payload), self.batch_size):
            out[sl] = b.generator(payload[sl], None if labels is None else labels[sl])
        return out, None


def run_sync(flow):
    """The result of a flow over :class:`BundleEngine`."""
    try:
        flow.send(None)
    except StopIteration as done:
        return done.value
    flow.close()
    raise RuntimeError("a flow over a BundleEngine suspended")


# -- the synchronous API on a bundle (gan-sample, the gate, the exporter) ----------------------
def ws_for_seeds(
    bundle,
    seeds: Sequence[int],
    labels=None,
    truncation: float = 1.0,
    truncation_cutoff: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """StyleGAN-lite: seeds -> (truncated) ``ws [N, num_ws, w_dim]``."""
    _require_stylegan(bundle, "ws")
    seeds = check_seeds(seeds)
    psi = _check_psi(truncation, "stylegan")
    labels = _labels(bundle, seeds, labels)
    z = z_from_seeds(seeds, bundle.latent_dim)
    return ws_for_z(bundle, z, labels, psi, truncation_cutoff, batch_size)


def ws_for_z(
    bundle,
    z: np.ndarray,
    labels=None,
    truncation: float = 1.0,
    truncation_cutoff: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """StyleGAN-lite: z ``[N, latent]`` -> (truncated) ``ws``, mapped ``batch_size`` rows at a time."""
    engine = BundleEngine(bundle, batch_size)
    return run_sync(ws_flow(engine, bundle, z, labels, truncation, truncation_cutoff))


def synthesize(bundle, ws: np.ndarray, batch_size: int = 64) -> np.ndarray:
    ws = np.asarray(ws, np.float32)
    out = np.empty((ws.shape[0], bundle.channels, bundle.resolution, bundle.resolution), np.float32)
    for sl in _chunks(ws.shape[0], batch_size):
        out[sl] = bundle.synthesis(ws[sl])
    # StyleGAN-lite's synthesis has no output squashing: clip to the declared range, exactly
    # what 8-bit encoding does, so the gate scores what the server delivers.
    return np.clip(out, -1.0, 1.0, out=out)


def generate(
    bundle,
    seeds: Sequence[int],
    labels=None,
    truncation: float = 1.0,
    truncation_cutoff: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Images ``[N, C, R, R]`` float32 in [-1, 1], one per seed (labels: per seed, one int, or
    None = the seed % num_classes rule for conditional models)."""
    seeds = check_seeds(seeds)
    if bundle.kind == "stylegan":
        psi = _check_psi(truncation, "stylegan")
        labels = _labels(bundle, seeds, labels)
    else:
        labels = _labels(bundle, seeds, labels)
        psi = _check_psi(truncation, bundle.kind)
    flow = generate_flow(BundleEngine(bundle, batch_size), bundle, seeds, labels, psi,
                         truncation_cutoff)  # fmt: skip
    return run_sync(flow)[0]


def style_mix(
    bundle,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    col_styles: Sequence[int] | str,
    truncation: float = 1.0,
    labels=None,
    batch_size: int = 64,
) -> np.ndarray:
    """The NVlabs style-mixing grid as images ``[(R+1) * (C+1), C, H, W]`` in row-major order:
    top-left blank, first row the column seeds, first column the row seeds, cell (r, c) = the row
    seed's ws with layers ``col_styles`` taken from the column seed. Tile it with
    ``make_grid(images, nrow=len(col_seeds) + 1)``."""
    _require_stylegan(bundle, "style mixing")
    styles = check_styles(col_styles, bundle.num_ws, bundle.style_ranges)
    row_seeds, col_seeds = check_seeds(row_seeds), check_seeds(col_seeds)
    if not row_seeds or not col_seeds:
        raise ExportError("style mixing needs at least one row seed and one column seed")
    all_seeds = row_seeds + col_seeds
    lab = None
    if bundle.num_classes > 0:
        lab = labels_for_seeds(all_seeds, bundle.num_classes) if labels is None else labels
        lab = check_labels(lab, bundle.num_classes, len(all_seeds))
    psi = _check_psi(truncation, "stylegan")
    engine = BundleEngine(bundle, batch_size)
    return run_sync(style_mix_flow(engine, bundle, row_seeds, col_seeds, styles, psi, lab))[0]


def interpolate(
    bundle,
    seed_a: int,
    seed_b: int,
    steps: int,
    space: str = "z",
    label: int | None = None,
    truncation: float = 1.0,
) -> np.ndarray:
    """Images along the path from seed_a to seed_b: slerp in z, or lerp in w (StyleGAN-lite)."""
    steps = int(steps)
    if not 2 <= steps <= 1024:
        raise ExportError(f"steps {steps} not allowed: use 2..1024")
    if space not in ("z", "w"):
        raise ExportError(f"interpolation space {space!r} not allowed: use 'z' or 'w'")
    lab = labels_for_seeds([seed_a] * steps, bundle.num_classes, label)  # seed_a's class
    if space == "w":
        _require_stylegan(bundle, "interpolation in w")
    psi = _check_psi(truncation, bundle.kind)
    flow = interpolate_flow(BundleEngine(bundle), bundle, seed_a, seed_b, steps, space, lab, psi)
    return run_sync(flow)[0]


def walk(
    bundle,
    seeds: Sequence[int],
    frames: int = WALK_FRAMES,
    loop: bool = False,
    space: str = "z",
    label: int | None = None,
    truncation: float = 1.0,
    fps: int = WALK_FPS,
) -> np.ndarray:
    """The frames ``[F, C, R, R]`` of a latent walk through ``seeds`` (:func:`walk_path`), the
    first seed's class unless ``label`` is given."""
    seeds = check_walk(seeds, frames, fps, loop)
    if space not in ("z", "w"):
        raise ExportError(f"walk space {space!r} not allowed: use 'z' or 'w'")
    if space == "w":
        _require_stylegan(bundle, "a walk in w")
    n = walk_length(len(seeds), frames, loop)
    lab = labels_for_seeds([seeds[0]] * n, bundle.num_classes, label)
    psi = check_truncation(truncation, bundle.kind, bundle.w_avg is not None)
    flow = walk_flow(BundleEngine(bundle), bundle, seeds, frames, loop, space, lab, psi)
    return run_sync(flow)[0]
