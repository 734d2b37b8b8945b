"""The pretraining forward with one padding token and a ``log(512 - L)`` logit bias is the pipeline's forward
with 512 zero-padded tokens: same DiT output, same gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from effivmt.backbone.micro import build_micro_components
from effivmt.pretrain.text_padding import compact_padding, install_padding_bias


def _setup(length: int = 7):
    """A micro DiT with a non-zero output layer, its inputs, and the prompts zero-padded to 512 as the pipeline does."""
    transformer = build_micro_components(0)["transformer"]
    torch.nn.init.normal_(transformer.proj_out.weight, std=0.02)  # zero-initialised: give the output a signal
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    embeds = torch.randn(2, length, 64, generator=g)
    embeds[1, 4:] = 0  # the shorter prompt of the batch: zeros after its end, as the pipeline keeps them
    full = torch.cat([embeds, embeds.new_zeros(2, 512 - length, 64)], dim=1)
    return transformer, x, torch.tensor([900.0, 100.0]), embeds, full


def test_compact_padding_matches_512_tokens_output_and_gradients():
    transformer, x, t, embeds, full = _setup()
    ref = transformer(x, t, full, return_dict=False)[0]
    ref.square().mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in transformer.named_parameters() if p.grad is not None}
    transformer.zero_grad()

    state = install_padding_bias(transformer)
    out = transformer(x, t, compact_padding(embeds, state), return_dict=False)[0]
    out.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for n, p in transformer.named_parameters():
        if n in ref_grads:
            torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-3, atol=1e-6, msg=n)


def test_without_the_bias_the_output_differs():
    """The bias is what makes it exact: one padding token without it is another function."""
    transformer, x, t, embeds, full = _setup()
    with torch.no_grad():
        ref = transformer(x, t, full, return_dict=False)[0]
        state = install_padding_bias(transformer)
        compact = compact_padding(embeds, state)
        state["bias"] = None
        out = transformer(x, t, compact, return_dict=False)[0]
    assert not torch.allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_i2v_blocks_are_refused(tiny_i2v):
    with pytest.raises(ValueError, match="I2V"):
        install_padding_bias(copy.deepcopy(tiny_i2v.transformer))
