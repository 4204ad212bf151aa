"""Pictures a person looks at during and after training: sample grids, the StyleGAN-lite
style-mixing figure, the loss curves and an animated GIF of the grids over training.

Every file is written to a temp name and renamed, so a viewer never sees half an image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.models.code import latent_code, with_code

# Grids of 16 px digits are tiny; enlarge them (nearest neighbour, so pixels stay honest).
MIN_GRID_SIDE = 256


def _atomic_save(image: Image.Image, path: Path, **kwargs) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    image.save(tmp, **kwargs)
    tmp.replace(path)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_image(images: torch.Tensor, ncols: int, pad: int = 1) -> Image.Image:
    """Tile ``images`` ([N, C, H, W] in [-1, 1]) row-major into ``ncols`` columns."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrows = -(-n // ncols)
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, "L" if c == 1 else "RGB")
    scale = -(-MIN_GRID_SIDE // max(img.size))  # ceil: at least MIN_GRID_SIDE on the long side
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_grid(images: torch.Tensor, path: Path, ncols: int) -> Path:
    """Write a PNG sample grid (one row per class for conditional models: ncols per class)."""
    _atomic_save(grid_image(images, ncols), path)
    return Path(path)


@torch.no_grad()
def style_mixing_images(
    G: torch.nn.Module,
    row_z: torch.Tensor,
    col_z: torch.Tensor,
    styles: Sequence[int],
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """NVlabs-style mixing table as a batch: first row = column images, first column = row images,
    cell (r, c) = row r's ws with the column's ws at ``styles``; the top-left corner is blank."""
    num_ws = G.num_ws
    dev = G.synthesis.const.device

    def ws_of(z):
        lab = None
        if G.mapping.embed is not None:
            lab = torch.zeros(len(z), dtype=torch.long, device=dev) if labels is None else labels
        return G.mapping(z.to(dev), lab)[:, None, :].expand(-1, num_ws, -1)

    ws_r, ws_c = ws_of(row_z), ws_of(col_z)
    img_r, img_c = G.synthesis(ws_r), G.synthesis(ws_c)
    cells = [torch.full_like(img_c[:1], 1.0)]  # blank (white) corner
    cells += list(img_c.split(1))
    idx = torch.tensor(list(styles), dtype=torch.long, device=dev)
    values = G.mapping.cfg.latent_code
    for r in range(len(row_z)):
        cells.append(img_r[r : r + 1])
        base = ws_r[r : r + 1].expand(len(col_z), -1, -1)
        donor = ws_c
        if values:  # one code per cell, the coarsest layer's (gancore.sampling's rule)
            if 0 in styles:
                z = with_code(
                    row_z[r : r + 1].expand(len(col_z), -1), latent_code(col_z, values), values
                )
                base = ws_of(z)
            else:
                donor = ws_of(
                    with_code(
                        col_z, latent_code(row_z[r : r + 1], values).expand(len(col_z)), values
                    )
                )
        mixed = base.clone()
        mixed[:, idx] = donor[:, idx]
        cells += list(G.synthesis(mixed).split(1))
    return torch.cat(cells)


def save_style_mixing(
    G: torch.nn.Module, path: Path, seed: int = 0, rows: int = 4, cols: int = 4, region="coarse"
) -> Path:
    """Write the style-mixing figure: ``rows`` row seeds x ``cols`` column seeds, the column's
    ``region`` (coarse by default) styles swapped into each row image."""
    from training.models import style_ranges

    g = torch.Generator().manual_seed(seed + 777)
    latent = G.mapping.cfg.latent_dim
    row_z = torch.randn(rows, latent, generator=g)
    col_z = torch.randn(cols, latent, generator=g)
    a, b = style_ranges(G.num_ws)[region]
    images = style_mixing_images(G, row_z, col_z, range(a, b))
    return save_grid(images.float().cpu(), path, cols + 1)


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl (a torn last line from a crash is skipped)."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_losses(metrics_path: Path, out_png: Path) -> Path:
    """Loss curves (D, G and any penalty) against kimg, plus evaluation scores if logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "loss_D" in r]
    evals = [r for r in records if "eval" in r]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 6, 4), squeeze=False)
    ax = axes[0, 0]
    keys = [k for k in ("loss_D", "loss_G", "r1", "gp") if any(k in r for r in train)]
    for k in keys:
        pts = [(r["kimg"], r[k]) for r in train if k in r]
        ax.plot(*zip(*pts), label=k, linewidth=1)
    ax.set_xlabel("kimg")
    ax.set_ylabel("loss")
    ax.set_title("training losses")
    if keys:
        ax.legend()
    if evals:
        ax2 = axes[0, 1]
        names = sorted(
            {k for r in evals for k, v in r["eval"].items() if isinstance(v, int | float)}
            - {"n", "fd_floor"}  # constants of the evaluation, not figures of the model
        )
        for k in names:
            pts = [(r["kimg"], r["eval"][k]) for r in evals if k in r["eval"]]
            ax2.plot(*zip(*pts), marker="o", label=k)
        ax2.set_xlabel("kimg")
        ax2.set_title("evaluation")
        ax2.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def make_gif(frames: Sequence[Path], out_gif: Path, ms_per_frame: int = 300) -> Path | None:
    """Animated GIF of the sample grids in order (the last frame held longer)."""
    if not frames:
        return None
    images = []
    for p in frames:
        with Image.open(p) as im:
            images.append(im.convert("L" if im.mode == "L" else "RGB"))
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 5]
    _atomic_save(
        images[0],
        out_gif,
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
    )
    return Path(out_gif)
