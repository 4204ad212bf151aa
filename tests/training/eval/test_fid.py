import numpy as np
import pytest
import scipy.linalg

from training.eval.errors import EvalError
from training.eval.fid import frechet_distance


def _random_rotation(d, rng, reflections=4):
    """A dense random orthogonal matrix as a product of Householder reflections (cheap at 2048)."""
    q = np.eye(d)
    for _ in range(reflections):
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        q -= 2 * np.outer(q @ v, v)
    return q


@pytest.mark.parametrize("d", [64, 2048])
def test_closed_form_for_commuting_covariances(d):
    rng = np.random.default_rng(d)
    q = _random_rotation(d, rng)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-6)


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d,n", [(16, 100), (128, 500), (256, 300)])
def test_agrees_with_scipy_sqrtm_on_non_commuting_covariances(d, n):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    y = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 0.5
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _scipy_fd(mu1, s1, mu2, s2), rel=1e-6
    )


def test_identical_distributions_give_zero_never_negative():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 64))  # N < d: singular covariance
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    fd = frechet_distance(mu, s, mu, s)
    assert 0 <= fd < 1e-6


def test_rejects_nan_and_asymmetric_inputs():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(EvalError, match="NaN or inf"):
        frechet_distance(mu, s, np.array([0, np.nan, 0]), s)
    bad = np.eye(3)
    bad[0, 1] = 0.5
    with pytest.raises(EvalError, match="not symmetric"):
        frechet_distance(mu, s, mu, bad)
    with pytest.raises(EvalError, match="dimensions differ"):
        frechet_distance(mu, s, np.zeros(2), np.eye(2))


def test_singular_covariance_path_agrees_with_scipy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 32))  # N < d: no Cholesky factor, eigh path
    y = rng.standard_normal((200, 32)) * 1.5
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(s1)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _scipy_fd(mu1, s1, mu2, s2), rel=1e-6
    )
