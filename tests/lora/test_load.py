import copy

import pytest
import torch
from diffusers import WanTransformer3DModel

from effivmt.backbone import TINY_T2V
from effivmt.errors import AdapterMismatchError
from effivmt.lora import (
    HeadGroupLoraConfig,
    adapter_names,
    adapter_weights,
    add_head_group_adapter,
    detect_format,
    export_lora,
    load_lora,
)


@pytest.fixture(scope="module")
def exports(adapted, tmp_path_factory):
    """The spatial adapter written in each format."""
    out = tmp_path_factory.mktemp("exports")
    weights = {"spatial": adapter_weights(adapted, "spatial")}
    return {fmt: export_lora(weights, fmt, out=out / fmt)[0] for fmt in ("diffusers", "comfy", "peft")}


@pytest.mark.parametrize("fmt", ["diffusers", "comfy", "peft"])
def test_detect_format_of_files_folders_and_dicts(exports, fmt):
    assert detect_format(exports[fmt]) == fmt
    if fmt != "peft":
        assert detect_format(exports[fmt].parent) == fmt  # a folder with one LoRA file


@pytest.mark.parametrize(
    "keys, fmt",
    [
        (["transformer.blocks.0.attn1.to_q.lora_A.weight"], "diffusers"),
        (["blocks.0.attn1.to_q.lora_B.weight"], "diffusers"),  # save_lora_adapter writes no prefix
        (["diffusion_model.blocks.0.self_attn.q.lora_down.weight"], "comfy"),
        (["blocks.0.self_attn.q.lora_A.weight"], "comfy"),  # musubi-style names, no prefix
        (["base_model.model.blocks.0.attn1.to_q.lora_A.weight"], "peft"),
    ],
)
def test_detect_format_by_key_prefix(keys, fmt):
    assert detect_format(dict.fromkeys(keys)) == fmt


def test_unknown_layouts_are_refused():
    with pytest.raises(AdapterMismatchError, match="kohya/musubi"):
        detect_format({"lora_unet_blocks_0_self_attn_q.lora_down.weight": None})
    with pytest.raises(AdapterMismatchError, match="unrecognised LoRA layout: key blocks.0.norm.weight"):
        detect_format({"blocks.0.norm.weight": None})


@pytest.mark.parametrize("fmt", ["diffusers", "comfy", "peft"])
def test_load_lora_matches_the_source_adapter(tiny_t2v, adapted, inputs, exports, fmt):
    t = copy.deepcopy(tiny_t2v.transformer)
    load_lora(t, exports[fmt], adapter_name="style", scale=0.5)
    ref = copy.deepcopy(adapted)
    ref.set_adapters(["spatial"], [0.5])
    torch.testing.assert_close(t(**inputs)[0], ref(**inputs)[0], rtol=0, atol=1e-6)
    assert not any(p.requires_grad for n, p in t.named_parameters() if ".style." in n)  # loading never trains


def test_loaded_lora_stays_beside_head_group_adapters(tiny_t2v, exports):
    t = copy.deepcopy(tiny_t2v.transformer)
    labels = [["spatial", "temporal"] * 2] * 2
    add_head_group_adapter(t, "spatial", labels, "spatial", HeadGroupLoraConfig(rank=2))
    load_lora(t, exports["comfy"], adapter_name="extra")
    assert t.blocks[0].attn1.to_q.active_adapters == ["spatial", "extra"]
    assert [n for n, p in t.named_parameters() if p.requires_grad][0].endswith("lora_A.spatial.weight")


def _other_model_lora(tmp_path, **changes):
    other = WanTransformer3DModel(**{**TINY_T2V, **changes})
    add_head_group_adapter(
        other,
        "spatial",
        [["spatial"] * other.config.num_attention_heads] * other.config.num_layers,
        "spatial",
        HeadGroupLoraConfig(rank=4),
    )
    return export_lora({"spatial": adapter_weights(other, "spatial")}, "diffusers", out=tmp_path)[0]


def test_adapter_of_a_wider_model_is_refused_naming_the_first_key(tiny_t2v, tmp_path):
    path = _other_model_lora(tmp_path, num_attention_heads=8)  # 8 heads x 12 = 96 features, ours 48
    t = copy.deepcopy(tiny_t2v.transformer)
    with pytest.raises(AdapterMismatchError) as err:
        load_lora(t, path)
    message = str(err.value)
    assert message.startswith(
        "adapter does not fit the model: blocks.0.attn1.to_k.lora_A.weight has shape (4, 96), the model expects (4, 48)"
    )
    assert "\n" not in message
    assert adapter_names(t) == []  # nothing was injected


def test_adapter_of_a_deeper_model_is_refused(tiny_t2v, tmp_path):
    path = _other_model_lora(tmp_path, num_layers=3)
    with pytest.raises(AdapterMismatchError, match="blocks.2.attn1.to_k.lora_A.weight names no linear layer"):
        load_lora(copy.deepcopy(tiny_t2v.transformer), path)


def test_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(AdapterMismatchError, match="does not exist"):
        detect_format(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterMismatchError, match="cannot read"):
        detect_format(bad)
