"""attention_rows: one head's softmax rows, checked against the model's own attention output."""

import pytest
import torch

from effivmt.attention import capture_scores, classify_heads, install_processors
from effivmt.attention.inspect import (
    attention_rows,
    extreme_heads,
    frame_mass,
    patch_grid,
    query_token,
    token_position,
)

GRID = (3, 4, 4)  # latents (B, 16, 3, 8, 8) -> patch (1, 2, 2) -> 48 tokens


def _inputs(batch: int = 1):
    torch.manual_seed(0)
    latents = torch.randn(batch, 16, GRID[0], GRID[1] * 2, GRID[2] * 2)
    text = torch.randn(batch, 6, 32)
    timestep = torch.full((batch,), 700.0)
    return latents, timestep, text


def _reference_probs(transformer, latents, timestep, text, layer, head, sample=0):
    """Full N x N probabilities of one head, recovered from the model's real attention output.

    Runs the whole forward pass with hooks (nothing stopped early), takes the attn1 input and the attention
    output before ``to_out.0``, and returns the head's value vectors ``v`` and output ``o`` so that
    ``probs @ v == o`` can be checked for any candidate ``probs``.
    """
    seen = {}
    attn = transformer.blocks[layer].attn1
    h1 = attn.register_forward_pre_hook(lambda m, a, k: seen.update(hs=a[0]), with_kwargs=True)
    h2 = attn.to_out[0].register_forward_pre_hook(lambda m, a: seen.update(out=a[0]))
    try:
        with torch.no_grad():
            transformer(latents, timestep, text, return_dict=False)
    finally:
        h1.remove()
        h2.remove()
    d = seen["out"].shape[-1] // attn.heads
    with torch.no_grad():
        value = attn.to_v(seen["hs"]).unflatten(2, (attn.heads, -1))[sample, :, head]  # (N, D)
    out = seen["out"][sample].unflatten(-1, (attn.heads, d))[:, head]  # (N, D)
    return value, out


@pytest.mark.parametrize("installed", [False, True], ids=["stock-processor", "effi-processor"])
@pytest.mark.parametrize("layer,head", [(0, 1), (1, 3)])
def test_rows_reproduce_the_models_attention_output(transformer, installed, layer, head):
    """All N rows of one head times that head's values equal the head's real attention output.

    The reference output comes from the unmodified forward pass (stock ``WanAttnProcessor`` or our installed
    ``EffiAttnProcessor``, through ``dispatch_attention_fn``), so this checks projection, q/k norm, RoPE and
    the 1/sqrt(D) scale all at once. float32 on both sides, N = 48: atol 1e-5.
    """
    if installed:
        install_processors(transformer)
    latents, timestep, text = _inputs()
    n = GRID[0] * GRID[1] * GRID[2]
    rows = attention_rows(transformer, latents, timestep, text, layer, head, torch.arange(n))
    assert rows.shape == (n, n)
    torch.testing.assert_close(rows.sum(-1), torch.ones(n), atol=1e-5, rtol=0)
    value, out = _reference_probs(transformer, latents, timestep, text, layer, head)
    torch.testing.assert_close(rows @ value, out, atol=1e-5, rtol=1e-5)


def test_rows_equal_brute_force_softmax(transformer):
    """A few query rows equal the float64 brute-force softmax over the processor's q/k (N x N, tiny N only)."""
    processors = install_processors(transformer)
    latents, timestep, text = _inputs(batch=2)
    layer, head = 1, 2
    grabbed = {}

    def grab(module, args, kwargs):
        grabbed["hs"], grabbed["rope"] = args[0], args[3]

    handle = transformer.blocks[layer].attn1.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        transformer(latents, timestep, text, return_dict=False)
    handle.remove()
    attn = transformer.blocks[layer].attn1
    q, k, _ = processors[f"blocks.{layer}.attn1"].project(attn, grabbed["hs"], None, grabbed["rope"])
    q, k = q[1, :, head].double(), k[1, :, head].double()
    full = torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1)  # (N, N)
    picks = [0, query_token(GRID, 1, 2, 3), query_token(GRID, 2, 3, 3)]
    rows = attention_rows(transformer, latents, timestep, text, layer, head, picks, sample=1)
    torch.testing.assert_close(rows.double(), full[picks], atol=1e-6, rtol=1e-5)


def test_forward_stops_at_the_chosen_layer(transformer):
    calls = []
    transformer.blocks[1].register_forward_pre_hook(lambda m, a: calls.append(1))
    latents, timestep, text = _inputs()
    attention_rows(transformer, latents, timestep, text, 0, 0, 5)
    assert calls == []


def test_index_helpers_and_errors(transformer):
    assert query_token((3, 4, 5), 0, 0, 0) == 0
    assert query_token((3, 4, 5), 2, 1, 3) == 2 * 20 + 1 * 5 + 3
    for index in (0, 7, 59):
        assert query_token((3, 4, 5), *token_position((3, 4, 5), index)) == index
    with pytest.raises(IndexError):
        query_token((3, 4, 5), 3, 0, 0)
    with pytest.raises(IndexError):
        query_token((3, 4, 5), 0, -1, 0)
    latents, timestep, text = _inputs()
    assert patch_grid(transformer, latents) == GRID
    with pytest.raises(IndexError, match="layer 5"):
        attention_rows(transformer, latents, timestep, text, 5, 0, 0)
    with pytest.raises(IndexError, match="head 9"):
        attention_rows(transformer, latents, timestep, text, 0, 9, 0)
    with pytest.raises(IndexError, match="query index"):
        attention_rows(transformer, latents, timestep, text, 0, 0, 48)


def make_spatial_only_head(transformer, layer: int, head: int) -> None:
    """Hand-set ``blocks[layer].attn1`` so that ``head`` attends only (and uniformly) within the query's frame.

    q and k become the same constant vector for every token (weights zeroed, bias on the head's first
    dimension), so after RoPE their dot product is ``|q|^2 cos(dt)`` for a frame distance ``dt``: the first
    rotary pair belongs to the time axis and turns by 1 radian per frame. ``norm_q``/``norm_k`` scale it
    to ``|q|^2 / sqrt(D) ~ 500``, so frames at ``dt = 1, 2`` lose ``>= 230`` in logit: their mass underflows.
    """
    attn = transformer.blocks[layer].attn1
    d = attn.to_q.out_features // attn.heads
    with torch.no_grad():
        for proj, norm in ((attn.to_q, attn.norm_q), (attn.to_k, attn.norm_k)):
            proj.weight.zero_()
            proj.bias.zero_()
            proj.bias[head * d] = 1.0
            norm.weight.fill_(1.0)
            norm.weight[head * d] = 6.0


def test_constructed_spatial_head_concentrates_in_the_query_frame(transformer, tmp_path):
    """Issue 7: the attention map of a constructed spatial-only head puts all its mass in the query's frame."""
    from effivmt.viz import attention_map_figure, save_figure

    layer, head = 1, 2
    make_spatial_only_head(transformer, layer, head)
    latents, timestep, text = _inputs()
    for query in [(0, 0, 0), (1, 2, 3), (2, 3, 1)]:
        row = attention_rows(transformer, latents, timestep, text, layer, head, query_token(GRID, *query))[0]
        mass = frame_mass(row, GRID)
        assert mass[query[0]].item() == pytest.approx(1.0, abs=1e-6)
        # Uniform within the frame: every key has the same logit.
        own = row.view(GRID)[query[0]]
        torch.testing.assert_close(own, torch.full_like(own, 1 / 16), atol=1e-6, rtol=0)
        fig = attention_map_figure(row, GRID, query)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles[query[0]].endswith("mass 1.00") and "(query)" in titles[query[0]]
        assert all(t.endswith("mass 0.00") for i, t in enumerate(titles) if i != query[0])
    assert save_figure(fig, tmp_path / "spatial-head.png").stat().st_size > 0

    # The classifier agrees: S_spatial = F (all mass on 1/F of the keys), S_temporal = 0.
    with capture_scores(transformer, grid=GRID) as capture:
        with torch.no_grad():
            transformer(latents, timestep, text, return_dict=False)
    spatial, temporal = capture.scores()
    assert spatial[layer, head].item() == pytest.approx(GRID[0], rel=1e-5)
    assert temporal[layer, head].item() == pytest.approx(0.0, abs=1e-6)
    assert classify_heads(spatial, temporal)[layer][head] == "spatial"
    assert extreme_heads(spatial, temporal)["spatial"] == (layer, head)


def test_frame_mass_and_extreme_heads():
    rows = torch.zeros(2, 3, 2, 2)
    rows[0, 1] = 0.25
    rows[1, :, 0, 0] = 1 / 3
    torch.testing.assert_close(frame_mass(rows, (3, 2, 2)), torch.tensor([[0, 1.0, 0], [1 / 3, 1 / 3, 1 / 3]]))
    torch.testing.assert_close(frame_mass(rows.flatten(1), (3, 2, 2))[0], torch.tensor([0, 1.0, 0]))
    with pytest.raises(ValueError, match="12 tokens"):
        frame_mass(torch.zeros(5), (3, 2, 2))
    spatial = torch.tensor([[2.0, 1.0], [0.5, 1.0]])
    temporal = torch.tensor([[1.0, 1.0], [4.0, 1.0]])
    assert extreme_heads(spatial, temporal) == {"spatial": (0, 0), "temporal": (1, 0)}
