"""Run OmniTransfer's training stages from a recipe: ``recipes/omnitransfer-stage{1,2,3}.yaml``, ``-tiny.yaml``.

A recipe's top-level keys are :func:`train`'s parameters. Stages run in the order given; each writes
``OUT/stage{k}/omnitransfer.safetensors`` when it finishes and starts from the previous stage's file, so the
three stage recipes share one ``out`` folder and chain (stage 2 picks up ``OUT/stage1/...``). A finished stage
is skipped; an interrupted one resumes from ``OUT/checkpoints/stage{k}/last.ckpt``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effivmt.args import AnyPath
from effivmt.errors import ConfigError
from effivmt.omnitransfer.checkpoint import WEIGHTS_NAME, save_weights
from effivmt.omnitransfer.tasks import TaskConfig

log = logging.getLogger(__name__)


@dataclass
class OmniModelArgs:
    """Backbone, MLLM and adapter settings."""

    path: AnyPath | None = None
    """Wan 2.1 I2V diffusers folder (the paper uses 14B); empty: the tiny random model."""
    mllm: AnyPath | None = None
    """Qwen2.5-VL folder; empty: the tiny random Qwen2.5-VL."""
    dtype: str = "bf16"
    """Model dtype (``fp32`` on CPUs)."""
    mllm_image_size: tuple[int, int] | None = None
    """Frame size the MLLM sees (default 16x16 tiny, 448x448 real)."""
    num_reference_frames: int = 8
    """Reference frames the MLLM reads."""
    lora_rank: int = 16
    """MLLM LoRA rank (stage 3)."""
    lora_alpha: int = 16
    """MLLM LoRA alpha."""
    tasks: TaskConfig = field(default_factory=TaskConfig)
    """Task flags, positional-bias axes, templates and queries per task."""
    gradient_checkpointing: bool = True
    """Recompute the target branch's blocks in the backward pass (needed for 81 frames on 14B)."""


@dataclass
class PairedDataArgs:
    """The paired-clip manifest and the clip shape."""

    manifest: AnyPath
    """JSONL manifest of reference/target/prompt/task rows (paths relative to it)."""
    num_frames: int = 81
    height: int = 480
    width: int = 832
    fps: float | None = 16.0
    batch_size: int = 1
    num_workers: int = 2


@dataclass
class StageArgs:
    """Length and optimiser of one stage (paper: 10K / 2K / 5K steps at lr 1e-5)."""

    max_steps: int = 1000
    lr: float = 1e-5
    weight_decay: float = 0.0
    checkpoint_every: int = 500
    """Save ``last.ckpt`` every this many steps (resume point)."""


@dataclass
class TrainerArgs:
    """Lightning Trainer settings shared by all stages."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10


def train(
    out: Path,
    data: PairedDataArgs,
    model: OmniModelArgs | None = None,
    stages: list[int] | None = None,
    stage1: StageArgs | None = None,
    stage2: StageArgs | None = None,
    stage3: StageArgs | None = None,
    trainer: TrainerArgs | None = None,
    init_from: AnyPath | None = None,
    seed: int = 0,
) -> Path:
    """Train OmniTransfer (stage 1: DiT blocks, 2: connector, 3: joint with MLLM LoRA) on paired videos.

    Args:
        out: run folder: ``stage{k}/omnitransfer.safetensors``, ``checkpoints/``, ``logs/``.
        data: the paired manifest and clip shape.
        model: backbone, MLLM and LoRA settings.
        stages: stages to run, in order (default ``[1, 2, 3]``).
        stage1: steps/lr of stage 1 (paper: 10K steps).
        stage2: steps/lr of stage 2 (paper: 2K steps).
        stage3: steps/lr of stage 3 (paper: 5K steps).
        trainer: Lightning Trainer settings.
        init_from: weights to start the first listed stage from (default: the previous stage's file in ``out``).
        seed: seed of the tiny models, data order and noise.

    Returns:
        The weights file of the last stage run (the ``--checkpoint`` of ``effivmt transfer``).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from effivmt.omnitransfer.data import PairedVideoDataModule
    from effivmt.omnitransfer.module import OmniTransferModule
    from effivmt.strategies import FiniteGuard, checkpoint_plugins

    model = model or OmniModelArgs()
    stages = stages or [1, 2, 3]
    per_stage = {1: stage1 or StageArgs(10_000), 2: stage2 or StageArgs(2_000), 3: stage3 or StageArgs(5_000)}
    trainer = trainer or TrainerArgs()
    if any(s not in per_stage for s in stages):
        raise ConfigError(f"unknown stage in {stages}", "stages are 1 (DiT), 2 (connector), 3 (joint)")
    out = Path(out)
    previous = init_from
    for stage in stages:
        final = out / f"stage{stage}" / WEIGHTS_NAME
        if previous is None and stage > 1 and (out / f"stage{stage - 1}" / WEIGHTS_NAME).is_file():
            previous = out / f"stage{stage - 1}" / WEIGHTS_NAME
        if final.is_file():
            log.info("stage %d already finished: %s", stage, final)
            previous = final
            continue
        args = per_stage[stage]
        L.seed_everything(seed + stage, workers=True, verbose=False)
        module = OmniTransferModule(
            stage=stage,
            model_path=model.path,
            mllm_path=model.mllm,
            init_from=previous,
            tasks=model.tasks,
            mllm_image_size=model.mllm_image_size,
            num_reference_frames=model.num_reference_frames,
            lora_rank=model.lora_rank,
            lora_alpha=model.lora_alpha,
            seed=seed,
            dtype=model.dtype,
            gradient_checkpointing=model.gradient_checkpointing,
            optimizer=functools.partial(torch.optim.AdamW, lr=args.lr, weight_decay=args.weight_decay),
        )
        datamodule = PairedVideoDataModule(
            data.manifest, data.num_frames, data.height, data.width, data.fps, data.batch_size, data.num_workers
        )
        ckpt_dir = out / "checkpoints" / f"stage{stage}"
        last = ckpt_dir / "last.ckpt"
        fit = L.Trainer(
            max_steps=args.max_steps,
            accelerator=trainer.accelerator,
            devices=trainer.devices,
            strategy=trainer.strategy,
            precision=trainer.precision,
            accumulate_grad_batches=trainer.accumulate_grad_batches,
            log_every_n_steps=trainer.log_every_n_steps,
            default_root_dir=out,
            logger=TensorBoardLogger(out / "logs", name=f"stage{stage}"),
            plugins=checkpoint_plugins(trainer.strategy),
            callbacks=[
                FiniteGuard(f"stage{stage}", ckpt_dir, lr_key=f"stage{stage}.lr"),
                ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=args.checkpoint_every),
            ],
            num_sanity_val_steps=0,
            enable_model_summary=False,
            enable_progress_bar=False,
        )
        fit.fit(module, datamodule=datamodule, ckpt_path=last if last.is_file() else None)
        meta = {
            "stage": stage,
            "lora_rank": model.lora_rank,
            "lora_alpha": model.lora_alpha,
            "tasks": dataclasses.asdict(model.tasks),
            "num_reference_frames": model.num_reference_frames,
            "mllm_image_size": model.mllm_image_size,
            "num_frames": data.num_frames,
            "size": [data.height, data.width],
            "steps": fit.global_step,
            "loss": float(fit.callback_metrics.get("train/loss", float("nan"))),
        }
        previous = save_weights(module.model, final, meta)
        log.info("stage %d done: %s", stage, final)
    return previous
