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
