"""Rotary position embedding from real-valued (t, h, w) token positions.

diffusers' ``WanRotaryPosEmbed`` looks cos/sin up in an integer table; EffiVMT's adaptive RoPE
(fractional frame positions) and OmniTransfer's Task-aware Positional Bias (offset reference
positions) need them at arbitrary real positions. :func:`rope_cos_sin` computes the same quantity
from positions, in float64 like upstream, so that at integer positions it reproduces the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Rotary dims given to (t, h, w): h = w = 2 * (head_dim // 6), t takes the rest (Wan 1.3B: 44/42/42)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def grid_positions(
    num_frames: int,
    height: int,
    width: int,
    *,
    frame_positions: torch.Tensor | Sequence[float] | None = None,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Positions ``(N, 3)`` (float64) of a patch grid, in Wan's token order (frame-major, then row, then column).

    Args:
        num_frames, height, width: the grid after patching (latent frames, rows, columns).
        frame_positions: the temporal position of each frame; default ``0..num_frames-1``. Adaptive RoPE passes
            fractional values here (DESIGN.md, "Sparse sampling + adaptive RoPE").
        offset: added to every (t, h, w) position; Task-aware Positional Bias shifts reference tokens this way.
    """
    t = (
        torch.arange(num_frames, dtype=torch.float64)
        if frame_positions is None
        else torch.as_tensor(frame_positions, dtype=torch.float64)
    )
    if t.numel() != num_frames:
        raise ValueError(f"frame_positions has {t.numel()} entries for {num_frames} frames")
    h = torch.arange(height, dtype=torch.float64)
    w = torch.arange(width, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid + torch.as_tensor(offset, dtype=torch.float64)


def adaptive_frame_positions(num_frames: int, num_sampled: int) -> torch.Tensor:
    """Adaptive RoPE temporal positions of ``num_sampled`` frames standing in for ``num_frames`` (latent frames).

    ``p_i = F/2 + (F / F_samp) * (i - F_samp/2)`` for ``0 <= i < F_samp`` (DESIGN.md): the sampled frames are
    spread over the span the full clip occupies, so the learned temporal LoRA sees the frame spacing of the
    full-length generation. With ``F_samp == F`` this is ``0..F-1``.
    """
    if not 0 < num_sampled <= num_frames:
        raise ValueError(f"need 0 < num_sampled <= num_frames, got {num_sampled} of {num_frames}")
    i = torch.arange(num_sampled, dtype=torch.float64)
    return num_frames / 2 + (num_frames / num_sampled) * (i - num_sampled / 2)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape ``(1, N, 1, head_dim)`` (float32) for positions ``(N, 3)``.

    Each axis a with ``d_a`` dims uses frequencies ``theta ** (-2k / d_a)``, ``k < d_a/2``, each repeated twice
    (interleaved real pairs), exactly as ``get_1d_rotary_pos_embed(..., repeat_interleave_real=True)``.
    """
    positions = positions.to(torch.float64)
    cos, sin = [], []
    for axis, dim in enumerate(axis_dims(head_dim)):
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device)[: dim // 2] / dim)
        )
        angles = torch.outer(positions[:, axis], inv_freq)
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    cos_t = torch.cat(cos, dim=1).float()[None, :, None, :]
    sin_t = torch.cat(sin, dim=1).float()[None, :, None, :]
    return cos_t, sin_t


class PositionalRope(nn.Module):
    """Drop-in replacement for ``WanTransformer3DModel.rope`` that computes cos/sin from positions.

    With ``positions`` unset it uses the integer patch grid, i.e. it equals ``WanRotaryPosEmbed``. Setting
    ``positions`` (``(N, 3)``, e.g. from :func:`grid_positions`) switches to real-valued positions for the next
    forward passes; :func:`effivmt.attention.override_positions` does this inside a ``with`` block.
    """

    def __init__(self, attention_head_dim: int, patch_size: Sequence[int], theta: float = 10000.0) -> None:
        super().__init__()
        self.attention_head_dim = attention_head_dim
        self.patch_size = tuple(patch_size)
        self.theta = theta
        self.positions: torch.Tensor | None = None

    def grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """Latent ``(B, C, F, H, W)`` -> patch grid ``(F', H', W')``."""
        _, _, f, h, w = hidden_states.shape
        pt, ph, pw = self.patch_size
        return f // pt, h // ph, w // pw

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.grid(hidden_states)
        positions = self.positions
        if positions is None:
            positions = grid_positions(*grid)
        elif positions.shape[0] != grid[0] * grid[1] * grid[2]:
            raise ValueError(
                f"positions cover {positions.shape[0]} tokens, the input has {grid} = {grid[0] * grid[1] * grid[2]}"
            )
        cos, sin = rope_cos_sin(positions.to(hidden_states.device), self.attention_head_dim, self.theta)
        return cos.to(hidden_states.device), sin.to(hidden_states.device)
