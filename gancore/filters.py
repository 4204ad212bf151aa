"""Discriminator quality filters (numpy only): top-k, logit threshold, and Discriminator Rejection
Sampling (Azadi et al. 2019, "Discriminator Rejection Sampling", ICLR).

DRS accepts a generated sample x with probability ``sigmoid(F(x))`` where, with D̃ the
discriminator's logit and D̃* the maximum logit seen during calibration,

    F(x) = D̃(x) − D̃* − log(1 − exp(D̃(x) − D̃* − ε)) − γ

and γ a percentile of F's γ-free part over the calibration samples (it shifts the acceptance rate).
We put γ at the 80th percentile: a sample scoring in the top fifth of the calibration distribution
is accepted with probability ≥ 1/2, and the lower tail — where the discriminator is confident a
sample is fake — is rejected most. The resulting acceptance rate depends on the logit spread; it
is measured at calibration and stored (about 0.45 on our digits DCGANs), so a filtered request
costs about 2-3 generator calls per delivered image, which a server can afford.

Logits above D̃* are clipped to D̃* (the paper updates D̃* instead; clipping keeps the filter a
pure function of the stored calibration).

The uniform draw that decides acceptance comes from the sample's own seed
(:data:`DRS_UNIFORM_RULE`), so a filtered request is reproducible and batch-independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gancore.errors import ExportError

DRS_EPSILON = 1e-6
DRS_GAMMA_PERCENTILE = 80.0
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
DRS_STREAM = 0x445253  # "DRS"
DRS_UNIFORM_RULE = (
    "u = numpy.random.Generator(numpy.random.PCG64([seed, 0x445253])).random(); accept if u < p"
)


def _logits(logits: Any) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ExportError("discriminator logits contain NaN or inf")
    return x


def drs_f(logits: Any, max_logit: float, epsilon: float = DRS_EPSILON) -> np.ndarray:
    """F without γ: ``D̃ − D̃* − log(1 − exp(D̃ − D̃* − ε))`` (D̃ clipped at D̃*)."""
    d = np.minimum(_logits(logits) - float(max_logit), 0.0)
    return d - np.log1p(-np.exp(d - epsilon))


def calibrate(
    logits: Any,
    gamma_percentile: float = DRS_GAMMA_PERCENTILE,
    epsilon: float = DRS_EPSILON,
    quantiles: Sequence[float] = QUANTILES,
) -> dict[str, Any]:
    """What the filters need, from discriminator logits of generated calibration samples."""
    x = _logits(logits)
    if x.size < 2:
        raise ExportError("filter calibration needs at least 2 samples")
    max_logit = float(x.max())
    f = drs_f(x, max_logit, epsilon)
    gamma = float(np.percentile(f, gamma_percentile))
    accept = 1.0 / (1.0 + np.exp(-(f - gamma)))
    return {
        "n": int(x.size),
        "logit_mean": float(x.mean()),
        "logit_std": float(x.std()),
        "max_logit": max_logit,
        "logit_quantiles": {f"{q:g}": float(np.quantile(x, q)) for q in quantiles},
        "drs": {
            "max_logit": max_logit,
            "epsilon": float(epsilon),
            "gamma": gamma,
            "gamma_percentile": float(gamma_percentile),
            "expected_acceptance": float(accept.mean()),
            "uniform_rule": DRS_UNIFORM_RULE,
            "formula": "p = sigmoid(F), F = D - D* - log(1 - exp(D - D* - eps)) - gamma, "
            "D = min(logit, D*)",
        },
    }


def drs_acceptance(logits: Any, calibration: dict[str, Any]) -> np.ndarray:
    """Acceptance probability ``sigmoid(F)`` for each logit."""
    drs = calibration["drs"] if "drs" in calibration else calibration
    f = drs_f(logits, drs["max_logit"], drs.get("epsilon", DRS_EPSILON)) - drs["gamma"]
    return 1.0 / (1.0 + np.exp(-f))


def drs_uniform(seeds: Sequence[int]) -> np.ndarray:
    """The per-seed uniform draw DRS compares the acceptance probability with."""
    return np.array(
        [np.random.Generator(np.random.PCG64([int(s), DRS_STREAM])).random() for s in seeds]
    )


def drs_accept(logits: Any, seeds: Sequence[int], calibration: dict[str, Any]) -> np.ndarray:
    """Boolean mask: which samples DRS keeps (deterministic given the seeds)."""
    p = drs_acceptance(logits, calibration)
    if len(seeds) != p.size:
        raise ExportError(f"{len(seeds)} seeds given for {p.size} logits")
    return drs_uniform(seeds) < p


def top_k(logits: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` highest logits, best first (ties keep the earlier sample)."""
    x = _logits(logits)
    if not 0 < k <= x.size:
        raise ExportError(f"top-k needs 0 < k <= {x.size} candidates, got k={k}")
    return np.argsort(-x, kind="stable")[:k]


def threshold_mask(logits: Any, calibration: dict[str, Any], quantile: float) -> np.ndarray:
    """Keep samples whose logit is at least the calibration's ``quantile`` (e.g. 0.5 = median)."""
    key = f"{quantile:g}"
    qs = calibration["logit_quantiles"]
    if key not in qs:
        raise ExportError(f"quantile {quantile} not calibrated; available: {sorted(qs)}")
    return _logits(logits) >= qs[key]


class DrsLoop:
    """Discriminator rejection sampling over a seed pool, in rounds: the one implementation that
    the server (asynchronously, through its batcher) and the gate (synchronously) both drive.

    ``next_seeds()`` names the next round's seeds (sized from the calibration's expected
    acceptance, so one round usually suffices), the caller scores them with the discriminator and
    hands the logits to ``accept()``, which returns the indices (into that round) of the samples
    kept. The result is the first ``n`` accepted seeds of the pool in order, whatever the round
    sizes, because each seed's decision depends only on its own logit and seed.
    """

    def __init__(self, pool: Sequence[int], n: int, calibration: dict[str, Any]):
        if "drs" not in (calibration or {}):
            raise ExportError("the bundle has no DRS calibration; re-export it")
        self.pool, self.n, self.calibration = list(pool), int(n), calibration
        self.expected = float(calibration["drs"].get("expected_acceptance") or 0.3)
        self.generated = 0
        self.accepted = 0

    def next_seeds(self) -> list[int]:
        """The next round's seeds; empty when ``n`` were accepted or the pool is used up."""
        if self.accepted >= self.n or self.generated >= len(self.pool):
            return []
        want = math.ceil((self.n - self.accepted) / max(self.expected, 0.05) * 1.25)
        seeds = self.pool[self.generated : self.generated + max(want, 1)]
        self.generated += len(seeds)
        return seeds

    def accept(self, seeds: Sequence[int], logits: Any) -> np.ndarray:
        """Indices (into ``seeds``) kept this round, at most the number still needed."""
        keep = np.flatnonzero(drs_accept(logits, seeds, self.calibration))
        keep = keep[: self.n - self.accepted]
        self.accepted += len(keep)
        return keep


def drs_select(
    logits_of, pool: Sequence[int], n: int, calibration: dict[str, Any]
) -> tuple[list[int], int]:
    """Synchronous :class:`DrsLoop`: ``logits_of(seeds) -> logits``; returns (the first ``n``
    accepted seeds of ``pool``, in order, and how many seeds were scored)."""
    loop, kept = DrsLoop(pool, n, calibration), []
    while seeds := loop.next_seeds():
        kept += [seeds[i] for i in loop.accept(seeds, logits_of(seeds))]
    return kept, loop.generated
