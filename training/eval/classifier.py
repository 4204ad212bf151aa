"""The offline feature network: a small CNN trained on the dataset's own training split.

Its penultimate layer (128 dimensions, before the ReLU) gives the features for the "Fréchet
classifier distance" (FD-classifier, as in TF-GAN's MNIST example). Scores are comparable only
between runs that used the same classifier file (same sha256) and never with Inception FID.

Saved as ``<name>.safetensors`` (weights only: loading executes no pickled code) plus a JSON
sidecar ``<name>.json`` with the architecture, preprocessing, dataset and held-out accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gancore.bundle import sha256_file
from training.config import write_json_atomic
from training.eval.errors import ExtractorError
from training.threads import torch_threads

logger = logging.getLogger(__name__)

INPUT_SIZE = 32
# Bump when ClassifierNet or its training changes: files of another version are retrained.
ARCH_VERSION = 2
FEATURE_DIM = 128
TRAIN_SEED = 0


@dataclass
class ClassifierConfig:
    """Architecture of :class:`ClassifierNet` (stored in the sidecar)."""

    channels: int = 1
    num_classes: int = 10  # the dataset's classes (the head has one more: "not an image")
    widths: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = FEATURE_DIM
    input_size: int = INPUT_SIZE


def preprocessing_for(channels: int) -> dict[str, Any]:
    """The pinned preprocessing: part of the metric's identity, stored with every statistic."""
    return {
        "input_size": INPUT_SIZE,
        "resize": "bilinear",
        "antialias": True,
        "align_corners": False,
        "value_range": [-1.0, 1.0],
        "channels": channels,
        "channel_rule": "gray->rgb: repeat; rgb->gray: mean of R,G,B",
    }


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 stride-2 conv + BN + ReLU: halves the resolution (cheap on CPU: no full-size maps)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ClassifierNet(nn.Module):
    """image [N, C, 32, 32] in [-1, 1] -> (features [N, 128], logits [N, K])."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w1, w2, w3 = cfg.widths
        self.body = nn.Sequential(_block(cfg.channels, w1), _block(w1, w2), _block(w2, w3))
        side = cfg.input_size // 8
        self.fc = nn.Linear(w3 * side * side, cfg.feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes + 1)
        # Set after training so that real training features have unit mean variance per
        # dimension: distances read on a dataset-independent scale. Saved with the weights
        # (so it is covered by their sha256).
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scaled features, logits over the dataset's classes only)."""
        feats, logits = self._features_and_all_logits(x)
        return feats, logits[:, :-1]

    def _features_and_all_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.body(x).flatten(1))
        return h * self.feature_scale, self.head(self.dropout(F.relu(h)))


def ganforge_home() -> Path:
    return Path(os.environ.get("GANFORGE_HOME") or Path.home() / ".cache" / "ganforge")


def dataset_slug(dataset: str) -> str:
    """A file-name-safe name for a dataset spec (``folder:PATH`` gets a short hash)."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", dataset):
        return dataset
    return "folder-" + hashlib.sha256(dataset.encode()).hexdigest()[:12]


def default_classifier_path(dataset: str) -> Path:
    return ganforge_home() / "classifiers" / f"{dataset_slug(dataset)}.safetensors"


def to_input(x: torch.Tensor, channels: int, size: int = INPUT_SIZE) -> torch.Tensor:
    """Apply the pinned preprocessing to images [N, C, H, W] in [-1, 1]."""
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(-1, 1)


def reject_images(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """Pixel noise for the extra "not an image" class: uniform, Gaussian with random mean and
    spread, and salt-and-pepper. Learning to reject it makes noise land far from the data in
    feature space (otherwise a classifier may map noise near the data's mean)."""
    c, h, w = shape
    kind = torch.randint(0, 3, (n, 1, 1, 1), generator=gen)
    uniform = torch.rand(n, c, h, w, generator=gen) * 2 - 1
    mean = torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1
    std = torch.rand(n, 1, 1, 1, generator=gen) * 0.8 + 0.2
    gauss = (mean + std * torch.randn(n, c, h, w, generator=gen)).clamp(-1, 1)
    p = torch.rand(n, 1, 1, 1, generator=gen) * 0.45 + 0.05
    salt = torch.where(torch.rand(n, c, h, w, generator=gen) < p, 1.0, -1.0)
    return torch.where(kind == 0, uniform, torch.where(kind == 1, gauss, salt))


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels (pad with background, crop)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    out = torch.gather(padded, 2, rows.expand(n, c, h, w + 2 * shift))
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    return torch.gather(out, 3, cols.expand(n, c, h, w))


@torch.no_grad()
def accuracy(net: ClassifierNet, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((net(x[i : i + batch])[1].argmax(1) == y[i : i + batch]).sum())
    return correct / max(1, len(x))


def train_classifier(
    dataset: str,
    resolution: int = INPUT_SIZE,
    out: str | Path | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    data_root: str | None = None,
    max_train: int | None = 60_000,
    log=None,
) -> Path:
    """Train the classifier on ``dataset``'s train split, save it, return the weights path.

    Trains on one thread: the result does not depend on the machine's thread count, and on a
    shared 2-core machine one thread is ~2x faster than two for a network this small.
    ``log``: a callable for progress lines (default: this module's logger at INFO).
    """
    log = log or logger.info
    with torch_threads(1):
        return _train_classifier(
            dataset, resolution, out, epochs, batch_size, lr, data_root, max_train, log
        )


def _train_classifier(dataset, resolution, out, epochs, batch_size, lr, data_root, max_train, log):
    from training.datasets import load_dataset

    t0 = time.perf_counter()
    train = load_dataset(dataset, resolution, "train", data_root=data_root)
    held = load_dataset(dataset, resolution, "heldout", data_root=data_root)
    if train.num_classes < 2:
        raise unlabelled_error(dataset)
    cfg = ClassifierConfig(channels=train.channels, num_classes=train.num_classes)
    x, y = train.as_tensors(max_train)
    xh, yh = held.as_tensors(10_000)
    x, xh = to_input(x, cfg.channels), to_input(xh, cfg.channels)

    torch.manual_seed(TRAIN_SEED)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    net = ClassifierNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            xb = _augment(x[idx], gen)
            junk = reject_images(max(1, len(idx) // 4), xb.shape[1:], gen)
            yb = torch.cat([y[idx], torch.full((len(junk),), cfg.num_classes, dtype=y.dtype)])
            logits = net._features_and_all_logits(torch.cat([xb, junk]))[1]
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if log and (epoch + 1) % 5 == 0:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    acc = accuracy(net, xh, yh)
    with torch.no_grad():
        net.eval()
        feats = torch.cat([net(x[i : i + 512])[0] for i in range(0, min(len(x), 10_000), 512)])
        net.feature_scale.fill_(float(feats.double().var(0).mean().rsqrt()))
    train_acc = accuracy(net, x[:5000], y[:5000])
    path = Path(out) if out is not None else default_classifier_path(dataset)
    info = {
        "kind": "ganforge-classifier",
        "arch_version": ARCH_VERSION,
        "dataset": dataset,
        "resolution": resolution,
        "class_names": train.class_names,
        "config": asdict(cfg),
        "preprocessing": preprocessing_for(cfg.channels),
        "heldout_accuracy": acc,
        "train_accuracy": train_acc,
        "train_size": len(x),
        "heldout_size": len(xh),
        "epochs": epochs,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    save_classifier(net, info, path)
    if log:
        log(
            f"classifier for {dataset}: held-out accuracy {acc:.4f} on {len(xh)} images "
            f"({info['seconds']} s) -> {path}"
        )
    return path


def unlabelled_error(dataset: str) -> ExtractorError:
    """FD-classifier needs class labels; an image folder without class subfolders has none."""
    what = (
        f"image folder {dataset[len('folder:') :]!r} has no class subfolders (its images are "
        "unlabelled)"
        if dataset.startswith("folder:")
        else f"dataset {dataset!r} has no class labels"
    )
    return ExtractorError(
        f"{what}, so FD-classifier cannot be used: it needs a classifier trained on the "
        "dataset's classes. Use --features inception (FID with the standard Inception-v3; its "
        "weights are downloaded once), or sort the images into PATH/CLASS/ subfolders"
    )


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_classifier(net: ClassifierNet, info: dict[str, Any], path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ExtractorError(f"classifier weights must be a .safetensors file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    info = dict(info, weights=path.name, sha256=sha256_file(path))
    write_json_atomic(sidecar_path(path), info)


def classifier_version(path: str | Path) -> int | None:
    """The ``arch_version`` in a classifier's sidecar (None if unreadable)."""
    try:
        return int(json.loads(sidecar_path(Path(path)).read_text()).get("arch_version", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load_classifier(path: str | Path) -> tuple[ClassifierNet, dict[str, Any], str]:
    """(net in eval mode, sidecar info, sha256 of the weights file)."""
    from safetensors.torch import load_file

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise ExtractorError(
            f"classifier {str(path)!r} (and its sidecar {side.name}) not found; train it with "
            "`gan-eval train-classifier --dataset D --out PATH`"
        )
    version = classifier_version(path)
    if version != ARCH_VERSION:
        raise ExtractorError(
            f"classifier {str(path)!r} was made by another ganforge version "
            f"(classifier version {version}, this one uses {ARCH_VERSION}); retrain it with "
            "`gan-eval train-classifier` (references made with it must be remade too)"
        )
    try:
        info = json.loads(side.read_text())
        cfg_d = dict(info["config"])
        cfg_d["widths"] = tuple(cfg_d["widths"])
        cfg = ClassifierConfig(**cfg_d)
        net = ClassifierNet(cfg)
        net.load_state_dict(load_file(str(path)))
    except Exception as e:
        raise ExtractorError(
            f"classifier {str(path)!r} is corrupt or does not match its sidecar "
            f"({e.__class__.__name__}: {str(e)[:200]}); retrain it with `gan-eval train-classifier`"
        ) from None
    return net.eval(), info, sha256_file(path)


def predict_numpy(net: ClassifierNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(x))[1].argmax(1).numpy()
