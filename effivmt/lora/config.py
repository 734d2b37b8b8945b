"""Configuration of a head-group LoRA (DESIGN.md, "Head-group LoRA")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from effivmt.errors import ConfigError

#: Projections of Wan's self-attention (``blocks.{i}.attn1.*``) that a head-group adapter may target.
ATTN1_MODULES: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

#: Adapter scales a run generates and exports its merged LoRA with, unless the recipe says otherwise. Spatial 0:
#: that adapter absorbed the reference clip's appearance, which the new prompt replaces; temporal 1: the motion.
#: The run records the scales it used in ``run.json`` (``adapter_scales``); ``effivmt export --merge`` reads them.
DEFAULT_SCALES: dict[str, float] = {"spatial": 0.0, "temporal": 1.0}

#: ``HeadGroupLoraConfig.init`` -> peft's ``init_lora_weights``.
PEFT_INIT: dict[str, bool | str] = {"default": True, "gaussian": "gaussian", "random": False}


@dataclass
class HeadGroupLoraConfig:
    """Rank, scaling and placement of one head-group LoRA (the spatial and the temporal stage each own one).

    Defaults are the public Follow-Your-Motion values (rank 16, alpha 16) on all four self-attention projections.
    """

    rank: int = 16
    """LoRA rank r of every targeted projection."""

    alpha: float = 16
    """LoRA alpha; the update is scaled by alpha / rank."""

    dropout: float = 0.0
    """Dropout on the LoRA input, in [0, 1)."""

    target_modules: list[str] = field(default_factory=lambda: list(ATTN1_MODULES))
    """Self-attention projections to adapt, a subset of to_q, to_k, to_v, to_out.0."""

    layers: list[int] | None = None
    """Transformer blocks to adapt; null adapts every block."""

    init: Literal["default", "gaussian", "random"] = "default"
    """peft initialisation: default (A kaiming, B zero), gaussian (A normal, B zero), random (both random; tests)."""

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ConfigError(f"lora.rank must be > 0, got {self.rank}", "a typical rank is 16 to 128")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha must be > 0, got {self.alpha}", "alpha = rank gives a scale of 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        unknown = [m for m in self.target_modules if m not in ATTN1_MODULES]
        if unknown or not self.target_modules:
            raise ConfigError(
                f"lora.target_modules has unknown module(s) {unknown or 'none given'}",
                f"choose from {', '.join(ATTN1_MODULES)}",
            )
        if self.layers is not None and any(not isinstance(i, int) or i < 0 for i in self.layers):
            raise ConfigError(f"lora.layers must be block indices >= 0, got {self.layers}")
        if self.init not in PEFT_INIT:
            raise ConfigError(f"lora.init must be one of {', '.join(PEFT_INIT)}, got {self.init!r}")

    @property
    def scale(self) -> float:
        """The LoRA scaling alpha / rank."""
        return self.alpha / self.rank
