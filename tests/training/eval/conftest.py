"""Shared fixtures: one digits classifier trained per test session in a private GANFORGE_HOME.

No test may fetch the real FID Inception weights: unless a test points it at its own local
server, the download URL is a local port where nothing listens."""

from __future__ import annotations

import os
import socket

import pytest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.environ["GANFORGE_INCEPTION_URL"] = f"http://127.0.0.1:{_closed_port()}/no-network-in-tests"


@pytest.fixture(scope="session")
def ganforge_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("ganforge_home")
    old = os.environ.get("GANFORGE_HOME")
    os.environ["GANFORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("GANFORGE_HOME", None)
    else:
        os.environ["GANFORGE_HOME"] = old


@pytest.fixture(scope="session")
def digits_classifier(ganforge_home):
    """Path of the default digits classifier, trained once (a few seconds)."""
    from training.eval.classifier import default_classifier_path, train_classifier

    path = default_classifier_path("digits")
    if not path.is_file():
        train_classifier("digits", out=path, log=None)
    return path


@pytest.fixture(scope="session")
def digits_extractor(digits_classifier):
    from training.eval.features import get_extractor

    return get_extractor("classifier", dataset="digits", train_if_missing=False)


@pytest.fixture(scope="session")
def digits_ref_train(digits_extractor):
    from training.eval.score import reference_stats

    return reference_stats(digits_extractor, "digits", 32, "train")
