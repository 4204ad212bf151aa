"""Datasets as a user places them: torchvision MNIST-family files put by hand (compressed or
not), and image folders that mix sizes and modes."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from training.datasets import load_dataset
from training.errors import UserError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")  # fmt: skip


def _idx_files(n: int, seed: int) -> dict[str, bytes]:
    """Valid idx files of ``n`` 28x28 images per split: image i is a bright bar at row 2 * label."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix in ("train", "t10k"):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y + 4 : 2 * y + 6, 4:24] = 255
        out[f"{prefix}-images-idx3-ubyte"] = (
            struct.pack(">iiii", 0x803, n, 28, 28) + images.tobytes()
        )
        out[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">ii", 0x801, n) + labels.tobytes()
    return out


@pytest.mark.parametrize("compressed", [False, True], ids=["ubyte", "ubyte.gz"])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_hand_placed_mnist_files_load(tmp_path, name, folder, compressed):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    files = _idx_files(30, seed=1)
    for fname, data in files.items():
        if compressed:
            (raw / f"{fname}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / fname).write_bytes(data)
    ds = load_dataset(name, 16, "train", data_root=str(tmp_path))
    held = load_dataset(name, 16, "heldout", data_root=str(tmp_path))
    assert len(ds) == len(held) == 30 and ds.channels == 1 and ds.num_classes == 10
    x, y = ds[0]
    assert x.shape == (1, 16, 16) and -1 <= x.min() and x.max() <= 1
    # The bar of image 0 is where its label puts it: the pixels are the file's, not noise.
    labels = np.frombuffer(files["train-labels-idx1-ubyte"][8:], np.uint8)
    assert y == labels[0]
    row = int(x[0].mean(1).argmax())
    assert abs(row - (2 * labels[0] + 5) * 16 / 28) <= 1.5
    if compressed:  # decompressed beside the .gz, as torchvision's downloader leaves them
        assert all((raw / f).is_file() for f in FILES)
        assert not list(raw.glob(".*tmp"))


def test_missing_mnist_files_are_named(tmp_path, monkeypatch):
    import torchvision

    def offline(self, *a, **k):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(UserError) as e:
        load_dataset("mnist", 16, "train", data_root=str(tmp_path))
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for f in FILES:
        assert f in message
    assert "*" not in message  # exact names, no pattern to guess from


def test_bad_gzip_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", 16, "train", data_root=str(tmp_path))
    assert not (raw / "train-images-idx3-ubyte").exists()


def _mixed_folder(root, grey_only=False):
    cls = root / "a"
    cls.mkdir(parents=True)
    Image.new("L", (40, 20), 0).save(cls / "wide-grey.png")
    if not grey_only:
        # A transparent RGBA image: composited on white, so its empty pixels are white.
        rgba = Image.new("RGBA", (24, 24), (255, 0, 0, 0))
        rgba.paste((255, 0, 0, 255), (8, 8, 16, 16))
        rgba.save(cls / "emoji.png")
        Image.new("RGB", (10, 30), (0, 0, 255)).save(cls / "tall-rgb.jpg")
    Image.new("LA", (16, 16), (0, 0)).save(cls / "transparent-grey.png")
    return root


def test_mixed_folder_follows_one_rule(tmp_path):
    root = _mixed_folder(tmp_path / "mixed")
    ds = load_dataset(f"folder:{root}", 16, "train")
    assert ds.channels == 3  # any colour file makes the folder RGB
    names = sorted(p.name for p in (root / "a").iterdir())  # ImageFolder's order
    assert len(ds) == len(names)  # too few images for a held-out split: all train
    images = {name: ds[i][0].numpy() for i, name in enumerate(names)}
    emoji = images["emoji.png"]
    assert emoji.shape == (3, 16, 16)
    assert np.allclose(emoji[:, 0, 0], 1.0)  # transparent corner -> white
    assert emoji[0, 8, 8] > 0.9 and emoji[1, 8, 8] < -0.9  # opaque centre stays red
    assert np.allclose(images["wide-grey.png"], -1.0)  # grey -> RGB, crop keeps it black
    blue = images["tall-rgb.jpg"]
    assert blue[2].mean() > 0.9 and blue[0].mean() < -0.9  # centre-crop, not padding
    assert np.allclose(images["transparent-grey.png"], 1.0)  # LA on white
    grey = load_dataset(f"folder:{_mixed_folder(tmp_path / 'grey', grey_only=True)}", 16)
    assert grey.channels == 1  # all greyscale -> one channel


def test_folder_with_unconvertible_or_unreadable_file_is_refused_by_name(tmp_path):
    root = _mixed_folder(tmp_path / "deep")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "a" / "depth.png")
    with pytest.raises(UserError, match=r"depth\.png.*16-bit"):
        load_dataset(f"folder:{root}", 16)
    (root / "a" / "depth.png").unlink()
    (root / "a" / "zz-truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UserError, match=r"cannot read image .*zz-truncated\.png"):
        load_dataset(f"folder:{root}", 16)
