"""The training arguments both methods share: one :class:`TrainerArgs`, one :class:`StageArgs`.

EffiVMT's spatial/temporal stages and OmniTransfer's three stages are all "a stage": steps, an optimizer,
checkpoints and logs, run by :func:`effivmt.training.trainer.build_trainer` with the same strategy, precision,
guards and ``run.json``. A method adds its own fields by subclassing :class:`StageArgs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from effivmt.errors import ConfigError


def default_optimizer(params) -> torch.optim.Optimizer:
    """AdamW, lr 1e-4, weight decay 0.1 (the released EffiVMT defaults)."""
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)


@dataclass
class StageArgs:
    """One training stage: how long, which optimizer, how often it checkpoints and logs."""

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
    accumulate_grad_batches: int = 1
    """Gradient accumulation: micro-batches per optimizer step."""

    def __post_init__(self) -> None:
        for key in ("max_steps", "checkpoint_every", "log_every", "accumulate_grad_batches"):
            value = getattr(self, key)
            if value < 0 or (key != "max_steps" and value == 0):
                raise ConfigError(f"{key} must be > 0, got {value}")


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
    """32-true or bf16-mixed (trainable weights stay fp32; ``*-true`` half precisions are refused for training)."""
    gradient_checkpointing: bool = False
    """Recompute transformer blocks in the backward pass."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""


__all__ = ["StageArgs", "TrainerArgs", "default_optimizer"]
