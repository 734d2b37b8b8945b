"""Read a LoRA in any supported layout and load it into a Wan transformer as a peft adapter.

The layout is told by key prefix, as ``WanLoraLoaderMixin.lora_state_dict`` does: ``diffusion_model.`` is the
original/ComfyUI layout, ``base_model.model.`` peft's, ``transformer.`` (or bare ``blocks.*.lora_A``) diffusers';
each layout's own test lives in :data:`effivmt.lora.formats.registry.FORMATS`, asked in order.
Every key is checked against the model before anything is injected, and the first misfit is named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from effivmt.errors import AdapterMismatchError
from effivmt.lora.formats import Format, LoraWeights, read_header_metadata
from effivmt.lora.formats.registry import FORMATS
from effivmt.lora.inject import inject_weights


def _format_of_keys(keys: Iterable[str]) -> Format:
    keys = list(keys)
    if not keys:
        raise AdapterMismatchError("the LoRA file holds no tensors")
    if any(k.startswith("lora_unet_") for k in keys):
        raise AdapterMismatchError(
            "kohya/musubi LoRA keys (lora_unet_*) are not read by effivmt",
            "load the file with diffusers' WanPipeline.load_lora_weights, which converts it",
        )
    for fmt in FORMATS.values():
        if fmt.claims(keys):
            return fmt.name
    bad = next(k for k in keys if ".lora_A." not in k and ".lora_B." not in k)
    raise AdapterMismatchError(f"unrecognised LoRA layout: key {bad}", f"give a {', '.join(FORMATS)} LoRA")


def _weights_file(path: Path) -> Path:
    """The safetensors file inside a folder (diffusers' default name first), or ``path`` itself."""
    if path.is_file():
        return path
    from effivmt.lora.formats.diffusers import WEIGHT_NAME

    if (path / WEIGHT_NAME).is_file():
        return path / WEIGHT_NAME
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise AdapterMismatchError(
            f"{path} holds {len(files)} .safetensors files; cannot tell which is the LoRA",
            "give the file itself",
        )
    return files[0]


def detect_format(state_dict_or_path: Mapping[str, Any] | str | Path) -> Format:
    """The registered layout (``"diffusers"``, ``"comfy"``, ``"peft"``) of a state dict, LoRA file or adapter folder.

    Raises:
        AdapterMismatchError: the path does not exist or the keys match no supported layout.
    """
    if isinstance(state_dict_or_path, Mapping):
        return _format_of_keys(state_dict_or_path.keys())
    path = Path(state_dict_or_path)
    if not path.exists():
        raise AdapterMismatchError(f"LoRA path {path} does not exist")
    from effivmt.lora.formats.peft import CONFIG_NAME

    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return "peft"
    from safetensors import SafetensorError, safe_open

    file = _weights_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            return _format_of_keys(f.keys())
    except (SafetensorError, OSError) as err:
        raise AdapterMismatchError(f"cannot read {file} as safetensors: {err}", "give a .safetensors LoRA") from None


def read_lora(path: str | Path) -> tuple[LoraWeights, Format, dict[str, Any]]:
    """Read any supported LoRA: ``(weights, format, effivmt metadata from the header)``."""
    path = Path(path)
    fmt = FORMATS[detect_format(path)]
    weights, header = fmt.read(path if fmt.folder and path.is_dir() else _weights_file(path))
    return weights, fmt.name, read_header_metadata(header)


def load_lora(transformer: nn.Module, path: str | Path, adapter_name: str = "lora", scale: float = 1.0) -> LoraWeights:
    """Load a LoRA file or folder (diffusers, comfy or peft layout) into ``transformer`` as adapter ``adapter_name``.

    The adapter is active beside any others, at ``scale``. Nothing is changed unless every key fits.

    Returns:
        The weights as read (for inspection).

    Raises:
        AdapterMismatchError: unreadable file, unknown layout, or the first key whose module or shape does not fit,
            e.g. ``blocks.0.attn1.to_q.lora_A.weight has shape (16, 48), the model expects (16, 96)``.
    """
    weights, _, _ = read_lora(path)  # dtype: load_state_dict casts into the adapter's own (fp32 beside bf16 bases)
    inject_weights(transformer, adapter_name, weights, scale=scale)
    return weights
