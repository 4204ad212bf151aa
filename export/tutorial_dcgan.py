"""The DCGAN of the PyTorch examples (``pytorch/examples`` ``dcgan/main.py``), rebuilt so that the
``netG_epoch_N.pth`` / ``netD_epoch_N.pth`` state dicts it saves load with their own keys.

Its generator maps z ``[N, nz, 1, 1]`` through five transposed convolutions (4×4 → 64×64; widths
ngf·8, ngf·4, ngf·2, ngf, then nc channels), BatchNorm and ReLU between them, Tanh at the end. Its
discriminator mirrors it with strided convolutions, LeakyReLU(0.2) and BatchNorm (none after the
first), and a final 4×4 convolution to one value and a Sigmoid. The sizes nz, ngf, ndf and nc are
read from the tensors' shapes, never asked for.

In a bundle the generator takes z as ``[N, nz]`` (ganforge's z) and the discriminator returns the
logit ``[N]`` before the Sigmoid (the filters work on logits); the Sigmoid has no weights, so
dropping it changes no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gancore.errors import ExportError

RESOLUTION = 64
SOURCE = "pytorch/examples dcgan/main.py state dict"
# The widths of the four inner feature maps, as multiples of ngf (generator, 4x4 -> 32x32) and
# of ndf (discriminator, 32x32 -> 4x4).
G_MULTIPLES = (8, 4, 2, 1)
D_MULTIPLES = (1, 2, 4, 8)


class TutorialGenerator(nn.Module):
    """z ``[N, nz]`` -> image ``[N, nc, 64, 64]`` in [-1, 1]."""

    def __init__(self, nz: int, ngf: int, nc: int):
        super().__init__()
        self.nz, self.ngf, self.nc = nz, ngf, nc
        widths = [m * ngf for m in G_MULTIPLES]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])


class TutorialDiscriminator(nn.Module):
    """image ``[N, nc, 64, 64]`` -> logit ``[N]`` (the tutorial's output before its Sigmoid)."""

    def __init__(self, ndf: int, nc: int):
        super().__init__()
        self.ndf, self.nc = ndf, nc
        widths = [m * ndf for m in D_MULTIPLES]
        layers: list[nn.Module] = [
            nn.Conv2d(nc, widths[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).reshape(-1)


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save(net.state_dict(), path)`` file (weights only, nothing run)."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"{what} {str(path)!r} is not a PyTorch state dict ({first}); expected the "
            "file torch.save(netG.state_dict(), ...) writes, as dcgan/main.py does"
        ) from None
    if not isinstance(sd, Mapping) or not sd:
        raise ExportError(
            f"{what} {str(path)!r} holds {type(sd).__name__}, not a state dict of tensors"
        )
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ExportError(f"{what} {str(path)!r}: entry {k!r} is not a tensor")
        # nn.DataParallel saves every key under "module."
        out[k.removeprefix("module.")] = v
    return out


def _shape(sd: Mapping[str, torch.Tensor], key: str, rank: int, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise ExportError(
            f"{what} has no key {key!r}: not the pytorch/examples DCGAN (its keys are "
            f"main.0.weight, main.1.weight, ...; this file's first key is {next(iter(sd))!r})"
        )
    shape = tuple(sd[key].shape)
    if len(shape) != rank:
        raise ExportError(
            f"{what}: {key!r} has shape {list(shape)}, expected a rank-{rank} convolution weight"
        )
    return shape


def generator_sizes(sd: Mapping[str, torch.Tensor], what: str = "generator") -> dict[str, int]:
    """nz, ngf and nc from the generator's first and last transposed convolutions."""
    nz, c0, _, _ = _shape(sd, "main.0.weight", 4, what)
    last = f"main.{3 * len(G_MULTIPLES)}.weight"
    _, nc, _, _ = _shape(sd, last, 4, what)
    if c0 % G_MULTIPLES[0]:
        raise ExportError(
            f"{what}: 'main.0.weight' has {c0} output channels, expected ngf x 8 (a multiple of 8)"
        )
    return {"nz": nz, "ngf": c0 // G_MULTIPLES[0], "nc": nc}


def discriminator_sizes(
    sd: Mapping[str, torch.Tensor], what: str = "discriminator"
) -> dict[str, int]:
    """ndf and nc from the discriminator's first convolution."""
    ndf, nc, _, _ = _shape(sd, "main.0.weight", 4, what)
    return {"ndf": ndf, "nc": nc}


def load_into(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``sd`` into ``module`` (eval mode, no grad); the first key or shape that does not
    fit is an ExportError naming it."""
    expected = module.state_dict()
    sizes = ", ".join(
        f"{k}={v}" for k, v in vars(module).items() if k in ("nz", "ngf", "ndf", "nc")
    )
    for key, value in sd.items():
        if key not in expected:
            raise ExportError(
                f"{what}: key {key!r} is not in the pytorch/examples DCGAN ({sizes}); "
                "another architecture?"
            )
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ExportError(
                f"{what}: {key!r} has shape {list(value.shape)}, the pytorch/examples DCGAN "
                f"({sizes}) expects {list(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ExportError(
            f"{what}: key {missing[0]!r} is missing (the pytorch/examples DCGAN with {sizes} "
            f"has {len(expected)} keys, this file {len(sd)})"
        )
    module.load_state_dict(sd)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_generator(path: str | Path) -> TutorialGenerator:
    what = f"generator {Path(path).name}"
    sd = read_state_dict(path, "generator")
    return load_into(TutorialGenerator(**generator_sizes(sd, what)), sd, what)


def load_discriminator(path: str | Path) -> TutorialDiscriminator:
    what = f"discriminator {Path(path).name}"
    sd = read_state_dict(path, "discriminator")
    return load_into(TutorialDiscriminator(**discriminator_sizes(sd, what)), sd, what)
