"""Wan 2.1 backbone: local diffusers folders or the tiny embedded default."""

from effivmt.backbone.tiny import TINY_I2V, TINY_T2V, build_tiny_components, build_tokenizer
from effivmt.backbone.wan import WanComponents, check_wan_folder, load_wan, resolve_dtype

__all__ = [
    "TINY_I2V",
    "TINY_T2V",
    "WanComponents",
    "build_tiny_components",
    "build_tokenizer",
    "check_wan_folder",
    "load_wan",
    "resolve_dtype",
]
