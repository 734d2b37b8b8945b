"""Original Wan / ComfyUI layout: ``diffusion_model.blocks.{i}.self_attn.q.lora_down.weight``, ``.lora_up``, ``.alpha``.

ComfyUI reads it natively and diffusers converts it (``_convert_non_diffusers_wan_lora_to_diffusers`` folds
``alpha / rank`` into the factors). Each module carries its alpha as a scalar tensor. Module names map between
Wan's original code and diffusers as below; anything else cannot be written in this layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from effivmt.errors import AdapterMismatchError
from effivmt.lora.formats import LoraWeights, header_metadata, load_safetensors, save_safetensors

PREFIX = "diffusion_model."
#: diffusers module (after ``blocks.{i}.``) -> original Wan module.
MODULE_MAP: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_INVERSE = {v: k for k, v in MODULE_MAP.items()}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_COMFY_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(lora_down\.weight|lora_up\.weight|lora_[AB]\.weight|alpha)$")
#: A key in Wan's own module names without the ``diffusion_model.`` prefix (some trainers strip it).
ORIGINAL_KEY = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn|ffn\.\d)\.")


def to_comfy_module(module: str) -> str:
    """``blocks.3.attn1.to_out.0`` -> ``blocks.3.self_attn.o``."""
    m = _BLOCK.match(module)
    if not m or m.group(2) not in MODULE_MAP:
        raise AdapterMismatchError(f"{module} has no name in the original Wan layout", "export in diffusers format")
    return f"blocks.{m.group(1)}.{MODULE_MAP[m.group(2)]}"


def to_comfy(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """``diffusion_model.<wan module>.lora_down.weight`` (A), ``.lora_up.weight`` (B), ``.alpha`` (0-d float)."""
    sd: dict[str, torch.Tensor] = {}
    for module in weights.modules():
        if f"{module}.lora_B.bias" in weights.state_dict:
            raise AdapterMismatchError(f"{module} has a lora_B bias, which the comfy layout cannot hold")
        name = PREFIX + to_comfy_module(module)
        sd[f"{name}.lora_down.weight"] = weights.A(module)
        sd[f"{name}.lora_up.weight"] = weights.B(module)
        sd[f"{name}.alpha"] = torch.tensor(weights.alphas[module], dtype=torch.float32)
    return sd


def from_comfy(state_dict: dict[str, torch.Tensor]) -> LoraWeights:
    """Inverse of :func:`to_comfy`, keeping alpha exact (diffusers' converter folds it into the factors instead).

    Files with keys beyond the block projections (``diff_b``, ``time_projection``, ``head``...) go through
    diffusers' own converter, which knows those trainers' extras.
    """
    original = {k.removeprefix(PREFIX): v for k, v in state_dict.items()}
    parsed = {k: _COMFY_KEY.match(k) for k in original}
    if not all(m and m.group(2) in _INVERSE for m in parsed.values()):
        from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

        converted = _convert_non_diffusers_wan_lora_to_diffusers({PREFIX + k: v for k, v in original.items()})
        return LoraWeights.uniform({k.removeprefix("transformer."): v for k, v in converted.items()}, None)
    sd: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for key, m in parsed.items():
        module = f"blocks.{m.group(1)}.{_INVERSE[m.group(2)]}"
        kind = m.group(3)
        if kind == "alpha":
            alphas[module] = float(original[key].item())
        else:
            factor = "A" if kind in ("lora_down.weight", "lora_A.weight") else "B"
            sd[f"{module}.lora_{factor}.weight"] = original[key]
    return LoraWeights(sd, alphas)


def save_comfy(weights: LoraWeights, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write one comfy-layout LoRA file at ``path`` (the caller makes it atomic)."""
    save_safetensors(to_comfy(weights), path, header_metadata(metadata))
    return path


def read_comfy(path: Path) -> tuple[LoraWeights, dict[str, str]]:
    """Read a comfy-layout LoRA file: ``(weights, raw header)``."""
    sd, header = load_safetensors(path)
    return from_comfy(sd), header
