"""Stage 3 of EffiVMT: the temporal LoRA learns the clip's motion from sparsely sampled frames."""

from __future__ import annotations

from typing import Literal

import torch

from effivmt.attention import adaptive_frame_positions, grid_positions, override_positions
from effivmt.data.samplers import FrameSampler, UniformStride
from effivmt.errors import ConfigError
from effivmt.training.flow import denoising_loss, motion_loss
from effivmt.vmt.lora_module import WanLoraModule

PositionMode = Literal["adaptive", "sampled", "contiguous"]


def temporal_positions(indices: torch.Tensor, total: int, mode: PositionMode) -> torch.Tensor:
    """Frame positions of the sampled latent frames, from their indices alone.

    * ``adaptive``: ``p_i = F/2 + (F/F_samp)(i - F_samp/2)`` (DESIGN.md, adaptive RoPE; the paper's choice);
    * ``sampled``: the frames' true indices in the clip;
    * ``contiguous``: ``0..F_samp-1`` (no correction; the paper's "w/o adaptive RoPE" ablation).

    In training, :func:`step_frames` draws frames and positions together, so adaptive positions follow the
    frames actually drawn.
    """
    if mode == "adaptive":
        return adaptive_frame_positions(total, indices.numel())
    if mode == "sampled":
        return indices.to(torch.float64)
    if mode == "contiguous":
        return torch.arange(indices.numel(), dtype=torch.float64)
    raise ValueError(f"unknown position mode {mode!r}")


def check_positions(sampler: FrameSampler, mode: PositionMode) -> None:
    """Refuse adaptive positions with a sampler whose frames are not spread evenly over the clip.

    Raises:
        ConfigError: ``position_mode: adaptive`` with e.g. ``RandomWindow`` (contiguous frames would be told they
            lie F/F_samp apart).
    """
    if mode == "adaptive" and not sampler.fits_adaptive:
        raise ConfigError(
            f"temporal.position_mode=adaptive assumes frames spread evenly over the clip, "
            f"which {type(sampler).__name__} does not draw",
            "use temporal.sampler UniformStride (or AllFrames), or temporal.position_mode: sampled",
        )


def step_frames(
    sampler: FrameSampler, total: int, mode: PositionMode, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, positions)`` of one training step: the latent frames drawn and the RoPE positions they get.

    ``adaptive`` takes both from the sampler (positions within half a frame of each frame drawn), ``sampled`` uses
    the indices themselves, ``contiguous`` ``0..F_samp-1``.
    """
    if mode == "adaptive":
        check_positions(sampler, mode)
        return sampler.sample_positions(total, generator)
    indices = sampler.sample(total, generator)
    return indices, temporal_positions(indices, total, mode)


class TemporalLoRAModule(WanLoraModule):
    """Only the ``temporal`` adapter trains; the spatial one is on but frozen.

    ``L_temporal = L_denoise + motion_weight * L_motion`` (DESIGN.md) on ``sampler``'s frames, with RoPE at
    the positions ``position_mode`` gives.
    """

    def __init__(
        self,
        transformer,
        sampler: FrameSampler | None = None,
        motion_weight: float = 1.0,
        position_mode: PositionMode = "adaptive",
        **kwargs,
    ) -> None:
        kwargs.setdefault("adapter", "temporal")
        kwargs.setdefault("active_adapters", ["spatial", "temporal"])
        super().__init__(transformer, **kwargs)
        self.sampler = sampler or UniformStride(17)
        check_positions(self.sampler, position_mode)
        self.motion_weight = motion_weight
        self.position_mode = position_mode

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        g = self.step_generator(batch_idx)
        latents = batch["video_latents"]  # (1, C, F, H, W)
        total = latents.shape[2]
        indices, frame_positions = step_frames(self.sampler, total, self.position_mode, g)
        x0 = latents[:, :, indices.to(latents.device)]
        xt, t, target = self.noisy_pair(x0, g)
        pt, ph, pw = self.transformer.config.patch_size
        positions = grid_positions(
            indices.numel() // pt,
            x0.shape[3] // ph,
            x0.shape[4] // pw,
            frame_positions=frame_positions,
        )
        with override_positions(self.transformer, positions):
            pred = self.predict_velocity(xt, t, batch["prompt_embeds"])
        denoise = denoising_loss(pred, target)
        loss = denoise
        self.log("train/loss_denoise", denoise, on_step=True, prog_bar=True)
        if self.motion_weight and indices.numel() > 1:
            motion = motion_loss(pred, target)
            loss = loss + self.motion_weight * motion
            self.log("train/loss_motion", motion, on_step=True, prog_bar=True)
        self.log("train/loss", loss, on_step=True)
        self.log("train/frames", float(indices.numel()), on_step=True)
        return loss
