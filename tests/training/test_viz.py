"""The pictures a user looks at: grids, style-mixing figure, loss curves, progress GIF."""

import json

import pytest
import torch
from PIL import Image

from training import viz
from training.config import ModelConfig
from training.models import build_models

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_layout_and_scaling(tmp_path):
    images = torch.linspace(-1, 1, 6 * 16 * 16).reshape(6, 1, 16, 16)
    path = viz.save_grid(images, tmp_path / "g.png", ncols=3)
    with Image.open(path) as im:
        # 2 rows x 3 columns of 16 px + 1 px padding, enlarged to at least 256 px wide.
        w, h = 3 * 17 + 1, 2 * 17 + 1
        scale = -(-viz.MIN_GRID_SIDE // w)
        assert im.size == (w * scale, h * scale) and im.mode == "L"


def test_style_mixing_figure(tmp_path):
    cfg = ModelConfig(kind="stylegan", resolution=16, g_width=8, d_width=8, latent_dim=16)
    G, _ = build_models(cfg)
    G.eval()
    row_z, col_z = torch.randn(2, 16), torch.randn(3, 16)
    cells = viz.style_mixing_images(G, row_z, col_z, range(0, 2))
    assert cells.shape == ((2 + 1) * (3 + 1), 1, 16, 16)
    # A cell with *no* styles swapped is exactly its row image.
    same = viz.style_mixing_images(G, row_z, col_z, [])
    assert torch.allclose(same[4 + 1], same[4])
    path = viz.save_style_mixing(G, tmp_path / "mix.png", rows=2, cols=3)
    assert path.is_file()


@pytest.mark.parametrize("styles", [range(0, 2), range(3, 6)])
def test_style_mixing_figure_of_a_coded_model_keeps_one_code_per_cell(styles):
    """As gancore.sampling.style_mix: each mixed cell takes the code of the seed that gives it
    layer 0, the other seed's z redrawn in that code (mapping replaced by w = z to read it)."""
    from training.models.code import latent_code

    cfg = ModelConfig(kind="stylegan", resolution=16, g_width=8, d_width=8, latent_dim=16,
                      w_dim=16, latent_code=4)  # fmt: skip
    G, _ = build_models(cfg)
    G.mapping.forward = lambda z, label=None: z
    seen = []
    synthesis = G.synthesis.forward
    G.synthesis.forward = lambda ws, noise=None: seen.append(ws) or synthesis(ws, noise)
    g = torch.Generator().manual_seed(3)
    row_z, col_z = torch.randn(3, 16, generator=g), torch.randn(4, 16, generator=g)
    viz.style_mixing_images(G, row_z, col_z, styles)
    mixed = torch.cat(seen[2:])  # after the row and column images: one batch per row
    assert mixed.shape == (3 * 4, G.num_ws, 16)
    codes_r, codes_c = latent_code(row_z, 4), latent_code(col_z, 4)
    assert len(set(codes_r.tolist()) | set(codes_c.tolist())) > 1
    for r in range(3):
        for c in range(4):
            cell = mixed[r * 4 + c]
            want = codes_c[c] if 0 in styles else codes_r[r]
            assert (latent_code(cell, 4) == want).all(), (r, c)


def test_loss_plot_and_gif(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "kimg": s / 10, "loss_D": 1.0 / s, "loss_G": s / 5} for s in range(1, 6)]
    lines.append({"step": 5, "kimg": 0.5, "eval": {"fd_classifier": 3.0}})
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n{torn")
    assert viz.plot_losses(metrics, tmp_path / "loss.png").stat().st_size > 1000
    frames = [
        viz.save_grid(torch.rand(4, 1, 8, 8) * 2 - 1, tmp_path / f"f{i}.png", 2) for i in range(3)
    ]
    gif = viz.make_gif(frames, tmp_path / "p.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 3
