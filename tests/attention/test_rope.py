import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from effivmt.attention import PositionalRope, adaptive_frame_positions, axis_dims, grid_positions, rope_cos_sin


@pytest.mark.parametrize("head_dim", [12, 16, 22, 128])
@pytest.mark.parametrize("grid", [(1, 1, 1), (3, 4, 4), (5, 3, 7), (21, 6, 5)])
def test_integer_positions_match_wan_rotary_pos_embed(head_dim, grid):
    """PositionalRope with no override vs diffusers' table lookup, odd sizes included.

    Both compute angles in float64 and cast to float32, so we ask for 1e-6 (float32 rounding of cos/sin);
    in practice they agree bit for bit.
    """
    f, h, w = grid
    upstream = WanRotaryPosEmbed(head_dim, (1, 2, 2), max_seq_len=64)
    ours = PositionalRope(head_dim, (1, 2, 2))
    latents = torch.zeros(1, 4, f, 2 * h, 2 * w)
    for a, b in zip(upstream(latents), ours(latents)):
        assert a.shape == b.shape == (1, f * h * w, 1, head_dim)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_axis_split_of_wan_1_3b():
    assert axis_dims(128) == (44, 42, 42)


def test_fractional_positions_interpolate_the_angle():
    pos = torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64)
    cos, _ = rope_cos_sin(pos, 12)
    t_dim = axis_dims(12)[0]
    inv = 1.0 / (10000 ** (torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim))
    expected = torch.cos(0.5 * inv).repeat_interleave(2).float()
    torch.testing.assert_close(cos[0, 0, 0, :t_dim], expected)


@pytest.mark.parametrize("num_frames,num_sampled", [(21, 5), (21, 7), (5, 2), (13, 13), (8, 3)])
def test_adaptive_positions_follow_design_formula(num_frames, num_sampled):
    p = adaptive_frame_positions(num_frames, num_sampled)
    for i in range(num_sampled):
        assert p[i].item() == pytest.approx(num_frames / 2 + (num_frames / num_sampled) * (i - num_sampled / 2))


@pytest.mark.parametrize("num_frames", [1, 5, 21])
def test_adaptive_positions_reduce_to_integers_when_all_frames_are_used(num_frames):
    assert torch.equal(adaptive_frame_positions(num_frames, num_frames), torch.arange(num_frames, dtype=torch.float64))


def test_grid_positions_order_and_offset():
    pos = grid_positions(2, 2, 3, offset=(0, 0, 3))
    assert pos.shape == (12, 3)
    assert pos[0].tolist() == [0, 0, 3] and pos[1].tolist() == [0, 0, 4] and pos[3].tolist() == [0, 1, 3]
    assert pos[6].tolist() == [1, 0, 3]


def test_override_changes_rotary_and_checks_token_count():
    rope = PositionalRope(12, (1, 2, 2))
    latents = torch.zeros(1, 4, 3, 4, 4)
    base = rope(latents)
    rope.positions = grid_positions(3, 2, 2, frame_positions=[0.0, 1.5, 3.0])
    moved = rope(latents)
    assert not torch.equal(base[0], moved[0])
    rope.positions = grid_positions(2, 2, 2)
    with pytest.raises(ValueError, match="tokens"):
        rope(latents)
