"""The FID Inception extractor, tested with a weights file of the right structure made here
(random weights): the real file cannot be downloaded on the project's machines."""

import numpy as np
import pytest
import torch

from training.eval.classifier import sha256_file
from training.eval.errors import ExtractorError
from training.eval.features import get_extractor
from training.eval.inception import WEIGHTS_NAME, WEIGHTS_SHA256, build_fid_inception


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = build_fid_inception()
    for m in net.modules():  # init_weights=False leaves BN at identity; make it non-trivial
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path


def test_loads_checks_hash_and_extracts_2048_features(fake_weights):
    ext = get_extractor(
        "inception", inception_weights=fake_weights, inception_sha256=sha256_file(fake_weights)
    )
    assert ext.metric == "FID" and ext.dim == 2048 and ext.sha256 == sha256_file(fake_weights)
    assert ext.preprocessing["input_size"] == 299 and ext.preprocessing["channels"] == 3
    gray = torch.rand(2, 1, 32, 32) * 2 - 1
    f = ext.features(gray.numpy())
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()
    # grayscale -> RGB is a channel repeat
    np.testing.assert_allclose(f, ext.features(gray.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-6)
    assert not ext.can_predict  # its 1008 ImageNet classes are not the dataset's
    # ... but they give the Inception Score ("IS", not "IS-classifier").
    f2, preds, probs = ext.extract(gray.numpy())
    assert preds is None and probs.shape == (2, 1008)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(f2, f, rtol=1e-5, atol=1e-6)
    assert ext.has_class_probabilities and ext.is_metric == "IS"


def test_wrong_hash_is_refused(fake_weights):
    with pytest.raises(ExtractorError, match="not the FID Inception weights file"):
        get_extractor("inception", inception_weights=fake_weights)  # expects the real hash
    assert WEIGHTS_SHA256.startswith("6726825d")


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ExtractorError) as e:
        get_extractor("inception")
    msg = str(e.value)
    assert "never downloaded" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert WEIGHTS_NAME in msg and "--inception-weights" in msg
