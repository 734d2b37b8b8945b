import pytest
import torch

from effivmt.errors import ConfigError
from effivmt.lora import HeadGroupLoraConfig, HeadGroups, head_mask, row_mask
from effivmt.lora.head_groups import check_labels

LABELS = [["spatial", "temporal", "temporal"], ["temporal", "spatial", "spatial"]]


def test_head_mask_marks_group_heads():
    assert head_mask(LABELS, "temporal").tolist() == [[False, True, True], [True, False, False]]
    assert torch.equal(head_mask(LABELS, "spatial"), ~head_mask(LABELS, "temporal"))


def test_row_mask_repeats_each_head_over_its_dims():
    mask = row_mask(LABELS[0], "temporal", head_dim=2)
    assert mask.tolist() == [False, False, True, True, True, True]


def test_groups_partition_every_feature():
    groups = HeadGroups(LABELS, head_dim=4)
    for layer in range(2):
        s, t = groups.row_mask(layer, "spatial"), groups.row_mask(layer, "temporal")
        assert s.shape == (12,) and not torch.any(s & t) and torch.all(s | t)


def test_module_masks_shapes_rows_for_qkv_columns_for_out():
    masks = HeadGroups(LABELS, head_dim=4).module_masks("spatial", ["to_q", "to_out.0"])
    assert set(masks) == {f"blocks.{i}.attn1.{m}" for i in (0, 1) for m in ("to_q", "to_out.0")}
    assert masks["blocks.0.attn1.to_q"].shape == (12, 1)
    assert masks["blocks.0.attn1.to_out.0"].shape == (1, 12)
    assert masks["blocks.1.attn1.to_q"][:, 0].tolist() == [False] * 4 + [True] * 8


def test_layers_without_group_heads_are_skipped():
    groups = HeadGroups([["spatial", "spatial"], ["temporal", "spatial"]], head_dim=2)
    assert groups.layers_with("temporal") == [1]
    assert groups.layers_with("spatial", layers=[0]) == [0]
    with pytest.raises(ConfigError, match="block 5"):
        groups.layers_with("spatial", layers=[5])


@pytest.mark.parametrize(
    "labels, match",
    [([], "empty"), ([["spatial"], ["spatial", "temporal"]], "ragged"), ([["spatial", "motion"]], "motion")],
)
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ConfigError, match=match):
        check_labels(labels)


def test_unknown_group_is_refused():
    with pytest.raises(ConfigError, match="unknown head group"):
        head_mask(LABELS, "appearance")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "lora.rank must be > 0, got 0"),
        ({"alpha": -1}, "lora.alpha must be > 0, got -1"),
        ({"dropout": 1.0}, "lora.dropout must be in [0, 1), got 1.0"),
        ({"target_modules": ["to_q", "to_qkv"]}, "lora.target_modules has unknown module(s) ['to_qkv']"),
        ({"init": "pissa"}, "lora.init must be one of"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as err:
        HeadGroupLoraConfig(**kwargs)
    assert err.value.message.startswith(message)


def test_config_defaults_are_the_released_values():
    cfg = HeadGroupLoraConfig()
    assert (cfg.rank, cfg.alpha, cfg.scale, cfg.target_modules) == (16, 16, 1.0, ["to_q", "to_k", "to_v", "to_out.0"])
