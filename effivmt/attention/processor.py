"""``EffiAttnProcessor``: the one attention processor family of effivmt.

Installed on every ``WanAttention`` (self- and cross-attention). With empty state it computes
exactly what diffusers' ``WanAttnProcessor`` computes (same projection helpers, same rotary
application, same ``dispatch_attention_fn``). Features are switched on by state, never by subclass:

* ``capture`` (:class:`~effivmt.attention.scores.ScoreCapture`): self-attention adds its per-head
  spatial/temporal template masses, streamed in query chunks (head classification, EffiVMT stage 1);
* ``reference``: the OmniTransfer seam. An object with a ``__call__(processor, attn, query, key, value,
  encoder_hidden_states)`` that returns the attention output ``(B, N, heads*D)`` replaces the plain
  ``dispatch_attention_fn`` call; it can add cached reference keys/values or a one-way mask and uses
  :meth:`EffiAttnProcessor.attend` for the arithmetic.

Positions (adaptive RoPE, positional bias) do not live here: they arrive as ``rotary_emb``, computed by
:class:`~effivmt.attention.rope.PositionalRope` from real-valued positions.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

# Private upstream helpers, reused so fused projections and I2V added K/V behave exactly as in diffusers.
from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections

from effivmt.attention.scores import ScoreCapture

#: Wan's text context length, hard-coded upstream: I2V context = [image tokens; 512 text tokens].
TEXT_CONTEXT_LENGTH = 512


def apply_rotary_emb(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` (``(B, N, heads, D)``); identical arithmetic to ``WanAttnProcessor``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class EffiAttnProcessor:
    """Wan attention whose extra behaviour (score capture, reference tokens) is switched by state.

    Args:
        layer: index of the transformer block this processor sits in (keys the captured scores).
        is_self_attention: ``True`` for ``attn1``; capture and reference hooks only act there.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int = 0, is_self_attention: bool = True) -> None:
        self.layer = layer
        self.is_self_attention = is_self_attention
        self.capture: ScoreCapture | None = None
        self.reference: Any = None

    def reset(self) -> None:
        """Back to plain ``WanAttnProcessor`` behaviour."""
        self.capture = None
        self.reference = None

    def project(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q/k/v as ``(B, N, heads, D)``: projected, RMS-normalised across heads, then rotated."""
        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)
        return query, key, value

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        parallel_config: Any = None,
    ) -> torch.Tensor:
        """Scaled dot-product attention through diffusers' dispatcher; returns ``(B, N, heads*D)``."""
        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=parallel_config,
        )
        return out.flatten(2, 3).type_as(query)

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        encoder_hidden_states_img = None
        if attn.add_k_proj is not None:
            image_context_length = encoder_hidden_states.shape[1] - TEXT_CONTEXT_LENGTH
            encoder_hidden_states_img = encoder_hidden_states[:, :image_context_length]
            encoder_hidden_states = encoder_hidden_states[:, image_context_length:]

        query, key, value = self.project(attn, hidden_states, encoder_hidden_states, rotary_emb)

        hidden_states_img = None
        if encoder_hidden_states_img is not None:
            key_img, value_img = _get_added_kv_projections(attn, encoder_hidden_states_img)
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            hidden_states_img = self.attend(query, key_img, value_img)

        if self.capture is not None and self.is_self_attention:
            self.capture.update(self.layer, query.detach(), key.detach())

        if self.reference is not None:
            hidden_states = self.reference(self, attn, query, key, value, encoder_hidden_states)
        else:
            parallel = self._parallel_config if encoder_hidden_states is None else None
            hidden_states = self.attend(query, key, value, attention_mask, parallel)

        if hidden_states_img is not None:
            hidden_states = hidden_states + hidden_states_img
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states
