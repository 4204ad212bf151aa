"""``gan-export import``: a generator trained elsewhere becomes a ganforge bundle.

Three sources:

- a pytorch/examples DCGAN state dict (``netG_epoch_N.pth``, optionally ``netD_epoch_N.pth``):
  the network is rebuilt (:mod:`export.tutorial_dcgan`) and exported like a ganforge run;
- a TorchScript generator (``.ts``) and an ONNX generator (``.onnx``) with a declared
  :class:`Signature` (kind, latent size, classes, value range, layout), optionally with a
  discriminator of the same format.

Whatever the source, the bundle's graphs speak the bundle contract: ``generator(z [N, latent]
float32[, label [N] int64]) -> image [N, C, R, R]`` in [-1, 1], ``discriminator(image[, label]) ->
logit [N]``. A source that differs (z as ``[N, latent, 1, 1]``, int32 labels, NHWC output, a
[0, 1] range, a logit ``[N, 1]``, a final Sigmoid) is wrapped by exact adapters, and parity checks
that the wrapped graphs equal the source. Everything that can be checked is checked before
anything is written; the bundle is written into a temp folder and renamed at the end, as an export.

This module holds what every source shares (the declaration, the checks, the manifest, the
atomic write); :mod:`export.import_torch` and :mod:`export.import_onnx` read the sources.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.exporter import (
    PARITY_TOL,
)
from gancore import sampling
from gancore.errors import ExportError

KINDS = ("dcgan", "cgan")
LAYOUTS = ("nchw", "nhwc")
SOURCES = {".pth": "state_dict", ".pt": "state_dict", ".onnx": "onnx", ".ts": "torchscript"}
PROBE_SEEDS = range(16)  # sample latents every import runs before writing anything
RANGE_SLACK = 1e-3  # of the declared range's width: float rounding at the ends is not a mismatch

log = logging.getLogger(__name__)


@dataclass
class Signature:
    """What an ONNX or TorchScript generator takes and returns, as the user declares it."""

    kind: str
    latent_dim: int
    class_names: list[str] = field(default_factory=list)
    value_range: tuple[float, float] = (-1.0, 1.0)
    layout: str = "nchw"

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ExportError(f"--kind {self.kind!r} cannot be imported; choose from {KINDS}")
        if isinstance(self.latent_dim, bool) or not int(self.latent_dim) >= 1:
            raise ExportError(f"--latent-dim must be a positive integer, got {self.latent_dim!r}")
        if self.kind == "cgan" and len(self.class_names) < 2:
            raise ExportError("--kind cgan needs its classes: --classes a,b,c or --num-classes K")
        if self.kind == "dcgan" and self.class_names:
            raise ExportError("--classes / --num-classes are for --kind cgan")
        if len(set(self.class_names)) != len(self.class_names):
            raise ExportError(f"class names must be distinct, got {self.class_names}")
        lo, hi = self.value_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ExportError(f"--range must be LO,HI with LO < HI, got {lo:g},{hi:g}")
        if self.layout not in LAYOUTS:
            raise ExportError(f"--layout {self.layout!r} unknown; choose from {LAYOUTS}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "latent_dim": int(self.latent_dim),
            "class_names": list(self.class_names),
            "range": [float(v) for v in self.value_range],
            "layout": self.layout,
        }


def parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ExportError(f"--range must be LO,HI (e.g. -1,1 or 0,1), got {text!r}") from None
    return lo, hi


def class_names(classes: str | None, num_classes: int | None) -> list[str]:
    """``--classes a,b,c`` or ``--num-classes K`` (named "0".."K-1")."""
    if classes and num_classes is not None:
        raise ExportError("give --classes or --num-classes, not both")
    if classes:
        return [c.strip() for c in classes.split(",")]
    if num_classes is not None:
        if num_classes < 2:
            raise ExportError(f"--num-classes must be at least 2, got {num_classes}")
        return [str(i) for i in range(num_classes)]
    return []


# -- what a file is ------------------------------------------------------------------------------
def source_format(path: str | Path, what: str = "generator") -> str:
    """``state_dict``, ``torchscript`` or ``onnx`` from the extension, refusing a file whose
    contents are something else."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} file {str(path)!r} does not exist")
    fmt = SOURCES.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(
            f"{what} {path.name!r}: unknown extension {path.suffix!r}; expected .pth "
            "(pytorch/examples DCGAN state dict), .ts (TorchScript) or .onnx"
        )
    archive = zipfile.is_zipfile(path)  # torch.save and torch.jit.save both write zip archives
    scripted = archive and _is_torchscript(path)
    found = "a TorchScript module" if scripted else "a PyTorch archive" if archive else None
    if fmt == "onnx" and archive:
        raise ExportError(f"{what} {path.name!r} is {found}, not an ONNX model")
    if fmt == "torchscript" and not scripted:
        raise ExportError(
            f"{what} {path.name!r} is not a TorchScript module (torch.jit.save writes one; "
            f"found {found or 'no PyTorch archive'})"
        )
    if fmt == "state_dict" and scripted:
        raise ExportError(
            f"{what} {path.name!r} is a TorchScript module, not a state dict: name it .ts and "
            "declare its signature (--kind, --latent-dim)"
        )
    return fmt


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


# -- the checks every source goes through --------------------------------------------------------
def probe_latents(latent_dim: int, num_classes: int, seeds=PROBE_SEEDS):
    z = sampling.z_from_seeds(list(seeds), latent_dim)
    lab = sampling.labels_for_seeds(list(seeds), num_classes)
    return z, lab


def check_images(what: str, images: np.ndarray, n: int, declared=(-1.0, 1.0)) -> None:
    """Images of ``n`` sample latents, after the adapters: ``[n, C, R, R]`` with C in (1, 3),
    finite, in [-1, 1]; a value outside is reported in the generator's ``declared`` range."""
    shape = list(images.shape)
    if images.ndim != 4 or images.shape[0] != n:
        raise ExportError(f"{what} returned shape {shape} for {n} latents, expected [{n}, C, H, W]")
    if images.shape[1] not in (1, 3):
        raise ExportError(
            f"{what} returned {images.shape[1]} channels (shape {shape}); expected 1 or 3 "
            "(wrong --layout?)"
        )
    if images.shape[2] != images.shape[3]:
        raise ExportError(f"{what} returned {shape}: the image must be square (wrong --layout?)")
    bad = ~np.isfinite(images)
    if bad.any():
        raise ExportError(
            f"{what} returned {int(bad.sum())} NaN or infinite values for {n} sample latents; "
            "a generator's images must be finite"
        )
    lo, hi = declared
    found = [(float(v) + 1.0) / 2.0 * (hi - lo) + lo for v in (images.min(), images.max())]
    if images.min() < -1.0 - 2 * RANGE_SLACK or images.max() > 1.0 + 2 * RANGE_SLACK:
        raise ExportError(
            f"{what} returned values in [{found[0]:.4g}, {found[1]:.4g}] for {n} sample latents, "
            f"outside the declared range [{lo:g}, {hi:g}]: pass the generator's real --range"
        )
    if images.min() >= 0.0 and (lo, hi) == (-1.0, 1.0):
        log.warning(
            f"{what}: every value is in [{found[0]:.3g}, {found[1]:.3g}] for {n} sample latents; "
            "if it outputs [0, 1], pass --range 0,1 (served images would be too bright)"
        )


def check_logits(what: str, logits: np.ndarray, n: int) -> None:
    if logits.shape != (n,):
        raise ExportError(
            f"{what} returned shape {list(logits.shape)} for {n} images, expected [{n}]"
        )
    if not np.all(np.isfinite(logits)):
        raise ExportError(f"{what} returned NaN or infinite logits for generated images")


def first_line(e: Exception) -> str:
    """The last line of an exception's message (where torch and ONNX put the reason), capped."""
    text = str(e).strip()
    return (text.splitlines()[-1] if text else type(e).__name__)[:300]


def io_entry(entry) -> dict[str, Any]:
    """A manifest's input/output entry from ``(name, shape, dtype)``."""
    return {"name": entry[0], "shape": entry[1], "dtype": entry[2]}


def within_tolerance(what: str, against: str, diff: float, batch: int) -> None:
    if not diff <= PARITY_TOL:
        raise ExportError(
            f"parity check failed: {what} differs from {against} by {diff:.3g} at batch {batch} "
            f"(tolerance {PARITY_TOL}); no bundle written"
        )


# -- the bundle ----------------------------------------------------------------------------------
