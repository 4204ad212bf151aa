"""Small-N FD-classifier during training: ``OnlineFD(...)(G_ema, step) -> {"fd_classifier": x}``.

The reference statistics, the classifier and the latents (seeds 0..n-1, export's seed → z rule;
class ``seed mod K`` for conditional models) are fixed once, so values along a run are comparable
with each other: the trainer logs them and keeps the best checkpoint by them. At n ≈ 500 the
value is biased upward against a large-N score; compare it only within the same setting.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from training.eval.features import get_extractor
from training.eval.fid import frechet_distance
from training.eval.score import labels_for_seeds, reference_stats, z_from_seeds
from training.eval.stats import FeatureStats


class OnlineFD:
    """Callable ``(G_ema, step) -> {"fd_classifier": float}`` for the training loop's eval_fn."""

    def __init__(
        self,
        dataset_name: str,
        resolution: int,
        n: int = 500,
        ref_split: str = "train",
        classifier_path=None,
        train_if_missing: bool = True,
        data_root: str | None = None,
        batch: int = 250,
        seed: int = 0,
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
        self.n, self.batch, self.seed = n, batch, seed
        self.resolution = resolution
        self._z: dict[int, torch.Tensor] = {}

    def _latents(self, latent_dim: int) -> torch.Tensor:
        if latent_dim not in self._z:
            seeds = range(self.seed, self.seed + self.n)
            self._z[latent_dim] = torch.from_numpy(z_from_seeds(seeds, latent_dim))
        return self._z[latent_dim]

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        cfg = G.cfg
        was_training = G.training
        G.eval()
        device = next(G.parameters()).device
        z_all = self._latents(cfg.latent_dim)
        labels = None
        if cfg.conditional:
            labels = torch.from_numpy(
                labels_for_seeds(range(self.seed, self.seed + self.n), cfg.num_classes)
            )
        st = FeatureStats(dim=self.extractor.dim)
        try:
            for i in range(0, self.n, self.batch):
                z = z_all[i : i + self.batch].to(device)
                if labels is None:
                    img = G(z)
                else:
                    img = G(z, labels[i : i + self.batch].to(device))
                st.update(self.extractor.features(img.float().cpu()))
        finally:
            G.train(was_training)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fd = frechet_distance(st.mu, st.sigma, self.ref.mu, self.ref.sigma)
        self.last_seconds = time.perf_counter() - t0
        return {"fd_classifier": float(fd) if np.isfinite(fd) else float("inf")}
