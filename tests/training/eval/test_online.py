import time

import pytest
import torch

from training.config import ModelConfig
from training.eval.online import OnlineFD
from training.models import build_generator


@pytest.fixture(scope="module")
def online(digits_classifier):
    return OnlineFD("digits", 16, n=500)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(kind="dcgan", resolution=16, g_width=16),
        ModelConfig(kind="cgan", resolution=16, num_classes=10, g_width=16),
        ModelConfig(kind="stylegan", resolution=16, g_width=16, latent_dim=32, w_dim=32),
    ],
    ids=lambda c: c.kind,
)
def test_online_fd_handles_every_family_cheaply_and_deterministically(online, cfg):
    torch.manual_seed(0)
    G = build_generator(cfg).train()
    t0 = time.perf_counter()
    out = online(G, 10)
    took = time.perf_counter() - t0
    print(f"\nOnlineFD {cfg.kind} n=500: {took:.2f} s, {out}")
    assert set(out) == {"fd_classifier"} and out["fd_classifier"] > 0
    assert G.training  # the caller's mode is restored
    assert online(G, 11) == out
    assert took < 10  # ~0.1-0.3 s on an idle 2-core machine; slack for a shared one
