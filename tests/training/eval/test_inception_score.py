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


class FeaturesOnly:
    """The dataset classifier's features without its class probabilities (a features-only
    extractor, as a user-supplied one may be)."""

    def __new__(cls, base):
        from training.eval.features import Extractor

        class _FeaturesOnly(Extractor):
            name, id, sha256 = base.name, base.id, base.sha256
            preprocessing, dim, metric = base.preprocessing, base.dim, base.metric
            class_names = base.class_names

            def _forward(self, x):
                return base._forward(x)[0], None

        return _FeaturesOnly()


def test_is_of_a_features_only_extractor_is_a_clear_error(digits_extractor, digits_ref_train):
    from training.eval.score import score_images

    ext = FeaturesOnly(digits_extractor)
    x = np.zeros((20, 1, 32, 32), np.float32)
    out = score_images(x, ref=digits_ref_train, extractor=ext, kid_subsets=2)
    assert out["is"] is None  # not asked for: simply not reported
    with pytest.raises(EvalError, match="needs class probabilities.*features only"):
        score_images(x, ref=digits_ref_train, extractor=ext, require_is=True)


def test_gan_eval_score_is_exits_2_for_a_features_only_extractor(
    digits_extractor, digits_ref_train, tmp_path, monkeypatch, capsys
):
    import training.eval.score as S
    from tests.training.eval.test_cli import make_run
    from training.eval.cli import main

    run = make_run(tmp_path, 32)
    ref = tmp_path / "ref.npz"
    digits_ref_train.save(ref)
    rc = main(["score", str(run), "--ref", str(ref), "-n", "20", "--is"])
    out = capsys.readouterr()
    assert rc == 0 and '"metric": "IS-classifier"' in out.out
    monkeypatch.setattr(S, "extractor_for_ref", lambda ref, **kw: FeaturesOnly(digits_extractor))
    rc = main(["score", str(run), "--ref", str(ref), "-n", "20", "--is"])
    out = capsys.readouterr()
    assert rc == 2 and out.out == "" and "Traceback" not in out.err
    assert out.err.startswith("error: the Inception Score needs class probabilities")
    assert "'classifier:digits' gives features only" in out.err
