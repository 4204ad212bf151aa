"""Feature extractors. Each is identified by an id, the sha256 of its weights and its pinned
preprocessing; all three are stored with every statistic and compared before any distance.

- ``classifier`` (offline default): ganforge's small CNN trained on the dataset (FD-classifier).
- ``inception``: the standard FID Inception-v3 with the TF 2015 weights (FID), from a local file,
  downloaded once into ``$TORCH_HOME/hub/checkpoints/`` when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from training.eval.errors import EvalError, ExtractorError
from training.eval.extractor import Extractor, as_batches  # noqa: F401 (score.py imports it here)

EXTRACTORS = ("classifier", "inception")


class ClassifierExtractor(Extractor):
    """Penultimate-layer features of the dataset's classifier (see ``training.eval.classifier``)."""

    name = "classifier"
    metric = "FD-classifier"
    is_metric = "IS-classifier"

    def __init__(self, path: str | Path):
        from training.eval.classifier import load_classifier

        self.path = Path(path)
        self.net, self.info, self.sha256 = load_classifier(self.path)
        self.dataset = self.info.get("dataset")
        self.id = f"classifier:{self.dataset}"
        self.preprocessing = self.info["preprocessing"]
        self.dim = self.net.cfg.feature_dim
        self.class_names = list(self.info.get("class_names") or [])
        self.accuracy = self.info.get("heldout_accuracy")
        self.note = (
            f"FD-classifier: Fréchet distance on the {self.dim}-d penultimate features of "
            f"ganforge's {self.dataset} classifier (held-out accuracy {self.accuracy}); "
            "not comparable with Inception FID"
        )

    @property
    def can_predict(self) -> bool:
        return True

    def _forward(self, x):
        from training.eval.classifier import to_input

        return self.net(to_input(x, self.net.cfg.channels, self.net.cfg.input_size))


def get_extractor(
    name: str = "classifier",
    dataset: str | None = None,
    resolution: int | None = None,
    classifier_path: str | Path | None = None,
    train_if_missing: bool = True,
    inception_weights: str | Path | None = None,
    inception_sha256: str | None = None,
    data_root: str | None = None,
    log=None,
) -> Extractor:
    """Build an extractor.

    ``classifier``: load ``classifier_path`` or the default file for ``dataset``
    (``$GANFORGE_HOME/classifiers/<dataset>.safetensors``), training it first when it is absent
    and ``train_if_missing``; a dataset without class labels (an unlabelled image folder) is
    refused with a pointer to ``inception``. ``inception``: load the FID Inception weights from
    ``inception_weights`` or the default file, downloading the latter when it is missing.
    """
    if name == "classifier":
        from training.eval.classifier import (
            ARCH_VERSION,
            classifier_version,
            default_classifier_path,
            train_classifier,
            unlabelled_error,
        )

        if classifier_path is None:
            if dataset is None:
                raise EvalError("the classifier extractor needs --dataset or --classifier PATH")
            classifier_path = default_classifier_path(dataset)
        path = Path(classifier_path)
        if dataset is not None and dataset.startswith("folder:") and not path.is_file():
            from training.datasets import load_dataset

            if (
                load_dataset(dataset, resolution or 32, "train", data_root=data_root).num_classes
                < 2
            ):
                raise unlabelled_error(dataset)
        stale = path.is_file() and classifier_version(path) != ARCH_VERSION
        if not path.is_file() or (stale and train_if_missing and dataset is not None):
            if not train_if_missing or dataset is None:
                raise ExtractorError(
                    f"classifier {str(path)!r} not found; train it with `gan-eval "
                    f"train-classifier --dataset {dataset or 'D'} --out {path}`"
                )
            train_classifier(dataset, out=path, data_root=data_root, log=log)
        ext = ClassifierExtractor(path)
        if dataset is not None and ext.dataset != dataset:
            raise ExtractorError(
                f"classifier {str(path)!r} was trained on {ext.dataset!r}, not {dataset!r}"
            )
        return ext
    if name == "inception":
        from training.eval.inception import InceptionExtractor

        return InceptionExtractor(inception_weights, expected_sha256=inception_sha256)
    raise EvalError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def extract_all(extractor: Extractor, batches: Iterable) -> tuple[np.ndarray, np.ndarray | None]:
    return extractor.features_and_predictions(batches)
