"""diffusers layout: ``transformer.blocks.{i}.attn1.to_q.lora_A.weight``; ranks and alphas in the header.

As ``WanPipeline.save_lora_weights`` writes it: tensors keyed ``transformer.<module>.lora_{A,B}.weight``, no alpha
tensors, and the ``peft.LoraConfig`` kwargs prefixed ``transformer.`` as JSON under the header key
``lora_adapter_metadata``. ``load_lora_weights`` builds its ``LoraConfig`` from that header, so alpha survives;
without the header diffusers assumes alpha = rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from effivmt.lora.formats import LoraWeights, header_metadata, load_safetensors, save_safetensors

PREFIX = "transformer."
#: diffusers' ``LORA_WEIGHT_NAME_SAFE``: the file ``load_lora_weights(folder)`` looks for first.
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: diffusers' ``LORA_ADAPTER_METADATA_KEY``.
METADATA_KEY = "lora_adapter_metadata"


def to_diffusers(weights: LoraWeights) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, adapter_metadata)`` with the ``transformer.`` prefix on keys and metadata alike."""
    sd = {PREFIX + k: v for k, v in weights.state_dict.items()}
    meta = {PREFIX + k: v for k, v in weights.lora_config_kwargs().items()}
    return sd, meta


def from_diffusers(state_dict: dict[str, torch.Tensor], adapter_metadata: dict[str, Any] | None) -> LoraWeights:
    """Strip ``transformer.`` (keys written by ``save_lora_adapter`` have none) and resolve alphas."""
    sd = {k.removeprefix(PREFIX): v for k, v in state_dict.items()}
    config = {k.removeprefix(PREFIX): v for k, v in (adapter_metadata or {}).items()}
    if not config:
        return LoraWeights.uniform(sd, None)  # diffusers' convention without metadata: alpha = rank
    return LoraWeights.from_lora_config(sd, config)


def save_diffusers(weights: LoraWeights, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write one diffusers LoRA file at ``path`` (the caller makes it atomic)."""
    sd, meta = to_diffusers(weights)
    header = {METADATA_KEY: json.dumps(meta, indent=2, sort_keys=True), **header_metadata(metadata)}
    save_safetensors(sd, path, header)
    return path


def read_diffusers(path: Path) -> tuple[LoraWeights, dict[str, str]]:
    """Read a diffusers LoRA file: ``(weights, raw header)``."""
    sd, header = load_safetensors(path)
    raw = header.get(METADATA_KEY)
    return from_diffusers(sd, json.loads(raw) if raw else None), header
