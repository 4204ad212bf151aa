"""The engine: runs bundle graphs on batches of packed rows (numpy only, torch-free).

BentoML's adaptive batching joins ndarrays along axis 0, so every request to the engine is a
float32 matrix with one row per image, whatever model it is for:

    row = [model index, class label (-1: none), payload..., zero padding]

``mapping`` rows carry ``z``; ``render`` rows carry ``z`` (DCGAN/cGAN) or the flattened
``ws [num_ws, w_dim]`` (StyleGAN-lite). ``render`` returns ``[discriminator logit, image pixels...]``
per row. Rows of different models share a batch and are split per model before running, and every
graph is per-sample, so a row's result does not depend on its neighbours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from serving.registry import gate_summary

log = logging.getLogger("ganforge.serving")
HEADER = 2  # model index, label


@dataclass
class ModelInfo:
    """What the public service needs to know about a served bundle (JSON-serialisable)."""

    index: int
    name: str
    kind: str
    resolution: int
    channels: int
    latent_dim: int
    class_names: list[str]
    num_ws: int | None
    w_dim: int | None
    w_avg: list[float] | None
    style_ranges: dict[str, list[int]]
    provider: str
    gate: dict[str, Any]
    ungated: bool
    calibration: dict[str, Any] | None = None
    path: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def drs_ready(self) -> bool:
        return bool(self.calibration and "drs" in self.calibration)

    @property
    def pixels(self) -> int:
        return self.channels * self.resolution * self.resolution

    @property
    def payload(self) -> int:
        """Width of this model's render payload."""
        if self.kind == "stylegan":
            return int(self.num_ws) * int(self.w_dim)
        return self.latent_dim

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
            w_avg=None if w_avg is None else np.asarray(w_avg, np.float32).ravel().tolist(),
            style_ranges={k: [int(a), int(b)] for k, (a, b) in ranges.items()},
            provider=str(bundle.provider),
            gate=gate,
            ungated=not gate["passed"],
            calibration=getattr(bundle, "filters", None),
            path=str(bundle.path),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """The /models entry."""
        out = {
            "name": self.name,
            "kind": self.kind,
            "resolution": self.resolution,
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "conditional": self.num_classes > 0,
            "classes": self.class_names,
            "provider": self.provider,
            "gate": self.gate,
            "ungated": self.ungated,
            "filters": ["none", "top_k"] + (["drs"] if self.drs_ready else []),
        }
        if self.kind == "stylegan":
            out.update(num_ws=self.num_ws, w_dim=self.w_dim, style_ranges=self.style_ranges)
        return out


@dataclass
class Layout:
    """Row widths shared by every model the server holds (so requests can be concatenated)."""

    in_width: int
    map_width: int
    out_width: int
    models: list[ModelInfo] = field(default_factory=list)

    @classmethod
    def of(cls, models: list[ModelInfo]) -> Layout:
        payload = max(max(m.payload, m.latent_dim) for m in models)
        w_dims = [m.w_dim for m in models if m.w_dim]
        return cls(
            in_width=HEADER + payload,
            map_width=max(w_dims, default=1),
            out_width=1 + max(m.pixels for m in models),
            models=models,
        )

    def rows(self, model: ModelInfo, labels: np.ndarray | None, payload: np.ndarray) -> np.ndarray:
        """Pack per-item payloads ``[N, P]`` (or ``[N, num_ws, w_dim]``) into engine rows."""
        payload = np.asarray(payload, np.float32).reshape(len(payload), -1)
        out = np.zeros((payload.shape[0], self.in_width), np.float32)
        out[:, 0] = model.index
        out[:, 1] = -1 if labels is None else np.asarray(labels, np.int64)
        out[:, HEADER : HEADER + payload.shape[1]] = payload
        return out

    @staticmethod
    def images(model: ModelInfo, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split render output into (images ``[N, C, R, R]``, logits ``[N]``)."""
        r = model.resolution
        imgs = out[:, 1 : 1 + model.pixels].reshape(-1, model.channels, r, r)
        return imgs.copy(), out[:, 0].copy()  # arrays from the engine's IPC are read-only


def _groups(rows: np.ndarray, n_models: int):
    """(model index, boolean row mask) for each model present in a batch."""
    idx = rows[:, 0].astype(np.int64)
    bad = (idx < 0) | (idx >= n_models)
    if bad.any():
        raise ValueError(f"engine rows name unknown model index {int(idx[bad][0])}")
    for m in np.unique(idx):
        yield int(m), idx == m


class Engine:
    """Runs the graphs of every served bundle on packed rows."""

    def __init__(self, bundles: dict[str, Any], observe=None):
        self.bundles = [bundles[name] for name in sorted(bundles)]
        self.models = [ModelInfo.from_bundle(i, b) for i, b in enumerate(self.bundles)]
        self.layout = Layout.of(self.models)
        self.observe = observe or (lambda api, model, size: None)

    def _labels(self, info: ModelInfo, rows: np.ndarray) -> np.ndarray | None:
        if info.num_classes == 0:
            return None
        labels = rows[:, 1].astype(np.int64)
        if ((labels < 0) | (labels >= info.num_classes)).any():
            raise ValueError(f"label out of range for {info.name}")  # validated upstream
        return labels

    def mapping(self, rows: np.ndarray) -> np.ndarray:
        """Rows carrying z -> ``[N, map_width]`` (w, zero-padded)."""
        rows = np.asarray(rows, np.float32)
        out = np.zeros((rows.shape[0], self.layout.map_width), np.float32)
        for m, sel in _groups(rows, len(self.models)):
            info, bundle = self.models[m], self.bundles[m]
            if info.kind != "stylegan":
                raise ValueError(f"{info.name} has no mapping network")
            sub = rows[sel]
            z = np.ascontiguousarray(sub[:, HEADER : HEADER + info.latent_dim])
            out[sel, : info.w_dim] = bundle.mapping(z, self._labels(info, sub))
            self.observe("mapping", info.name, int(sel.sum()))
        return out

    def render(self, rows: np.ndarray) -> np.ndarray:
        """Rows carrying z or ws -> ``[N, out_width]``: discriminator logit, then the image."""
        rows = np.asarray(rows, np.float32)
        out = np.zeros((rows.shape[0], self.layout.out_width), np.float32)
        for m, sel in _groups(rows, len(self.models)):
            info, bundle = self.models[m], self.bundles[m]
            sub = rows[sel]
            labels = self._labels(info, sub)
            payload = np.ascontiguousarray(sub[:, HEADER : HEADER + info.payload])
            if info.kind == "stylegan":
                images = bundle.synthesis(payload.reshape(-1, info.num_ws, info.w_dim))
                # unbounded synthesis: clip to [-1, 1] as export.sampling does, before scoring
                images = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
            else:
                images = bundle.generator(payload, labels)
            images = np.asarray(images, np.float32)
            out[sel, 0] = np.asarray(bundle.discriminator(images, labels), np.float32).reshape(-1)
            out[sel, 1 : 1 + info.pixels] = images.reshape(images.shape[0], -1)
            self.observe("render", info.name, int(sel.sum()))
        return out

    def warm_up(self, sizes=(1, 8, 64)) -> float:
        """Run every graph at a few batch sizes so the first requests do not pay for it."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        observe, self.observe = self.observe, lambda api, model, size: None
        for info in self.models:
            for n in sizes:
                z = rng.standard_normal((n, info.latent_dim)).astype(np.float32)
                labels = np.zeros(n, np.int64) if info.num_classes else None
                if info.kind == "stylegan":
                    w = self.mapping(self.layout.rows(info, labels, z))[:, : info.w_dim]
                    payload = np.repeat(w[:, None, :], info.num_ws, axis=1)
                else:
                    payload = z
                self.render(self.layout.rows(info, labels, payload))
        self.observe = observe
        seconds = time.perf_counter() - t0
        log.info("engine warmed up in %.2f s (%d models)", seconds, len(self.models))
        return seconds
