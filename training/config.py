"""Typed configuration for models and training runs, written as JSON beside what they produce."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import UserError

MODEL_KINDS = ("dcgan", "cgan", "stylegan")
MIN_RESOLUTION, MAX_RESOLUTION = 16, 128
G_COND = ("concat", "cbn", "cbn+concat")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a generator/discriminator pair."""

    kind: str
    resolution: int = 32
    channels: int = 1
    latent_dim: int = 100
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    # Width of the generator / discriminator at their widest high-resolution layer
    # (pytorch/examples' ngf / ndf); lower resolutions double it up to max_width.
    g_width: int = 64
    d_width: int = 64
    max_width: int = 512
    # cgan only: how G takes the label. "concat": an embedding concatenated to z; "cbn":
    # class-conditional BatchNorm (per-class gain and bias after every normalisation).
    g_cond: str = "concat"
    # dcgan and unconditional stylegan: an InfoGAN categorical code (Chen et al. 2016) of this
    # many values, read from z itself (the argmax of its first latent_code components, so seeds
    # and truncation keep meaning and the exported graphs stay generator(z) / mapping(z)); D gets
    # a head that must recover it.
    latent_code: int = 0
    # StyleGAN-lite only.
    w_dim: int = 128
    mapping_layers: int = 4
    # Discriminator options.
    d_norm: str = "batch"  # batch | none  (WGAN-GP wants none)
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        validate_model_config(self)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def log2_res(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_ws(self) -> int:
        """Number of style vectors the StyleGAN-lite synthesis network consumes."""
        return 2 * self.log2_res - 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return from_known_keys(cls, d, "model")


def from_known_keys(cls, d: dict[str, Any], what: str):
    """Build dataclass ``cls`` from ``d``, refusing keys it does not have (a typo in a config
    file must not be silently dropped)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise UserError(f"unknown {what} config keys {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**d)


def validate_model_config(cfg: ModelConfig) -> None:
    if cfg.kind not in MODEL_KINDS:
        raise UserError(f"unknown model {cfg.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    r = cfg.resolution
    if not isinstance(r, int) or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise UserError(
            f"resolution {r!r} is not allowed; use a power of two from "
            f"{MIN_RESOLUTION} to {MAX_RESOLUTION} (16, 32, 64, 128)"
        )
    if cfg.channels not in (1, 3):
        raise UserError(f"channels {cfg.channels!r} not supported; use 1 or 3")
    if cfg.latent_dim < 1:
        raise UserError(f"latent_dim must be >= 1, got {cfg.latent_dim}")
    if cfg.kind == "cgan" and cfg.num_classes < 2:
        raise UserError(
            "model 'cgan' needs a dataset with at least 2 classes "
            f"(this one has {cfg.num_classes}); use dcgan or stylegan instead"
        )
    if cfg.class_names and len(cfg.class_names) != cfg.num_classes:
        raise UserError(f"{len(cfg.class_names)} class names given for {cfg.num_classes} classes")
    for name in ("g_width", "d_width", "max_width", "w_dim", "mapping_layers"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.latent_code and (
        cfg.kind == "cgan" or cfg.conditional or not 2 <= cfg.latent_code <= cfg.latent_dim
    ):
        raise UserError(
            f"latent_code {cfg.latent_code!r} not allowed: it is an option of the unconditional "
            f"dcgan and stylegan, from 2 to latent_dim ({cfg.latent_dim}) values, or 0 for none"
        )
    if cfg.g_cond not in G_COND:
        raise UserError(f"g_cond {cfg.g_cond!r} not allowed; use {' or '.join(map(repr, G_COND))}")
    if cfg.d_norm not in ("batch", "none"):
        raise UserError(f"d_norm {cfg.d_norm!r} not allowed; use 'batch' or 'none'")


def write_json_atomic(path: Path, data: Any, default: Any = None) -> None:
    """Write JSON via a temp file + rename so readers never see half a file (``default`` as in
    :func:`json.dump`, for values JSON has no type for)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
