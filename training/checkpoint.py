"""Checkpoints and run directories.

A run directory (``runs/NAME``) holds ``config.json`` (everything needed to rebuild the models),
``checkpoints/ckpt-STEP.pt`` (the last K kept) and ``checkpoints/best.pt``. A checkpoint is a dict
of tensors and plain values written with ``torch.save`` and read back with
``torch.load(weights_only=True)``: loading never executes pickled code. Writes are atomic (temp
file in the same folder, fsync, rename), so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ModelConfig
from training.errors import CheckpointError, UserError

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
CONFIG_NAME = "config.json"
CKPT_DIR = "checkpoints"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without executing pickled code; a bad file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt and cannot be loaded "
            f"({e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict) or "G_ema" not in state or "step" not in state:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a ganforge checkpoint (missing G_ema/step)"
        )
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints in ``run_dir/checkpoints``, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"ckpt-{step:08d}.pt"


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for p in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise UserError(
            f"run directory {str(run_dir)!r} has no checkpoint in {CKPT_DIR}/ (train first)"
        )
    return ckpts[-1]


def read_run_config(run_dir: Path) -> dict[str, Any]:
    p = Path(run_dir) / CONFIG_NAME
    if not p.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory: {CONFIG_NAME} is missing")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{str(p)!r} is not valid JSON: {e}") from None


@dataclass
class LoadedRun:
    """A trained run ready for evaluation or export: models on CPU in eval mode."""

    run_dir: Path
    checkpoint: Path
    step: int
    config: dict[str, Any]
    model_cfg: ModelConfig
    G_ema: nn.Module
    D: nn.Module


def choose_checkpoint(run_dir: str | Path, which: str = "auto") -> Path:
    """The checkpoint of a run directory that ``which`` names: latest, best, or auto (the best
    when the run's online evaluation kept one, the lowest FD it measured, which late in a run
    swings between evaluations; else the latest)."""
    best = Path(run_dir) / CKPT_DIR / "best.pt"
    if which == "auto":
        which = "best" if best.is_file() else "latest"
    if which == "best":
        if not best.is_file():
            raise UserError(
                f"run {str(run_dir)!r} has no best checkpoint ({best.name}); use latest"
            )
        return best
    if which == "latest":
        return latest_checkpoint(run_dir)
    raise UserError(f"checkpoint choice {which!r} not allowed; use latest, best or auto")


def load_run(run_or_ckpt: str | Path, which: str = "latest") -> LoadedRun:
    """Load a run directory (``which``: see :func:`choose_checkpoint`) or a checkpoint file
    inside one."""
    from training.models import build_models

    p = Path(run_or_ckpt)
    if p.is_file():
        ckpt, run_dir = p, p.parent.parent
    elif p.is_dir():
        run_dir, ckpt = p, choose_checkpoint(p, which)
    else:
        raise UserError(f"{str(p)!r} is neither a run directory nor a checkpoint file")
    config = read_run_config(run_dir)
    model_cfg = ModelConfig.from_dict(config["model"])
    state = load_checkpoint(ckpt)
    G, D = build_models(model_cfg)
    try:
        G.load_state_dict(state["G_ema"])
        D.load_state_dict(state["D"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} does not match the models in {CONFIG_NAME}: {str(e)[:300]}"
        ) from None
    return LoadedRun(run_dir, ckpt, int(state["step"]), config, model_cfg, G.eval(), D.eval())
