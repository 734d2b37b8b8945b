"""Look at single attention heads: the softmax rows of one head for a few chosen query tokens.

Head classification (DESIGN.md, "Head classification") reduces every head to two numbers; to *see* why a head
is spatial or temporal, :func:`attention_rows` recomputes the attention row ``A[i, :]`` of one head of one
self-attention layer for a few query tokens ``i``, with exactly the queries and keys the processor uses
(projection, RMS norm across heads, RoPE). Memory is ``O(q x N)``: the ``N x N`` map is never built.

Tokens are in Wan's frame-major order over the patch grid ``(F, H, W)``: ``index = (f * H + y) * W + x``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from effivmt.attention.processor import EffiAttnProcessor


class _Captured(Exception):
    """Raised by the pre-hook to stop the forward pass once the wanted layer's inputs are in hand."""


def query_token(grid: Sequence[int], frame: int, y: int, x: int) -> int:
    """Index of the token at latent frame ``frame``, row ``y``, column ``x`` of the patch grid ``(F, H, W)``.

    Raises:
        IndexError: if the position lies outside the grid (negative indices are not wrapped, to catch typos).
    """
    f, h, w = (int(v) for v in grid)
    if not (0 <= frame < f and 0 <= y < h and 0 <= x < w):
        raise IndexError(f"token ({frame}, {y}, {x}) is outside the patch grid {tuple(grid)}")
    return (frame * h + y) * w + x


def token_position(grid: Sequence[int], index: int) -> tuple[int, int, int]:
    """Inverse of :func:`query_token`: ``(frame, y, x)`` of token ``index``."""
    f, h, w = (int(v) for v in grid)
    if not 0 <= index < f * h * w:
        raise IndexError(f"token {index} is outside the patch grid {tuple(grid)} ({f * h * w} tokens)")
    return index // (h * w), (index // w) % h, index % w


def patch_grid(transformer, latents: torch.Tensor) -> tuple[int, int, int]:
    """Token grid ``(F, H, W)`` of latents ``(B, C, F, H, W)`` after the transformer's patching."""
    pt, ph, pw = transformer.config.patch_size
    _, _, f, h, w = latents.shape
    return f // pt, h // ph, w // pw


def frame_mass(rows: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Attention mass each latent frame receives: ``(..., N)`` or ``(..., F, H, W)`` rows -> ``(..., F)``.

    A spatial head puts (almost) all of a query's mass in the query's own frame; a temporal head spreads it
    over the same ``(y, x)`` in the other frames (DESIGN.md, "Head classification").
    """
    f, h, w = (int(v) for v in grid)
    rows = torch.as_tensor(rows)
    if rows.shape[-3:] == (f, h, w):
        rows = rows.flatten(-3)
    if rows.shape[-1] != f * h * w:
        raise ValueError(f"rows have {rows.shape[-1]} entries, the grid {tuple(grid)} has {f * h * w} tokens")
    return rows.unflatten(-1, (f, h * w)).sum(-1)


def extreme_heads(spatial: torch.Tensor, temporal: torch.Tensor) -> dict[str, tuple[int, int]]:
    """The most spatial and the most temporal head ``(layer, head)`` by the score ratio ``S_spatial / S_temporal``.

    Args:
        spatial: ``(layers, heads)`` S_spatial.
        temporal: ``(layers, heads)`` S_temporal.

    Returns:
        ``{"spatial": (layer, head), "temporal": (layer, head)}``: the largest and the smallest ratio, whatever
        their labels (a model may have no head of one kind at a given alpha; the extremes still exist).
    """
    ratio = torch.as_tensor(spatial, dtype=torch.float64).clamp_min(1e-12) / torch.as_tensor(
        temporal, dtype=torch.float64
    ).clamp_min(1e-12)
    heads = ratio.shape[1]
    most, least = int(ratio.argmax()), int(ratio.argmin())
    return {"spatial": (most // heads, most % heads), "temporal": (least // heads, least % heads)}


@torch.no_grad()
def capture_attn1_inputs(
    transformer,
    latents: torch.Tensor,
    timestep: int | float | torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    layer: int,
    **forward_kwargs: Any,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Run the transformer up to block ``layer`` and return what its self-attention receives.

    A forward pre-hook on ``blocks[layer].attn1`` grabs the normalised, modulated hidden states ``(B, N, C)`` and
    the rotary ``(cos, sin)``, then stops the pass (later blocks are never computed).

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` (with or without effivmt's processors installed).
        latents: ``(B, C, F, H, W)`` noisy latents, as the transformer takes them.
        timestep: the diffusion timestep (0..1000), a number or a ``(B,)`` tensor.
        encoder_hidden_states: ``(B, L, text_dim)`` prompt embeddings.
        layer: block index.
        **forward_kwargs: passed on to the transformer (e.g. ``encoder_hidden_states_image`` for I2V).
    """
    blocks = transformer.blocks
    if not 0 <= layer < len(blocks):
        raise IndexError(f"layer {layer} is out of range: the transformer has {len(blocks)} blocks")
    captured: dict[str, Any] = {}

    def hook(module, args, kwargs):
        # WanTransformerBlock calls attn1(norm_hidden_states, None, None, rotary_emb) positionally; accept both.
        names = ("hidden_states", "encoder_hidden_states", "attention_mask", "rotary_emb")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        captured["hidden_states"] = bound["hidden_states"]
        captured["rotary_emb"] = bound.get("rotary_emb")
        raise _Captured

    timestep = torch.as_tensor(timestep, device=latents.device)
    if timestep.ndim == 0:
        timestep = timestep.expand(latents.shape[0])
    handle = blocks[layer].attn1.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        transformer(latents, timestep, encoder_hidden_states, return_dict=False, **forward_kwargs)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "hidden_states" not in captured:
        raise RuntimeError(f"blocks[{layer}].attn1 was never called during the forward pass")
    return captured["hidden_states"], captured["rotary_emb"]


@torch.no_grad()
def attention_rows(
    transformer,
    latents: torch.Tensor,
    timestep: int | float | torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    layer: int,
    head: int,
    query_index: int | Sequence[int] | torch.Tensor,
    *,
    sample: int = 0,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """Softmax attention rows of one self-attention head for the chosen query tokens.

    Computed as the processor computes attention: ``softmax(q k^T / sqrt(D))`` with ``q``, ``k`` from
    :meth:`EffiAttnProcessor.project` (projection, q/k RMS norm across heads, RoPE), but for one head and
    ``q`` queries only, so memory is ``O(q x N)`` even on a real clip (N = 32,760 on Wan 1.3B at 81x480x832).

    Args:
        transformer: a diffusers ``WanTransformer3DModel``.
        latents: ``(B, C, F, H, W)`` noisy latents.
        timestep: diffusion timestep (0..1000).
        encoder_hidden_states: ``(B, L, text_dim)`` prompt embeddings.
        layer: block index.
        head: head index within the block.
        query_index: token index(es) of the queries (see :func:`query_token`).
        sample: which batch element's rows to return.
        **forward_kwargs: passed on to the transformer (``encoder_hidden_states_image`` for I2V).

    Returns:
        ``(q, N)`` float32 rows, each summing to 1, tokens in frame-major order over :func:`patch_grid`.
    """
    if not 0 <= layer < len(transformer.blocks):
        raise IndexError(f"layer {layer} is out of range: the transformer has {len(transformer.blocks)} blocks")
    attn = transformer.blocks[layer].attn1
    if not 0 <= head < attn.heads:
        raise IndexError(f"head {head} is out of range: layer {layer} has {attn.heads} heads")
    hidden_states, rotary_emb = capture_attn1_inputs(
        transformer, latents, timestep, encoder_hidden_states, layer, **forward_kwargs
    )
    hidden_states = hidden_states[sample : sample + 1]
    if rotary_emb is not None and rotary_emb[0].shape[0] > 1:
        rotary_emb = tuple(r[sample : sample + 1] for r in rotary_emb)
    # project() uses no processor state, so a fresh one stands in when diffusers' own processor is installed.
    processor = attn.processor if isinstance(attn.processor, EffiAttnProcessor) else EffiAttnProcessor(layer)
    query, key, _ = processor.project(attn, hidden_states, None, rotary_emb)  # (1, N, heads, D)
    n = query.shape[1]
    index = torch.as_tensor(query_index, dtype=torch.long).reshape(-1)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
        raise IndexError(f"query index out of range for {n} tokens")
    q = query[0, index.to(query.device), head].float()  # (q, D)
    k = key[0, :, head].float()  # (N, D)
    return torch.softmax(q @ k.T * q.shape[-1] ** -0.5, dim=-1)
