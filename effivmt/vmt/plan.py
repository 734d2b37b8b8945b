"""Argument groups of the ``run`` recipe: one dataclass per concern, each field documented.

The YAML recipe's top-level keys are :func:`effivmt.run.run`'s parameters; these groups are its nested
keys. Field docstrings become ``effivmt run --help``. ``__post_init__`` refuses out-of-range values with
a message naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import path_type
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from effivmt.data.samplers import FrameSampler, UniformStride
from effivmt.errors import ConfigError
from effivmt.modules.base import default_optimizer

#: A path that need not exist yet; given in a recipe it is relative to the recipe file, on the CLI to the cwd.
AnyPath = path_type("")


def as_path(value: str | os.PathLike | None) -> Path | None:
    """jsonargparse path (resolved against the recipe's folder) or plain str -> ``pathlib.Path``."""
    if value is None:
        return None
    return Path(getattr(value, "absolute", value))


def _check_frames(key: str, n: int | None) -> None:
    if n is not None and (n < 1 or (n - 1) % 4):
        raise ConfigError(f"{key} must be 1 + 4k (e.g. 17, 49, 81), got {n}", "Wan's VAE packs 4 frames per latent")


def _check_size(key: str, n: int | None) -> None:
    if n is not None and (n <= 0 or n % 16):
        lo, hi = max(16, n // 16 * 16), (n // 16 + 1) * 16
        raise ConfigError(f"{key} must be a positive multiple of 16, got {n}", f"try {lo} or {hi}")


@dataclass
class ModelArgs:
    """Which Wan 2.1 to load."""

    path: AnyPath | None = None
    """Local diffusers-format Wan 2.1 T2V folder; empty for the tiny embedded model."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Dtype of the transformer and text encoder (the VAE stays fp32)."""
    seed: int = 0
    """Seed of the tiny embedded model (ignored for a folder)."""


@dataclass
class VideoArgs:
    """How the clip is read: resampled to ``fps``, cut to ``num_frames``, resized and centre-cropped."""

    num_frames: int = 81
    """Video frames to train on (1 + 4k)."""
    height: int = 480
    """Frame height (multiple of 16)."""
    width: int = 832
    """Frame width (multiple of 16)."""
    fps: float | None = 16.0
    """Resample to this frame rate first (Wan 2.1 is trained at 16 fps); empty keeps the clip's rate."""
    frame_mode: Literal["first", "uniform"] = "first"
    """Take the first ``num_frames`` frames, or spread them evenly over the clip."""
    allow_fewer: bool = True
    """A shorter clip uses the largest 1 + 4k frames it has (and says so) instead of stopping."""

    def __post_init__(self) -> None:
        _check_frames("video.num_frames", self.num_frames)
        _check_size("video.height", self.height)
        _check_size("video.width", self.width)
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"video.fps must be > 0, got {self.fps}")


@dataclass
class HeadsArgs:
    """Stage 1: head classification (DESIGN.md, "Head classification")."""

    alpha: float = 1.25
    """Threshold: with rule 'paper' a head is temporal iff S_spatial < alpha * S_temporal."""
    rule: Literal["paper", "released"] = "paper"
    """'released' reproduces the Follow-Your-Motion code: spatial iff S_temporal < alpha * S_spatial (alpha 1.3)."""
    timesteps: list[int] = field(default_factory=lambda: [950, 750, 500])
    """Noise levels (Wan timesteps, 0-1000) the scores are averaged over."""
    prompts: list[str] | None = None
    """Extra captions to average over (the clip caption is always used)."""
    chunk_size: int = 1024
    """Queries per chunk: extra memory is heads x chunk_size x tokens floats per layer."""
    num_queries: int | None = None
    """Sample this many query tokens per pass (empty: all)."""

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ConfigError(f"heads.alpha must be > 0, got {self.alpha}")
        if self.chunk_size <= 0:
            raise ConfigError(f"heads.chunk_size must be > 0, got {self.chunk_size}")
        if not self.timesteps or any(not 0 <= t <= 1000 for t in self.timesteps):
            raise ConfigError(f"heads.timesteps must be a non-empty list within 0..1000, got {self.timesteps}")


@dataclass
class StageArgs:
    """A LoRA training stage."""

    max_steps: int = 1500
    """Optimizer steps."""
    optimizer: OptimizerCallable = default_optimizer
    """Optimizer (class_path/init_args); default AdamW lr 1e-4, weight decay 0.1."""
    lr_scheduler: LRSchedulerCallable | None = None
    """Optional learning-rate scheduler (class_path/init_args)."""
    checkpoint_every: int = 100
    """Save ``checkpoints/<stage>/last.ckpt`` every this many steps (resume point)."""
    log_every: int = 10
    """Log losses to TensorBoard every this many steps."""
    sample_every: int = 0
    """Log a strip of reconstructed frames to TensorBoard every this many steps (0: only at the end)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation."""
    shift: float = 3.0
    """Wan's timestep shift for sampling training noise levels."""

    def __post_init__(self) -> None:
        for key in ("max_steps", "checkpoint_every", "log_every", "accumulate_grad_batches", "sample_every"):
            if getattr(self, key) < 0 or (key not in ("max_steps", "sample_every") and getattr(self, key) == 0):
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")


@dataclass
class TemporalArgs(StageArgs):
    """Stage 3: temporal LoRA on sparsely sampled frames, adaptive RoPE and the motion loss."""

    sampler: FrameSampler = field(default_factory=lambda: UniformStride(17))
    """Which frames a step sees (class_path: effivmt.data.UniformStride / RandomWindow / RandomStride / AllFrames)."""
    motion_weight: float = 1.0
    """lambda in L_temporal = L_denoise + lambda * L_motion."""
    position_mode: Literal["adaptive", "sampled", "contiguous"] = "adaptive"
    """Frame positions for RoPE: adaptive (paper), the sampled indices, or 0..F_samp-1 (ablation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.motion_weight < 0:
            raise ConfigError(f"temporal.motion_weight must be >= 0, got {self.motion_weight}")


@dataclass
class GenerateArgs:
    """Generation with the trained adapters."""

    num_frames: int | None = None
    """Frames to generate (1 + 4k); empty: as trained."""
    height: int | None = None
    """Empty: as trained."""
    width: int | None = None
    """Empty: as trained."""
    steps: int = 50
    """Denoising steps."""
    guidance: float = 5.0
    """Classifier-free guidance scale."""
    negative_prompt: str = ""
    """Negative prompt."""
    seed: int = 0
    """Noise seed."""
    scale_spatial: float = 0.0
    """Spatial adapter scale. 0: it absorbed the reference clip's appearance, which the new prompt replaces."""
    scale_temporal: float = 1.0
    """Temporal adapter scale: the motion."""
    fps: float = 16.0
    """Frame rate of the written mp4."""

    def __post_init__(self) -> None:
        _check_frames("generate.num_frames", self.num_frames)
        _check_size("generate.height", self.height)
        _check_size("generate.width", self.width)
        if self.steps <= 0:
            raise ConfigError(f"generate.steps must be > 0, got {self.steps}")


@dataclass
class TrainerArgs:
    """Lightning Trainer settings shared by the stages (precision, devices, strategy)."""

    accelerator: str = "auto"
    """cpu, gpu, auto ..."""
    devices: int | str = "auto"
    """Devices per node."""
    num_nodes: int = 1
    """Nodes (SLURM launches them)."""
    strategy: str = "auto"
    """auto, ddp, fsdp, deepspeed_stage_2, deepspeed_stage_3 ..."""
    precision: str = "32-true"
    """32-true, bf16-mixed, bf16-true ..."""
    gradient_checkpointing: bool = False
    """Recompute Wan blocks in the backward pass."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""
