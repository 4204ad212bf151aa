"""StyleGAN-lite: a small StyleGAN2 (Karras et al. 2020).

Mapping z(+class) -> w with a tracked ``w_avg``; synthesis from a learned constant with one style
vector per layer (``ws: [N, num_ws, w_dim]``); modulated + demodulated convolutions in the
*unfused* form (scale activations by the style, shared weight, demodulate the output) so the graph
exports with a dynamic batch; explicit noise inputs (constant buffers when none are given); toRGB
skips. The discriminator is a small residual-free StyleGAN2 D with minibatch-stddev.

Nothing random inside ``forward``: training draws noise with :meth:`SynthesisNetwork.sample_noise`
and passes it in; truncation and style mixing happen outside the graphs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.models.code import latent_code

SQRT2 = math.sqrt(2.0)


def _width(cfg: ModelConfig, base: int, res: int) -> int:
    return min(cfg.max_width, base * cfg.resolution // res)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_f,), float(bias_init)))
        self.w_gain = lr_mul / math.sqrt(in_f)
        self.b_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.w_gain, self.bias * self.b_gain)


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate; with ``activate``, followed by lrelu(0.2) * sqrt(2).

    The activation's gain is folded into the weight and bias (lrelu(c*y) = c*lrelu(y) for c > 0):
    a multiply of the small weight instead of the whole activation, forward and backward."""

    def __init__(self, in_c: int, out_c: int, k: int, bias: bool = True, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_c, in_c, k, k))
        self.bias = nn.Parameter(torch.zeros(out_c)) if bias else None
        self.activate = activate
        self.gain = (SQRT2 if activate else 1.0) / math.sqrt(in_c * k * k)
        self.padding = k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and self.activate:
            bias = bias * SQRT2
        x = F.conv2d(x, self.weight * self.gain, bias, padding=self.padding)
        return F.leaky_relu(x, 0.2) if self.activate else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ label [N]) -> w [N, w_dim]. ``w_avg`` is tracked by the training loop."""

    def __init__(self, cfg: ModelConfig, lr_mul: float = 0.01):
        super().__init__()
        self.cfg = cfg
        self.embed = EqualLinear(cfg.num_classes, cfg.w_dim) if cfg.conditional else None
        # With cfg.latent_code, the code read from z is embedded like a class label.
        self.code_embed = EqualLinear(cfg.latent_code, cfg.w_dim) if cfg.latent_code else None
        extra = self.embed is not None or self.code_embed is not None
        in_f = cfg.latent_dim + (cfg.w_dim if extra else 0)
        layers = []
        for i in range(cfg.mapping_layers):
            layers.append(EqualLinear(in_f if i == 0 else cfg.w_dim, cfg.w_dim, lr_mul=lr_mul))
        self.layers = nn.ModuleList(layers)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            assert label is not None, "conditional mapping needs a label"
            onehot = F.one_hot(label, self.cfg.num_classes).to(z.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.embed(onehot))], dim=1)
        elif self.code_embed is not None:
            code = latent_code(z, self.cfg.latent_code)
            onehot = F.one_hot(code, self.cfg.latent_code).to(z.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.code_embed(onehot))], dim=1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * SQRT2
        return x

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor, beta: float = 0.995) -> None:
        self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, beta))


class ModulatedConv(nn.Module):
    """Style-modulated conv, unfused: x*s -> conv(shared weight) -> demodulate per sample.

    ``up``: the input is upsampled 2x (bilinear) first. Both are linear and per channel, so the
    style multiplies the input before the upsampling, on a quarter of the elements. ``out_gain``
    scales the output (folded into the per-sample demodulation, a small tensor)."""

    def __init__(self, in_c: int, out_c: int, k: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_c, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_c, in_c, k, k))
        self.gain = 1.0 / math.sqrt(in_c * k * k)
        self.demodulate = demodulate
        self.padding = k // 2

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        up: bool = False,
        out_gain: float = 1.0,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``out_gain`` and ``bias`` [out_c] go with the demodulation (StyleLayer's convs): the
        gain into the per-sample scale, the bias added in the same pass (addcmul)."""
        s = self.affine(w)  # [N, in_c]
        weight = self.weight * self.gain
        x = x * s[:, :, None, None]
        if up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.conv2d(x, weight, padding=self.padding)
        if not self.demodulate:  # ToRGB, which adds its own bias
            assert out_gain == 1.0 and bias is None, "out_gain/bias need demodulate=True"
            return x
        # sigma[n, o] = sqrt(sum_{i,k} (W[o,i,k] s[n,i])^2)
        wsq = weight.square().sum(dim=(2, 3))  # [out, in]
        d = (s.square() @ wsq.t() + 1e-8).rsqrt() * out_gain  # [N, out]
        d = d.to(x.dtype)[:, :, None, None]
        if bias is None:
            return x * d
        return torch.addcmul(bias.to(x.dtype)[None, :, None, None], x, d)


class StyleLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu, optionally upsampling its input first."""

    def __init__(self, in_c: int, out_c: int, w_dim: int, res: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = ModulatedConv(in_c, out_c, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_c))
        # The constant noise used whenever no noise is passed in (export, serving, evaluation).
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))
        self.res = res

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        # lrelu(0.2) * sqrt(2) of (conv + noise + bias), the gain folded into the three terms
        # (lrelu(c*y) = c*lrelu(y), c > 0): no multiply of the whole activation.
        x = self.conv(x, w, up=self.up, out_gain=SQRT2, bias=self.bias * SQRT2)
        n = self.noise_const if noise is None else noise
        # In the conv's dtype (bf16 under autocast): fp32 noise would promote the whole
        # activation to fp32 here and cost a cast back at the next conv.
        return F.leaky_relu(x + (n * (self.noise_strength * SQRT2)).to(x.dtype), 0.2)


class ToRGB(nn.Module):
    def __init__(self, in_c: int, out_c: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(in_c, out_c, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_c))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] (+ optional per-layer noise) -> image [N, C, R, R].

    Style index layout (num_ws = 2*log2(R) - 2): 4x4 conv uses ws[0] and its toRGB ws[1]; each
    block at resolution r uses ws[i] for its upsampling conv, ws[i+1] for its second conv and
    ws[i+2] for its toRGB, the toRGB style shared with the next block's first conv (StyleGAN2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        c4 = _width(cfg, cfg.g_width, 4)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        layers = [StyleLayer(c4, c4, cfg.w_dim, 4, up=False)]
        torgbs = [ToRGB(c4, cfg.channels, cfg.w_dim)]
        c = c4
        res = 4
        while res < cfg.resolution:
            res *= 2
            c_next = _width(cfg, cfg.g_width, res)
            layers.append(StyleLayer(c, c_next, cfg.w_dim, res, up=True))
            layers.append(StyleLayer(c_next, c_next, cfg.w_dim, res, up=False))
            torgbs.append(ToRGB(c_next, cfg.channels, cfg.w_dim))
            c = c_next
        self.layers = nn.ModuleList(layers)
        self.torgbs = nn.ModuleList(torgbs)

    def sample_noise(
        self, batch: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Fresh per-layer noise for training (the only place StyleGAN-lite draws randomness)."""
        dev = self.const.device
        return [
            torch.randn(batch, 1, layer.res, layer.res, device=dev, generator=generator)
            for layer in self.layers
        ]

    def forward(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        n = ws.shape[0]
        x = self.const[None].expand(n, -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], None if noise is None else noise[0])
        img = self.torgbs[0](x, ws[:, 1])
        wi = 1
        for b in range(1, len(self.torgbs)):
            l0, l1 = self.layers[2 * b - 1], self.layers[2 * b]
            x = l0(x, ws[:, wi], None if noise is None else noise[2 * b - 1])
            x = l1(x, ws[:, wi + 1], None if noise is None else noise[2 * b])
            img = F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False)
            img = img + self.torgbs[b](x, ws[:, wi + 2])
            wi += 2
        return img


def style_ranges(num_ws: int) -> dict[str, list[int]]:
    """Named coarse/middle/fine layer ranges [start, stop) splitting the ws in three (NVlabs calls
    4-8px coarse, 16-32px middle, 64px+ fine; at our small resolutions thirds keep all three)."""
    a = max(1, round(num_ws / 3))
    b = max(a + 1, round(2 * num_ws / 3))
    return {"coarse": [0, a], "middle": [a, b], "fine": [b, num_ws]}


class StyleGANGenerator(nn.Module):
    """G = mapping + synthesis. ``forward(z, label)`` broadcasts one w to all layers (no
    truncation); training composes mapping/synthesis itself for style mixing and noise."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = cfg.num_ws

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mapping(z, label)
        return self.synthesis(w[:, None, :].expand(-1, self.num_ws, -1))


class MinibatchStd(nn.Module):
    """Appends the std of features across a group of samples as one extra channel.

    For serving, a sample's score must not depend on the other samples in its batch: call
    :meth:`freeze` with the mean statistic seen on generated batches and the layer appends that
    constant instead (what the exported discriminator does)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size
        self.frozen = False
        self.register_buffer("frozen_value", torch.zeros([]))

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        # The variance over the group written out: aten's var along dim 0 took 8 ms a call here
        # (CPU, bf16), a tenth of a StyleGAN-lite training step's three D passes.
        y = x.reshape(g, -1, c, h, w).float()
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt()
        return y.mean(dim=(1, 2, 3)).repeat(g)  # [n]

    @torch.no_grad()
    def freeze(self, value: float) -> None:
        self.frozen_value.fill_(float(value))
        self.frozen = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.frozen:
            s = self.frozen_value.expand(n, 1, h, w)
        else:
            s = self.statistic(x)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, s.to(x.dtype)], dim=1)


class StyleGANDiscriminator(nn.Module):
    """image (+ label) -> logit [N]. fromRGB, conv blocks with average-pool downsampling,
    minibatch-stddev at 4x4, then fc layers; projection conditioning when the model has classes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        res = cfg.resolution
        c = _width(cfg, cfg.d_width, res)
        self.from_rgb = EqualConv2d(cfg.channels, c, 1, activate=True)
        blocks = []
        while res > 4:
            c_next = _width(cfg, cfg.d_width, res // 2)
            blocks.append(
                nn.ModuleList(
                    [EqualConv2d(c, c, 3, activate=True), EqualConv2d(c, c_next, 3, activate=True)]
                )
            )
            c, res = c_next, res // 2
        self.blocks = nn.ModuleList(blocks)
        self.mbstd = MinibatchStd()
        self.conv4 = EqualConv2d(c + 1, c, 3, activate=True)
        self.fc = EqualLinear(c * 16, c)
        self.out = EqualLinear(c, 1)
        self.embed = EqualLinear(cfg.num_classes, c) if cfg.conditional else None
        # InfoGAN's Q: the code's logits from D's features (only with cfg.latent_code).
        self.code_head = EqualLinear(c, cfg.latent_code) if cfg.latent_code else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.from_rgb(x)
        for conv0, conv1 in self.blocks:
            x = F.avg_pool2d(conv1(conv0(x)), 2)
        x = self.mbstd(x)
        x = self.conv4(x)
        return F.leaky_relu(self.fc(x.flatten(1)), 0.2) * SQRT2

    def forward_with_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit [N], code logits [N, latent_code]) from one pass (unconditional D only)."""
        h = self.features(x)
        return self.out(h).squeeze(1), self.code_head(h)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            assert label is not None, "conditional discriminator needs a label"
            onehot = F.one_hot(label, self.cfg.num_classes).to(h.dtype)
            logit = logit + (self.embed(onehot) * h).sum(1) / math.sqrt(h.shape[1])
        return logit
