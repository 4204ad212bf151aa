"""The Fréchet distance between two Gaussians, in float64.

FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½

The trace term uses the symmetric form: ``Σ1^½ Σ2 Σ1^½`` is symmetric positive semi-definite, so
its square root's trace is the sum of the square roots of its eigenvalues (``eigh``, negatives from
round-off clipped to 0). It equals the usual ``tr sqrtm(Σ1 Σ2)`` (same eigenvalues) but stays real,
needs no complex arithmetic and is several times faster than ``scipy.linalg.sqrtm`` at d = 2048.
"""

from __future__ import annotations

import warnings

import numpy as np

from training.eval.errors import EvalError

SYMMETRY_RTOL = 1e-6


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise EvalError(
            f"{name}: mean must be [d] and covariance [d, d]; got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise EvalError(f"{name}: mean or covariance contains NaN or inf")
    scale = max(float(np.abs(sigma).max()), 1e-300)
    asym = float(np.abs(sigma - sigma.T).max())
    if asym > SYMMETRY_RTOL * scale:
        raise EvalError(
            f"{name}: covariance is not symmetric (max |Σ − Σᵀ| = {asym:.3g}, "
            f"largest entry {scale:.3g})"
        )
    return mu, (sigma + sigma.T) / 2


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ1^½ Σ2 Σ1^½)^½ for symmetric PSD Σ1, Σ2.

    Fast path: with Σ1 = L Lᵀ (Cholesky), Lᵀ Σ2 L is symmetric and has the same eigenvalues as
    Σ1^½ Σ2 Σ1^½ (both are similar to Σ1 Σ2), and needs no eigenvectors. A singular Σ1 (N ≤ d)
    has no Cholesky factor: then Σ1^½ comes from ``eigh`` with negative eigenvalues clipped.
    """
    try:
        low = np.linalg.cholesky(sigma1)
        m = low.T @ sigma2 @ low
    except np.linalg.LinAlgError:
        s1 = sqrtm_psd(sigma1)
        m = s1 @ sigma2 @ s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), float64, always ≥ 0."""
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first distribution")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second distribution")
    if mu1.shape != mu2.shape:
        raise EvalError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(fd, 0.0))


def warn_if_singular(n: int, d: int, what: str = "sample") -> None:
    """FD is biased upwards at small N and its covariance is singular for N ≤ d: say so."""
    if n <= d:
        warnings.warn(
            f"{what} has N = {n} ≤ feature dimension {d}: its covariance is singular and the "
            "Fréchet distance is strongly biased; compare models only at the same N",
            stacklevel=3,
        )
