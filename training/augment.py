"""Differentiable augmentation of every image the discriminator sees (DiffAugment, Zhao et al.
2020): the same random transforms are applied to real and generated images, in the D step and in
the G step, so D cannot memorise a small training set and G still gets gradients through them.

Policies (``--augment translation,cutout``): ``color`` (= brightness, saturation, contrast),
``brightness``, ``saturation``, ``contrast``, ``translation``, ``cutout``. ``xflip`` is separate
(``--xflip``) and off by default: digits are not mirror-symmetric. Every op is a differentiable
function of the image; randomness comes only from the ``torch.Generator`` passed in, so a seeded
run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from training.errors import UserError

Op = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _rand(x: torch.Tensor, gen: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(shape, device=x.device, generator=gen).to(x.dtype)


def brightness(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset per image, uniform in [-0.5, 0.5) (images are in [-1, 1])."""
    return x + (_rand(x, gen, x.shape[0], 1, 1, 1) - 0.5)


def saturation(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's distance from its channel mean by [0, 2) (a no-op for grey images)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, gen, x.shape[0], 1, 1, 1) * 2) + mean


def contrast(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's distance from its mean by [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen, x.shape[0], 1, 1, 1) + 0.5) + mean


def translation(
    x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.125
) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device, generator=gen)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device, generator=gen)
    iy = (torch.arange(h, device=x.device)[None, :, None] + ty + sh).expand(n, h, w)
    ix = (torch.arange(w, device=x.device)[None, None, :] + tx + sw).expand(n, h, w)
    padded = F.pad(x, (sw, sw, sh, sh))
    batch = torch.arange(n, device=x.device)[:, None, None].expand(n, h, w)
    # Advanced indexing: [N, H, W] index grids pick one pixel per output position -> [N, H, W, C].
    return padded.permute(0, 2, 3, 1)[batch, iy, ix].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` times the image size per image, at a random centre."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device, generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device, generator=gen)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2)
    inside &= xs < cx - cw // 2 + cw
    return x * (~inside)[:, None].to(x.dtype)


def xflip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _rand(x, gen, x.shape[0], 1, 1, 1) < 0.5
    return torch.where(flip, x.flip(3), x)


POLICIES: dict[str, tuple[Op, ...]] = {
    "color": (brightness, saturation, contrast),
    "brightness": (brightness,),
    "saturation": (saturation,),
    "contrast": (contrast,),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(text: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ("translation", "cutout"); ``""``/``"none"`` -> ()."""
    if text is None:
        return ()
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise UserError(
            f"unknown augmentation policy {unknown[0]!r} in --augment {text!r}; use a "
            f"comma-separated list of {', '.join(POLICIES)} (or none); x-flip is --xflip"
        )
    if len(set(names)) != len(names):
        raise UserError(f"--augment {text!r} names a policy twice")
    return names


class DiffAugment:
    """``aug(x, gen)``: apply the policies' ops in order (and x-flip first when enabled)."""

    def __init__(self, policy: str | None = "", flip: bool = False):
        self.names = parse_policy(policy)
        self.flip = bool(flip)
        self.ops: list[Op] = [xflip] if self.flip else []
        for name in self.names:
            self.ops.extend(POLICIES[name])

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x.contiguous()


# --- adaptive augmentation (ADA, Karras et al. 2020) ----------------------------------------------
# The ops ADA may apply, each to each image with probability p: the DiffAugment ops above but
# cutout, which leaked at p ~ 1 (a third of a test generator's digits drew its grey square; 5%
# without ADA, 6-7% with these four). ADA's own default set has no cutout either. With
# p < 1 every image also reaches D unaugmented with probability (1 - p)^k, so the augmented
# distribution still determines the clean one and G has no reason to draw augmented images (the
# "non-leaking" condition; the paper measured leaks only from p ~ 0.8 on).
ADA_OPS: tuple[Op, ...] = (translation, brightness, saturation, contrast)
ADA_INTERVAL = 4  # steps between adjustments of p (the paper's 4 minibatches)
# Without --ada-kimg, p can go from 0 to 1 within this fraction of the run's images (the paper:
# 500 kimg, 2% of its 25,000-kimg runs; short runs need p to move within the run).
ADA_RUN_FRACTION = 0.1


class AdaptiveAugment:
    """ADA: each op of ADA_OPS applied to each image with probability ``p``, which is steered
    by D's overfitting signal r_t = E[sign(D(real))] towards ``target`` (the paper: 0.6).

    ``observe(rt)`` takes one step's mean sign (averaged over ranks); every ADA_INTERVAL steps
    p moves by ``sign(mean r_t - target) * images / (speed_kimg * 1000)``, clamped to [0, 1]."""

    def __init__(self, target: float, speed_kimg: float, batch_size: int, p: float = 0.0):
        self.target, self.speed_kimg, self.batch_size = target, speed_kimg, batch_size
        self.p = p
        self._signs: list[float] = []

    def __bool__(self) -> bool:
        return self.target > 0

    def observe(self, rt: float) -> None:
        self._signs.append(rt)
        if len(self._signs) < ADA_INTERVAL:
            return
        mean = sum(self._signs) / len(self._signs)
        step = len(self._signs) * self.batch_size / (self.speed_kimg * 1000)
        direction = (mean > self.target) - (mean < self.target)
        self.p = min(1.0, max(0.0, self.p + direction * step))
        self._signs = []

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.p <= 0:
            return x
        for op in ADA_OPS:
            apply = _rand(x, gen, x.shape[0], 1, 1, 1) < self.p
            x = torch.where(apply, op(x, gen), x)
        return x.contiguous()
