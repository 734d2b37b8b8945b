"""Per-clip cache of VAE latents and prompt embeddings, and the DataModule that serves it.

The VAE and the text encoder run once per clip (:func:`build_clip_cache`); training then needs only
the transformer, so the run frees them from the accelerator. The cache is a safetensors file in the
run folder, so a resumed run does not encode again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from effivmt.io import atomic_path


@dataclass
class ClipCache:
    """Everything the training stages read from one clip.

    Attributes:
        video_latents: ``(1, C, F, H, W)`` normalised latents of the whole clip (temporal stage).
        frame_latents: ``(F_video, C, 1, H, W)`` each video frame encoded alone (spatial stage).
        prompt_embeds: ``(1, L, D)`` embeddings of the clip's caption.
    """

    video_latents: torch.Tensor
    frame_latents: torch.Tensor
    prompt_embeds: torch.Tensor

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in vars(self).items()}, str(tmp))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ClipCache:
        return cls(**load_file(str(path)))


def build_clip_cache(components, video: torch.Tensor, prompt: str) -> ClipCache:
    """Encode ``video`` (``(3, F, H, W)`` in [-1, 1]) and ``prompt`` once."""
    from effivmt.backbone.encode import encode_frames, encode_prompts, encode_video

    return ClipCache(
        video_latents=encode_video(components, video).cpu(),
        frame_latents=encode_frames(components, video).cpu(),
        prompt_embeds=encode_prompts(components, [prompt]).cpu(),
    )


class _Repeat(Dataset):
    """The same cached clip, ``length`` times; the per-step randomness lives in the LightningModule."""

    def __init__(self, cache: ClipCache, length: int) -> None:
        self.cache = cache
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] if k != "frame_latents" else v for k, v in vars(self.cache).items()}


class ClipDataModule(L.LightningDataModule):
    """Serves one cached clip per optimizer step.

    Frame choice, noise level and noise are drawn inside the module's ``training_step`` from a generator
    seeded by the global step, not here: a run resumed from a checkpoint then draws the same samples as an
    uninterrupted one, whatever the dataloader's position.
    """

    def __init__(self, cache: ClipCache, steps: int) -> None:
        super().__init__()
        self.cache = cache
        self.steps = steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Repeat(self.cache, self.steps), batch_size=1, shuffle=False, num_workers=0)
