"""DiffAugment: every op keeps shapes, is differentiable, is reproducible from its generator, and
does what its name says; policies parse or fail with a message naming the bad one."""

import json

import pytest
import torch

from training import augment as A
from training.errors import UserError
from training.train_config import resolve_options

from .conftest import run_cli


def batch(n=8, c=1, r=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, r, r, generator=g) * 2 - 1


@pytest.mark.parametrize("name", [*A.POLICIES, "xflip"])
def test_each_op_keeps_shape_and_passes_gradients(name):
    x = batch(c=3).requires_grad_(True)
    aug = A.DiffAugment("" if name == "xflip" else name, flip=name == "xflip")
    y = aug(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    # A fixed random weighting of the output: its gradient must reach the input.
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_same_generator_state_gives_same_augmentation():
    x = batch()
    aug = A.DiffAugment("color,translation,cutout")
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_translation_shifts_whole_images_and_fills_with_zeros():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0  # a bright square in the middle
    y = A.translation(x, torch.Generator().manual_seed(0))
    # Each output is the same square moved by at most 2 pixels (1/8 of 16): mass is kept.
    assert torch.allclose(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    rows = y[:, 0].sum(dim=2).argmax(dim=1)  # first row of the square
    assert (rows >= 4).all() and (rows <= 8).all() and len(set(rows.tolist())) > 1
    # An image shifted by translation is filled with zeros where it moved from.
    ones = A.translation(torch.ones(64, 1, 16, 16), torch.Generator().manual_seed(0))
    assert ((ones == 0) | (ones == 1)).all() and (ones == 0).any()


def test_cutout_zeroes_one_half_size_square():
    y = A.cutout(torch.ones(32, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (y == 0).sum(dim=(1, 2, 3))
    # An 8x8 square, clipped by the border when the centre is near it.
    assert (zeros <= 64).all() and (zeros >= 16).all() and (zeros == 64).any()


def test_brightness_and_contrast_change_each_image_differently():
    x = batch(n=16)
    b = A.brightness(x, torch.Generator().manual_seed(0)) - x
    offsets = b.flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
    assert offsets[:, 0].abs().max() <= 0.5 and offsets[:, 0].std() > 0
    c = A.contrast(x, torch.Generator().manual_seed(0))
    assert torch.allclose(c.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-6)


def test_saturation_is_a_no_op_on_grey_images():
    x = batch(c=1)
    assert torch.allclose(A.saturation(x, torch.Generator().manual_seed(0)), x)


def test_xflip_mirrors_about_half_of_the_images():
    x = batch(n=200)
    y = A.xflip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert (flipped | kept).all() and 70 < int(flipped.sum()) < 130


def test_policy_parsing():
    assert A.parse_policy("translation, cutout") == ("translation", "cutout")
    assert A.parse_policy("") == () and A.parse_policy("none") == () and A.parse_policy(None) == ()
    assert not A.DiffAugment("") and A.DiffAugment("", flip=True)
    with pytest.raises(UserError, match=r"unknown augmentation policy 'rotate'.*translation"):
        A.parse_policy("translation,rotate")
    with pytest.raises(UserError, match="twice"):
        A.parse_policy("cutout,cutout")
    with pytest.raises(UserError, match="'blur'"):
        resolve_options({"model": "dcgan", "augment": "blur"})


def test_augmented_training_step_runs_and_is_recorded(tmp_path, tiny):
    from training.trainer import train

    out = tmp_path / "run"
    train({**tiny, "model": "cgan", "kimg": 0.128, "augment": "color,translation,cutout"}, out)
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["augment"] == "color,translation,cutout" and cfg["xflip"] is False


def test_cli_unknown_policy_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = run_cli("--model", "dcgan", "--augment", "translation,zoom", "--out", str(out))
    assert r.returncode == 2
    assert "unknown augmentation policy 'zoom'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
