"""ADA (adaptive discriminator augmentation): p follows D's overfitting signal E[sign(D(real))],
is recorded and checkpointed, and a generator trained with it does not draw the augmentations."""

import json

import pytest
import torch

from tests.training.conftest import TINY
from training import augment as A
from training import losses as L
from training.checkpoint import load_checkpoint, load_run
from training.config import ModelConfig
from training.datasets import load_digits
from training.models import build_discriminator
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_p_moves_towards_the_target_at_the_set_speed():
    ada = A.AdaptiveAugment(target=0.6, speed_kimg=1.0, batch_size=50)
    for _ in range(A.ADA_INTERVAL):
        ada.observe(0.9)  # D is sure of the reals: overfitting
    assert ada.p == pytest.approx(A.ADA_INTERVAL * 50 / 1000)
    for _ in range(3 * A.ADA_INTERVAL):
        ada.observe(0.1)
    assert ada.p == 0.0  # clamped
    x = torch.rand(16, 1, 8, 8)
    assert torch.equal(ada(x), x)  # p = 0: D sees the images as they are


def test_resume_mid_interval_continues_p_exactly(tmp_path):
    opts = {**TINY, "kimg": 14 * 32 / 1000, "ada_target": 0.2, "eval_every": 0}
    full = train(opts, tmp_path / "full", progress=False)
    train(opts, tmp_path / "part", progress=False, stop_at=6)  # 6 = 4 + 2: mid-interval
    part = train({}, tmp_path / "part", resume=True, progress=False)
    a, b = (load_checkpoint(r.checkpoint) for r in (full, part))
    assert a["ada"] == b["ada"] and a["ada"]["p"] > 0
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


def _d_with_ada(real_pool, fake_pool, steps=500):
    """Train a DCGAN discriminator with ADA against a perfect generator (fresh real digits
    that are not in ``real_pool``): the only way D can tell is to memorise its reals."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    D = build_discriminator(ModelConfig(kind="dcgan", resolution=16, channels=1, d_width=32))
    opt = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    ada = A.AdaptiveAugment(target=0.6, speed_kimg=4.0, batch_size=32)
    ps = []
    for _ in range(steps):
        real = real_pool[torch.randint(len(real_pool), (32,), generator=g)]
        fake = fake_pool[torch.randint(len(fake_pool), (32,), generator=g)]
        real_logits, fake_logits = D(ada(real, g)), D(ada(fake, g))
        loss = L.d_loss_bce(real_logits, fake_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ada.observe(float(real_logits.detach().sign().mean()))
        ps.append(ada.p)
    return ps


@pytest.mark.slow
def test_p_rises_on_a_small_dataset_and_stays_near_zero_on_a_large_one():
    x, _ = load_digits(16, "train").as_tensors()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    # 100 training images: D memorises them, E[sign(D(real))] passes 0.6 and p must rise.
    small = _d_with_ada(x[perm[:100]], x[perm[100:]])
    # Reals and fakes from all 1,438 images: nothing to memorise, the signal stays near 0.
    large = _d_with_ada(x, x)
    assert max(small[-100:]) > 0.2, small[::50]
    assert max(large) < 0.05, large[::50]


def _artefacts(x: torch.Tensor) -> tuple[float, float]:
    """Signs of drawn augmentations on digits (black background, x in [-1, 1]): the share of
    grey pixels in the 2-pixel border (translation fills with 0), and the share of images with
    an all-grey 4x4 block (cutout fills a square with 0)."""
    grey = x[:, :1].abs() < 0.3
    edges = [grey[..., :2, :], grey[..., -2:, :], grey[..., :, :2], grey[..., :, -2:]]
    border = torch.cat([e.flatten(1) for e in edges], 1).float().mean()
    blocks = torch.nn.functional.avg_pool2d(grey.float(), 4, 1).amax(dim=(1, 2, 3)) >= 1.0
    return float(border), float(blocks.float().mean())


@pytest.mark.slow
def test_generator_trained_with_ada_does_not_draw_the_augmentations(tmp_path, capsys):
    # A low target keeps p near 1 for most of the run: where a leak would show most. The recipe's
    # other settings (bf16, Adam 5e-4, R1, the code). With cutout among ADA's ops, 37% of these
    # samples had its grey square (5% without ADA); without it, 6-7%.
    opts = {**TINY, "g_width": 16, "d_width": 16, "kimg": 20, "eval_every": 0, "log_every": 25}
    opts.update(ada_target=0.2, sample_every=1000, ckpt_every=1000)
    result = train(opts, tmp_path / "run", progress=True)
    assert "p=" in capsys.readouterr().err  # the progress bar shows p
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    ps = [r["ada_p"] for r in records if "ada_p" in r]
    assert len(ps) == len(records) and max(ps) > 0.9 and sum(ps) / len(ps) > 0.6, ps
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / f"ckpt-{result.step:08d}.pt")
    assert 0 < state["ada"]["p"] <= 1  # resumes with its p

    real, _ = load_digits(16, "train").as_tensors()
    g = torch.Generator().manual_seed(0)
    real_border, real_blocks = _artefacts(real)
    shifted_border, _ = _artefacts(A.translation(real, g))
    _, cut_blocks = _artefacts(A.cutout(real, g))
    assert shifted_border > real_border + 0.2 and cut_blocks > 0.9  # the measure sees them
    G = load_run(tmp_path / "run").G_ema
    with torch.no_grad():
        fake = G(torch.randn(1000, TINY["latent_dim"], generator=g))
    border, blocks = _artefacts(fake)
    assert border < (real_border + shifted_border) / 2, (border, real_border, shifted_border)
    assert blocks < 0.25, (blocks, real_blocks)
    # ...and it learned digits' look: black background, bright strokes, like the data's.
    assert abs(float(fake.mean() - real.mean())) < 0.15 and fake.std() > 0.6 * real.std()
