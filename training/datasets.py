"""Datasets for ``--dataset``: the embedded ``digits`` default, torchvision datasets, image
folders and FakeData. Every dataset yields ``(image [C, R, R] float32 in [-1, 1], label int64)``
and has a fixed held-out split that every metric uses.

Image folders may mix sizes and modes. One rule turns each file into a training image
(:func:`_to_model_space`): transparency is composited on white; the folder is greyscale when
every file is (PIL modes 1, L, LA; palette files count as colour), else RGB; each image is
centre-cropped to a square on its shorter side and resized to the resolution with an
antialiased bilinear filter. Files this rule cannot honestly convert (16-bit or
floating-point pixels) or cannot read are refused, named.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from training.errors import UserError

SPLITS = ("train", "heldout")
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
DATASET_NAMES = ("digits", *TORCHVISION, "folder:PATH", "fake")
# The held-out split is seeded by this constant, never by the run's seed, so that every run,
# every reference statistic and every gate sees the same held-out images.
SPLIT_SEED = 20_240_601
HELDOUT_FRACTION = 0.2
# Image folders whose split fits in this many bytes as float32 tensors are decoded once, up front.
IN_MEMORY_BYTES = 1 << 30


class GanDataset(Dataset):
    """A dataset of images in [-1, 1] at one resolution, with class names (empty if unlabelled)."""

    def __init__(
        self,
        name: str,
        split: str,
        resolution: int,
        channels: int,
        class_names: Sequence[str],
        base: Dataset | None = None,
        indices: Sequence[int] | None = None,
        tensors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.name, self.split, self.resolution, self.channels = name, split, resolution, channels
        self.class_names = list(class_names)
        self._base, self._indices, self._tensors = base, indices, tensors

    @property
    def in_memory(self) -> bool:
        """True when the images are held as tensors (index them directly, no DataLoader)."""
        return self._tensors is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        if self._tensors is not None:
            return len(self._tensors[0])
        return len(self._indices) if self._indices is not None else len(self._base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._tensors is not None:
            return self._tensors[0][i], int(self._tensors[1][i])
        j = self._indices[i] if self._indices is not None else i
        img, label = self._base[j]
        return _to_model_space(img, self.resolution, self.channels), int(label)

    def as_tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the first ``limit``) images and labels as two tensors (for small datasets)."""
        if self._tensors is not None:
            x, y = self._tensors
            return (x, y) if limit is None else (x[:limit], y[:limit])
        n = len(self) if limit is None else min(limit, len(self))
        items = [self[i] for i in range(n)]
        return torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items])

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "split": self.split,
            "resolution": self.resolution,
            "channels": self.channels,
            "class_names": self.class_names,
            "size": len(self),
        }


GREY_MODES = ("1", "L", "LA")
# Pixels that do not fit 8 bits: converting them to L/RGB clips, so they are refused instead.
UNSUPPORTED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _flatten(img):
    """A PIL image with any transparency composited on white (RGBA emoji, LA, palette+alpha)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("LA" if img.mode == "LA" else "RGB")
    return img


def _to_model_space(img, resolution: int, channels: int) -> torch.Tensor:
    """PIL image or [C,H,W] tensor in [0,1] -> [channels, R, R] in [-1, 1] (the rule in the
    module docstring: flatten on white, convert, centre-crop to a square, resize)."""
    if not isinstance(img, torch.Tensor):
        img = _flatten(img)
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
        img = torch.from_numpy(arr)
        img = img[None] if img.ndim == 2 else img.permute(2, 0, 1)
    if img.shape[0] != channels:
        img = img.mean(0, keepdim=True) if channels == 1 else img.expand(3, -1, -1)
    h, w = img.shape[-2:]
    if h != w:  # centre-crop: stretching would change the shapes the model learns
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[..., top : top + side, left : left + side]
    if img.shape[-1] != resolution or img.shape[-2] != resolution:
        img = F.interpolate(
            img[None],
            size=(resolution, resolution),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
    return (img.clamp(0, 1) * 2 - 1).contiguous()


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """A fixed, seeded, class-stratified train/held-out split of ``len(labels)`` items."""
    rng = np.random.Generator(np.random.PCG64(SPLIT_SEED))
    heldout = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        heldout.extend(idx[: max(1, round(HELDOUT_FRACTION * len(idx)))].tolist())
    mask = np.zeros(len(labels), dtype=bool)
    mask[heldout] = True
    return np.flatnonzero(mask if split == "heldout" else ~mask)


def load_digits(resolution: int, split: str = "train") -> GanDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), resized."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8] in [0,1]
    labels = d.target.astype(np.int64)
    idx = split_indices(labels, split)
    x = F.interpolate(
        images[idx], size=(resolution, resolution), mode="bilinear", align_corners=False
    )
    x = (x.clamp(0, 1) * 2 - 1).contiguous()
    y = torch.from_numpy(labels[idx])
    return GanDataset("digits", split, resolution, 1, [str(i) for i in range(10)], tensors=(x, y))


def _load_torchvision(name: str, resolution: int, split: str, data_root: str | None) -> GanDataset:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    root = Path(data_root or Path.home() / ".cache" / "ganforge" / "data")
    train = split == "train"
    if name != "cifar10":
        _gunzip_idx_files(root / cls.__name__ / "raw", cls)
    try:
        base = cls(str(root), train=train, download=False)
    except RuntimeError:
        try:
            base = cls(str(root), train=train, download=True)
        except Exception as e:  # offline, DNS failure, HTTP error...
            raise UserError(
                f"dataset {name!r} is not under {root} and could not be downloaded "
                f"({e.__class__.__name__}). Put {_expected_files(root, cls, name)} there, "
                "or pass --data-root DIR"
            ) from None
    channels = 3 if name == "cifar10" else 1
    return GanDataset(name, split, resolution, channels, list(base.classes), base=base)


def _gunzip_idx_files(raw: Path, cls) -> None:
    """Decompress hand-placed ``*-ubyte.gz`` files beside themselves, as torchvision's downloader
    does (it reads only the decompressed files); atomically, so an interrupted run leaves none
    half-written."""
    import gzip

    for filename, _md5 in cls.resources:
        packed, plain = raw / filename, raw / filename.removesuffix(".gz")
        if plain.exists() or not packed.is_file():
            continue
        tmp = plain.with_name(f".{plain.name}.tmp")
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot decompress {str(packed)!r}: {e}; is it a gzip file?") from None
        tmp.replace(plain)


def _expected_files(root: Path, cls, name: str) -> str:
    """The exact files torchvision reads for ``name`` (the message when they are missing)."""
    if name == "cifar10":
        return f"{root / 'cifar-10-batches-py'}/ (data_batch_1..5, test_batch, batches.meta) or {root / cls.filename}"
    raw = root / cls.__name__ / "raw"
    files = ", ".join(f.removesuffix(".gz") for f, _ in cls.resources)
    return f"{files} (each may be .gz) in {raw}"


def _open_image(path: str):
    """ImageFolder's loader, keeping the file's mode (its default converts to RGB, which drops
    alpha and greyscale before the rule sees them)."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
        return img


def _flat_image_folder(root: str):
    """PATH/*.png without class subfolders: an ImageFolder with one unnamed class."""
    import torchvision

    class FlatImageFolder(torchvision.datasets.ImageFolder):
        def find_classes(self, directory):
            return [""], {"": 0}

    return FlatImageFolder(root, loader=_open_image)


def _load_folder(path: str, resolution: int, split: str, channels: int | None) -> GanDataset:
    import torchvision

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist or is not a directory")
    try:
        try:
            base = torchvision.datasets.ImageFolder(str(root), loader=_open_image)
        except FileNotFoundError:  # no class subfolders: the images lie in PATH, unlabelled
            base = _flat_image_folder(str(root))
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(
            f"image folder {str(root)!r} has no readable images ({e}); expected PATH/*.png|jpg or PATH/CLASS/*.png|jpg"
        ) from None
    if len(base) == 0:
        raise UserError(f"image folder {str(root)!r} contains no images")
    modes = _scan_modes([path for path, _ in base.samples])
    if channels is None:
        channels = 1 if modes <= set(GREY_MODES) else 3
    labels = np.array(base.targets)
    idx = split_indices(labels, split) if len(base) >= 10 else np.arange(len(base))
    classes = list(base.classes) if len(base.classes) > 1 else []
    ds = GanDataset(
        f"folder:{root}", split, resolution, channels, classes, base=base, indices=idx.tolist()
    )
    if len(ds) * channels * resolution**2 * 4 > IN_MEMORY_BYTES:
        return ds
    # Decoded once: a step would otherwise decode and resize every image of its batch again.
    x, y = ds.as_tensors()
    return GanDataset(ds.name, split, resolution, channels, classes, tensors=(x, y))


def _scan_modes(paths: Sequence[str]) -> set[str]:
    """The modes of every image (headers only), so that an unreadable or unconvertible file
    fails now, named, not mid-training."""
    from PIL import Image

    modes = set()
    for path in paths:
        try:
            with Image.open(path) as img:
                mode = img.mode
        except Exception as e:
            raise UserError(f"cannot read image {path!r}: {e}") from None
        if mode in UNSUPPORTED_MODES:
            raise UserError(
                f"image {path!r} has {mode!r} pixels (16-bit or floating point), which convert "
                "to 8 bits only by clipping; save it as 8-bit greyscale (L) or RGB"
            )
        modes.add(mode)
    return modes


def _load_fake(resolution: int, split: str, channels: int | None) -> GanDataset:
    import torchvision

    c = channels or 3
    base = torchvision.datasets.FakeData(
        size=256,
        image_size=(c, resolution, resolution),
        num_classes=10,
        random_offset=0 if split == "train" else 10_000,
        transform=torchvision.transforms.ToTensor(),
    )
    return GanDataset("fake", split, resolution, c, [str(i) for i in range(10)], base=base)


def load_dataset(
    spec: str,
    resolution: int,
    split: str = "train",
    data_root: str | None = None,
    channels: int | None = None,
) -> GanDataset:
    """Load ``spec`` (digits | mnist | fashion-mnist | cifar10 | folder:PATH | fake)."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} not allowed; use one of {', '.join(SPLITS)}")
    if spec == "digits":
        return load_digits(resolution, split)
    if spec in TORCHVISION:
        return _load_torchvision(spec, resolution, split, data_root)
    if spec.startswith("folder:"):
        return _load_folder(spec[len("folder:") :], resolution, split, channels)
    if spec == "fake":
        return _load_fake(resolution, split, channels)
    raise UserError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASET_NAMES)}")
