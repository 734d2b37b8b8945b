"""Where the object is, in pixels and in latent pixels, for losses that weight it above a flat background.

In the micro world an object covers ~5% of a frame's pixels and ~14% of a clip's latent pixels, so a plain
mean makes a loss mostly about the background's colour. The VAE stages of pretraining weight the pixels of
:func:`foreground_mask`, the DiT stages and OmniTransfer training the latent pixels of :func:`latent_object_mask`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def foreground_mask(video: torch.Tensor) -> torch.Tensor:
    """``(B, 1, F, H, W)``: 1 where a pixel of ``video`` (``(B, 3, F, H, W)`` in [-1, 1]) differs from its frame's
    border colour (the world's background), else 0."""
    border = torch.cat([video[..., 0, :], video[..., -1, :], video[..., :, 0], video[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # (B, 3, F, 1, 1)
    return ((video - background).abs().sum(dim=1, keepdim=True) > 0.1).to(video.dtype)


def latent_object_mask(video: torch.Tensor) -> torch.Tensor:
    """``(B, 1, f, H/8, W/8)``: 1 on every latent pixel the object touches in any frame it encodes, else 0.

    ``video`` is ``(B, 3, F, H, W)`` in [-1, 1] with ``F = 1 + 4k``. Pooled as Wan's causal VAE groups frames
    (latent frame 0 is video frame 0 alone, each later one 4 frames) and by its 8 x 8 spatial stride."""
    if video.shape[2] % 4 != 1:
        raise ValueError(f"expected 1 + 4k frames, got {video.shape[2]}")
    on = foreground_mask(video)
    b, _, f, h, w = on.shape
    later = on[:, :, 1:].reshape(b, 1, (f - 1) // 4, 4, h, w).amax(dim=3)
    return F.max_pool3d(torch.cat([on[:, :, :1], later], dim=2), (1, 8, 8))


__all__ = ["foreground_mask", "latent_object_mask"]
