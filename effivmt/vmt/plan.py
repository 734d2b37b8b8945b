"""The typed plan of an EffiVMT run: the recipe's argument groups and the :class:`RunPlan` they make.

The YAML recipe's top-level keys are :func:`effivmt.vmt.commands.run`'s parameters; the groups here are its
nested keys, and field docstrings become ``effivmt run --help``. ``__post_init__`` refuses out-of-range values
with a message naming the key; :meth:`RunPlan.check` refuses what needs several groups at once (an optimizer
that cannot be built, positions that do not fit the sampler), all before anything is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from effivmt.data.samplers import FrameSampler, UniformStride
from effivmt.data.video import check_frame_count, check_multiple_of_16
from effivmt.errors import ConfigError
from effivmt.io import AnyPath, as_path
from effivmt.lora import HeadGroupLoraConfig
from effivmt.lora.config import DEFAULT_SCALES
from effivmt.training.args import StageArgs, TrainerArgs
from effivmt.training.record import plain_json

if TYPE_CHECKING:
    from effivmt.backbone.wan import NativeVideo

Stage = Literal["heads", "spatial", "temporal", "export", "generate"]
STAGES: tuple[str, ...] = ("heads", "spatial", "temporal", "export", "generate")


def _check_frames(key: str, n: int | None) -> None:
    if n is not None:
        check_frame_count(n, key)


def _check_size(key: str, n: int | None) -> None:
    if n is not None:
        check_multiple_of_16(key, n)


@dataclass
class ModelArgs:
    """Which Wan 2.1 to load."""

    path: AnyPath | None = None
    """Local diffusers-format Wan 2.1 T2V folder; empty: the packaged micro Wan; ``tiny``: the random test model."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Dtype of the transformer and text encoder (the VAE stays fp32)."""
    seed: int = 0
    """Seed of the tiny embedded model (ignored for a folder)."""


@dataclass
class VideoArgs:
    """How the clip is read: resampled to ``fps``, cut to ``num_frames``, resized and centre-cropped."""

    num_frames: int | None = None
    """Video frames to train on (1 + 4k); empty: the model's native length (micro Wan 33, Wan 2.1 81)."""
    height: int | None = None
    """Frame height (multiple of 16); empty: the model's (micro Wan 64, Wan 2.1 480)."""
    width: int | None = None
    """Frame width (multiple of 16); empty: the model's (micro Wan 64, Wan 2.1 832)."""
    fps: float | Literal["native"] | None = "native"
    """Resample to this frame rate first; 'native': the model's (micro Wan 8, Wan 2.1 16); empty keeps the clip's."""
    frame_mode: Literal["first", "uniform"] = "first"
    """Take the first ``num_frames`` frames, or spread them evenly over the clip."""
    allow_fewer: bool = True
    """A shorter clip uses the largest 1 + 4k frames it has (and says so) instead of stopping."""

    def __post_init__(self) -> None:
        _check_frames("video.num_frames", self.num_frames)
        _check_size("video.height", self.height)
        _check_size("video.width", self.width)
        if self.fps is not None and self.fps != "native" and self.fps <= 0:
            raise ConfigError(f"video.fps must be > 0, got {self.fps}")

    def resolved(self, native: NativeVideo) -> VideoArgs:
        """These arguments with every empty shape field (and ``fps: native``) set to the model's ``native`` one."""
        return dataclasses.replace(
            self,
            num_frames=self.num_frames or native.num_frames,
            height=self.height or native.height,
            width=self.width or native.width,
            fps=native.fps if self.fps == "native" else self.fps,
        )


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
    normalization: Literal["uniform", "raw"] = "uniform"
    """'uniform': each template's attention mass over what uniform attention puts there (the paper's wording);
    'raw': the masses themselves (the released code compares raw masses over templates of similar area)."""
    split: bool = True
    """False (ablation "no head split"): every head belongs to both adapters, so each stage trains all heads."""

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ConfigError(f"heads.alpha must be > 0, got {self.alpha}")
        if self.chunk_size <= 0:
            raise ConfigError(f"heads.chunk_size must be > 0, got {self.chunk_size}")
        if not self.timesteps or any(not 0 <= t <= 1000 for t in self.timesteps):
            raise ConfigError(f"heads.timesteps must be a non-empty list within 0..1000, got {self.timesteps}")


@dataclass
class LoraStageArgs(StageArgs):
    """A head-group LoRA stage (spatial or temporal): a training stage plus its noise levels and probes."""

    sample_every: int = 0
    """Log a strip of reconstructed frames to TensorBoard every this many steps (0: only at the end)."""
    shift: float = 3.0
    """Wan's timestep shift for sampling training noise levels."""
    timestep_range: tuple[float, float] | None = None
    """Train only on Wan timesteps in [lo, hi] (e.g. [600, 1000]: high noise only); empty: all of 0..1000."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_every < 0:
            raise ConfigError(f"sample_every must be >= 0, got {self.sample_every}")
        if self.timestep_range is not None:
            lo, hi = self.timestep_range
            if not 0 <= lo < hi <= 1000:
                raise ConfigError(f"timestep_range must satisfy 0 <= lo < hi <= 1000, got {list(self.timestep_range)}")


@dataclass
class TemporalArgs(LoraStageArgs):
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
    scale_spatial: float = DEFAULT_SCALES["spatial"]
    """Spatial adapter scale. 0: it absorbed the reference clip's appearance, which the new prompt replaces."""
    scale_temporal: float = DEFAULT_SCALES["temporal"]
    """Temporal adapter scale: the motion."""
    fps: float | None = None
    """Frame rate of the written mp4; empty: the rate the clip was brought to (``video.fps``, else the clip's own)."""

    def __post_init__(self) -> None:
        _check_frames("generate.num_frames", self.num_frames)
        _check_size("generate.height", self.height)
        _check_size("generate.width", self.width)
        if self.steps <= 0:
            raise ConfigError(f"generate.steps must be > 0, got {self.steps}")


@dataclass
class RunPlan:
    """Everything one clip's run needs, resolved and typed: what the CLI (or a manifest row) hands down.

    :func:`effivmt.vmt.run.run_clip` takes it whole; nothing below reads a global or re-parses a recipe.
    """

    clip: Path | None
    """The reference video."""
    clip_prompt: str
    """Caption of the reference clip (head scores and both training stages)."""
    prompt: str
    """The new appearance to render (the clip caption when none was given)."""
    out: Path
    """The run folder."""
    model: ModelArgs = field(default_factory=ModelArgs)
    video: VideoArgs = field(default_factory=VideoArgs)
    heads: HeadsArgs = field(default_factory=HeadsArgs)
    lora: HeadGroupLoraConfig = field(default_factory=HeadGroupLoraConfig)
    spatial: LoraStageArgs = field(default_factory=LoraStageArgs)
    temporal: TemporalArgs = field(default_factory=TemporalArgs)
    generate: GenerateArgs = field(default_factory=GenerateArgs)
    trainer: TrainerArgs = field(default_factory=TrainerArgs)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """The stages to run, in pipeline order."""
    seed: int = 0
    """Seed of the training randomness (frames, noise levels, noise)."""
    config: Any = None
    """The recipe as ``run.json`` records it (the CLI's resolved YAML; a snapshot of the groups otherwise)."""

    def __post_init__(self) -> None:
        from effivmt.backbone.wan import native_video

        self.video = self.video.resolved(native_video(as_path(self.model.path)))

    @classmethod
    def from_arguments(
        cls,
        clip: Any = None,
        clip_prompt: str = "",
        prompt: str | None = None,
        out: Any = "runs/effivmt",
        stages: list[str] | None = None,
        config: Any = None,
        **groups: Any,
    ) -> RunPlan:
        """The plan of ``effivmt run``'s arguments (``manifest``/``shard`` are the many-clips runner's, not a clip's).

        Raises:
            ConfigError: an unknown stage.
        """
        groups = {k: v for k, v in groups.items() if k not in ("manifest", "shard")}
        selected = list(stages or STAGES)
        unknown = sorted(set(selected) - set(STAGES))
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}", f"choose from {list(STAGES)}")
        plan = cls(
            clip=as_path(clip),
            clip_prompt=clip_prompt,
            prompt=prompt or clip_prompt,
            out=as_path(out),
            stages=[s for s in STAGES if s in selected],
            **groups,
        )
        plan.config = config if config is not None else plan.snapshot()
        return plan

    def snapshot(self) -> dict[str, Any]:
        """The plan as plain JSON values (the recipe ``run.json`` records when no YAML was parsed)."""
        return {k: plain_json(getattr(self, k)) for k in self.__dataclass_fields__ if k != "config"}

    def check(self) -> None:
        """Refuse, before anything is written, what needs more than one field to see (DESIGN "Refuse early").

        Raises:
            ConfigError: the first problem, naming its recipe key.
        """
        import torch

        from effivmt.training.trainer import check_trainer

        check_trainer(self.trainer)
        from effivmt.backbone.wan import check_model_path

        check_model_path(as_path(self.model.path))
        probe = torch.nn.Parameter(torch.zeros(1))
        for name in ("spatial", "temporal"):
            if name not in self.stages:
                continue
            stage = getattr(self, name)
            try:  # e.g. AdamW(lr=-1e-3) raises ValueError: refuse it now, not after heads.json and the cache
                stage.optimizer([probe])
            except (ValueError, TypeError) as err:
                hint = f"fix {name}.optimizer.init_args"
                raise ConfigError(f"{name}.optimizer cannot be built: {err}", hint) from None
        if "temporal" in self.stages:
            from effivmt.vmt.temporal import check_positions

            check_positions(self.temporal.sampler, self.temporal.position_mode)


__all__ = [
    "STAGES",
    "GenerateArgs",
    "HeadsArgs",
    "LoraStageArgs",
    "ModelArgs",
    "RunPlan",
    "Stage",
    "TemporalArgs",
    "VideoArgs",
]
