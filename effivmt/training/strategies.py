"""How a training stage uses the machine: Lightning strategies for big models, atomic checkpoints, a NaN guard.

Nothing here is a home-made parallelism: ``trainer.strategy`` names one of Lightning's strategies, and
:func:`build_strategy` only fills in what Wan needs (FSDP wraps one unit per ``WanTransformerBlock``). The
other two pieces make a stage safe to kill and safe to diverge: :class:`AtomicCheckpointIO` writes
``last.ckpt`` under a temporary name beside it, and :class:`FiniteGuard` stops a stage at the first
non-finite loss or weight, before a checkpoint can record it. ``docs/scaling.md`` shows the recipes.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_only

from effivmt.errors import ConfigError, EffivmtError
from effivmt.io import atomic_path
from effivmt.training.args import TrainerArgs


def global_rank() -> int:
    """This process's rank as Lightning sees it (env ``RANK``/``LOCAL_RANK``/``SLURM_PROCID``, then the strategy)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_global_zero() -> bool:
    """Whether this process writes the run's files; the other ranks of a multi-process stage only train."""
    return global_rank() == 0


def available_strategies() -> list[str]:
    """Strategy names ``trainer.strategy`` accepts: ``auto`` and every name in Lightning's registry."""
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


#: Strategies that shard the parameters themselves: outside a forward pass each rank holds only its slice.
SHARDED_PARAMS = ("fsdp", "deepspeed_stage_3")


def expected_world_size(args: TrainerArgs) -> int:
    """Processes the trainer will start: ``num_nodes`` x devices (``auto``/``-1`` count the visible GPUs)."""
    devices = args.devices
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, str) and "," in devices:
        devices = len([d for d in devices.split(",") if d.strip()])
    if devices in ("auto", -1):
        gpu = args.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if gpu else 1
    return max(1, int(devices)) * args.num_nodes


def build_strategy(args: TrainerArgs) -> str | Strategy:
    """``trainer.strategy`` -> what ``L.Trainer(strategy=...)`` takes, refusing what cannot work before any stage runs.

    * ``fsdp`` / ``fsdp_cpu_offload``: :class:`~lightning.pytorch.strategies.FSDPStrategy` with one FSDP unit per
      ``WanTransformerBlock`` (full shard; frozen base and adapter share units, so ``use_orig_params`` stays on,
      Lightning's default), parameters offloaded to the CPU for the second. Activation checkpointing stays with
      ``trainer.gradient_checkpointing`` (diffusers' own).
    * ``deepspeed_stage_2`` / ``deepspeed_stage_3`` (and the other registered names): passed through as strings.
    * anything else Lightning registers (``auto``, ``ddp``, ``ddp_spawn`` ...) unchanged.

    Raises:
        ConfigError: an unknown name (with the nearest known one); DeepSpeed chosen but not installed; FSDP or
            DeepSpeed on the CPU (Lightning refuses both there); a parameter-sharding strategy over several
            processes, whose adapters the run cannot yet gather back (docs/scaling.md says what to use instead).
    """
    name = args.strategy
    known = available_strategies()
    if name not in known:
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"choose from {', '.join(known)}"
        raise ConfigError(f"unknown trainer.strategy {name!r}", hint)
    if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"trainer.strategy={name} needs DeepSpeed, which is not installed",
            "pip install deepspeed (on a CUDA machine), or use trainer.strategy=ddp",
        )
    on_cpu = args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())
    if name.startswith(("fsdp", "deepspeed")) and on_cpu:
        raise ConfigError(
            f"trainer.strategy={name} needs GPUs: Lightning runs FSDP and DeepSpeed on CUDA only",
            "on the CPU use trainer.strategy=ddp or auto",
        )
    world = expected_world_size(args)
    if name.startswith(SHARDED_PARAMS) and world > 1:
        raise ConfigError(
            f"trainer.strategy={name} over {world} processes shards the adapter weights, and the run cannot gather "
            "them back into adapters/ yet",
            "use ddp (every GPU holds the whole model: 14B in bf16 is ~28 GB) or deepspeed_stage_2; "
            "see docs/scaling.md",
        )
    if name in ("fsdp", "fsdp_cpu_offload"):
        from diffusers.models.transformers.transformer_wan import WanTransformerBlock
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(
            auto_wrap_policy={WanTransformerBlock},
            sharding_strategy="FULL_SHARD",
            state_dict_type="full",
            cpu_offload=name == "fsdp_cpu_offload",
        )
    return name


def checkpoint_plugins(strategy: str | Any) -> list[Any]:
    """``[AtomicCheckpointIO()]``, except for DeepSpeed, which writes its own checkpoint folders."""
    name = strategy if isinstance(strategy, str) else type(strategy).__name__.lower()
    return [] if name.startswith("deepspeed") else [AtomicCheckpointIO()]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, then ``os.replace`` (:func:`effivmt.io.atomic_path`).

    Lightning's own ``_atomic_save`` writes through fsspec's transaction: a temporary file in the *system*
    temp folder, then ``shutil.move``. Where ``/tmp`` is another filesystem than the run folder (a tmpfs, a
    node-local disk under a shared ``--out``) that move is a copy, and a kill during it leaves a truncated
    ``last.ckpt``. A rename in the same folder cannot; a full disk becomes one :class:`EffivmtError`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class FiniteGuard(L.Callback):
    """Stop a stage at the first non-finite loss (before its backward) or adapter weight (after its update).

    Both checks run before :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (Lightning always calls
    checkpoint callbacks last), so the step that went wrong is never saved and ``last.ckpt`` stays the last
    good one. Under a multi-process strategy the decision is reduced over ranks, so every rank stops at the
    same step instead of one rank leaving the others waiting in a collective.

    Args:
        stage: ``"spatial"`` / ``"temporal"``, for the message.
        checkpoint_dir: where ``last.ckpt`` lives.
        lr_key: the recipe key of the stage's learning rate, for the hint (default ``<stage>.optimizer.init_args.lr``).
    """

    def __init__(self, stage: str, checkpoint_dir: Path, lr_key: str | None = None) -> None:
        self.stage = stage
        self.checkpoint_dir = Path(checkpoint_dir)
        self.lr_key = lr_key or f"{stage}.optimizer.init_args.lr"

    def _agree(self, trainer: L.Trainer, ok: bool) -> bool:
        return bool(trainer.strategy.reduce_boolean_decision(ok, all=True)) if trainer.world_size > 1 else ok

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        finite = bool(torch.isfinite(value).all())
        if not self._agree(trainer, finite):
            what = "another rank's loss became non-finite" if finite else f"the loss became {value.float().item()}"
            self._stop(trainer, f"{what} at step {trainer.global_step + 1}")

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        trained = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        finite = torch.stack([torch.isfinite(p).all() for _, p in trained]) if trained else torch.ones(1, dtype=bool)
        bad = None if bool(finite.all()) else trained[int((~finite).nonzero()[0])][0]  # one device sync per step
        if not self._agree(trainer, bad is None):
            self._stop(
                trainer, f"adapter weight {bad or '(on another rank)'} became non-finite at step {trainer.global_step}"
            )

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        last = self.checkpoint_dir / "last.ckpt"
        kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint had been written yet"
        raise EffivmtError(
            f"{self.stage}: {what}; stage stopped, {kept}",
            f"lower {self.lr_key}; a re-run resumes with the checkpoint's optimizer state, so "
            f"delete {self.checkpoint_dir} to restart the stage with the new lr",
        )


__all__ = [
    "SHARDED_PARAMS",
    "AtomicCheckpointIO",
    "FiniteGuard",
    "available_strategies",
    "build_strategy",
    "checkpoint_plugins",
    "expected_world_size",
    "global_rank",
    "is_global_zero",
]
