"""How a training run is configured: the TrainConfig dataclass, how the recipe's rules
(training/recipe.py) and a loss's requirements fill what the user did not give, and the
validation. ``gan-train --help`` shows these defaults (:func:`describe_default`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from training import losses as L
from training import recipe
from training.augment import parse_policy
from training.budget import check_minutes
from training.config import MODEL_KINDS, ModelConfig, from_known_keys
from training.errors import UserError
from training.recipe import Facts


@dataclass
class TrainConfig:
    """How a run trains. Written to ``config.json["train"]``; model shape lives in ModelConfig."""

    model: str = "dcgan"
    dataset: str = "digits"
    data_root: str | None = None
    resolution: int = 32
    seed: int = 0
    kimg: float = 50.0
    epochs: int | None = None  # when set, overrides kimg
    minutes: float | None = None  # wall-time budget: the run plans kimg itself (training/budget.py)
    batch_size: int = 64
    lr: float = 2e-4  # generator learning rate
    lr_d: float | None = None  # discriminator learning rate (None: same as lr)
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"  # bce | hinge | wgan-gp
    n_critic: int = 1  # D steps per G step (WGAN-GP uses 5)
    gp_weight: float = 10.0
    r1_gamma: float = 0.0  # R1 weight (0: off)
    r1_every: int = 16  # lazy regularisation interval
    label_smoothing: float = 0.0  # one-sided: real target 1 - s
    instance_noise: float = 0.0  # sigma at step 0, annealed linearly to 0 by the last step
    augment: str = ""  # DiffAugment policies for D's inputs, e.g. "translation,cutout"
    xflip: bool = False  # random left-right flips of D's inputs (off: digits are not symmetric)
    ada_target: float = 0.0  # ADA: target of E[sign(D(real))] that steers p (0: off; paper 0.6)
    ada_kimg: float | None = None  # ADA: kimg for p to go 0 -> 1 (None: 1/10 of the run)
    mode_seeking: float = 0.0  # weight of the mode-seeking term in G's loss (MSGAN; 0: off)
    code_weight: float = 0.5  # InfoGAN code loss weight (dcgan --latent-code; digits: 0.5 > 1, 0.3)
    ema_kimg: float = 10.0  # half-life of the EMA generator in thousands of images
    ema_rampup: float | None = 0.05  # half-life <= rampup * images seen (fast start)
    style_mixing: float = 0.9  # StyleGAN-lite style-mixing probability
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool = False
    sample_every: int = 100
    ckpt_every: int = 250
    eval_every: int = 0  # 0: no evaluation
    log_every: int = 10
    keep: int = 3
    num_workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return from_known_keys(cls, d, "train")

    def total_steps(self, dataset_size: int) -> int:
        """Training length in G steps, from ``epochs`` if set, else from ``kimg``."""
        batches_per_epoch = dataset_size // self.batch_size
        if self.epochs is not None:
            batches = self.epochs * batches_per_epoch
        else:
            batches = math.ceil(self.kimg * 1000 / self.batch_size)
        return max(1, batches // self.n_critic)


LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    # The critic must not normalise across the batch: the gradient penalty is per sample.
    "wgan-gp": {"n_critic": 5, "d_norm": "none", "beta1": 0.0, "beta2": 0.9, "lr": 1e-4},
}
MODEL_FIELDS = ("g_width", "d_width", "latent_dim", "max_width", "w_dim", "mapping_layers")
MODEL_FIELDS += ("d_norm", "spectral_norm", "g_cond", "latent_code")
# Settings a resumed run may change: they do not alter the trajectory of the weights.
RESUMABLE_OVERRIDES = {
    "kimg",
    "epochs",
    "minutes",
    "device",
    "sample_every",
    "ckpt_every",
    "eval_every",
    "log_every",
    "keep",
    "num_workers",
    "data_root",
}


def resolve_options(
    options: dict[str, Any], world: int = 1, facts: Facts | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """Turn user options (None = not given) into a TrainConfig and ModelConfig keyword arguments:
    the recipe's rules (training/recipe.py) for what the user did not give, then the loss's
    requirements. ``facts`` default to those of the dataset the options name."""
    cfg, model_kwargs, _ = resolve_with_recipe(options, world, facts)
    return cfg, model_kwargs


def resolve_with_recipe(
    options: dict[str, Any], world: int = 1, facts: Facts | None = None
) -> tuple[TrainConfig, dict[str, Any], dict[str, Any]]:
    """:func:`resolve_options` and the record of where each chosen setting came from
    (``config.json["recipe"]``: the facts, and per setting its value and ``given``, ``loss``
    or the rule that chose it)."""
    given = {k: v for k, v in options.items() if v is not None}
    check_minutes(given.get("minutes"), given.get("kimg"), given.get("epochs"))
    model = given.get("model", "dcgan")
    if model not in MODEL_KINDS:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KINDS)}")
    if facts is None:
        facts = facts_for(given)
    chosen = recipe.choose(facts)
    merged: dict[str, Any] = {k: c.value for k, c in chosen.items()}
    sources = {k: c.rule for k, c in chosen.items()}
    loss = given.get("loss", "bce")
    for k, v in LOSS_DEFAULTS.get(loss, {}).items():
        merged[k], sources[k] = v, f"--loss {loss}"
    merged.update(given)
    sources.update({k: "given" for k in given})
    if "batch_size" not in given and merged.get("batch_size", 0) % max(world, 1):
        # The rule's batch is global: every process takes an equal share of it.
        merged["batch_size"] = world * math.ceil(merged["batch_size"] / world)
        sources["batch_size"] += f", rounded up to a multiple of {world} processes"
    batch = merged.get("batch_size", TrainConfig.batch_size) // max(world, 1)
    if "mode_seeking" not in given and merged.get("mode_seeking") and batch % 2:
        # Mode seeking pairs the batch; an odd batch (the user's) turns the rule off.
        merged["mode_seeking"], sources["mode_seeking"] = 0.0, "odd batch per process: off"
    model_kwargs = {k: merged.pop(k) for k in MODEL_FIELDS if k in merged}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(merged) - train_fields
    if unknown:
        raise UserError(f"unknown options {sorted(unknown)}")
    cfg = TrainConfig(**merged)
    validate_train_config(cfg, world)
    if "code_weight" in given and not model_kwargs.get("latent_code"):
        raise UserError(
            f"--code-weight {cfg.code_weight} weighs the loss of a latent code; this run has "
            "none: add --latent-code K (dcgan)"
        )
    if cfg.loss == "wgan-gp" and model_kwargs.get("d_norm") == "batch" and model != "stylegan":
        raise UserError(
            "--loss wgan-gp penalises each sample's gradient, which BatchNorm in the critic "
            "mixes across the batch; use --d-norm none (the default with wgan-gp)"
        )
    values = {**cfg.to_dict(), **model_kwargs}
    record = {
        "facts": facts.describe(),
        "settings": {
            k: {"value": values.get(k), "from": sources[k]} for k in sorted(sources) if k in values
        },
    }
    return cfg, model_kwargs, record


def facts_for(options: dict[str, Any], dataset: Any = None) -> Facts:
    """The recipe's facts for these (given) options: the training split of their dataset (loaded
    unless ``dataset`` is passed), the family and the device."""
    if dataset is None:
        from training.datasets import load_dataset

        dataset = load_dataset(
            options.get("dataset", TrainConfig.dataset),
            options.get("resolution", TrainConfig.resolution),
            "train",
            options.get("data_root"),
        )
    device = recipe.resolve_device(options.get("device", "auto"))
    return Facts(
        family=options.get("model", "dcgan"),
        images=len(dataset),
        resolution=dataset.resolution,
        channels=dataset.channels,
        classes=dataset.num_classes,
        device=device,
        bf16=recipe.native_bf16(device),
    )


def validate_train_config(cfg: TrainConfig, world: int = 1) -> None:
    """Refuse settings that cannot train; ``world`` is the number of processes (torchrun)."""
    L.get_loss(cfg.loss)
    parse_policy(cfg.augment)
    check_minutes(cfg.minutes, None, None)
    checks = [
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        (cfg.kimg > 0, f"--kimg must be > 0, got {cfg.kimg}"),
        (cfg.epochs is None or cfg.epochs >= 1, f"--epochs must be >= 1, got {cfg.epochs}"),
        (cfg.lr > 0 and (cfg.lr_d is None or cfg.lr_d > 0), "learning rates must be > 0"),
        (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "Adam betas must be in [0, 1)"),
        (cfg.n_critic >= 1, f"--n-critic must be >= 1, got {cfg.n_critic}"),
        (0 <= cfg.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (cfg.instance_noise >= 0, "--instance-noise must be >= 0"),
        (0 <= cfg.ada_target < 1, f"--ada-target must be in [0, 1), got {cfg.ada_target}"),
        (cfg.ada_kimg is None or cfg.ada_kimg > 0, f"--ada-kimg must be > 0, got {cfg.ada_kimg}"),
        (cfg.mode_seeking >= 0, f"--mode-seeking must be >= 0, got {cfg.mode_seeking}"),
        (
            cfg.mode_seeking == 0 or (cfg.batch_size // world) % 2 == 0,
            f"--mode-seeking pairs each process's batch: use a --batch-size that is an even "
            f"multiple of the world size {world}, not {cfg.batch_size}"
            if world > 1
            else f"--mode-seeking pairs the batch: use an even --batch-size, not {cfg.batch_size}",
        ),
        (cfg.code_weight >= 0, f"--code-weight must be >= 0, got {cfg.code_weight}"),
        (cfg.r1_gamma >= 0 and cfg.r1_every >= 1, "--r1-gamma must be >= 0, --r1-every >= 1"),
        (0 <= cfg.style_mixing <= 1, "--style-mixing must be in [0, 1]"),
        (cfg.ema_kimg >= 0, "--ema-kimg must be >= 0"),
        (cfg.device in ("auto", "cpu", "cuda"), f"--device {cfg.device!r}: use auto, cpu or cuda"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision: use auto, fp32 or bf16"),
        (min(cfg.sample_every, cfg.ckpt_every, cfg.log_every) >= 1, "intervals must be >= 1"),
        (cfg.eval_every >= 0 and cfg.keep >= 1, "--eval-every must be >= 0, --keep >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def describe_default(name: str) -> str:
    """``--help`` text for an option's default: ``by the recipe`` for the settings its rules
    choose (training/recipe.py), else the TrainConfig/ModelConfig default (and a loss's)."""
    if name in recipe.SETTINGS:
        return "default: the recipe's rule"
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fields.update({f.name: f for f in dataclasses.fields(ModelConfig) if f.name in MODEL_FIELDS})
    f = fields[name]
    base = f.default if f.default is not dataclasses.MISSING else None
    parts = [f"default {_show(base)}"]
    for key, values in LOSS_DEFAULTS.items():
        if name in values and values[name] != base:
            parts.append(f"{key} {_show(values[name])}")
    return "; ".join(parts)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "off"
    return str(value)
