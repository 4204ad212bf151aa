"""Inception Score (Salimans et al. 2016): ``exp E_x[KL(p(y|x) ‖ p(y))]``, averaged over splits.

``IS`` uses the FID Inception network's 1008-way softmax (the network the field's papers use);
``IS-classifier`` uses the dataset classifier's softmax over the dataset's own classes, the offline
stand-in (like FD-classifier for FID: comparable only with values made by the same classifier).
It is at least 1 and at most the number of classes: 1 when every image gets the same class
distribution, K when each image is one confident class and the K classes are equally frequent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.eval.errors import EvalError

SPLITS = 10


def inception_score(probs: Any, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) of the IS over ``splits`` contiguous equal parts of ``probs`` [N, K]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise EvalError(f"class probabilities must be [N, K], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise EvalError("class probabilities must be finite and non-negative")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise EvalError("each row of class probabilities must sum to 1 (pass a softmax)")
    if isinstance(splits, bool) or int(splits) != splits or splits < 1:
        raise EvalError(f"IS splits must be a positive integer, got {splits!r}")
    if len(p) < splits:
        raise EvalError(f"IS with {splits} splits needs at least {splits} images, got {len(p)}")
    scores = []
    for part in np.array_split(p, int(splits)):
        py = part.mean(0, keepdims=True)
        # 0 · log 0 = 0: only entries with p(y|x) > 0 contribute (then p(y) > 0 too).
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(float(np.exp(terms.sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))
