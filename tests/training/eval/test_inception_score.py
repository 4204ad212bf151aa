"""Inception Score on constructed probability tables whose IS is known in closed form."""

import numpy as np
import pytest

from training.eval.errors import EvalError
from training.eval.inception_score import inception_score


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.full((1000, 7), 1 / 7))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10, 1008])
def test_confident_balanced_predictions_score_k(k):
    # Each of the 10 splits holds every class equally often: p(y) uniform, KL = log K per image.
    probs = np.eye(k)[np.arange(10 * k) % k]
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_collapse_to_one_confident_class_scores_one():
    probs = np.zeros((100, 10))
    probs[:, 3] = 1
    assert inception_score(probs)[0] == pytest.approx(1.0)


def test_two_classes_known_value_and_split_spread():
    # Half the images certain of class 0, half of class 1, arranged so that split i is all one
    # class (IS 1) or balanced (IS 2): the mean and std over splits follow.
    a = np.eye(2)[np.zeros(10, int)]  # one class only
    b = np.eye(2)[np.arange(10) % 2]  # balanced
    probs = np.concatenate([a, b])
    mean, std = inception_score(probs, splits=2)
    assert mean == pytest.approx(1.5) and std == pytest.approx(0.5)


def test_soft_predictions_match_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p.mean(0)
    expected = np.exp(np.mean(np.sum(p * np.log(p / py), 1)))
    assert inception_score(p, splits=1)[0] == pytest.approx(expected, rel=1e-12)
    assert 1.0 < expected < 5.0


@pytest.mark.parametrize(
    "probs,splits,match",
    [
        (np.full((5, 3), 1 / 3), 10, "at least 10 images"),
        (np.full((20, 3), 0.5), 10, "sum to 1"),
        (np.full((20,), 1.0), 10, r"\[N, K\]"),
        (np.full((20, 2), np.nan), 10, "finite"),
        (np.full((20, 2), 0.5), 0, "positive integer"),
    ],
)
def test_bad_tables_are_refused(probs, splits, match):
    with pytest.raises(EvalError, match=match):
        inception_score(probs, splits)
