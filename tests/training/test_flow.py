import pytest
import torch

from effivmt.training.flow import (
    add_noise,
    frame_differences,
    motion_loss,
    sample_sigmas,
    shift_sigmas,
    timesteps_from_sigmas,
    velocity_target,
)


def test_flow_matching_pair_follows_design():
    x0, eps = torch.randn(2, 2, 3, 4, 4), torch.randn(2, 2, 3, 4, 4)
    s = torch.tensor([0.25, 0.9])
    xt = add_noise(x0, eps, s)
    torch.testing.assert_close(xt[0], 0.75 * x0[0] + 0.25 * eps[0])
    torch.testing.assert_close(xt[1], 0.1 * x0[1] + 0.9 * eps[1])
    torch.testing.assert_close(velocity_target(x0, eps), eps - x0)
    torch.testing.assert_close(timesteps_from_sigmas(s), torch.tensor([250.0, 900.0]))


def test_shift_moves_mass_to_high_noise():
    u = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert torch.equal(shift_sigmas(u, 1.0), u)
    assert (shift_sigmas(u, 3.0) >= u).all()
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    s = sample_sigmas(1000, 3.0, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and s.mean() > 0.6


def test_motion_loss_is_zero_for_same_motion_and_two_for_reversed():
    v = torch.randn(1, 4, 5, 3, 3)
    assert motion_loss(v, v).item() == pytest.approx(0.0, abs=1e-6)
    # scaling the motion keeps its direction
    assert motion_loss(v * 3.0, v).item() == pytest.approx(0.0, abs=1e-6)
    # negated frame differences: cosine -1 everywhere
    assert motion_loss(-v, v).item() == pytest.approx(2.0, abs=1e-5)


def test_motion_loss_uses_frame_differences_not_values():
    v = torch.randn(1, 2, 4, 2, 2)
    shifted = v + torch.randn(1, 2, 1, 2, 2)  # same offset added to every frame: differences unchanged
    assert motion_loss(shifted, v).item() == pytest.approx(0.0, abs=1e-5)
    assert frame_differences(v).shape == (1, 2, 3, 2, 2)
    with pytest.raises(ValueError):
        motion_loss(v[:, :, :1], v[:, :, :1])
