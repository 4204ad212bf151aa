"""Image helpers shared by gan-sample, the gate and the server (numpy + Pillow, no torch).

Model images are float32 ``[N, C, R, R]`` in ``[-1, 1]``; files and HTTP responses are 8-bit.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` (or ``[C, H, W]``) floats in [-1, 1] -> uint8 ``[N, H, W, C]`` (or ``[H, W, C]``)."""
    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in (1, 3), got shape {x.shape}")
    u8 = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return u8[0] if single else u8


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0):
    """Tile ``[N, C, H, W]`` images in [-1, 1] into one uint8 ``[H', W', C]`` picture, ``nrow`` per row."""
    tiles = to_uint8(images)
    n, h, w, c = tiles.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    ncol = max(1, min(nrow or int(np.ceil(np.sqrt(n))), n))
    nrows = int(np.ceil(n / ncol))
    grid = np.full(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8
    )
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y : y + h, x : x + w] = tiles[i]
    return grid


def encode_png(picture: np.ndarray) -> bytes:
    """uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` -> PNG bytes."""
    from PIL import Image

    arr = np.asarray(picture)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8 pixels, got {arr.dtype} (use to_uint8 first)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write PNG bytes atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(encode_png(picture))
    tmp.replace(path)
    return path
