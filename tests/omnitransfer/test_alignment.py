"""Task-adaptive Multimodal Alignment: Qwen2.5-VL inputs, per-task queries, connector, LoRA."""

import pytest
import torch

from effivmt.omnitransfer.alignment import MultimodalAligner, qwen_patchify
from effivmt.omnitransfer.tasks import TaskConfig
from effivmt.omnitransfer.tiny_qwen import build_tiny_qwen, load_mllm


def test_patchify_matches_qwen2vl_image_processor():
    """Our torch patch layout equals transformers' Qwen2-VL image processor (PIL backend's numpy patchify), exactly."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = torch.randn(3, 16, 24)
    expected, gh, gw = Qwen2VLImageProcessorPil.patchify(None, image.numpy(), 4, 2, 2)
    got, grid = qwen_patchify(image[None], patch=4, temporal_patch=2, merge=2)
    assert grid == [1, gh, gw] == [1, 4, 6]
    assert torch.equal(got, torch.from_numpy(expected.copy()))


def test_video_patchify_groups_temporal_pairs():
    """Video frames (2t, 2t+1) share one temporal patch; an odd count repeats the last frame (upstream padding)."""
    frames = torch.randn(3, 3, 8, 8)
    got, grid = qwen_patchify(frames, patch=4, temporal_patch=2, merge=2)
    assert grid == [2, 2, 2] and got.shape == (8, 3 * 2 * 4 * 4)
    padded, _ = qwen_patchify(torch.cat([frames, frames[-1:]]), patch=4, temporal_patch=2, merge=2)
    assert torch.equal(got, padded)
    first, _ = qwen_patchify(frames[:2], patch=4, temporal_patch=2, merge=2)
    assert torch.equal(got[:4], first)


@pytest.fixture(scope="module")
def aligner():
    torch.manual_seed(0)
    return MultimodalAligner(build_tiny_qwen(), text_dim=32, tasks=TaskConfig(num_queries=3)).eval()


def _clips(seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1, torch.rand(batch, 3, 9, 32, 32, generator=g) * 2 - 1


def test_inputs_hold_image_video_text_and_query_slots(aligner):
    first, ref = _clips(0)
    inputs = aligner.build_inputs(first, [ref], ["a red car", "a dog runs on the beach"], [("motion",), ("id",)])
    ids = aligner.ids
    # 16x16 frames, 4-px patches merged 2x2 -> 2x2 tokens per temporal patch; 4 reference frames -> 2 temporal patches
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]] * 2
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]] * 2
    assert ((inputs["input_ids"] == ids.image_token_id).sum(1) == 4).all()
    assert ((inputs["input_ids"] == ids.video_token_id).sum(1) == 8).all()
    assert (inputs["input_ids"][:, -3:] == ids.pad_id).all() and (inputs["attention_mask"][:, -3:] == 1).all()
    assert inputs["attention_mask"][0, 0] == 0  # shorter prompt is left-padded


def test_features_per_task_and_prompt(aligner):
    first, ref = _clips(1)
    with torch.no_grad():
        out = aligner(first, [ref], ["a red car", "a red car"], [("motion",), ("style",)])
        combo = aligner(first[:1], [ref[:1], ref[:1]], ["a red car"], [("id", "motion")])
        other_prompt = aligner(first, [ref], ["a dog", "a red car"], [("motion",), ("style",)])
    assert out.shape == (2, 3, 32) and combo.shape == (1, 6, 32)
    assert not torch.allclose(out[0], out[1])  # same inputs, different task queries
    assert not torch.allclose(out[0], other_prompt[0])
    torch.testing.assert_close(out[1], other_prompt[1])  # the other item is untouched by item 0's prompt
    with pytest.raises(ValueError, match="one task per reference"):
        aligner(first, [ref], ["a", "b"], [("id", "motion"), ("id", "motion")])


def test_lora_targets_only_the_language_model_and_starts_as_identity(aligner):
    import copy

    tuned = copy.deepcopy(aligner)
    first, ref = _clips(2, batch=1)
    with torch.no_grad():
        before = tuned(first, [ref], ["a car"], [("camera",)])
        tuned.add_lora(rank=2, alpha=2)
        tuned.add_lora(rank=2, alpha=2)  # idempotent
        after = tuned(first, [ref], ["a car"], [("camera",)])
    names = [n for n, _ in tuned.mllm.named_parameters() if "lora_" in n]
    assert names and all(".language_model." in n for n in names)
    assert len(names) == 2 * 4 * 2  # A and B x q/k/v/o x 2 layers
    assert len(tuned.lora_parameters()) == len(names)
    torch.testing.assert_close(before, after)  # lora_B starts at zero


def test_load_mllm_rejects_a_wrong_folder(tmp_path):
    from effivmt.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match="no config.json"):
        load_mllm(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelFolderError, match="not qwen2_5_vl"):
        load_mllm(tmp_path)


def test_load_mllm_reads_a_saved_folder_and_the_packaged_one_is_the_seeded_tiny_qwen(tmp_path):
    """``save_mllm`` -> ``load_mllm(folder)`` gives the same weights, token ids and features; ``load_mllm(None)``
    is the packaged folder, equal to ``build_tiny_qwen(0)`` (what OmniTransfer's connector was trained against)."""
    from effivmt.omnitransfer.tiny_qwen import build_tiny_qwen, save_mllm, tiny_qwen_path

    built = build_tiny_qwen(seed=3)
    loaded = load_mllm(save_mllm(built, tmp_path / "qwen"))
    packaged, seeded = load_mllm(None), build_tiny_qwen(0)
    for a, b in ((built, loaded), (seeded, packaged)):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        ids = ("image_token_id", "video_token_id", "vision_start_id", "vision_end_id", "pad_id", "image_mean")
        assert [getattr(a, k) for k in ids] == [getattr(b, k) for k in ids]
        text = "a red circle moving left"
        assert a.tokenizer(text).input_ids == b.tokenizer(text).input_ids
    assert packaged.source == str(tiny_qwen_path())
    tokens = torch.tensor([loaded.tokenizer("a red circle").input_ids])
    with torch.no_grad():
        want = built.model.model.language_model(input_ids=tokens).last_hidden_state
        got = loaded.model.model.language_model(input_ids=tokens).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)
