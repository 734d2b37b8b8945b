"""TensorBoard pictures of a run: the head map after stage 1, sample frames during and after training.

Scalars (losses, learning rate, gradient norm) are logged by the modules and Lightning's
``LearningRateMonitor``; these callbacks add the images a person looks at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch

from effivmt.training.flow import add_noise


def frame_strip(frames: np.ndarray | torch.Tensor, max_frames: int = 8) -> np.ndarray:
    """uint8 ``(F, H, W, 3)`` -> one ``(H, W * k, 3)`` image of ``k <= max_frames`` evenly spaced frames."""
    from effivmt.data.video import to_uint8_frames

    frames = to_uint8_frames(frames)
    index = torch.linspace(0, frames.shape[0] - 1, min(max_frames, frames.shape[0])).round().long()
    return torch.cat(list(frames[index]), dim=1).numpy()


def log_image(log_dir: Path, name: str, tag: str, image: np.ndarray, step: int = 0) -> None:
    """Write one HWC uint8 image to ``log_dir/name`` (a TensorBoard run of its own, e.g. ``logs/heads``)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=log_dir, name=name, version="", default_hp_metric=False)
    logger.experiment.add_image(tag, image, step, dataformats="HWC")
    logger.experiment.flush()
    logger.finalize("success")


class SampleFramesLogger(L.Callback):
    """Every ``every_n_steps`` steps and at the end of training, log what the model makes of the clip.

    A cheap probe, not a full generation: the clip's latents are noised to ``sigma`` with a fixed seed, the
    transformer predicts the velocity once, and the first ``max_latent_frames`` of ``x0 = x_t - sigma * v`` are
    decoded where the transformer runs (``decode`` gets them on the module's device) into a strip of frames
    (``samples/reconstruction``). Decoding all 81 frames at 480x832 on the CPU took minutes while the GPU waited.
    The final generation is logged by the run.

    Args:
        latents: ``(1, C, F, H, W)`` clip latents.
        prompt_embeds: ``(1, L, D)`` caption embeddings.
        decode: normalised latents -> video ``(1, 3, F, H, W)`` in [-1, 1].
        every_n_steps: period in optimizer steps (0: only at the end).
        sigma: noise level of the probe.
        max_latent_frames: latent frames decoded (2: 5 video frames).
    """

    def __init__(
        self,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        decode: Callable[[torch.Tensor], torch.Tensor],
        every_n_steps: int = 0,
        sigma: float = 0.6,
        max_latent_frames: int = 2,
    ) -> None:
        self.latents = latents
        self.prompt_embeds = prompt_embeds
        self.decode = decode
        self.every_n_steps = every_n_steps
        self.sigma = sigma
        self.max_latent_frames = max_latent_frames

    @torch.no_grad()
    def _log(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.logger is None or not trainer.is_global_zero:
            return
        transformer = module.transformer
        noise = torch.randn(self.latents.shape, generator=torch.Generator().manual_seed(0))
        s = torch.tensor([self.sigma])
        xt = add_noise(self.latents, noise, s).to(module.device, transformer.dtype)
        v = transformer(
            xt, (s * 1000).to(module.device), self.prompt_embeds.to(module.device, transformer.dtype), return_dict=False
        )[0]
        x0 = (xt - self.sigma * v)[:, :, : self.max_latent_frames].float()  # stays on the module's device
        video = self.decode(x0)[0]
        trainer.logger.experiment.add_image(
            "samples/reconstruction", frame_strip(video), trainer.global_step, dataformats="HWC"
        )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step > 0:
            self._log(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        self._log(trainer, module)
