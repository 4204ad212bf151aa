"""Improved precision and recall (Kynkäänniemi et al. 2019) and within-class diversity.

Each set's manifold is the union of balls around its samples, of radius the distance to the k-th
nearest other sample (k = 3). Precision: share of generated samples inside the real manifold.
Recall: share of real samples inside the generated manifold.
"""

from __future__ import annotations

import numpy as np

from training.eval.errors import EvalError

CHUNK = 2048


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def knn_radii(x: np.ndarray, k: int = 3) -> np.ndarray:
    """Squared distance from each row of ``x`` to its k-th nearest other row."""
    if len(x) <= k:
        raise EvalError(f"precision/recall with k = {k} needs more than {k} samples, got {len(x)}")
    out = np.empty(len(x))
    for i in range(0, len(x), CHUNK):
        d = _sq_dists(x[i : i + CHUNK], x)
        # The k+1-th smallest includes the point itself (distance 0).
        out[i : i + CHUNK] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(query: np.ndarray, support: np.ndarray, radii: np.ndarray) -> float:
    """Share of ``query`` rows inside at least one ball (support[j], radii[j])."""
    inside = 0
    for i in range(0, len(query), CHUNK):
        d = _sq_dists(query[i : i + CHUNK], support)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(query)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` features."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return precision, recall


def recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> float:
    """Share of ``real`` rows inside the ``fake`` manifold (recall alone)."""
    fake = np.asarray(fake, dtype=np.float64)
    return _coverage(np.asarray(real, dtype=np.float64), fake, knn_radii(fake, k))


def balanced_draws(n_real: int, n_fake: int, max_draws: int, rng: np.random.Generator):
    """Index pairs (real, fake) of equal size m = min(n_real, n_fake): the larger set is cut into
    up to ``max_draws`` disjoint random subsets of size m, the smaller one is used whole."""
    m = min(n_real, n_fake)
    big = max(n_real, n_fake)
    draws = max(1, min(max_draws, big // m))
    perm = rng.permutation(big)
    whole = np.arange(m)
    for d in range(draws):
        part = np.sort(perm[d * m : (d + 1) * m])
        yield (whole, part) if n_fake >= n_real else (part, whole)


def balanced_precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, max_draws: int = 10, seed: int = 1
) -> tuple[float, float, int]:
    """(precision, recall, draws): the mean over disjoint equal-size draws of the larger set.

    Both figures are defined at equal set sizes (recall grows with the number of generated
    samples); averaging the draws keeps that definition and cuts its sampling noise: the gate's
    rules compare these numbers with thresholds."""
    rng = np.random.Generator(np.random.PCG64(seed))
    ps, rs = [], []
    for ri, fi in balanced_draws(len(real), len(fake), max_draws, rng):
        p, r = precision_recall(real[ri], fake[fi], k)
        ps.append(p)
        rs.append(r)
    return float(np.mean(ps)), float(np.mean(rs)), len(ps)


def balanced_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, max_draws: int = 10, seed: int = 1
) -> float:
    """Recall alone, averaged like :func:`balanced_precision_recall`."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return float(
        np.mean(
            [
                recall(real[ri], fake[fi], k)
                for ri, fi in balanced_draws(len(real), len(fake), max_draws, rng)
            ]
        )
    )


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows (NaN for fewer than 2 rows)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    d = np.sqrt(_sq_dists(x, x))
    return float((d.sum() - np.trace(d)) / (n * (n - 1)))
