"""Spatial / temporal template scores of attention heads, streamed over query chunks.

For head h and query i with attention row ``A[i, :]`` over ``N = F*H*W`` tokens (DESIGN.md,
"Head classification"):

* spatial mass ``m_s(i) = sum_{j in frame(i)} A[i, j]``; uniform attention puts ``HW/N = 1/F`` there;
* temporal mass ``m_t(i) = sum_{j: pos(j) = pos(i), frame(j) != frame(i)} A[i, j]``; uniform: ``(F-1)/N``.

``S_spatial = mean_i m_s(i) / (1/F)`` and ``S_temporal = mean_i m_t(i) / ((F-1)/N)``, so a uniform head
scores 1 on both. Only ``(chunk, N)`` attention rows exist at any time: memory is O(chunk x N), never
O(N^2) (N = 32,760 for 81 frames at 480x832 on Wan 1.3B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Rule = Literal["paper", "released"]


def template_masses(
    query: torch.Tensor, key: torch.Tensor, grid: tuple[int, int, int], query_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial and temporal attention mass of the given queries, summed over queries and batch.

    Args:
        query: ``(B, N, heads, D)`` queries after q-norm and RoPE (the tensors attention really uses).
        key: ``(B, N, heads, D)`` keys, likewise.
        grid: ``(F, H, W)`` token grid, tokens in Wan's frame-major order.
        query_index: ``(c,)`` token indices of this chunk's queries.

    Returns:
        Two ``(heads,)`` float64 tensors: summed ``m_s`` and summed ``m_t`` over the chunk and the batch.
    """
    f, h, w = grid
    s = h * w
    q = query[:, query_index].transpose(1, 2).float()  # (B, heads, c, D)
    k = key.transpose(1, 2).float()  # (B, heads, N, D)
    # under bf16-mixed the forward runs in autocast, which would do this matmul in bf16 despite .float()
    with torch.autocast(device_type=q.device.type, enabled=False):
        probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)  # (B, heads, c, N)
    probs = probs.unflatten(-1, (f, s))  # (B, heads, c, F, HW)
    frame = torch.div(query_index, s, rounding_mode="floor").to(probs.device)
    spot = (query_index % s).to(probs.device)
    per_frame = probs.sum(-1)  # (B, heads, c, F)
    spatial = per_frame.gather(-1, frame.view(1, 1, -1, 1).expand(*per_frame.shape[:3], 1)).squeeze(-1)
    same_spot = probs.gather(-1, spot.view(1, 1, -1, 1, 1).expand(*probs.shape[:4], 1)).squeeze(-1)  # (B, heads, c, F)
    own = same_spot.gather(-1, frame.view(1, 1, -1, 1).expand(*same_spot.shape[:3], 1)).squeeze(-1)
    temporal = same_spot.sum(-1) - own
    return spatial.double().sum(dim=(0, 2)), temporal.double().sum(dim=(0, 2))


@dataclass
class ScoreCapture:
    """Accumulates per-(layer, head) template masses while the transformer runs (processor state).

    Attach with :func:`effivmt.attention.capture_scores`; every self-attention processor then adds its
    queries' masses here, ``chunk_size`` queries at a time. ``num_queries`` (optional) samples that many
    query tokens per pass, evenly strided, to bound time on real clips.
    """

    num_layers: int
    num_heads: int
    chunk_size: int = 1024
    num_queries: int | None = None
    grid: tuple[int, int, int] | None = None
    spatial_sum: torch.Tensor = field(init=False)
    temporal_sum: torch.Tensor = field(init=False)
    count: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.spatial_sum = torch.zeros(self.num_layers, self.num_heads, dtype=torch.float64)
        self.temporal_sum = torch.zeros(self.num_layers, self.num_heads, dtype=torch.float64)
        self.count = torch.zeros(self.num_layers, dtype=torch.float64)

    @torch.no_grad()
    def update(self, layer: int, query: torch.Tensor, key: torch.Tensor) -> None:
        """Add the masses of ``query`` against ``key`` (``(B, N, heads, D)``) for transformer block ``layer``."""
        if self.grid is None:
            raise RuntimeError("ScoreCapture.grid is unset; use capture_scores(...) around the forward pass")
        n = query.shape[1]
        if n != self.grid[0] * self.grid[1] * self.grid[2]:
            raise ValueError(f"grid {self.grid} does not match {n} tokens")
        if self.num_queries and self.num_queries < n:
            index = torch.linspace(0, n - 1, self.num_queries).round().long()
        else:
            index = torch.arange(n)
        for chunk in index.split(self.chunk_size):
            sp, tp = template_masses(query, key, self.grid, chunk)
            self.spatial_sum[layer] += sp.cpu()
            self.temporal_sum[layer] += tp.cpu()
        self.count[layer] += index.numel() * query.shape[0]

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(S_spatial, S_temporal)``, each ``(layers, heads)``; uniform attention scores 1 on both."""
        f, h, w = self.grid
        n = f * h * w
        if f < 2:
            raise ValueError("temporal scores need at least 2 latent frames")
        count = self.count.clamp_min(1)[:, None]
        spatial = self.spatial_sum / count / (h * w / n)
        temporal = self.temporal_sum / count / ((f - 1) / n)
        return spatial, temporal


def classify_heads(
    spatial: torch.Tensor, temporal: torch.Tensor, alpha: float = 1.25, rule: Rule = "paper"
) -> list[list[str]]:
    """Label each (layer, head) ``"spatial"`` or ``"temporal"``.

    ``rule="paper"`` (EffiVMT paper, default ``alpha=1.25``): temporal iff ``S_spatial < alpha * S_temporal``.
    ``rule="released"`` (the public Follow-Your-Motion code, use ``alpha=1.3``): spatial iff
    ``S_temporal < alpha * S_spatial``, i.e. temporal iff ``S_temporal >= alpha * S_spatial``.
    """
    if rule == "paper":
        temporal_mask = spatial < alpha * temporal
    elif rule == "released":
        temporal_mask = temporal >= alpha * spatial
    else:
        raise ValueError(f"unknown rule {rule!r}; use 'paper' or 'released'")
    return [["temporal" if t else "spatial" for t in row.tolist()] for row in temporal_mask]
