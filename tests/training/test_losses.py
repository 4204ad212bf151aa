"""Losses and stabilisers against hand-computed values."""

import math

import pytest
import torch

from training import losses as L

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bce_and_label_smoothing_match_binary_cross_entropy():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.full_like(real, 0.9)) + bce(fake, torch.zeros_like(fake))
    assert torch.allclose(L.d_loss_bce(real, fake, smoothing=0.1), expected)
    assert torch.allclose(L.g_loss_nonsaturating(fake), bce(fake, torch.ones_like(fake)))


def test_hinge_and_wasserstein():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert L.d_loss_hinge(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert L.g_loss_hinge(fake).item() == pytest.approx(1.0)
    assert L.d_loss_wasserstein(real, fake).item() == pytest.approx(-1.0 - 1.25)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <a, x> has gradient a everywhere: penalty = (|a| - 1)^2.
    a = torch.full((1, 2, 2), 1.0)  # |a| = 2
    D = lambda x: (x * a).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    gp = L.gradient_penalty(D, real, fake, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(1.0)


def test_r1_of_a_quadratic_critic():
    x = torch.randn(4, 1, 3, 3, requires_grad=True)
    logits = 0.5 * x.square().flatten(1).sum(1)  # gradient x -> R1 = E||x||^2
    assert L.r1_penalty(logits, x).item() == pytest.approx(x.detach().square().sum().item() / 4)


def test_instance_noise_is_seeded_and_zero_sigma_is_identity():
    x = torch.zeros(2, 1, 4, 4)
    assert L.instance_noise(x, 0.0) is x
    a = L.instance_noise(x, 0.5, torch.Generator().manual_seed(1))
    b = L.instance_noise(x, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and math.isclose(a.std().item(), 0.5, rel_tol=0.5)


def test_unknown_loss_is_a_user_error():
    with pytest.raises(L.UserError, match="unknown loss"):
        L.get_loss("nope")


def test_mode_seeking_is_large_for_a_collapsed_generator_and_differentiable():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    collapsed = torch.zeros(8, 1, 4, 4, requires_grad=True)
    spread = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert L.mode_seeking(collapsed, z) > 1e3 > L.mode_seeking(spread, z)
    L.mode_seeking(collapsed + 0.01 * spread, z).backward()
    assert collapsed.grad is not None and collapsed.grad.abs().sum() > 0
