"""LoRA file formats: one module per layout, all converting to and from one in-memory :class:`LoraWeights`.

``LoraWeights`` keys are diffusers/peft module paths without prefix or adapter name
(``blocks.0.attn1.to_q.lora_A.weight``, ``(r, in)``; ``...lora_B.weight``, ``(out, r)``), with an alpha per
module, so a LoRA's update of ``W`` is ``alpha / r * B @ A`` whatever file it came from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from effivmt.errors import AdapterMismatchError

#: A registered layout's name (``effivmt.lora.formats.registry.FORMATS`` holds the layouts themselves).
Format = str
_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


def _module_of(key: str) -> str:
    for suffix in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise AdapterMismatchError(f"{key} is not a LoRA key (expected .lora_A.weight / .lora_B.weight)")


@dataclass
class LoraWeights:
    """One LoRA adapter as plain tensors: the common currency of every format.

    Attributes:
        state_dict: ``{module}.lora_A.weight`` ``(r, in)``, ``{module}.lora_B.weight`` ``(out, r)`` and, from
            trainers that have them, ``{module}.lora_B.bias`` ``(out,)``.
        alphas: alpha per module; the update is ``alphas[m] / r_m * B @ A``.
    """

    state_dict: dict[str, torch.Tensor]
    alphas: dict[str, float]

    def __post_init__(self) -> None:
        for module in self.modules():
            a, b = self.state_dict.get(f"{module}.lora_A.weight"), self.state_dict.get(f"{module}.lora_B.weight")
            if a is None or b is None:
                missing = f"{module}.lora_{'A' if a is None else 'B'}.weight"
                raise AdapterMismatchError(f"LoRA file is incomplete: {missing} is missing")
            if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise AdapterMismatchError(
                    f"LoRA factors of {module} do not chain: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}"
                )
            if module not in self.alphas:
                self.alphas[module] = float(a.shape[0])  # no alpha stored: diffusers' convention, scale 1

    @classmethod
    def uniform(cls, state_dict: Mapping[str, torch.Tensor], alpha: float | None) -> LoraWeights:
        """Every module shares one ``alpha`` (``None``: alpha = rank, i.e. scale 1)."""
        sd = dict(state_dict)
        alphas = {} if alpha is None else {m: float(alpha) for m in {_module_of(k) for k in sd}}
        return cls(sd, alphas)

    @classmethod
    def from_lora_config(cls, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> LoraWeights:
        """Resolve per-module alphas from peft ``LoraConfig`` fields (``lora_alpha``, ``alpha_pattern``, rsLoRA)."""
        from peft.utils.other import get_pattern_key

        if config.get("use_dora"):
            raise AdapterMismatchError("DoRA adapters are not supported", "export a plain LoRA")
        sd = dict(state_dict)
        alpha = config.get("lora_alpha")
        pattern = config.get("alpha_pattern") or {}
        alphas = {}
        for module in {_module_of(k) for k in sd}:
            key = get_pattern_key(pattern.keys(), module)
            value = pattern.get(key, alpha)
            if value is None:
                continue
            rank = sd[f"{module}.lora_A.weight"].shape[0]
            # rsLoRA scales by alpha / sqrt(r); store the plain alpha that gives the same scale
            alphas[module] = float(value) * math.sqrt(rank) if config.get("use_rslora") else float(value)
        return cls(sd, alphas)

    def modules(self) -> list[str]:
        """Adapted module paths, sorted (``blocks.0.attn1.to_k``, ...)."""
        return sorted({_module_of(k) for k in self.state_dict})

    def A(self, module: str) -> torch.Tensor:  # noqa: N802 (LoRA's own symbol)
        return self.state_dict[f"{module}.lora_A.weight"]

    def B(self, module: str) -> torch.Tensor:  # noqa: N802
        return self.state_dict[f"{module}.lora_B.weight"]

    def rank(self, module: str) -> int:
        return self.A(module).shape[0]

    def scale(self, module: str) -> float:
        return self.alphas[module] / self.rank(module)

    def delta(self, module: str) -> torch.Tensor:
        """The weight update ``alpha / r * B @ A`` ``(out, in)``, in float64 for comparisons."""
        return self.scale(module) * (self.B(module).double() @ self.A(module).double())

    def scaled(self, scale: float) -> LoraWeights:
        """The same LoRA with ``scale`` folded into lora_B (and its bias); alphas unchanged."""
        if scale == 1.0:
            return LoraWeights(dict(self.state_dict), dict(self.alphas))
        sd = {k: (v * scale if ".lora_B." in k else v) for k, v in self.state_dict.items()}
        return LoraWeights(sd, dict(self.alphas))

    def unit_scale(self) -> LoraWeights:
        """Fold ``alpha / r`` into lora_B and set alpha = r, so the file needs no alpha at all."""
        sd = dict(self.state_dict)
        for m in self.modules():
            s = self.scale(m)
            if s != 1.0:
                for k in (f"{m}.lora_B.weight", f"{m}.lora_B.bias"):
                    if k in sd:
                        sd[k] = sd[k] * s
        return LoraWeights(sd, {m: float(self.rank(m)) for m in self.modules()})

    def lora_config_kwargs(self) -> dict[str, Any]:
        """``peft.LoraConfig`` kwargs that reproduce these ranks and alphas (as diffusers' metadata does).

        The most common rank/alpha become ``r``/``lora_alpha``; other modules go to ``rank_pattern`` and
        ``alpha_pattern`` keyed by their escaped full path.
        """
        from collections import Counter

        modules = self.modules()
        ranks = {m: self.rank(m) for m in modules}
        r = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(self.alphas[m] for m in modules).most_common(1)[0][0]
        return {
            "r": r,
            "lora_alpha": alpha,
            "target_modules": modules,
            "rank_pattern": {re.escape(m): v for m, v in ranks.items() if v != r},
            "alpha_pattern": {re.escape(m): self.alphas[m] for m in modules if self.alphas[m] != alpha},
            "lora_bias": any(k.endswith(".lora_B.bias") for k in self.state_dict),
            "lora_dropout": 0.0,
            "init_lora_weights": True,
            "use_dora": False,
            "use_rslora": False,
            "bias": "none",
        }


def merge_weights(parts: list[LoraWeights]) -> LoraWeights:
    """Concatenate LoRAs into one of rank sum(r_i): A stacked on rows, B on columns, each scale folded into B.

    ``[B_1 s_1 | B_2 s_2] @ [A_1; A_2] = s_1 B_1 A_1 + s_2 B_2 A_2`` exactly, so the merged adapter (alpha = rank,
    scale 1) adds the sum of the parts' updates. A module that a part does not adapt contributes zero rows/columns,
    so every merged module has the same rank.
    """
    folded = [p.unit_scale() for p in parts if p.state_dict]
    modules = sorted({m for p in folded for m in p.modules()})
    sd: dict[str, torch.Tensor] = {}
    for m in modules:
        ref = next(p for p in folded if m in p.alphas)
        out_f, in_f = ref.B(m).shape[0], ref.A(m).shape[1]
        a_parts, b_parts, bias = [], [], None
        for p in folded:
            if m in p.alphas:
                a_parts.append(p.A(m))
                b_parts.append(p.B(m))
                b = p.state_dict.get(f"{m}.lora_B.bias")
                if b is not None:
                    bias = b if bias is None else bias + b
            else:  # this part leaves m alone: zero factors of its usual rank keep the merged rank uniform
                r = p.rank(p.modules()[0])
                a_parts.append(ref.A(m).new_zeros(r, in_f))
                b_parts.append(ref.B(m).new_zeros(out_f, r))
        sd[f"{m}.lora_A.weight"] = torch.cat(a_parts, 0).contiguous()
        sd[f"{m}.lora_B.weight"] = torch.cat(b_parts, 1).contiguous()
        if bias is not None:
            sd[f"{m}.lora_B.bias"] = bias
    return LoraWeights(sd, {})


def header_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Our metadata as safetensors header entries ``effivmt.<key>`` (strings; non-strings as JSON)."""
    out = {}
    for key, value in (metadata or {}).items():
        out[f"effivmt.{key}"] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return out


def read_header_metadata(header: Mapping[str, str] | None) -> dict[str, Any]:
    """Inverse of :func:`header_metadata` (values that are not JSON stay strings)."""
    out: dict[str, Any] = {}
    for key, value in (header or {}).items():
        if key.startswith("effivmt."):
            try:
                out[key.removeprefix("effivmt.")] = json.loads(value)
            except json.JSONDecodeError:
                out[key.removeprefix("effivmt.")] = value
    return out


def load_safetensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header of a safetensors file, on the CPU."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise AdapterMismatchError(f"cannot read {path} as safetensors: {err}", "give a .safetensors LoRA") from None


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path, header: Mapping[str, str]) -> None:
    """Write contiguous CPU tensors with ``{"format": "pt", **header}`` (diffusers and peft write ``format``)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"format": "pt", **header})
