"""Cross-attention over the 512-token prompt padding, computed once instead of ~500 times.

``WanPipeline`` pads every prompt embedding to 512 tokens with zeros. The condition embedder maps each
token on its own, so all padding tokens become one and the same vector ``c``, and so do their keys and
values. Softmax attention over ``n`` identical keys equals attention over one of them with ``log n`` added
to its logit:

    sum_j exp(q.k_j) v_j over n copies of (k_c, v_c)  =  exp(q.k_c + log n) v_c.

Training therefore keeps the prompt's own tokens plus a single padding token and adds ``log(512 - L)`` to
that key's logit: the same function as the pipeline's (tested numerically), without the key/value
projections and attention over ~500 padding keys, which were about half of the micro DiT's FLOPs (144
video tokens attending to 512 text tokens in every block). The model itself is unchanged and stock; only
the pretraining forward uses this.
"""

from __future__ import annotations

import math

import torch


class PaddingBiasProcessor:
    """Wraps a block's cross-attention processor and passes it the padding bias as its attention mask."""

    def __init__(self, inner, state: dict) -> None:
        self.inner, self.state = inner, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        bias = self.state.get("bias")
        if bias is not None:
            attention_mask = bias.to(hidden_states.dtype)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def install_padding_bias(transformer) -> dict:
    """Wrap every block's ``attn2`` processor; returns the shared state that :func:`compact_padding` fills."""
    state: dict = {"bias": None}
    for block in transformer.blocks:
        if block.attn2.add_k_proj is not None:
            raise ValueError("padding bias: I2V blocks split the context at 512 tokens; use full padding")
        block.attn2.set_processor(PaddingBiasProcessor(block.attn2.processor, state))
    return state


def compact_padding(embeds: torch.Tensor, state: dict, total: int = 512) -> torch.Tensor:
    """``embeds`` ``(B, L, D)``: the prompts' tokens, zeros after each prompt's end. Returns ``(B, L + 1, D)``
    with one zero token standing for the ``total - L`` padding tokens, and sets its logit bias in ``state``."""
    length = embeds.shape[1]
    if length >= total:
        state["bias"] = None
        return embeds[:, :total]
    bias = embeds.new_zeros(1, 1, 1, length + 1)
    bias[..., -1] = math.log(total - length)
    state["bias"] = bias
    return torch.cat([embeds, embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2])], dim=1)
