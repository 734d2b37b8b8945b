"""Task-aware Positional Bias reaches the rotary embedding: reference positions = target positions + task offset."""

import pytest
import torch

from effivmt.attention import grid_positions, rope_cos_sin
from effivmt.omnitransfer.tasks import TASKS


def _captured_rotary(model, run):
    """Every rotary_emb handed to block 0's self-attention while ``run()`` executes, in call order."""
    seen = []
    hook = model.transformer.blocks[0].attn1.register_forward_pre_hook(lambda mod, args: seen.append(args[3]))
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("task", TASKS)
def test_reference_rotary_positions_are_target_plus_task_offset(pipe, task, branch_inputs):
    """For each task the reference branch is rotated at grid + (0, 0, w_tgt) (temporal) or (f_tgt, 0, 0) (appearance).

    Compared exactly (atol 0): both sides are the same float64 -> float32 computation of cos/sin.
    """
    model = pipe.model
    target, refs, rctx, rimg, ctx, img = branch_inputs(model, tasks=(task,))
    grid = model.grid(target)  # (3, 2, 2)
    f, _, w = grid
    offset = {"motion": (0, 0, w), "camera": (0, 0, w), "effect": (0, 0, w), "id": (f, 0, 0), "style": (f, 0, 0)}[task]

    def run():
        record = model.encode_references(refs, [task], rctx, rimg, grid)
        model(target, torch.tensor([500.0]), ctx, img, record)

    ref_rope, tgt_rope = _captured_rotary(model, run)
    target_positions = grid_positions(*grid)
    expected_ref = rope_cos_sin(target_positions + torch.tensor(offset, dtype=torch.float64), 12)
    for got, want in zip(ref_rope, expected_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(tgt_rope, rope_cos_sin(target_positions, 12), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(ref_rope[0], tgt_rope[0])


def test_combination_id_plus_motion(pipe, branch_inputs):
    """id+motion: the ID clip at +f_tgt in time and the motion clip at +w_tgt in width, one record each."""
    model = pipe.model
    target, refs, rctx, rimg, ctx, img = branch_inputs(model, tasks=("id", "motion"))
    grid = model.grid(target)
    seen = _captured_rotary(model, lambda: model.encode_references(refs, ["id", "motion"], rctx, rimg, grid))
    base = grid_positions(*grid)
    for got, offset in zip(seen, [(3, 0, 0), (0, 0, 2)], strict=True):
        want = rope_cos_sin(base + torch.tensor(offset, dtype=torch.float64), 12)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_per_item_tasks_give_per_item_positions(pipe, branch_inputs):
    """A batch mixing a temporal and an appearance task rotates each item's reference by its own offset."""
    model = pipe.model
    target, refs, rctx, rimg, ctx, img = branch_inputs(model, batch=2)
    grid = model.grid(target)
    _, (pos,) = model.positions(grid, [("motion",), ("style",)], [grid])
    base = grid_positions(*grid)
    assert pos.shape == (2, 12, 3)
    assert torch.equal(pos[0], base + torch.tensor([0.0, 0, 2], dtype=torch.float64))
    assert torch.equal(pos[1], base + torch.tensor([3.0, 0, 0], dtype=torch.float64))
    cos, _ = model.rope(pos, torch.device("cpu"))
    assert cos.shape == (2, 12, 1, 12)
