"""Small-N evaluation during training, in the gate's terms: ``OnlineFD(...)(G_ema, step)`` returns
the FD-classifier (best.pt is kept by it), its ratio to the real-vs-real floor, precision, recall
and for conditional models accuracy and the weakest class's recall, scored by the same functions
as ``gan-export --gate``, and a ``line`` that sets each figure beside the gate's default rule:

    FD/floor 9.8 (gate ≤ 6), precision 0.71 (≥ 0.6), recall 0.48 (≥ 0.6): the gate would refuse it

The reference statistics, the classifier, the floor and the latents (seeds 0..n-1, export's
seed → z rule; class ``seed mod K`` for conditional models) are fixed once, so values along a run
are comparable with each other.

It measures what the gate will: the reference is the held-out split (the gate's ``--ref``, made
by ``gan-eval stats --split heldout``), and the floor is the gate's own, the training split
against it at the gate's N. FD falls with the number of samples roughly as a + b/N, so the n
samples here would read worse than the gate's 5,000: the line's FD is extrapolated to the gate's
N from the FD of all n samples and of each half (Chong & Forsyth 2020 extrapolate FID the same
way). Precision and recall are taken at n, so they are noisier than the gate's.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

from gancore.gate_rules import DEFAULT_N
from training.eval.features import get_extractor
from training.eval.fid import frechet_distance
from training.eval.score import (
    labels_for_seeds,
    real_floor,
    reference_stats,
    score_features,
    z_from_seeds,
)
from training.eval.stats import FeatureStats


class OnlineFD:
    """Callable ``(G_ema, step) -> dict`` for the training loop's eval_fn (see the module doc)."""

    def __init__(
        self,
        dataset_name: str,
        resolution: int,
        n: int = 2000,
        ref_split: str = "heldout",
        classifier_path=None,
        train_if_missing: bool = True,
        data_root: str | None = None,
        batch: int = 250,
        seed: int = 0,
        rules=None,
        gate_n: int = DEFAULT_N,
    ):
        self.extractor = get_extractor(
            "classifier",
            dataset=dataset_name,
            classifier_path=classifier_path,
            train_if_missing=train_if_missing,
            data_root=data_root,
        )
        self.ref = reference_stats(
            self.extractor, dataset_name, resolution, ref_split, data_root=data_root, keep=0
        )
        # Precision and recall compare with a seeded sample of n real images of the split: the
        # first n would be one or two classes of a folder, which is sorted by class.
        self.real = reference_stats(self.extractor, dataset_name, resolution, ref_split,
                                    n=min(n, self.ref.n), seed=seed, data_root=data_root,
                                    keep=n)  # fmt: skip
        with warnings.catch_warnings():  # as the scores below: sqrtm's warnings are not news
            warnings.simplefilter("ignore")
            floor = real_floor(self.extractor, self.ref, gate_n, data_root)
        self.floor = float(floor["fd"])  # the gate's floor: same images, same function
        self.gate_n = gate_n
        self.rules = rules if rules is not None else default_gate_rules()
        self.n, self.batch, self.seed = n, batch, seed
        self.resolution = resolution

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = G.cfg
        was_training = G.training
        G.eval()
        device = next(G.parameters()).device
        seeds = range(self.seed, self.seed + self.n)
        z_all = torch.from_numpy(z_from_seeds(seeds, cfg.latent_dim))
        labels = labels_for_seeds(seeds, cfg.num_classes) if cfg.conditional else None
        images = []
        try:
            for i in range(0, self.n, self.batch):
                z = z_all[i : i + self.batch].to(device)
                if labels is None:
                    img = G(z)
                else:
                    img = G(z, torch.from_numpy(labels[i : i + self.batch]).to(device))
                images.append(img.float().cpu().numpy())
        finally:
            G.train(was_training)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # One extraction serves the score and the FD of each half (_at_gate_n).
            feats, preds, probs = self.extractor.extract(images)
            res = score_features(
                feats,
                labels,
                ref=self.ref,
                extractor=self.extractor,
                preds=preds,
                probs=probs,
                seed=0,
                keep=self.n,
                real_features=self.real.features,
                real_labels=self.real.labels,
                kid_subsets=1,  # KID is not shown here; one subset keeps the cost down
            )
        fd = res["fd"]
        at_gate = self._at_gate_n(feats, fd)
        finite = np.isfinite(at_gate) and self.floor > 0
        out: dict[str, Any] = {
            "fd_classifier": float(fd) if np.isfinite(fd) else float("inf"),
            "fd_at_gate_n": float(at_gate) if np.isfinite(at_gate) else float("inf"),
            "fd_floor": self.floor,
            "fd_ratio": at_gate / self.floor if finite else float("inf"),
            "precision": res.get("precision"),
            "recall": res.get("recall"),
            "n": self.n,
        }
        if cfg.conditional:
            out["cond_accuracy"] = res.get("cond_accuracy")
            out["min_class_recall"] = res.get("min_class_recall")
        out["line"], out["gate_failing"] = gate_line(out, self.rules, cfg.conditional)
        self.last_seconds = time.perf_counter() - t0
        return out

    def _at_gate_n(self, feats: np.ndarray, fd_n: float) -> float:
        """FD at the gate's N, from FD(N) ~ a + b/N fitted to all n samples' features and each
        half's."""
        if not np.isfinite(fd_n) or self.gate_n <= self.n:
            return fd_n
        half = len(feats) // 2
        halves = []
        for part in (feats[:half], feats[half:]):
            st = FeatureStats(dim=self.extractor.dim)
            st.update(part)
            halves.append(fd_to_ref(st, self.ref))
        fd_half = float(np.mean(halves))
        if not np.isfinite(fd_half):
            return fd_n
        # b/(n/2) - b/n = b/n; FD(gate N) = FD(n) - b (1/n - 1/N). A half that reads better
        # than the whole is noise: no correction then.
        correction = max(fd_half - fd_n, 0.0) * (1 - self.n / self.gate_n)
        return max(fd_n - correction, 0.0)


def default_gate_rules():
    """The gate's default rules, read from where the gate keeps them (gancore.gate_rules)."""
    from gancore.gate_rules import GateRules

    return GateRules()


def fd_to_ref(st: FeatureStats, ref) -> float:
    """FD of accumulated features against the reference; quiet, as sqrtm warns on the
    near-singular covariances a few thousand samples give."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma))


def gate_line(figures: dict[str, Any], rules, conditional: bool) -> tuple[str, list[str]]:
    """``FD/floor 9.8 (gate ≤ 6), precision 0.71 (≥ 0.6), ...`` and the names of the rules the
    figures fail (``rules``: the gate's GateRules)."""
    parts, failing = [], []

    def rule(label: str, value, op: str, threshold, name: str, digits: int = 2) -> None:
        if value is None:
            parts.append(f"{label} not measured")
            return
        ok = value <= threshold if op == "≤" else value >= threshold
        if not ok:
            failing.append(name)
        parts.append(
            f"{label} {value:.{digits}f} ({'gate ' if not parts else ''}{op} {threshold:g})"
        )

    if rules.max_fd_ratio is not None:
        rule("FD/floor", figures["fd_ratio"], "≤", rules.max_fd_ratio, "FD", digits=1)
    else:
        rule("FD", figures["fd_classifier"], "≤", rules.max_fd, "FD", digits=3)
    rule("precision", figures.get("precision"), "≥", rules.min_precision, "precision")
    rule("recall", figures.get("recall"), "≥", rules.min_recall, "recall")
    if conditional:
        rule("accuracy", figures.get("cond_accuracy"), "≥", rules.min_cond_accuracy, "accuracy")
        rule("weakest class recall", figures.get("min_class_recall"), "≥",
             rules.min_class_recall, "class recall")  # fmt: skip
    verdict = (
        f"the gate would refuse it ({', '.join(failing)})" if failing else "within the gate's rules"
    )
    return f"{', '.join(parts)}: {verdict}", failing
