"""Model families. ``build_models(cfg)`` returns a fresh (generator, discriminator) pair.

Call signatures (the contract export relies on):
- dcgan:    G(z) -> image;         D(image) -> logit [N]
- cgan:     G(z, label) -> image;  D(image, label) -> logit [N]     (label: int64 [N])
- stylegan: G.mapping(z[, label]) -> w [N, w_dim]; G.synthesis(ws [N, num_ws, w_dim]) -> image;
            G(z[, label]) = synthesis(broadcast(mapping(z))); D(image[, label]) -> logit [N]
Images are [N, C, R, R] float32 in [-1, 1].
"""

from __future__ import annotations

from torch import nn

from training.config import ModelConfig
from training.models.dcgan import (
    CBNGenerator,
    CGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    ProjectionDiscriminator,
    init_dcgan_weights,
)
from training.models.stylegan import StyleGANDiscriminator, StyleGANGenerator, style_ranges

__all__ = ["build_models", "build_generator", "build_discriminator", "style_ranges"]


def build_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "dcgan":
        g = DCGANGenerator(cfg)
    elif cfg.kind == "cgan":
        g = CBNGenerator(cfg) if cfg.g_cond.startswith("cbn") else CGANGenerator(cfg)
    else:
        return StyleGANGenerator(cfg)
    g.apply(init_dcgan_weights)
    return g


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "dcgan":
        d = DCGANDiscriminator(cfg)
    elif cfg.kind == "cgan":
        d = ProjectionDiscriminator(cfg)
    else:
        return StyleGANDiscriminator(cfg)
    d.apply(init_dcgan_weights)
    return d


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    return build_generator(cfg), build_discriminator(cfg)
