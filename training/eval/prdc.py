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


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows (NaN for fewer than 2 rows)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    d = np.sqrt(_sq_dists(x, x))
    return float((d.sum() - np.trace(d)) / (n * (n - 1)))
