"""Stage 1 of pretraining: the Wan VAE learns to reconstruct micro-world clips.

The loss is L1 + MSE on pixels plus a small KL (no GAN: flat colours need none). Reconstruction goes
through the posterior *mode*: every consumer (the latent cache, ``vae_encode``, the I2V pipeline's
``sample_mode="argmax"``) encodes with the mode, and at this width the posterior's unit initial variance
drowns the encoder's signal (std ~0.13 at initialisation) and stalled training at 11 dB PSNR for
hundreds of steps. Windows of 1 + 4k
frames are enough: the VAE is causal in time, so what it learns on short windows holds for long clips.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import IterableDataset

from effivmt.data.world import render, sample_scene


class WorldWindows(IterableDataset):
    """Endless random windows of pretraining scenes: ``(3, frames, H, W)`` in [-1, 1]; seeded, resumable by step."""

    def __init__(self, frames: int, size: int, clip_frames: int, seed: int = 0, start: int = 0) -> None:
        self.frames, self.size, self.clip_frames, self.seed, self.start = frames, size, clip_frames, seed, start

    def __iter__(self):
        i = self.start
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            clip = render(sample_scene(10_000_000 + i), self.clip_frames, self.size, self.size)
            first = int(torch.randint(0, self.clip_frames - self.frames + 1, (1,), generator=g))
            window = clip.frames[first : first + self.frames].permute(3, 0, 1, 2).float() / 127.5 - 1
            i += 1
            yield window


class VaePretrainModule(L.LightningModule):
    """Trains an ``AutoencoderKLWan`` by reconstruction from the posterior mode."""

    def __init__(self, vae, lr: float = 5e-4, kl_weight: float = 1e-6, max_steps: int = 1200) -> None:
        super().__init__()
        self.vae = vae
        self.lr, self.kl_weight, self.max_steps = lr, kl_weight, max_steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        posterior = self.vae.encode(batch).latent_dist
        recon = self.vae.decode(posterior.mode()).sample
        l1 = (recon - batch).abs().mean()
        mse = (recon - batch).pow(2).mean()
        kl = posterior.kl().mean()
        loss = l1 + mse + self.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))
        self.log_dict({"vae/loss": loss, "vae/psnr": psnr, "vae/kl": kl}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=self.max_steps, pct_start=0.02, final_div_factor=20
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
