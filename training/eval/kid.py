"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic
polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets (mean ± std)."""

from __future__ import annotations

import numpy as np

from training.eval.errors import EvalError


def _kernel(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    # float32 kernel values (the cost); every sum over them is accumulated in float64.
    k = a @ b.T
    k /= d
    k += 1
    return k * k * k


def _sum(k: np.ndarray) -> float:
    return float(k.sum(dtype=np.float64))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, kyy_sum: float | None = None) -> float:
    """Unbiased MMD² between samples ``x`` [m, d] and ``y`` [n, d]."""
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise EvalError(f"KID needs at least 2 samples on each side, got {m} and {n}")
    kxx = _kernel(x, x, d)
    sxx = (_sum(kxx) - float(np.trace(kxx, dtype=np.float64))) / (m * (m - 1))
    if kyy_sum is None:
        kyy = _kernel(y, y, d)
        kyy_sum = _sum(kyy) - float(np.trace(kyy, dtype=np.float64))
    syy = kyy_sum / (n * (n - 1))
    return float(sxx + syy - 2 * _sum(_kernel(x, y, d)) / (m * n))


def kid(
    fake: np.ndarray,
    real: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID mean and std over ``num_subsets`` subsets of ``min(subset_size, len(fake), len(real))``."""
    fake = np.asarray(fake, dtype=np.float32)
    real = np.asarray(real, dtype=np.float32)
    if fake.shape[1] != real.shape[1]:
        raise EvalError(f"feature dimensions differ: {fake.shape[1]} vs {real.shape[1]}")
    m = min(subset_size, len(fake), len(real))
    rng = np.random.Generator(np.random.PCG64(seed))
    vals = np.empty(num_subsets)
    # When the real set is no bigger than a subset every subset is all of it: reuse its kernel.
    kyy_sum = None
    if m == len(real):
        kyy = _kernel(real, real, real.shape[1])
        kyy_sum = _sum(kyy) - float(np.trace(kyy, dtype=np.float64))
    for i in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        if kyy_sum is None:
            vals[i] = polynomial_mmd2(x, real[rng.choice(len(real), m, replace=False)])
        else:
            vals[i] = polynomial_mmd2(x, real, kyy_sum)
    return float(vals.mean()), float(vals.std())
