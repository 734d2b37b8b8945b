"""Reference Latent Construction: the ``2n + 4`` channel inputs of the target and reference branches.

Wan 2.1 I2V's transformer reads ``l ∈ R^{f×h×w×(2n+4)}`` (paper, "Method"), concatenated in the channel order
``WanImageToVideoPipeline`` uses: ``[noisy latent z_t (n), mask m (4), condition latent c (n)]``. The mask has
4 channels because the VAE packs 4 frames into one latent frame; 1 marks a given frame, 0 a generated one.

* target: ``[z_t, m, c]`` with ``c = VAE([first frame, zeros...])`` and ``m = 1`` on the first frame only,
  exactly what the stock pipeline builds;
* reference: ``[z_ref, 1, flag]``: the *clean* reference latent, an all-ones mask (every frame is given) and,
  in the condition slot, the constant task flag (-1 temporal, -2 ID, -3 style; :class:`TaskConfig`).

Latents are normalised as in the pipeline: ``(z - latents_mean) / latents_std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from effivmt.backbone.encode import first_frame_condition as target_condition  # noqa: F401  (OmniTransfer API)
from effivmt.backbone.encode import first_frame_mask  # noqa: F401  (OmniTransfer API)
from effivmt.backbone.encode import vae_decode as decode_latents  # noqa: F401  (OmniTransfer API)
from effivmt.backbone.encode import vae_encode as encode_video  # noqa: F401  (OmniTransfer API)
from effivmt.omnitransfer.tasks import TaskConfig


def target_input(noisy: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Target branch input ``l_tgt = [z_t, m, c]`` ``(B, 2n + 4, f, h, w)`` (Wan I2V channel order)."""
    return torch.cat([noisy, condition.to(noisy)], dim=1)


def reference_input(
    latent: torch.Tensor, task: str | Sequence[str], config: TaskConfig | None = None, mask_channels: int = 4
) -> torch.Tensor:
    """Reference branch input ``l_ref = [z_ref, 1, flag]`` ``(B, 2n + 4, f, h, w)``.

    Args:
        latent: clean normalised reference latent ``(B, n, f, h, w)`` (from :func:`encode_video`).
        task: the task this reference serves (or one per batch item); its flag fills the ``n`` condition channels.
        config: task flags; default :class:`TaskConfig`.
        mask_channels: mask width of the backbone (``in_channels - 2n``; 4 for Wan 2.1 I2V).
    """
    config = config or TaskConfig()
    b, _, f, h, w = latent.shape
    mask = latent.new_ones(b, mask_channels, f, h, w)
    tasks = [task] * b if isinstance(task, str) else list(task)
    if len(tasks) != b:
        raise ValueError(f"{len(tasks)} tasks for a batch of {b}")
    values = torch.tensor([float(config.flags[t]) for t in tasks], dtype=latent.dtype, device=latent.device)
    flag = values.view(b, 1, 1, 1, 1).expand_as(latent)
    return torch.cat([latent, mask, flag], dim=1)
