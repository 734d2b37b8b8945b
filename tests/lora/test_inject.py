import copy

import pytest
import torch

from effivmt.errors import AdapterMismatchError, ConfigError
from effivmt.lora import (
    HeadGroupLoraConfig,
    HeadGroups,
    adapter_names,
    adapter_state_dict,
    add_head_group_adapter,
    load_adapter_state_dict,
    load_peft_adapter,
    save_peft_adapter,
    set_adapter_scales,
    set_trainable_adapter,
)

QKV = ("to_q", "to_k", "to_v")
HEAD_DIM = 12
LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "temporal", "spatial", "spatial"]]  # conftest


def lora_layers(transformer):
    for i, block in enumerate(transformer.blocks):
        for name in (*QKV, "to_out.0"):
            yield i, name, block.attn1.get_submodule(name)


def effective_weights(transformer):
    """base + sum over active adapters of scaling * B @ A, per self-attention projection (as peft computes it)."""
    out = {}
    for i, name, layer in lora_layers(transformer):
        w = layer.base_layer.weight.detach().clone()
        for a in layer.active_adapters:
            if a in layer.lora_A:
                w = w + layer.scaling[a] * (layer.lora_B[a].weight @ layer.lora_A[a].weight).detach()
        out[(i, name)] = w
    return out


def out_of_group(weights, group):
    """The rows (q/k/v) and columns (to_out.0) of every head NOT in ``group``."""
    groups = HeadGroups(LABELS, HEAD_DIM)
    other = "temporal" if group == "spatial" else "spatial"
    parts = {}
    for (i, name), w in weights.items():
        mask = groups.row_mask(i, other)
        parts[(i, name)] = w[:, mask] if name == "to_out.0" else w[mask]
    return parts


def test_only_self_attention_of_group_layers_is_adapted(transformer):
    add_head_group_adapter(transformer, "spatial", LABELS, "spatial", HeadGroupLoraConfig(rank=4, layers=[1]))
    adapted = {k.rsplit(".lora_", 1)[0] for k in adapter_state_dict(transformer, "spatial")}
    assert adapted == {f"blocks.1.attn1.{m}" for m in (*QKV, "to_out.0")}  # no attn2, no block 0


@pytest.mark.parametrize("init", ["default", "gaussian", "random"])
def test_factors_start_at_zero_outside_the_group(transformer, init):
    add_head_group_adapter(transformer, "spatial", LABELS, "spatial", HeadGroupLoraConfig(rank=4, init=init))
    groups = HeadGroups(LABELS, HEAD_DIM)
    for i, name, layer in lora_layers(transformer):
        outside = groups.row_mask(i, "temporal")
        if name == "to_out.0":
            a = layer.lora_A["spatial"].weight
            assert torch.all(a[:, outside] == 0) and torch.any(a[:, ~outside] != 0)
        else:
            b = layer.lora_B["spatial"].weight
            assert torch.all(b[outside] == 0)
            assert torch.any(b[~outside] != 0) == (init == "random")  # peft's default/gaussian init zero B


@pytest.mark.parametrize("group", ["spatial", "temporal"])
def test_adamw_training_leaves_other_group_bit_identical(make_adapted, inputs, group):
    """Real AdamW steps (weight decay 0.1) on a random loss; compares effective weights with torch.equal.

    The other adapter exists and is active (frozen), as in the temporal stage; its heads must not move at all.
    """
    t = make_adapted()
    params = set_trainable_adapter(t, group)
    assert params and all(p.requires_grad for p in params)
    before = effective_weights(t)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    target = torch.randn_like(t(**inputs)[0])
    for _ in range(3):
        opt.zero_grad()
        loss = (t(**inputs)[0] - target).pow(2).mean()
        loss.backward()
        opt.step()
    after = effective_weights(t)
    frozen, moved = out_of_group(before, group), out_of_group(after, group)
    for key in before:
        assert torch.equal(frozen[key], moved[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing: test is void"


def test_masks_survive_deepcopy(make_adapted, inputs):
    t = copy.deepcopy(make_adapted())
    params = set_trainable_adapter(t, "spatial")  # re-registers hooks lost by deepcopy
    t(**inputs)[0].square().mean().backward()
    groups = HeadGroups(LABELS, HEAD_DIM)
    for i, name, layer in lora_layers(t):
        outside = groups.row_mask(i, "temporal")
        grad = (
            layer.lora_A["spatial"].weight.grad[:, outside]
            if name == "to_out.0"
            else (layer.lora_B["spatial"].weight.grad[outside])
        )
        assert torch.all(grad == 0)
    assert all(p.grad is not None for p in params)


def test_set_trainable_freezes_everything_else(make_adapted):
    t = make_adapted()
    set_trainable_adapter(t, "temporal")
    names = [n for n, p in t.named_parameters() if p.requires_grad]
    assert names and all(".temporal." in n for n in names)
    set_trainable_adapter(t, None)
    assert not any(p.requires_grad for p in t.parameters())
    with pytest.raises(ConfigError, match="no adapter named 'motion'"):
        set_trainable_adapter(t, "motion")


def test_set_adapter_scales_keeps_trainable_set(make_adapted, tiny_t2v, inputs):
    t = make_adapted()
    set_trainable_adapter(t, "temporal")
    set_adapter_scales(t, {"spatial": 0.0, "temporal": 0.0})
    assert all(".temporal." in n for n, p in t.named_parameters() if p.requires_grad)
    base = copy.deepcopy(tiny_t2v.transformer)
    torch.testing.assert_close(t(**inputs)[0], base(**inputs)[0])  # scale 0 = base model
    set_adapter_scales(t, {"spatial": 1.0})
    assert t.blocks[0].attn1.to_q.active_adapters == ["spatial"]
    with pytest.raises(ConfigError, match="no adapter named 'x'"):
        set_adapter_scales(t, {"x": 1.0})


def test_adapter_state_dict_is_in_diffusers_layout(adapted):
    sd = adapter_state_dict(adapted, "temporal")
    assert "blocks.0.attn1.to_q.lora_A.weight" in sd and "blocks.1.attn1.to_out.0.lora_B.weight" in sd
    assert sd["blocks.0.attn1.to_q.lora_A.weight"].shape == (2, 48)
    assert all("temporal" not in k and "attn2" not in k for k in sd)


def test_fused_projections_are_refused(transformer):
    transformer.fuse_qkv_projections()
    with pytest.raises(ConfigError, match="fused q/k/v"):
        add_head_group_adapter(transformer, "spatial", LABELS, "spatial", HeadGroupLoraConfig())


def test_labels_of_another_model_are_refused(transformer):
    with pytest.raises(ConfigError, match="1 layers x 4 heads, the model has 2 x 4"):
        add_head_group_adapter(transformer, "spatial", LABELS[:1], "spatial", HeadGroupLoraConfig())


def test_group_without_heads_is_refused(transformer):
    only_spatial = [["spatial"] * 4, ["spatial"] * 4]
    with pytest.raises(ConfigError, match="no temporal heads"):
        add_head_group_adapter(transformer, "temporal", only_spatial, "temporal", HeadGroupLoraConfig())


def test_state_dict_reload_restores_masks(tiny_t2v, adapted):
    cfg = HeadGroupLoraConfig(rank=4, alpha=8)
    sd = adapter_state_dict(adapted, "spatial")
    t = copy.deepcopy(tiny_t2v.transformer)
    load_adapter_state_dict(t, "spatial", sd, cfg, labels=LABELS, group="spatial")
    assert all(torch.equal(v, sd[k]) for k, v in adapter_state_dict(t, "spatial").items())
    assert t.blocks[0].attn1.to_q.scaling["spatial"] == 2.0
    assert t.blocks[0].attn1.to_q.lora_B["spatial"].effivmt_mask.shape == (48, 1)
    fresh = copy.deepcopy(tiny_t2v.transformer)
    with pytest.raises(AdapterMismatchError, match="not confined to its temporal heads"):
        load_adapter_state_dict(fresh, "x", sd, cfg, labels=LABELS, group="temporal")
    assert adapter_names(fresh) == []  # refused before anything was injected


def test_peft_adapter_folder_round_trip(tiny_t2v, adapted, inputs, tmp_path):
    save_peft_adapter(adapted, "temporal", tmp_path / "temporal")
    assert sorted(p.name for p in (tmp_path / "temporal").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    t = copy.deepcopy(tiny_t2v.transformer)
    assert load_peft_adapter(t, tmp_path / "temporal") == "temporal"
    assert t.blocks[1].attn1.to_out[0].lora_A["temporal"].effivmt_mask.shape == (1, 48)  # masks restored
    ref = copy.deepcopy(adapted)
    set_adapter_scales(ref, {"temporal": 1.0})
    torch.testing.assert_close(t(**inputs)[0], ref(**inputs)[0], rtol=0, atol=1e-6)


def test_adapter_reloaded_into_a_bf16_base_is_the_fp32_one_saved(tiny_t2v, adapted, tmp_path):
    """Issue 12 item 10: a frozen spatial adapter reloaded for a resumed temporal stage came back bf16 under a bf16
    base (fp32 in an uninterrupted run), so a resumed run trained against other weights. Now it loads as float32,
    bit-identical to what was saved."""
    save_peft_adapter(adapted, "spatial", tmp_path / "spatial")
    saved = adapter_state_dict(adapted, "spatial")
    assert all(v.dtype == torch.float32 for v in saved.values())
    base = copy.deepcopy(tiny_t2v.transformer).to(torch.bfloat16)
    load_peft_adapter(base, tmp_path / "spatial", "spatial")
    loaded = adapter_state_dict(base, "spatial")
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value), key
