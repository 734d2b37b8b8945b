"""Reference keys/values computed once per generation equal recomputing them at every step."""

import torch


def test_cached_generation_equals_recomputed(pipe, video):
    """Whole sampling loop (UniPC, CFG 5, two references id+motion): cache on vs off.

    The record is deterministic and prompt-free, so both runs do the same float ops; we allow 1e-6 anyway.
    """
    first, refs = video(0)[:, :, 0], [video(1), video(2)]
    kwargs = dict(num_frames=9, steps=4, guidance=5.0, seed=3)
    cached = pipe.sample(first, refs, ["id", "motion"], "a red car", cache_reference=True, **kwargs)
    recomputed = pipe.sample(first, refs, ["id", "motion"], "a red car", cache_reference=False, **kwargs)
    torch.testing.assert_close(cached, recomputed, rtol=0, atol=1e-6)
    single = pipe.sample(first, refs[:1], ["id"], "a red car", **kwargs)
    assert not torch.allclose(cached, single)


def test_cache_runs_the_reference_branch_once(pipe, monkeypatch, video):
    calls = []
    original = pipe.model.encode_references
    monkeypatch.setattr(pipe.model, "encode_references", lambda *a, **k: calls.append(1) or original(*a, **k))
    pipe.sample(video(0)[:, :, 0], [video(1)], ["motion"], "a car", num_frames=9, steps=3, cache_reference=True)
    assert len(calls) == 1
    pipe.sample(video(0)[:, :, 0], [video(1)], ["motion"], "a car", num_frames=9, steps=3, cache_reference=False)
    assert len(calls) == 1 + 3


def test_one_record_serves_a_larger_batch(pipe, branch_inputs):
    """A batch-1 record tiled for CFG's [cond; uncond] equals a record built at batch 2."""
    model = pipe.model
    target, refs, rctx, rimg, ctx, img = branch_inputs(model, batch=2)
    one = [r[:1] for r in refs]
    refs2 = [torch.cat([r[:1], r[:1]]) for r in refs]
    with torch.no_grad():
        rec1 = model.encode_references(one, ["motion"], [c[:1] for c in rctx], [i[:1] for i in rimg], (3, 2, 2))
        rec2 = model.encode_references(
            refs2, ["motion"], [torch.cat([c[:1]] * 2) for c in rctx], [torch.cat([i[:1]] * 2) for i in rimg], (3, 2, 2)
        )
        a = model(target, torch.tensor([600.0, 200.0]), ctx, img, rec1)
        b = model(target, torch.tensor([600.0, 200.0]), ctx, img, rec2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
