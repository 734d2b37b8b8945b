import json

import pytest
import torch

from effivmt.backbone import build_tokenizer, check_wan_folder, load_wan
from effivmt.errors import ModelFolderError


def test_tiny_model_is_deterministic():
    a = load_wan(None, seed=3).transformer.state_dict()
    b = load_wan(None, seed=3).transformer.state_dict()
    c = load_wan(None, seed=4).transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_save_pretrained_round_trip(tiny_t2v, tiny_wan_dir):
    loaded = load_wan(tiny_wan_dir)
    assert loaded.source == str(tiny_wan_dir) and loaded.variant == "t2v"
    for name in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(tiny_t2v, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert loaded.tokenizer("a red car").input_ids == tiny_t2v.tokenizer("a red car").input_ids
    assert type(loaded.scheduler) is type(tiny_t2v.scheduler)


def test_i2v_round_trip(tiny_i2v, tmp_path):
    folder = tiny_i2v.save_pretrained(tmp_path / "i2v")
    loaded = load_wan(folder)
    assert loaded.variant == "i2v"
    assert loaded.image_encoder is not None and loaded.image_processor is not None
    sd = tiny_i2v.image_encoder.state_dict()
    assert all(torch.equal(sd[k], loaded.image_encoder.state_dict()[k]) for k in sd)


def test_bf16_loading_keeps_wan_fp32_modules(tiny_wan_dir):
    loaded = load_wan(tiny_wan_dir, dtype="bf16")
    assert loaded.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert loaded.transformer.scale_shift_table.dtype == torch.float32
    assert loaded.vae.dtype == torch.float32


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: p, "model_index.json is missing"),
        (
            lambda p: (p / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}') and p,
            "not a Wan",
        ),
        (lambda p: (p / "model_index.json").write_text('{"_class_name": "WanPipeline"}') and p, "missing the Wan"),
        (lambda p: (p / "model_index.json").write_text("{oops") and p, "not valid JSON"),
    ],
)
def test_not_a_wan_folder_gives_one_clear_error(tmp_path, make, message):
    with pytest.raises(ModelFolderError, match=message) as err:
        check_wan_folder(make(tmp_path))
    assert "\n" not in str(err.value)


def test_tokenizer_is_offline_and_t5_like():
    tok = build_tokenizer()
    ids = tok("A red car turns left", padding="max_length", max_length=10).input_ids
    assert ids[5] == tok.eos_token_id and ids[-1] == tok.pad_token_id == 0
    assert tok.unk_token_id not in ids[:5]


def test_pipeline_generates_with_the_tiny_model(tiny_t2v):
    out = tiny_t2v.pipeline()("a red car", num_frames=5, height=32, width=32, num_inference_steps=2, output_type="np")
    assert out.frames.shape == (1, 5, 32, 32, 3)


def test_model_index_names_the_pipeline(tiny_wan_dir):
    assert json.loads((tiny_wan_dir / "model_index.json").read_text())["_class_name"] == "WanPipeline"
