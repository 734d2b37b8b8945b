import pytest
import torch

from effivmt.attention import ScoreCapture, capture_scores, classify_heads, install_processors, template_masses


def brute_force_scores(query, key, grid):
    """The N x N reference: full softmax map and explicit template masks (only for tiny N)."""
    f, h, w = grid
    n = f * h * w
    q = query.transpose(1, 2).double()
    k = key.transpose(1, 2).double()
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (B, heads, N, N)
    frame = torch.arange(n) // (h * w)
    spot = torch.arange(n) % (h * w)
    same_frame = frame[:, None] == frame[None, :]
    same_spot_other_frame = (spot[:, None] == spot[None, :]) & ~same_frame
    spatial = (probs * same_frame).sum(-1).mean(dim=(0, 2)) / (h * w / n)
    temporal = (probs * same_spot_other_frame).sum(-1).mean(dim=(0, 2)) / ((f - 1) / n)
    return spatial, temporal


@pytest.mark.parametrize("grid", [(3, 2, 2), (4, 3, 5), (2, 1, 1)])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_scores_equal_brute_force(grid, chunk):
    """ScoreCapture streamed in query chunks vs the full N x N map; float32 softmax vs float64 reference: 1e-5."""
    torch.manual_seed(0)
    n = grid[0] * grid[1] * grid[2]
    query, key = torch.randn(2, 2, n, 3, 8).unbind(0)
    capture = ScoreCapture(num_layers=1, num_heads=3, chunk_size=chunk, grid=grid)
    capture.update(0, query, key)
    spatial, temporal = capture.scores()
    ref_spatial, ref_temporal = brute_force_scores(query, key, grid)
    torch.testing.assert_close(spatial[0], ref_spatial, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(temporal[0], ref_temporal, rtol=1e-5, atol=1e-5)


def test_scores_stay_float32_under_bf16_autocast():
    """Issue 12 item 10: a bf16-mixed predict trainer runs the forward in autocast; the score softmax must not drop
    to bf16 (it did despite ``.float()``: errors of ~1e-2 against the float64 reference). Same 1e-5 as above."""
    torch.manual_seed(0)
    grid = (4, 3, 5)
    query, key = (torch.randn(2, 2, 60, 3, 8) * 3).unbind(0)
    capture = ScoreCapture(num_layers=1, num_heads=3, chunk_size=7, grid=grid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        capture.update(0, query.bfloat16(), key.bfloat16())
    spatial, temporal = capture.scores()
    ref_spatial, ref_temporal = brute_force_scores(query.bfloat16().float(), key.bfloat16().float(), grid)
    torch.testing.assert_close(spatial[0], ref_spatial, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(temporal[0], ref_temporal, rtol=1e-5, atol=1e-5)


def test_uniform_attention_scores_one_on_both():
    grid = (3, 2, 2)
    query = torch.zeros(1, 12, 2, 4)
    key = torch.randn(1, 12, 2, 4)
    capture = ScoreCapture(1, 2, grid=grid)
    capture.update(0, query, key)
    spatial, temporal = capture.scores()
    torch.testing.assert_close(spatial, torch.ones(1, 2, dtype=torch.float64))
    torch.testing.assert_close(temporal, torch.ones(1, 2, dtype=torch.float64))


def test_template_masses_of_hand_built_heads():
    """Head 0 attends to its own frame, head 1 to its own spot in other frames."""
    f, h, w = 3, 2, 2
    n = f * h * w
    frame = torch.arange(n) // (h * w)
    spot = torch.arange(n) % (h * w)
    big = 50.0
    logits_spatial = big * (frame[:, None] == frame[None, :]).float()
    logits_temporal = big * ((spot[:, None] == spot[None, :]) & (frame[:, None] != frame[None, :])).float()
    # q.k = logits * sqrt(D) with D = n and identity keys: q_i = logits[i] * sqrt(n), k_j = e_j
    key = torch.eye(n)[None, :, None, :].expand(1, n, 2, n)
    query = torch.stack([logits_spatial, logits_temporal], dim=1)[None] * n**0.5
    sp, tp = template_masses(query, key, (f, h, w), torch.arange(n))
    assert sp[0] / n == pytest.approx(1.0, abs=1e-6) and tp[0] / n == pytest.approx(0.0, abs=1e-6)
    assert sp[1] / n == pytest.approx(0.0, abs=1e-6) and tp[1] / n == pytest.approx(1.0, abs=1e-6)


def test_query_sampling_counts_only_sampled_queries(transformer):
    install_processors(transformer)
    latents = torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad(), capture_scores(transformer, grid=(3, 2, 2), num_queries=5) as capture:
        transformer(latents, torch.tensor([900]), torch.randn(1, 4, 32))
    assert capture.count.tolist() == [5.0, 5.0]
    spatial, temporal = capture.scores()
    assert spatial.shape == temporal.shape == (2, 4)
    assert torch.isfinite(spatial).all() and torch.isfinite(temporal).all()


def test_classification_rules():
    spatial = torch.tensor([[2.0, 1.0, 1.2]])
    temporal = torch.tensor([[1.0, 1.0, 1.0]])
    assert classify_heads(spatial, temporal, alpha=1.25) == [["spatial", "temporal", "temporal"]]
    # released code: spatial iff w_t < 1.3 * w_s
    assert classify_heads(temporal, spatial, alpha=1.3, rule="released") == [["temporal", "spatial", "spatial"]]
    with pytest.raises(ValueError):
        classify_heads(spatial, temporal, rule="bogus")
