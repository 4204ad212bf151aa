"""GAN losses and stabilisers as small functions the training step calls.

Every discriminator loss takes logits on real and on fake images and returns a scalar; every
generator loss takes logits on fake images. Penalties take the discriminator (or its output) and
the images they differentiate through. Randomness only enters through an explicit
``torch.Generator`` so that a seeded CPU run is bit-reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.errors import UserError


# --- non-saturating BCE (Goodfellow et al. 2014; the DCGAN default) ---------------------------
def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0):
    """BCE on logits; ``smoothing`` > 0 is one-sided label smoothing (real target 1 - smoothing)."""
    real_target = 1.0 - smoothing
    # BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x), written out to keep it one fused op
    loss_real = real_target * F.softplus(-real_logits) + smoothing * F.softplus(real_logits)
    return loss_real.mean() + F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): strong gradients early, when D rejects the fakes easily."""
    return F.softplus(-fake_logits).mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) ----------------------------------------------
def d_loss_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0):
    """Hinge loss; ``smoothing`` lowers the real margin from 1 to 1 - smoothing."""
    return F.relu(1.0 - smoothing - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# --- Wasserstein (Arjovsky et al. 2017) with gradient penalty (Gulrajani et al. 2017) --------
def d_loss_wasserstein(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
):
    """Critic loss E[D(fake)] - E[D(real)]; label smoothing has no meaning here and is ignored."""
    return fake_logits.mean() - real_logits.mean()


def g_loss_wasserstein(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def gradient_penalty(
    D: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP: E[(||grad D(x_hat)|| - 1)^2] on random interpolates of real and fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    # Under bf16 autocast G's images are bf16 and the real ones fp32: interpolate in fp32.
    x_hat = torch.lerp(real.detach().float(), fake.detach().float(), alpha).requires_grad_(True)
    out = D(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real images (``real`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019, MSGAN): pairs (i, i + N/2) of the batch (same class
    for a cGAN) should differ as much as their latents do; returns 1 / (d_image / d_z + eps),
    small when G spreads different z apart, large when it maps them to one image."""
    half = fake.shape[0] // 2
    d_img = (fake[:half] - fake[half : 2 * half]).abs().mean()
    d_z = (z[:half] - z[half : 2 * half]).abs().mean()
    return 1.0 / (d_img / d_z + eps)


def instance_noise(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add N(0, sigma^2) to images shown to D (Sønderby et al. 2016): overlaps the real and fake
    distributions early so D cannot win trivially. A no-op when sigma is 0."""
    if sigma <= 0:
        return x
    return x + sigma * torch.randn(x.shape, device=x.device, generator=generator).to(x.dtype)


@dataclass(frozen=True)
class Loss:
    """A named pair of discriminator and generator losses."""

    name: str
    d_loss: Callable[..., torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]


LOSSES = {
    "bce": Loss("bce", d_loss_bce, g_loss_nonsaturating),
    "hinge": Loss("hinge", d_loss_hinge, g_loss_hinge),
    "wgan-gp": Loss("wgan-gp", d_loss_wasserstein, g_loss_wasserstein),
}


def get_loss(name: str) -> Loss:
    """The loss named ``name`` (bce | hinge | wgan-gp)."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze/unfreeze a network so the other player's step does not build its weight grads."""
    for p in module.parameters():
        p.requires_grad_(flag)
