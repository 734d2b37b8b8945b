"""The LoRA layouts effivmt reads and writes, as one registry: adding a layout is one :class:`LoraFormat` here.

Each entry says how to tell the layout from a file's keys, how to read it and how to write it, whether it is a
file or a folder, and what a merged export is called. :mod:`effivmt.lora.export` and :mod:`effivmt.lora.load`
know no layout by name: they look it up here, so an unknown name is one error, never a silent fall-through.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effivmt.errors import ConfigError
from effivmt.lora.formats import LoraWeights, comfy, diffusers, load_safetensors, peft


@dataclass(frozen=True)
class LoraFormat:
    """One LoRA layout.

    Attributes:
        name: what ``--format`` and ``detect_format`` call it.
        claims: ``keys -> bool``: whether a file with these tensor keys is in this layout (asked in registry order).
        read: ``path -> (weights, raw header)`` for a file (or, where ``folder``, a folder) in this layout.
        write: ``(weights, path, metadata) -> path``; the caller makes it atomic.
        folder: whether one adapter is a folder (peft) rather than one ``.safetensors`` file.
        merged_name: the file (or folder) name of a merged export, without suffix.
        summary: one line for ``--help`` and docs.
    """

    name: str
    claims: Callable[[Sequence[str]], bool]
    read: Callable[[Path], tuple[LoraWeights, dict[str, str]]]
    write: Callable[[LoraWeights, Path, dict[str, Any]], Path]
    folder: bool
    merged_name: str
    summary: str

    def target(self, out: Path, name: str) -> Path:
        """Where adapter ``name`` goes inside the export folder ``out``."""
        return out / (name if self.folder else f"{name}.safetensors")


def _read_peft(path: Path) -> tuple[LoraWeights, dict[str, str]]:
    if path.is_dir():
        weights, header, _ = peft.read_peft(path)
        return weights, header
    sd, header = load_safetensors(path)  # a lone peft-keyed file: diffusers' convention alpha = rank
    return peft.from_peft(sd, {}), header


def _write_peft(weights: LoraWeights, path: Path, metadata: dict[str, Any]) -> Path:
    return peft.save_peft(weights, path, metadata, base_model=metadata.get("base_model"))


def _plain_lora_keys(keys: Sequence[str]) -> bool:
    return all(".lora_A." in k or ".lora_B." in k for k in keys)


#: name -> layout, in the order :func:`detect_format` asks them (the first that claims a file's keys wins).
FORMATS: dict[str, LoraFormat] = {
    f.name: f
    for f in (
        LoraFormat(
            "comfy",
            claims=lambda keys: any(k.startswith(comfy.PREFIX) or comfy.ORIGINAL_KEY.match(k) for k in keys),
            read=comfy.read_comfy,
            write=comfy.save_comfy,
            folder=False,
            merged_name="merged",
            summary="original Wan / ComfyUI keys (diffusion_model.*.lora_down/.lora_up, .alpha)",
        ),
        LoraFormat(
            "peft",
            claims=lambda keys: any(k.startswith(peft.PREFIX) for k in keys),
            read=_read_peft,
            write=_write_peft,
            folder=True,
            merged_name="merged",
            summary="a peft folder (adapter_config.json + adapter_model.safetensors)",
        ),
        LoraFormat(
            "diffusers",
            claims=_plain_lora_keys,
            read=diffusers.read_diffusers,
            write=diffusers.save_diffusers,
            folder=False,
            merged_name=Path(diffusers.WEIGHT_NAME).stem,
            summary="transformer.* keys, alpha in the lora_adapter_metadata header",
        ),
    )
}


def get_format(name: str) -> LoraFormat:
    """The registered layout ``name``.

    Raises:
        ConfigError: an unknown name, with the nearest registered one.
    """
    if name not in FORMATS:
        near = difflib.get_close_matches(str(name), FORMATS, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(FORMATS)}"
        raise ConfigError(f"unknown LoRA format {name!r}", hint)
    return FORMATS[name]


__all__ = ["FORMATS", "LoraFormat", "get_format"]
