import copy
import json

import numpy as np
import pytest
import torch

from training.datasets import load_dataset
from training.eval.errors import EvalError, IncompatibleStats
from training.eval.score import score_images


def test_classifier_reaches_97_percent_on_digits_heldout(digits_extractor):
    acc = digits_extractor.accuracy
    print(f"\ndigits classifier held-out accuracy: {acc:.4f}")
    assert acc >= 0.97
    # Re-measure from the saved weights, not just the sidecar's claim.
    x, y = load_dataset("digits", 32, "heldout").as_tensors()
    pred = digits_extractor.predict(x.numpy())
    assert (pred == y.numpy()).mean() >= 0.97
    assert digits_extractor.dim >= 64
    assert len(digits_extractor.sha256) == 64
    assert digits_extractor.id == "classifier:digits"


def test_extractor_accepts_other_resolutions_and_rgb(digits_extractor):
    for r in (16, 64):
        x, y = load_dataset("digits", r, "heldout").as_tensors()
        assert (digits_extractor.predict(x) == y.numpy()).mean() > 0.9
    x, _ = load_dataset("digits", 32, "heldout").as_tensors(8)
    f1 = digits_extractor.features(x)
    f3 = digits_extractor.features(x.expand(-1, 3, -1, -1))  # grayscale->RGB->gray round trip
    np.testing.assert_allclose(f1, f3, atol=1e-5)
    with pytest.raises(EvalError, match="NaN"):
        digits_extractor.features(torch.full((2, 1, 32, 32), float("nan")))


def test_score_images_real_heldout_is_good_and_deterministic(digits_extractor, digits_ref_train):
    x, y = load_dataset("digits", 32, "heldout").as_tensors()
    out = score_images(x.numpy(), y.numpy(), ref=digits_ref_train, extractor=digits_extractor)
    again = score_images(x.numpy(), y.numpy(), ref=digits_ref_train, extractor=digits_extractor)
    assert json.dumps(out, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert out["metric"] == "FD-classifier" and "not comparable with Inception FID" in out["note"]
    assert out["n"] == len(x) and out["fd"] == out["fd_classifier"] >= 0
    assert out["precision"] > 0.7 and out["recall"] > 0.7
    assert out["cond_accuracy"] >= 0.97
    assert set(out["intra_class_fd"]["per_class"]) == {str(i) for i in range(10)}
    assert 0.7 < out["diversity"]["mean_ratio"] < 1.3
    assert out["reference"]["id"] == digits_ref_train.id
    # Real digits: every class covered, and the classifier is confident and balanced (IS near 10).
    pcr = out["per_class_recall"]
    assert len(pcr) == 10 and min(pcr) == out["min_class_recall"] > 0.5
    assert out["is"]["metric"] == "IS-classifier" and out["is"]["splits"] == 10
    assert 8.5 < out["is"]["mean"] <= 10 and out["is"]["std"] >= 0
    # Batches in an iterable give the same numbers as one array.
    batches = (x[i : i + 100].numpy() for i in range(0, len(x), 100))
    streamed = score_images(
        batches, y.numpy(), ref=digits_ref_train, extractor=digits_extractor, kid_subsets=5
    )
    assert streamed["fd"] == pytest.approx(out["fd"], rel=1e-9)


def test_collapsed_class_shows_in_diversity(digits_extractor, digits_ref_train):
    x, y = load_dataset("digits", 32, "heldout").as_tensors()
    x, y = x.numpy().copy(), y.numpy()
    first3 = np.flatnonzero(y == 3)[0]
    x[y == 3] = x[first3]  # every "3" is the same image
    out = score_images(x, y, ref=digits_ref_train, extractor=digits_extractor, kid_subsets=5)
    div = out["diversity"]["per_class"]
    assert div["3"]["ratio"] < 0.05 and div["4"]["ratio"] > 0.7
    # Per-class recall names the collapsed class; the global recall barely moves.
    pcr = out["per_class_recall"]
    assert pcr[3] < 0.2 and out["min_class_recall"] == pcr[3]
    assert min(r for c, r in enumerate(pcr) if c != 3) > 0.5
    assert out["cond_accuracy"] > 0.9  # accuracy alone hides the collapse


def test_changed_extractor_weights_are_refused(digits_extractor, digits_ref_train):
    other = copy.copy(digits_extractor)
    other.sha256 = "0" * 64
    with pytest.raises(IncompatibleStats, match="weights changed"):
        score_images(np.zeros((4, 1, 32, 32), np.float32), ref=digits_ref_train, extractor=other)
    with pytest.raises(EvalError, match="at least 2"):
        score_images(
            np.zeros((1, 1, 32, 32), np.float32), ref=digits_ref_train, extractor=digits_extractor
        )
