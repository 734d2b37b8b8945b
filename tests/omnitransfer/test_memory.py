"""What a 14B run needs to fit (issue 13, item 5): encoders freed after use, checkpointed reference branch."""

import gc
import weakref

import pytest
import torch

from effivmt.errors import EffivmtError
from effivmt.omnitransfer.pipeline import OmniTransferPipeline


def _first_and_ref(video):
    return video(1)[:, :, 0], video(2)


def test_sample_can_free_the_encoders_without_changing_the_video(video):
    """``release_encoders=True`` gives the same latents, and UMT5, CLIP and Qwen2.5-VL are garbage afterwards."""
    first, ref = _first_and_ref(video)
    kwargs = dict(num_frames=9, steps=2, guidance=3.0, seed=0)
    keep = OmniTransferPipeline.load()
    expected = keep.sample(first, [ref], ["motion"], "a red circle", **kwargs)
    pipe = OmniTransferPipeline.load()
    gone = [weakref.ref(m) for m in (pipe.wan.text_encoder, pipe.wan.image_encoder, pipe.model.aligner.mllm)]
    got = pipe.sample(first, [ref], ["motion"], "a red circle", release_encoders=True, **kwargs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    gc.collect()
    assert [r() is None for r in gone] == [True, True, True]
    assert sorted(pipe.released) == ["image_encoder", "mllm", "text_encoder"]
    with pytest.raises(EffivmtError, match="freed by release_encoders"):
        pipe.sample(first, [ref], ["motion"], "a red circle", **kwargs)


def test_encoders_can_be_offloaded_instead(video):
    pipe = OmniTransferPipeline.load()
    assert pipe.release_encoders(offload_to="meta") == ["text_encoder", "image_encoder", "mllm"]
    assert pipe.released == []
    assert next(pipe.wan.text_encoder.parameters()).device.type == "meta"
    assert next(pipe.model.aligner.mllm.parameters()).device.type == "meta"


def _grads_and_saved(checkpointing: bool, branch_inputs):
    """Loss of one denoising prediction through a recorded reference; DiT gradients; saved activation bytes."""
    from effivmt.omnitransfer.memory import saved_activation_bytes

    torch.manual_seed(0)
    pipe = OmniTransferPipeline.load(use_mllm=False)
    model = pipe.model
    if checkpointing:
        model.transformer.enable_gradient_checkpointing()
    target, refs, ref_ctx, ref_img, ctx, img = branch_inputs(model, tasks=("id", "motion"))
    grid = model.grid(target)
    params = list(model.parameters())
    record, ref_bytes = saved_activation_bytes(
        lambda: model.encode_references(refs, ["id", "motion"], ref_ctx, ref_img, grid), params
    )
    loss = model(target, torch.tensor([500.0]), ctx, img, record).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, ref_bytes, record


def test_reference_branch_is_checkpointed_with_the_same_gradients(branch_inputs):
    """With gradient checkpointing the reference branch saves less and records each layer once; same gradients.

    Float32 on the tiny model: recomputation replays the same ops, so gradients agree to 1e-5.
    """
    loss_a, grads_a, saved_a, record_a = _grads_and_saved(False, branch_inputs)
    loss_b, grads_b, saved_b, record_b = _grads_and_saved(True, branch_inputs)
    assert saved_b < saved_a / 2  # old: the reference branch ran without checkpointing, saved_b == saved_a
    assert [len(v) for v in record_b.store.values()] == [2, 2]  # recomputed blocks overwrote, never appended
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("transformer.blocks.") for k in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_kv_cache_size_per_reference(pipe, branch_inputs):
    """The record holds 2 x layers x tokens x dim elements per reference; the closed form says the same."""
    from effivmt.omnitransfer.memory import kv_cache_bytes

    target, refs, ref_ctx, ref_img, _, _ = branch_inputs(pipe.model, tasks=("id", "motion"))
    with torch.no_grad():
        record = pipe.model.encode_references(refs, ["id", "motion"], ref_ctx, ref_img, pipe.model.grid(target))
    cfg = pipe.model.transformer.config
    one = kv_cache_bytes(cfg.num_layers, 12, cfg.num_attention_heads * cfg.attention_head_dim, element_size=4)
    assert record.nbytes(0) == record.nbytes(1) == one and record.nbytes() == 2 * one
    assert kv_cache_bytes(40, 21 * 30 * 52, 5120) == 26_836_992_000  # Wan 2.1 14B, 81x480x832, bf16
