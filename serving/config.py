"""Server settings, read once from the environment (torch-free).

Every limit is an environment variable so an operator can tune it without code; the defaults are
the ones documented in the README.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


def _flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def split_list(raw: str) -> list[str]:
    """``GAN_BUNDLES``-style lists: separated by ``os.pathsep`` or commas, blanks dropped."""
    return [p.strip() for p in re.split(rf"[,{re.escape(os.pathsep)}]", raw or "") if p.strip()]


def default_api_workers() -> int:
    """One public worker per CPU, at most 4: the public side (HTTP, JSON, PNG) is the per-request
    cost, while the engine's batches need one process. On the 2-core reference machine two
    workers served 838 img/s against one worker's 450 (64 one-image clients, measured one after
    the other with bench/serve_load.py's client)."""
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


@dataclass(frozen=True)
class Limits:
    """Per-request limits; exceeding one is a 422 naming the limit."""

    max_n: int = 64  # images returned by one request
    max_grid: int = 256  # cells of one grid (style-mix grid included)
    max_generated: int = 512  # images computed for one request, filter oversampling included
    max_oversample: int = 16
    max_steps: int = 64  # interpolation steps
    max_body_bytes: int = 1_000_000


@dataclass(frozen=True)
class Settings:
    bundles: list[str] = field(default_factory=list)
    model_tags: list[str] = field(default_factory=list)
    allow_ungated: bool = False
    api_key: str | None = None
    backend: str = "onnx"
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)
    batching: bool = True
    max_batch_size: int = 64
    max_latency_ms: int = 30_000
    api_workers: int = field(default_factory=default_api_workers)
    tracing: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        limits = Limits(
            max_n=_int(env, "GAN_MAX_N", Limits.max_n),
            max_grid=_int(env, "GAN_MAX_GRID", Limits.max_grid),
            max_generated=_int(env, "GAN_MAX_GENERATED", Limits.max_generated),
            max_oversample=_int(env, "GAN_MAX_OVERSAMPLE", Limits.max_oversample),
            max_steps=_int(env, "GAN_MAX_STEPS", Limits.max_steps, minimum=2),
            max_body_bytes=_int(env, "GAN_MAX_BODY_BYTES", Limits.max_body_bytes),
        )
        return cls(
            bundles=split_list(env.get("GAN_BUNDLES", "")),
            model_tags=split_list(env.get("GAN_MODEL_TAGS", "")),
            allow_ungated=_flag(env, "GAN_ALLOW_UNGATED"),
            api_key=env.get("GAN_API_KEY") or None,
            backend=env.get("GAN_BACKEND", "onnx").strip() or "onnx",
            device=env.get("GAN_DEVICE", "auto").strip() or "auto",
            limits=limits,
            batching=_flag(env, "GAN_BATCHING", True),
            max_batch_size=_int(env, "GAN_MAX_BATCH", 64, minimum=2),
            max_latency_ms=_int(env, "GAN_MAX_LATENCY_MS", 30_000),
            api_workers=_int(env, "GAN_API_WORKERS", default_api_workers()),
            tracing=_flag(env, "GAN_TRACING"),
        )
