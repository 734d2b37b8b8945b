"""Stage 2 of EffiVMT: the spatial LoRA learns the clip's appearance from single frames."""

from __future__ import annotations

import torch

from effivmt.training.flow import denoising_loss
from effivmt.vmt.lora_module import WanLoraModule


class SpatialLoRAModule(WanLoraModule):
    """Text-to-image flow matching on one random frame per step; only the ``spatial`` adapter trains.

    Each frame was encoded alone by the VAE (``ClipCache.frame_latents``), so the transformer sees a
    one-frame video, F = 1 latent frame (DESIGN.md, "Flow matching (Wan)").
    """

    def __init__(self, transformer, **kwargs) -> None:
        kwargs.setdefault("adapter", "spatial")
        kwargs.setdefault("active_adapters", ["spatial"])
        super().__init__(transformer, **kwargs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        g = self.step_generator(batch_idx)
        frames = batch["frame_latents"][0]  # (F_video, C, 1, H, W)
        index = int(torch.randint(frames.shape[0], (1,), generator=g))
        x0 = frames[index : index + 1]
        xt, t, target = self.noisy_pair(x0, g)
        pred = self.predict_velocity(xt, t, batch["prompt_embeds"])
        loss = denoising_loss(pred, target)
        self.log("train/loss_denoise", loss, on_step=True, prog_bar=True)
        self.log("train/loss", loss, on_step=True)
        return loss
