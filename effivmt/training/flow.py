"""Flow-matching maths as tiny pure functions (DESIGN.md, "Flow matching (Wan)" and "Motion loss").

Kept free of Lightning and Wan so each equation is tested alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift: ``s = shift * u / (1 + (shift - 1) * u)``; ``shift > 1`` favours high noise."""
    return shift * u / (1 + (shift - 1) * u)


def sample_sigmas(batch: int, shift: float = 3.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels ``s`` in (0, 1) for a training batch: uniform ``u``, then :func:`shift_sigmas`."""
    u = torch.rand(batch, generator=generator, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
    return shift_sigmas(u, shift).float()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - s) x0 + s * eps`` with ``s`` broadcast over all but the batch dim."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching target ``v = eps - x0``."""
    return noise - x0


def timesteps_from_sigmas(sigma: torch.Tensor) -> torch.Tensor:
    """Wan's timestep convention ``t = 1000 * s``."""
    return sigma * 1000.0


def frame_differences(v: torch.Tensor) -> torch.Tensor:
    """``d_i = v_i - v_{i-1}`` along the frame axis of ``(B, C, F, H, W)``; returns ``(B, C, F-1, H, W)``."""
    return v[:, :, 1:] - v[:, :, :-1]


def motion_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``L_motion = mean_i (1 - cos(d_pred_i, d_true_i))`` over latent frames i >= 1 (DESIGN.md, "Motion loss").

    Each ``d_i`` is the whole latent frame difference flattened over (C, H, W), so the loss rewards the
    direction of change between frames and is blind to its magnitude. Needs at least 2 frames.
    """
    if pred.shape[2] < 2:
        raise ValueError("the motion loss needs at least 2 latent frames")
    d_pred = frame_differences(pred.float()).transpose(1, 2).flatten(2)  # (B, F-1, C*H*W)
    d_true = frame_differences(target.float()).transpose(1, 2).flatten(2)
    return (1 - F.cosine_similarity(d_pred, d_true, dim=-1, eps=eps)).mean()


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between predicted and true velocity (float32). ``weight`` (broadcast to ``pred``)
    weights each element, normalised by its mean so the loss keeps its scale."""
    if weight is None:
        return F.mse_loss(pred.float(), target.float())
    weight = weight.float().expand_as(pred)
    return (weight * (pred.float() - target.float()).square()).mean() / weight.mean()


__all__ = [
    "add_noise",
    "denoising_loss",
    "frame_differences",
    "motion_loss",
    "sample_sigmas",
    "shift_sigmas",
    "timesteps_from_sigmas",
    "velocity_target",
]
