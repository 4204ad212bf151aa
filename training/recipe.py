"""The default recipe: every setting the user did not give, chosen by a rule from what is known
before training starts (the dataset's size, resolution, channels and classes; the family; the
device), never by the dataset's name. The README's rule table ("Your own data") is this module; the
measurements behind each rule are in docs/training-recipe.md.

``choose(facts)`` returns ``{setting: Choice(value, rule)}``; ``train_config.resolve_options``
puts the user's options on top and ``config.json["recipe"]`` records, per setting, its value and
whether it was ``given`` or which rule chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

# ADA below this many training images: its gains shrink as the data grows (Karras et al. 2020:
# large on 2k-30k FFHQ images, small at 140k); on 8,000 animals it took a 10-minute DCGAN from
# 5.3x to 4.0x the floor. Where D does not overfit, p stays near 0 anyway.
ADA_BELOW_IMAGES = 30_000
# An InfoGAN code gets one value per class up to this many; beyond it a code of this size.
MAX_CODE = 16
# Every setting some rule chooses (``gan-train --help`` says "the recipe's rule" for these).
SETTINGS = ("precision", "channels_last", "g_width", "d_width", "batch_size", "lr", "beta1")
SETTINGS += ("beta2", "r1_gamma")
SETTINGS += ("latent_dim", "instance_noise", "latent_code", "g_cond", "mode_seeking")
SETTINGS += ("ada_target", "eval_every")


@dataclass(frozen=True)
class Facts:
    """What the recipe may look at: known before the first step, never the dataset's name."""

    family: str  # dcgan | cgan | stylegan
    images: int  # training-split size
    resolution: int
    channels: int
    classes: int  # 0 when the data has no labels
    device: str  # cpu | cuda
    bf16: bool  # the device computes bf16 natively (CUDA, or a CPU with AVX512-BF16 / AMX)

    def describe(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Choice(NamedTuple):
    value: Any
    rule: str


def resolve_device(name: str) -> str:
    """``--device``'s value as the device a run trains on: ``auto`` is CUDA when torch sees one."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bf16 natively (else autocast emulates it, slower than fp32)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:  # oneDNN's own test for AVX512-BF16 / AMX; private, so guarded
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose(f: Facts) -> dict[str, Choice]:
    """The rules, in the order of the README's table."""
    r: dict[str, Choice] = {}
    gan = f.family in ("dcgan", "cgan")

    # Speed: bf16 autocast and channels-last where the hardware computes bf16 natively.
    if f.bf16:
        why = f"{f.device} computes bf16 natively: bf16 autocast, channels-last"
        r["precision"] = Choice("bf16", why)
        r["channels_last"] = Choice(True, why)
    else:
        r["precision"] = Choice("fp32", f"{f.device} has no native bf16")
        r["channels_last"] = Choice(False, f"{f.device} has no native bf16")

    # Capacity: as wide as the device trains fast enough to converge in minutes.
    if f.device == "cuda":
        width, why = (64, "cuda: pytorch/examples' 64") if gan else (32, "cuda: 2x the CPU's")
    else:
        width, why = (32, "cpu: half pytorch/examples' 64") if gan else (16, "cpu: 1/4 of 64")
    r["g_width"] = r["d_width"] = Choice(width, why)
    # On a CPU a budget buys few images; twice the updates of half the batch learn more from them.
    if f.device == "cpu":
        r["batch_size"] = Choice(32, "cpu: batch 32 (twice the updates of 64 in a budget)")
    else:
        r["batch_size"] = Choice(64, f"{f.device}: batch 64")

    # Optimiser and regularisers per family.
    if f.family == "stylegan":
        r["lr"] = Choice(4e-3, "stylegan: Adam 4e-3, beta 0 / 0.99")
        r["beta1"] = Choice(0.0, "stylegan: Adam 4e-3, beta 0 / 0.99")
        r["beta2"] = Choice(0.99, "stylegan: Adam 4e-3, beta 0 / 0.99")
        r["r1_gamma"] = Choice(4.0, "stylegan: R1 gamma 4")
        r["latent_dim"] = Choice(128, "stylegan: z of 128")
    else:
        r["lr"] = Choice(5e-4, f"{f.family}: Adam 5e-4, beta 0.5 / 0.999")
        r["instance_noise"] = Choice(0.3, f"{f.family}: instance noise 0.3 annealed to 0")
        r["r1_gamma"] = Choice(1.0, f"{f.family}: R1 gamma 1")

    # Variety: an unconditional generator of labelled data gets an InfoGAN code of one value per
    # class (each class its own region of z, fewer blends); the cGAN is given the class instead.
    if f.family != "cgan":
        if f.classes >= 2:
            k = min(f.classes, MAX_CODE)
            r["latent_code"] = Choice(k, f"labelled data: a code of {k} values (classes, max 16)")
        else:
            r["latent_code"] = Choice(0, "unlabelled data: no code")
    if f.family == "cgan":
        r["g_cond"] = Choice("concat", "cgan: label embedding joined to z")
        r["mode_seeking"] = Choice(0.15, "cgan: mode seeking 0.15 (classes stay varied)")
    elif f.family == "stylegan" and f.classes >= 2:
        r["mode_seeking"] = Choice(0.05, "stylegan with a code: mode seeking 0.05")

    # Augmentation: adaptive (ADA) on small datasets.
    if f.images < ADA_BELOW_IMAGES:
        r["ada_target"] = Choice(
            0.6, f"{f.images:,} images < {ADA_BELOW_IMAGES:,}: ADA, target 0.6"
        )
    else:
        r["ada_target"] = Choice(0.0, f"{f.images:,} images >= {ADA_BELOW_IMAGES:,}: no ADA")

    # Where a run stands: the evaluation classifier needs labels.
    if f.classes >= 2:
        r["eval_every"] = Choice(250, "labelled data: online evaluation (10 per budgeted run)")
    else:
        r["eval_every"] = Choice(0, "unlabelled data: no evaluation classifier")
    return r
