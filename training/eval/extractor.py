"""The feature extractor interface: images in [-1, 1] -> features, with the identity (id, weights
sha256, pinned preprocessing) stored beside every statistic. The extractors themselves are in
``features`` (classifier) and ``inception``; this module imports neither, so both can import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from training.eval.errors import EvalError

BATCH = 500


def as_batches(images, batch: int = BATCH) -> Iterator[np.ndarray | torch.Tensor]:
    """Yield [n, C, R, R] chunks from an array/tensor or pass through an iterable of batches."""
    if isinstance(images, np.ndarray | torch.Tensor):
        if images.ndim != 4:
            raise EvalError(f"images must be [N, C, R, R], got shape {tuple(images.shape)}")
        for i in range(0, len(images), batch):
            yield images[i : i + batch]
    else:
        for b in images:
            yield from as_batches(b, batch)


def _to_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise EvalError(f"images must be [N, C, R, R] with C = 1 or 3, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise EvalError(f"images must be float in [-1, 1], got dtype {t.dtype}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise EvalError("images contain NaN or inf")
    return t


class Extractor:
    """Images [N, C, R, R] in [-1, 1] (numpy or torch) -> features [N, dim] (float32 numpy)."""

    name: str = ""
    id: str = ""
    sha256: str = ""
    preprocessing: dict[str, Any] = {}
    dim: int = 0
    metric: str = ""  # the distance's name in output: "FD-classifier" or "FID"
    is_metric: str = ""  # the Inception Score's name ("IS-classifier", "IS"); "" = no class probs
    note: str = ""
    class_names: list[str] = []
    batch: int = BATCH  # images per forward pass

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "sha256": self.sha256,
            "preprocessing": self.preprocessing,
            "dim": self.dim,
            "metric": self.metric,
        }

    @property
    def can_predict(self) -> bool:
        """True when the logits are over the dataset's own classes (conditional accuracy)."""
        return False

    @property
    def has_class_probabilities(self) -> bool:
        """True when :meth:`_forward` gives logits whose softmax an Inception Score can use."""
        return bool(self.is_metric)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch in [-1, 1] -> (features, class logits or None)."""
        raise NotImplementedError

    def extract(self, images: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(features, predicted dataset classes or None, class probabilities or None), one pass."""
        feats, preds, probs = [], [], []
        with torch.inference_mode():
            for b in as_batches(images, self.batch):
                f, logits = self._forward(_to_tensor(b))
                feats.append(f.numpy().astype(np.float32, copy=False))
                if logits is not None and self.can_predict:
                    preds.append(logits.argmax(1).numpy())
                if logits is not None and self.has_class_probabilities:
                    probs.append(torch.softmax(logits.double(), 1).numpy())
        if not feats:
            raise EvalError("no images given")
        return (
            np.concatenate(feats),
            np.concatenate(preds) if preds else None,
            np.concatenate(probs) if probs else None,
        )

    def features_and_predictions(self, images: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Features and (when the extractor is a classifier) predicted classes, in one pass."""
        f, preds, _ = self.extract(images)
        return f, preds

    def features(self, images: Any) -> np.ndarray:
        return self.features_and_predictions(images)[0]

    def predict(self, images: Any) -> np.ndarray:
        if not self.can_predict:
            raise EvalError(f"extractor {self.id!r} is not a classifier for this dataset")
        return self.features_and_predictions(images)[1]
