import copy

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from effivmt.attention import EffiAttnProcessor, capture_scores, install_processors, override_positions
from effivmt.attention.rope import PositionalRope, grid_positions


def _inputs(transformer, frames=3, size=4, text_len=7, image_len=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    latents = torch.randn(1, cfg.in_channels, frames, size, size, generator=g)
    text = torch.randn(1, text_len, cfg.text_dim, generator=g)
    kwargs = dict(hidden_states=latents, timestep=torch.tensor([500]), encoder_hidden_states=text)
    if image_len:
        kwargs["encoder_hidden_states_image"] = torch.randn(1, image_len, cfg.image_dim, generator=g)
    return kwargs


def _upstream(transformer):
    model = copy.deepcopy(transformer)
    model.set_attn_processor(WanAttnProcessor())
    return model


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
@pytest.mark.parametrize("fused", [False, True])
def test_plain_processor_matches_wan_attn_processor(variant, fused, tiny_t2v, tiny_i2v):
    """Whole-transformer output with EffiAttnProcessor + PositionalRope vs stock WanAttnProcessor + WanRotaryPosEmbed.

    Same float32 ops in the same order, so the outputs must agree to 1e-6 (they are bit-identical in practice).
    I2V pads text to 512 tokens: WanAttnProcessor splits image/text context at a hard-coded 512.
    """
    base = (tiny_i2v if variant == "i2v" else tiny_t2v).transformer
    ours = copy.deepcopy(base)
    upstream = _upstream(base)
    if fused:
        ours.fuse_qkv_projections()
        upstream.fuse_qkv_projections()
    install_processors(ours)
    assert all(isinstance(p, EffiAttnProcessor) for p in ours.attn_processors.values())
    assert isinstance(ours.rope, PositionalRope)
    inputs = _inputs(base, text_len=512 if variant == "i2v" else 7, image_len=5 if variant == "i2v" else 0)
    with torch.no_grad():
        expected = upstream(**inputs).sample
        got = ours(**inputs).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_capture_does_not_change_the_output(transformer):
    inputs = _inputs(transformer)
    with torch.no_grad():
        install_processors(transformer)
        plain = transformer(**inputs).sample
        with capture_scores(transformer, grid=(3, 2, 2), chunk_size=5) as capture:
            captured = transformer(**inputs).sample
    assert torch.equal(plain, captured)
    assert capture.count.tolist() == [12.0] * transformer.config.num_layers
    assert all(p.capture is None for p in transformer.attn_processors.values())


def test_position_override_is_scoped(transformer):
    inputs = _inputs(transformer)
    install_processors(transformer)
    with torch.no_grad():
        plain = transformer(**inputs).sample
        with override_positions(transformer, grid_positions(3, 2, 2, frame_positions=[0.0, 2.0, 4.0])):
            moved = transformer(**inputs).sample
        again = transformer(**inputs).sample
    assert not torch.allclose(plain, moved)
    assert torch.equal(plain, again)


def test_install_is_idempotent(transformer):
    first = install_processors(transformer)
    first["blocks.0.attn1"].capture = "sentinel"
    second = install_processors(transformer)
    assert second["blocks.0.attn1"] is first["blocks.0.attn1"]
    assert second["blocks.0.attn1"].capture == "sentinel"
