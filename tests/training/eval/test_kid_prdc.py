import numpy as np
import pytest

from training.eval.kid import kid
from training.eval.prdc import mean_pairwise_distance, precision_recall


def test_kid_is_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 32))
    y = rng.standard_normal((1000, 32))
    same_mean, same_std = kid(x, y, num_subsets=20, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    # Against itself the subsets overlap (not independent samples): still ≈ 0 on this scale.
    self_mean, _ = kid(x, x, num_subsets=20, subset_size=500)
    shifts = [kid(x, y + s, num_subsets=20, subset_size=500)[0] for s in (0.25, 0.5, 1.0)]
    assert same_mean < shifts[0] < shifts[1] < shifts[2]
    assert shifts[0] > 10 * (abs(same_mean) + same_std)
    assert abs(self_mean) < 0.1 * shifts[0]


def test_kid_is_deterministic():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 16)), rng.standard_normal((200, 16))
    assert kid(x, y, 10, 100) == kid(x, y, 10, 100)


def test_precision_recall_same_distribution_near_one_disjoint_zero():
    rng = np.random.default_rng(0)
    # Low dimension: with k = 3 and N = 1000, high-dimensional balls under-cover (known bias).
    real = rng.standard_normal((1000, 4))
    fake = rng.standard_normal((1000, 4))
    p, r = precision_recall(real, fake)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, fake + 20)
    assert p == 0 and r == 0


def test_mode_collapse_lowers_recall_not_precision():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((1000, 8))
    fake = rng.standard_normal((1000, 8)) * 0.2  # collapsed towards the mode
    p, r = precision_recall(real, fake)
    assert p > 0.9 and r < 0.5
    assert mean_pairwise_distance(fake) < 0.3 * mean_pairwise_distance(real)


def test_mean_pairwise_distance_known_value():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(x) == pytest.approx(5.0)
