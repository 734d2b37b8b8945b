"""Install :class:`EffiAttnProcessor` and :class:`PositionalRope` on a Wan transformer; toggle their state.

The toggles are context managers (diffusers' ``apply_*`` hook style), so a notebook reads::

    install_processors(transformer)
    with capture_scores(transformer, grid=(F, H, W)) as capture:
        transformer(latents, t, text)
    spatial, temporal = capture.scores()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from effivmt.attention.processor import EffiAttnProcessor
from effivmt.attention.rope import PositionalRope
from effivmt.attention.scores import ScoreCapture


def install_processors(transformer) -> dict[str, EffiAttnProcessor]:
    """Put one :class:`EffiAttnProcessor` on every attention module and a :class:`PositionalRope` as ``rope``.

    Idempotent: a transformer that already has them keeps its processors (and their state).
    Returns the processors by module name (``blocks.{i}.attn1`` / ``attn2``).
    """
    if not isinstance(transformer.rope, PositionalRope):
        cfg = transformer.config
        transformer.rope = PositionalRope(cfg.attention_head_dim, cfg.patch_size)
    processors = {}
    for i, block in enumerate(transformer.blocks):
        for name, is_self in (("attn1", True), ("attn2", False)):
            attn = getattr(block, name)
            if not isinstance(attn.processor, EffiAttnProcessor):
                attn.set_processor(EffiAttnProcessor(layer=i, is_self_attention=is_self))
            processors[f"blocks.{i}.{name}"] = attn.processor
    return processors


def get_processors(transformer, self_attention_only: bool = False) -> list[EffiAttnProcessor]:
    """The installed processors in block order (installing them first if needed)."""
    procs = install_processors(transformer)
    return [p for name, p in procs.items() if not self_attention_only or name.endswith("attn1")]


@contextlib.contextmanager
def capture_scores(
    transformer,
    grid: tuple[int, int, int] | None = None,
    chunk_size: int = 1024,
    num_queries: int | None = None,
    capture: ScoreCapture | None = None,
) -> Iterator[ScoreCapture]:
    """Accumulate head template scores over every forward pass inside the block.

    Args:
        grid: token grid ``(F, H, W)`` after patching; if ``None``, set ``capture.grid`` before the forward pass.
        chunk_size: queries per chunk; peak extra memory is ``B * heads * chunk_size * N`` floats.
        num_queries: sample this many queries per pass (``None``: all).
        capture: an existing capture to keep accumulating into (several timesteps / prompts).
    """
    procs = get_processors(transformer, self_attention_only=True)
    cfg = transformer.config
    if capture is None:
        capture = ScoreCapture(cfg.num_layers, cfg.num_attention_heads, chunk_size, num_queries, grid)
    elif grid is not None:
        capture.grid = grid
    for p in procs:
        p.capture = capture
    try:
        yield capture
    finally:
        for p in procs:
            p.capture = None


@contextlib.contextmanager
def override_positions(transformer, positions: torch.Tensor | None) -> Iterator[None]:
    """Use real-valued token positions ``(N, 3)`` for RoPE inside the block (adaptive RoPE, positional bias)."""
    install_processors(transformer)
    previous = transformer.rope.positions
    transformer.rope.positions = positions
    try:
        yield
    finally:
        transformer.rope.positions = previous
