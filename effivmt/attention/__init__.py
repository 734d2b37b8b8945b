"""Attention: position-based RoPE, the EffiAttnProcessor family, chunked head scores."""

from effivmt.attention.install import capture_scores, get_processors, install_processors, override_positions
from effivmt.attention.processor import EffiAttnProcessor, apply_rotary_emb
from effivmt.attention.rope import (
    PositionalRope,
    adaptive_frame_positions,
    axis_dims,
    grid_positions,
    rope_cos_sin,
)
from effivmt.attention.scores import ScoreCapture, classify_heads, template_masses

__all__ = [
    "EffiAttnProcessor",
    "PositionalRope",
    "ScoreCapture",
    "adaptive_frame_positions",
    "apply_rotary_emb",
    "axis_dims",
    "capture_scores",
    "classify_heads",
    "get_processors",
    "grid_positions",
    "install_processors",
    "override_positions",
    "rope_cos_sin",
    "template_masses",
]
