"""One trainer builder for both methods: strategy, precision, NaN/inf guard, atomic checkpoints, logs, resume.

EffiVMT's spatial and temporal stages and OmniTransfer's three stages all go through :func:`fit_stage`, so they
share the refusals of :func:`~effivmt.training.strategies.build_strategy`, the :class:`FiniteGuard`, the
:class:`AtomicCheckpointIO`, TensorBoard under ``OUT/logs/<stage>`` and ``OUT/checkpoints/<stage>/last.ckpt``.
``run.json`` is :class:`~effivmt.training.record.RunRecord`, written by the method around each stage.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from effivmt.errors import ConfigError
from effivmt.training.args import StageArgs, TrainerArgs
from effivmt.training.strategies import FiniteGuard, build_strategy, checkpoint_plugins

log = logging.getLogger("effivmt")

#: Precisions that train: full fp32, or half-precision compute over fp32 trainable weights (Lightning's mixed).
#: ``bf16-true``/``16-true`` would cast the trainable weights too, and an update of 1e-5 rounds away in bf16.
TRAINING_PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "bf16", "16-mixed", "16")


def check_trainer(args: TrainerArgs) -> None:
    """Refuse a trainer that cannot work, before any stage runs (the strategy, and half-precision weights).

    Raises:
        ConfigError: an unknown or unusable strategy (see :func:`build_strategy`), or a ``*-true`` half precision.
    """
    if str(args.precision) not in TRAINING_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={args.precision} would train the adapter weights in half precision, where small "
            "updates round away",
            "use bf16-mixed (set model.dtype: bf16 to keep the frozen base in bf16 too)",
        )
    build_strategy(args)


def step_generator(module: L.LightningModule, batch_idx: int, seed: int) -> torch.Generator:
    """The generator of one micro-batch: seeded by (seed, optimizer step, micro-batch within the step, rank).

    With gradient accumulation over k micro-batches every micro-batch of a step draws its own frames, noise levels
    and noise (seeding by the optimizer step alone gave all k the same sample). A resumed run replays the same
    draws: checkpoints fall on optimizer-step boundaries, where ``batch_idx % k`` is 0 again.
    """
    trainer = module._trainer  # None outside a Trainer (unit tests call training_step directly)
    k = trainer.accumulate_grad_batches if trainer is not None else 1
    micro = batch_idx % k
    rank = module.global_rank
    return torch.Generator().manual_seed(seed * 1_000_003 + module.global_step * 7919 + micro * 104_729 + rank)


def predict_trainer(args: TrainerArgs) -> L.Trainer:
    """A trainer for forward-only passes (head classification): no logger, no checkpoints, one device."""
    return L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=args.progress_bar,
    )


def build_trainer(
    args: TrainerArgs,
    stage: StageArgs,
    out: Path,
    name: str,
    callbacks: Sequence[L.Callback] = (),
    lr_key: str | None = None,
) -> L.Trainer:
    """The Lightning trainer of one stage: TensorBoard under ``logs/<name>``, ``checkpoints/<name>/last.ckpt``.

    Args:
        args: devices, strategy, precision.
        stage: steps, checkpoint and log periods, gradient accumulation.
        out: the run folder.
        name: the stage's name (``spatial``, ``temporal``, ``stage1`` ...): its log and checkpoint folder.
        callbacks: extra callbacks (sample probes).
        lr_key: the recipe key of the stage's learning rate, for the guard's hint.
    """
    check_trainer(args)
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints" / name,
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=1,
        every_n_train_steps=stage.checkpoint_every,
        enable_version_counter=False,  # a moved run folder still resumes from, and writes, last.ckpt
    )
    strategy = build_strategy(args)
    guard = FiniteGuard(name, out / "checkpoints" / name, lr_key)  # a NaN/inf stops the stage before its checkpoint
    return L.Trainer(
        max_steps=stage.max_steps,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=strategy,
        precision=args.precision,
        plugins=checkpoint_plugins(strategy),
        logger=TensorBoardLogger(save_dir=out / "logs", name=name, version="", default_hp_metric=False),
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step"), guard, *callbacks],
        log_every_n_steps=stage.log_every,
        accumulate_grad_batches=stage.accumulate_grad_batches,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_progress_bar=args.progress_bar,
        default_root_dir=out,
        max_epochs=-1,
    )


class _NoInterruptNotice(logging.Filter):
    """Drops Lightning's "Detected KeyboardInterrupt" notice: the CLI says it once, with the resume hint."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Let Ctrl-C inside ``trainer.fit``/``predict`` reach the caller as :class:`KeyboardInterrupt`.

    Lightning catches it, shuts down, sets SIGINT to "ignore" and calls ``sys.exit(1)``: the CLI would exit 1 with
    Lightning's notice instead of 130 with our resume hint, and a notebook would lose Ctrl-C. The SIGINT handler
    is restored afterwards.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    notice = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    quiet = _NoInterruptNotice()
    notice.addFilter(quiet)
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        notice.removeFilter(quiet)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def fit_stage(
    name: str,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    stage: StageArgs,
    trainer_args: TrainerArgs,
    out: Path,
    callbacks: Sequence[L.Callback] = (),
    lr_key: str | None = None,
) -> L.Trainer:
    """Fit ``module`` for ``stage.max_steps`` optimizer steps, resuming from ``last.ckpt`` when one exists."""
    last = out / "checkpoints" / name / "last.ckpt"
    if last.exists():
        log.info(f"{name}: resuming from {last}")
    log.info(f"stage {name}: {stage.max_steps} steps")
    trainer = build_trainer(trainer_args, stage, out, name, callbacks, lr_key)
    with interrupts_as_keyboard_interrupt(trainer):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    return trainer


__all__ = [
    "TRAINING_PRECISIONS",
    "build_trainer",
    "check_trainer",
    "fit_stage",
    "interrupts_as_keyboard_interrupt",
    "predict_trainer",
    "step_generator",
]
