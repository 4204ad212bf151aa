"""The metric ranks quality: FD(real held-out) < FD(trained DCGAN) < FD(untrained DCGAN), and
noise is worse than a trained generator — all at the same N on digits (16x16)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.config import ModelConfig
from training.datasets import load_dataset
from training.eval.score import reference_stats, score_generator, score_images
from training.models import build_models

R, STEPS = 16, 300


def train_small_dcgan(steps: int = STEPS):
    """A minimal DCGAN loop (pytorch/examples style) on digits at 16x16: ~10-20 s of CPU."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="dcgan", resolution=R, g_width=32, d_width=32, latent_dim=64)
    G, D = build_models(cfg)
    x, _ = load_dataset("digits", R, "train").as_tensors()
    opt_g = torch.optim.Adam(G.parameters(), 5e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 5e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        real = x[torch.randint(0, len(x), (64,), generator=gen)]
        fake = G(torch.randn(64, cfg.latent_dim, generator=gen))
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return G.eval(), cfg


@pytest.fixture(scope="module")
def scores(digits_extractor):
    ext = digits_extractor
    ref = reference_stats(ext, "digits", R, "train")
    held, _ = load_dataset("digits", R, "heldout").as_tensors()
    n = len(held)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is faster, and far faster on a shared box
    try:
        trained, cfg = train_small_dcgan()
    finally:
        torch.set_num_threads(threads)
    print(f"\ntrained a {R}x{R} DCGAN for {STEPS} steps in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(1)
    untrained = build_models(cfg)[0].eval()
    noise = torch.rand(n, 1, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = {
        "real held-out": score_images(held.numpy(), ref=ref, extractor=ext)["fd"],
        "trained DCGAN": score_generator(trained, cfg, ref, n, extractor=ext)["fd"],
        "untrained DCGAN": score_generator(untrained, cfg, ref, n, extractor=ext)["fd"],
        "uniform noise": score_images(noise.numpy(), ref=ref, extractor=ext)["fd"],
    }
    print(f"FD-classifier at N = {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return out


@pytest.mark.slow
def test_real_beats_trained_beats_untrained_and_noise(scores):
    s = scores
    assert s["real held-out"] < s["trained DCGAN"] < s["untrained DCGAN"]
    assert s["trained DCGAN"] < s["uniform noise"]
    assert np.isfinite(list(s.values())).all()


@pytest.mark.slow
@pytest.mark.xfail(
    reason="in the digits classifier's feature space an untrained DCGAN (a flat grey image, "
    "pixel std ~0.003) lands farther from digits than uniform noise; see the eval report",
    strict=False,
)
def test_untrained_generator_scores_better_than_noise(scores):
    assert scores["untrained DCGAN"] < scores["uniform noise"]
