"""The engine, in-process in every serving worker (numpy + ONNX Runtime, torch-free).

Each worker loads and verifies the bundles itself, warms their sessions up, and runs the graphs on
one engine thread per worker. Requests reach a graph through a :class:`MicroBatcher` per (model,
graph): the rows of concurrent requests for the same graph are merged into one call. DCGAN/cGAN
need one call per image batch (``render``: generator then discriminator, or the bundle's fused
``render`` graph); StyleGAN-lite two (``mapping``, then ``render`` on the ws the request built).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.batcher import MicroBatcher
from serving.registry import gate_summary

log = logging.getLogger("ganforge.serving")
INLINE_MAX_MS = 2.0  # models slower than this per image never run on the event loop
WARM_SIZES = (1, 2, 3, 4, 8, 16, 32, 64)  # batch sizes the batcher makes most (GPU: no re-tune)


@dataclass
class ModelInfo:
    """What the public service needs to know about a served bundle (the flows read it as they
    read a Bundle: kind, latent_dim, num_ws, w_avg, latent_code, channels, resolution)."""

    index: int
    name: str
    kind: str
    resolution: int
    channels: int
    latent_dim: int
    class_names: list[str]
    num_ws: int | None
    w_dim: int | None
    w_avg: np.ndarray | None
    style_ranges: dict[str, list[int]]
    provider: str
    gate: dict[str, Any]
    ungated: bool
    calibration: dict[str, Any] | None = None
    path: str = ""
    fused: bool = False
    latent_code: int = 0  # values of the categorical code read from z (0: none)
    scored: bool = True  # has a discriminator (an imported generator may not): filters, scores

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def drs_ready(self) -> bool:
        return bool(self.calibration and "drs" in self.calibration)

    @property
    def pixels(self) -> int:
        return self.channels * self.resolution * self.resolution

    @classmethod
    def from_bundle(cls, index: int, bundle: Any) -> ModelInfo:
        gate = gate_summary(bundle)
        w_avg = getattr(bundle, "w_avg", None)
        ranges = getattr(bundle, "style_ranges", None) or {}
        return cls(
            index=index,
            name=bundle.name,
            kind=bundle.kind,
            resolution=int(bundle.resolution),
            channels=int(bundle.channels),
            latent_dim=int(bundle.latent_dim),
            class_names=[str(c) for c in (bundle.class_names or [])],
            num_ws=int(bundle.num_ws) if bundle.kind == "stylegan" else None,
            w_dim=int(bundle.w_dim) if bundle.kind == "stylegan" else None,
            w_avg=None if w_avg is None else np.asarray(w_avg, np.float32).ravel(),
            style_ranges={k: [int(a), int(b)] for k, (a, b) in ranges.items()},
            provider=str(bundle.provider),
            gate=gate,
            ungated=not gate["passed"],
            calibration=getattr(bundle, "filters", None),
            path=str(bundle.path),
            fused=bool(getattr(bundle, "fused", False)),
            latent_code=int(getattr(bundle, "latent_code", 0) or 0),
            scored=bool(getattr(bundle, "scored", True)),
        )


class Engine:
    """Every served bundle's graphs behind micro-batchers, on one engine thread."""

    def __init__(
        self,
        bundles: dict[str, Any],
        max_batch: int = 64,
        batching: bool = True,
        observe=None,
        inline_rows: int = 0,
        alone: Callable[[], bool] = lambda: True,
    ):
        names = sorted(bundles)
        self.bundles = [bundles[n] for n in names]
        self.models = [ModelInfo.from_bundle(i, b) for i, b in enumerate(self.bundles)]
        self.observe = observe or (lambda api, model, rows: None)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ganforge-engine")
        self.batching = batching
        rows = max_batch if batching else 1  # batching off: every request is its own call
        self._render: dict[str, MicroBatcher] = {}
        self._mapping: dict[str, MicroBatcher] = {}
        for info, bundle in zip(self.models, self.bundles):
            # On a GPU a call's rows cost little more than one row: every call batches.
            inline = inline_rows if "cpu" in info.provider.lower() else 0
            self._render[info.name] = MicroBatcher(
                f"render[{info.name}]",
                bundle.render,
                self.executor,
                rows,
                self._observer("render", info.name),
                inline,
                alone,
            )
            if info.kind == "stylegan":
                self._mapping[info.name] = MicroBatcher(
                    f"mapping[{info.name}]",
                    _tuple(bundle.mapping),
                    self.executor,
                    rows,
                    self._observer("mapping", info.name),
                    inline,
                    alone,
                )

    def _observer(self, api: str, model: str):
        return lambda rows: self.observe(api, model, rows)

    async def render(
        self, info: ModelInfo, payload: np.ndarray, labels: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """z (DCGAN/cGAN) or ws (StyleGAN-lite) -> (images ``[N, C, R, R]``, logits ``[N]``)."""
        payload = np.ascontiguousarray(payload, dtype=np.float32)
        images, logits = await self._render[info.name](payload, labels)
        return images, logits

    async def mapping(
        self, info: ModelInfo, z: np.ndarray, labels: np.ndarray | None
    ) -> np.ndarray:
        """StyleGAN-lite: z -> w ``[N, w_dim]`` (no truncation)."""
        (w,) = await self._mapping[info.name](z, labels)
        return w

    def warm_up(self, sizes=WARM_SIZES) -> float:
        """Run every graph at the batch sizes the batcher makes, before the worker reports ready."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        for info, bundle in zip(self.models, self.bundles):
            for n in sizes:
                bundle.render(*_render_inputs(info, bundle, n, rng))
        seconds = time.perf_counter() - t0
        self._inline_cheap_models_only()
        log.info("engine warmed up in %.2f s (%d models)", seconds, len(self.models))
        return seconds

    def _inline_cheap_models_only(self) -> None:
        """Inline calls only for models whose one-image render costs at most INLINE_MAX_MS: for a
        slower model the engine-thread round trip is a small part of the call, and a long call
        on the loop would hold up every other request of the worker."""
        rng = np.random.default_rng(1)
        for info, bundle in zip(self.models, self.bundles):
            batcher = self._render[info.name]
            if not batcher.inline_rows:
                continue
            inputs = _render_inputs(info, bundle, 1, rng)
            cost = []
            for _ in range(3):
                t = time.perf_counter()
                bundle.render(*inputs)
                cost.append(1000 * (time.perf_counter() - t))
            if min(cost) > INLINE_MAX_MS:
                log.info("%s: %.1f ms per image, engine calls stay off the loop", info.name,
                         min(cost))  # fmt: skip
                batcher.inline_rows = 0
                if info.name in self._mapping:
                    self._mapping[info.name].inline_rows = 0

    def close(self) -> None:
        self.executor.shutdown(wait=False)


def _render_inputs(info: ModelInfo, bundle: Any, n: int, rng: np.random.Generator) -> tuple:
    """Random inputs of ``bundle.render`` for ``n`` images: (z, labels), or StyleGAN-lite's (ws,)."""
    z = rng.standard_normal((n, info.latent_dim)).astype(np.float32)
    labels = np.zeros(n, np.int64) if info.num_classes else None
    if info.kind == "stylegan":
        return (np.repeat(bundle.mapping(z, labels)[:, None, :], info.num_ws, axis=1),)
    return z, labels


def _tuple(fn):
    def run(*args):
        return (fn(*args),)

    return run
