"""peft layout: a folder with ``adapter_config.json`` and ``adapter_model.safetensors``, as ``save_pretrained`` writes.

Keys carry peft's ``base_model.model.`` prefix (``base_model.model.blocks.0.attn1.to_q.lora_A.weight``) and the
config is a full ``peft.LoraConfig``, so ``PeftModel.from_pretrained(transformer, folder)`` loads it. diffusers'
``load_lora_adapter`` does not read this layout (it looks for ``pytorch_lora_weights.safetensors`` with
``transformer.`` keys): use the diffusers format for diffusers. Run folders keep their adapters in this layout
(``adapters/<name>/``) because the config travels with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from effivmt.errors import AdapterMismatchError
from effivmt.lora.formats import LoraWeights, header_metadata, load_safetensors, save_safetensors

PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def to_peft(weights: LoraWeights, base_model: str | None = None, **config: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, adapter_config)``: prefixed keys and the ``LoraConfig.to_dict()`` peft would write.

    ``config`` overrides LoraConfig fields (e.g. ``lora_dropout``, ``init_lora_weights`` of a training run).
    """
    from peft import LoraConfig

    kwargs = {**weights.lora_config_kwargs(), **config}
    cfg = LoraConfig(**kwargs, base_model_name_or_path=base_model).to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    cfg["peft_type"] = "LORA"
    import peft

    cfg["peft_version"] = peft.__version__
    return {PREFIX + k: v for k, v in weights.state_dict.items()}, cfg


def from_peft(state_dict: dict[str, torch.Tensor], adapter_config: dict[str, Any]) -> LoraWeights:
    """Strip ``base_model.model.`` and resolve alphas from the config (``alpha_pattern``, rsLoRA)."""
    peft_type = adapter_config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterMismatchError(f"the adapter is a {peft_type} adapter, not a LoRA")
    return LoraWeights.from_lora_config({k.removeprefix(PREFIX): v for k, v in state_dict.items()}, adapter_config)


def save_peft(
    weights: LoraWeights,
    folder: Path,
    metadata: dict[str, Any] | None = None,
    base_model: str | None = None,
    **config: Any,
) -> Path:
    """Write ``folder/adapter_config.json`` and ``folder/adapter_model.safetensors`` (the caller makes it atomic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd, cfg = to_peft(weights, base_model, **config)
    (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_safetensors(sd, folder / WEIGHTS_NAME, header_metadata(metadata))
    return folder


def read_peft(folder: Path) -> tuple[LoraWeights, dict[str, str], dict[str, Any]]:
    """Read a peft adapter folder: ``(weights, raw safetensors header, adapter_config)``."""
    folder = Path(folder)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise AdapterMismatchError(
            f"{folder} is not a peft adapter folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}",
            "adapter_model.bin is not read; re-save with safe_serialization=True",
        )
    try:
        cfg = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise AdapterMismatchError(f"{config_file} is not valid JSON ({err.msg})") from None
    sd, header = load_safetensors(weights_file)
    return from_peft(sd, cfg), header, cfg
