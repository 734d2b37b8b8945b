"""What every LoRA training stage shares: adapter-only checkpoints, per-step RNG, logging.

A stage module wraps the (already loaded) Wan transformer; only one named adapter is trainable.
Checkpoints hold that adapter's tensors (``strict_loading=False``), so they weigh megabytes, not the
whole DiT, and resume restores adapter, optimizer and step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from effivmt.lora import mask_group_grads, set_trainable_adapter, zero_outside_groups
from effivmt.training.args import default_optimizer
from effivmt.training.flow import add_noise, sample_sigmas, timesteps_from_sigmas, velocity_target
from effivmt.training.trainer import step_generator


class WanLoraModule(L.LightningModule):
    """Base of the spatial and temporal stages.

    Args:
        transformer: Wan transformer carrying the head-group adapters.
        adapter: name of the adapter this stage trains (``"spatial"`` / ``"temporal"``).
        active_adapters: adapters switched on in the forward pass (frozen ones included).
        optimizer: optimizer factory over the trainable parameters.
        lr_scheduler: optional scheduler factory.
        shift: Wan's timestep shift for sampling noise levels.
        timestep_range: train only on Wan timesteps in ``[lo, hi]`` (the shifted draw is mapped into it);
            ``(600, 1000)`` keeps the high-noise steps that fix motion, as "Timestep-Constrained One-Shot
            Video Motion Customization" does. ``None``: all of 0..1000.
        seed: base seed of the per-step generator.
        gradient_checkpointing: recompute Wan blocks in the backward pass (saves activation memory).
    """

    def __init__(
        self,
        transformer,
        adapter: str,
        active_adapters: list[str],
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        shift: float = 3.0,
        seed: int = 0,
        gradient_checkpointing: bool = False,
        timestep_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.adapter = adapter
        self.active_adapters = active_adapters
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.shift = shift
        self.timestep_range = timestep_range
        self.seed = seed
        self.gradient_checkpointing = gradient_checkpointing
        self.strict_loading = False

    # -- model state -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Freeze all but this stage's adapter; idempotent (Lightning may call it more than once)."""
        from effivmt.lora import set_adapter_scales

        set_adapter_scales(self.transformer, dict.fromkeys(self.active_adapters, 1.0))
        set_trainable_adapter(self.transformer, self.adapter)
        if self.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Only this stage's adapter tensors: checkpoints stay small and never hold base weights.

        Keys are removed from the dict in place, so this also holds when a wrapper (FSDP, DeepSpeed) calls it
        with its own ``destination`` and ``prefix``.
        """
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        tag = f".{self.adapter}."
        for key in [k for k in out if k.startswith(prefix) and not ("lora_" in k and tag in k)]:
            del out[key]
        return out

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    # -- per-step randomness -----------------------------------------------------------------------------------
    def step_generator(self, batch_idx: int = 0) -> torch.Generator:
        """A generator seeded by (seed, step, micro-batch, rank): resumed runs replay the same draws, and each
        micro-batch of an accumulated step draws its own (:func:`effivmt.training.trainer.step_generator`)."""
        return step_generator(self, batch_idx, self.seed)

    def noisy_pair(
        self, x0: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, v)`` for clean latents ``x0`` (DESIGN.md, "Flow matching")."""
        sigma = sample_sigmas(x0.shape[0], self.shift, generator)
        if self.timestep_range is not None:
            lo, hi = (t / 1000.0 for t in self.timestep_range)
            sigma = lo + (hi - lo) * sigma
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return add_noise(x0, noise, sigma), timesteps_from_sigmas(sigma).to(x0.device), velocity_target(x0, noise)

    def predict_velocity(self, xt: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.dtype
        return self.transformer(xt.to(dtype), t, embeds.to(dtype), return_dict=False)[0]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's step, then out-of-group LoRA entries back to exactly 0 (see :func:`zero_outside_groups`)."""
        super().optimizer_step(*args, **kwargs)
        zero_outside_groups(self.transformer)

    # -- logging ------------------------------------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        mask_group_grads(self.transformer)  # the head split, whatever the strategy (FSDP bypasses the grad hooks)
        grads = [p.grad.detach().float().norm() for p in self.trainable_parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.stack(grads).norm(), on_step=True, prog_bar=False)
