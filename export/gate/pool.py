"""The candidate pool: seeds generated once each through the bundle as the server runs it, quantised
to the 8-bit pixels it delivers, with D's logits and the features; the raw, top-k and DRS samples
are selections of it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gancore import filters, images, sampling
from gancore.errors import ExportError

TOPK_OVERSAMPLE = 2  # top-k keeps the best 1/2 of 2N candidates

DRS_MAX_CANDIDATES = 50  # × N

CHUNK = 500

QUANTISATION = "uint8 pixels as served: gancore.images.to_uint8 (clip(rint((x + 1) * 127.5)))"


def as_delivered(imgs: np.ndarray) -> np.ndarray:
    """Float images -> the 8-bit pixels the server encodes (uint8 [N, C, R, R])."""
    return np.ascontiguousarray(images.to_uint8(imgs).transpose(0, 3, 1, 2))


def to_model_range(u8: np.ndarray) -> np.ndarray:
    """uint8 [N, C, R, R] -> float32 in [-1, 1], as a client decoding the PNG would read it."""
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


class CandidatePool:
    """Seeds seed0, seed0+1, ... generated once each: delivered pixels, D logits, features."""

    def __init__(self, b, extractor, seed0: int, bar=None):
        self.b, self.extractor, self.seed0, self.bar = b, extractor, seed0, bar
        self.pixels: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.size = 0
        self.seconds = {"generate": 0.0, "discriminator": 0.0, "features": 0.0}

    @property
    def seeds(self) -> np.ndarray:
        return np.arange(self.seed0, self.seed0 + self.size)

    def grow_to(self, size: int, with_logits: bool = True) -> None:
        while self.size < size:
            seeds = list(range(self.seed0 + self.size, self.seed0 + self.size + CHUNK))
            lab = sampling.labels_for_seeds(seeds, self.b.num_classes)
            t = time.perf_counter()
            x = sampling.generate(self.b, seeds, lab)
            t1 = time.perf_counter()
            # D sees the float images, as the server's filter does before encoding.
            self.logits.append(self.b.discriminator(x, lab) if with_logits else np.zeros(0))
            t2 = time.perf_counter()
            u8 = as_delivered(x)
            f, p, q = self.extractor.extract(to_model_range(u8))
            t3 = time.perf_counter()
            self.seconds["generate"] += t1 - t
            self.seconds["discriminator"] += t2 - t1
            self.seconds["features"] += t3 - t2
            self.pixels.append(u8)
            self.feats.append(f)
            self.preds.append(p)
            self.probs.append(q)
            self.size += len(seeds)
            if self.bar is not None:
                self.bar.update(len(seeds))

    def all(self, parts: list) -> np.ndarray | None:
        return None if parts[0] is None else np.concatenate(parts)

    def select(self, idx: np.ndarray) -> dict[str, Any]:
        """Pool rows ``idx`` (positions, seed = seed0 + idx): everything the score needs."""
        preds, probs = self.all(self.preds), self.all(self.probs)
        return {
            "features": np.concatenate(self.feats)[idx],
            "preds": None if preds is None else preds[idx],
            "probs": None if probs is None else probs[idx],
            "seeds": (self.seed0 + idx).tolist(),
        }

    def all_logits(self) -> np.ndarray:
        return np.concatenate(self.logits)


def topk_pick(pool: CandidatePool, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The best n of the first 2n candidates by D's logit (``filters.top_k``), in seed order."""
    m = TOPK_OVERSAMPLE * n
    pool.grow_to(m)
    idx = np.sort(filters.top_k(pool.all_logits()[:m], n))
    return idx, {"candidates": m, "kept_fraction": 1 / TOPK_OVERSAMPLE}


def drs_pick(pool: CandidatePool, n: int, cal: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The first n candidates DRS accepts, by gancore.filters' DRS loop (the one the server
    drives) over the pool's seeds; the pool grows as the loop asks for more."""

    def logits_of(seeds: list[int]) -> np.ndarray:
        start, end = seeds[0] - pool.seed0, seeds[-1] - pool.seed0 + 1
        pool.grow_to(end)
        return pool.all_logits()[start:end]

    seeds = range(pool.seed0, pool.seed0 + DRS_MAX_CANDIDATES * n)
    kept, generated = filters.drs_select(logits_of, seeds, n, {"drs": cal})
    if len(kept) < n:
        raise ExportError(
            f"DRS accepted only {len(kept)} of {generated} candidates; calibration is off"
        )
    idx = np.asarray(kept) - pool.seed0
    last = int(idx[-1]) + 1
    return idx, {"candidates": last, "acceptance_rate": n / last}
