"""Server settings, read once from the environment (torch-free).

Every limit is an environment variable so an operator can tune it without code; the defaults are
the ones documented in docs/serving.md. :func:`current` parses them once per process and every part of
the service (decorator arguments, workers, middleware) is handed that one object.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field

from gancore.bundle import default_threads, usable_cpus


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
    """One serving worker per CPU, at most 4: every worker holds the engine, and the per-request
    cost (HTTP, JSON, PNG) is spread over the workers' event loops."""
    return max(1, min(4, usable_cpus()))


def worker_device_id(worker_index: int | None, env: dict[str, str] | None = None) -> int:
    """The GPU a serving worker runs on: workers are spread round-robin over the visible GPUs
    (``CUDA_VISIBLE_DEVICES`` as BentoML sets it for the service, else ``GAN_NUM_GPUS``, else one).
    ``worker_index`` is BentoML's ``server_context.worker_index`` (1-based; None outside a
    server)."""
    env = dict(os.environ if env is None else env)
    visible = split_list(env.get("CUDA_VISIBLE_DEVICES", ""))
    count = len(visible) if visible else _int(env, "GAN_NUM_GPUS", 1)
    return 0 if not worker_index else (int(worker_index) - 1) % max(1, count)


@dataclass(frozen=True)
class Limits:
    """Per-request limits; exceeding one is a 422 naming the limit."""

    max_n: int = 64  # images returned by one request
    max_grid: int = 256  # cells of one grid (style-mix grid included)
    max_generated: int = 512  # images computed for one request, filter oversampling included
    max_oversample: int = 16
    max_steps: int = 64  # interpolation steps
    max_frames: int = 256  # frames of one animation (frames per segment x segments)
    max_scale: int = 8  # integer upscaling of binary image / grid output
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
    api_workers: int = field(default_factory=default_api_workers)
    tracing: bool = False
    access_log: bool = False
    inline_rows: int = 8  # engine calls of at most this many rows run on the event loop (CPU only)

    @property
    def threads_per_worker(self) -> int:
        """ONNX Runtime threads of each worker (gancore.bundle.default_threads' rule)."""
        return default_threads(self.api_workers)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        limits = Limits(
            max_n=_int(env, "GAN_MAX_N", Limits.max_n),
            max_grid=_int(env, "GAN_MAX_GRID", Limits.max_grid),
            max_generated=_int(env, "GAN_MAX_GENERATED", Limits.max_generated),
            max_oversample=_int(env, "GAN_MAX_OVERSAMPLE", Limits.max_oversample),
            max_steps=_int(env, "GAN_MAX_STEPS", Limits.max_steps, minimum=2),
            max_frames=_int(env, "GAN_MAX_FRAMES", Limits.max_frames, minimum=2),
            max_scale=_int(env, "GAN_MAX_SCALE", Limits.max_scale),
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
            api_workers=_int(env, "GAN_API_WORKERS", default_api_workers()),
            tracing=_flag(env, "GAN_TRACING"),
            access_log=_flag(env, "GAN_ACCESS_LOG"),
            inline_rows=_int(env, "GAN_INLINE_ROWS", 8, minimum=0),
        )


@functools.cache
def current() -> Settings:
    """This process's settings, parsed from the environment once."""
    return Settings.from_env()


def reload() -> Settings:
    """Forget the parsed settings (tests that change the environment between apps)."""
    current.cache_clear()
    return current()
