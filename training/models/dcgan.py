"""DCGAN (Radford et al. 2015) and its class-conditional variant with a projection discriminator
(Miyato & Koyama 2018). Nothing random inside ``forward``; no data-dependent control flow."""

from __future__ import annotations

import torch
from torch import nn

from training.config import ModelConfig
from training.models.code import latent_code


def _width(cfg: ModelConfig, base: int, res: int) -> int:
    """Channels at spatial size ``res``: ``base`` just below the output, doubling towards 4x4."""
    return min(cfg.max_width, base * cfg.resolution // (2 * res))


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


class DCGANGenerator(nn.Module):
    """z [N, latent] (+ optional conditioning input) -> image [N, C, R, R] in [-1, 1]."""

    def __init__(self, cfg: ModelConfig, in_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.code_embed = None
        if in_dim is None:
            in_dim = cfg.latent_dim
            if cfg.latent_code:
                self.code_embed = nn.Embedding(cfg.latent_code, cfg.latent_code)
                in_dim += cfg.latent_code
        layers: list[nn.Module] = []
        res = 4
        c = _width(cfg, cfg.g_width, res)
        layers += [
            nn.ConvTranspose2d(in_dim, c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
        ]
        while res * 2 < cfg.resolution:
            res *= 2
            c_next = _width(cfg, cfg.g_width, res)
            layers += [
                nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.ReLU(True),
            ]
            c = c_next
        layers += [nn.ConvTranspose2d(c, cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.code_embed is not None:
            z = torch.cat([z, self.code_embed(latent_code(z, self.cfg.latent_code))], dim=1)
        return self.main(z[:, :, None, None])


class DCGANBody(nn.Module):
    """Strided-conv feature extractor shared by the DCGAN and projection discriminators:
    image [N, C, R, R] -> features [N, c4, 4, 4]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        sn, bn = cfg.spectral_norm, cfg.d_norm == "batch"
        res = cfg.resolution // 2
        c = _width(cfg, cfg.d_width, res)
        layers: list[nn.Module] = [
            _sn(nn.Conv2d(cfg.channels, c, 4, 2, 1, bias=not bn), sn),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        while res > 4:
            res //= 2
            c_next = _width(cfg, cfg.d_width, res)
            layers.append(_sn(nn.Conv2d(c, c_next, 4, 2, 1, bias=not bn), sn))
            if bn:
                layers.append(nn.BatchNorm2d(c_next))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c = c_next
        self.main = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DCGANDiscriminator(nn.Module):
    """image -> logit [N] (no sigmoid: losses work on logits)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.body = DCGANBody(cfg)
        self.head = _sn(
            nn.Conv2d(self.body.out_channels, 1, 4, 1, 0, bias=False), cfg.spectral_norm
        )
        # InfoGAN's Q: the code's logits from D's features (only with cfg.latent_code).
        self.code_head = None
        if cfg.latent_code:
            self.code_head = _sn(
                nn.Conv2d(self.body.out_channels, cfg.latent_code, 4, 1, 0), cfg.spectral_norm
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).flatten(1).squeeze(1)

    def forward_with_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit [N], code logits [N, latent_code]) from one pass through the body."""
        h = self.body(x)
        return self.head(h).flatten(1).squeeze(1), self.code_head(h).flatten(1)


class CGANGenerator(nn.Module):
    """(z [N, latent], label int64 [N]) -> image. The label is embedded and concatenated to z."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_dim = min(50, cfg.latent_dim)
        self.embed = nn.Embedding(cfg.num_classes, self.embed_dim)
        self.net = DCGANGenerator(cfg, in_dim=cfg.latent_dim + self.embed_dim)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(label)], dim=1))


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain and bias (de Vries et al. 2017;
    the generator of Miyato & Koyama 2018): the class steers every layer, not only the input."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        # Identity at init (the DCGAN init of a BatchNorm scale: N(1, 0.02)).
        nn.init.normal_(self.gain.weight, 1.0, 0.02)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return (
            self.norm(x) * self.gain(label)[:, :, None, None] + self.bias(label)[:, :, None, None]
        )


class CBNGenerator(nn.Module):
    """(z [N, latent], label int64 [N]) -> image: the DCGAN generator with class-conditional
    BatchNorm after each transposed convolution (``g_cond="cbn"``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        res = 4
        c = _width(cfg, cfg.g_width, res)
        # "cbn+concat" also joins a label embedding to z (as BigGAN feeds its class embedding
        # to every layer and z): the class shapes the image from the first layer on.
        self.embed = None
        in_dim = cfg.latent_dim
        if cfg.g_cond == "cbn+concat":
            self.embed = nn.Embedding(cfg.num_classes, min(50, cfg.latent_dim))
            in_dim += self.embed.embedding_dim
        convs = [nn.ConvTranspose2d(in_dim, c, 4, 1, 0, bias=False)]
        norms = [ConditionalBatchNorm2d(c, cfg.num_classes)]
        while res * 2 < cfg.resolution:
            res *= 2
            c_next = _width(cfg, cfg.g_width, res)
            convs.append(nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False))
            norms.append(ConditionalBatchNorm2d(c_next, cfg.num_classes))
            c = c_next
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.to_image = nn.ConvTranspose2d(c, cfg.channels, 4, 2, 1, bias=False)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(label)], dim=1)
        x = z[:, :, None, None]
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x), label))
        return torch.tanh(self.to_image(x))


class ProjectionDiscriminator(nn.Module):
    """(image, label) -> logit = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.body = DCGANBody(cfg)
        c = self.body.out_channels
        linear, embed = nn.Linear(c, 1), nn.Embedding(cfg.num_classes, c)
        # DCGAN-scale init: nn.Embedding's default N(0, 1) makes the projection term dominate
        # the logit at step 0 (|logit| ~ 10), so D saturates before G has learnt anything.
        nn.init.normal_(linear.weight, 0.0, 0.02)
        nn.init.zeros_(linear.bias)
        nn.init.normal_(embed.weight, 0.0, 0.02)
        self.linear = _sn(linear, cfg.spectral_norm)
        self.embed = _sn(embed, cfg.spectral_norm)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.body(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(label) * h).sum(dim=1)


def init_dcgan_weights(m: nn.Module) -> None:
    """The DCGAN paper's init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales."""
    name = m.__class__.__name__
    if "Conv" in name and hasattr(m, "weight"):
        # Under spectral norm the stored weight is the parametrization's original.
        if nn.utils.parametrize.is_parametrized(m, "weight"):
            weight = m.parametrizations.weight.original
        else:
            weight = m.weight
        with torch.no_grad():
            nn.init.normal_(weight, 0.0, 0.02)
    elif "BatchNorm" in name and getattr(m, "weight", None) is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
