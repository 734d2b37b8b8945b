"""Head-group LoRA on peft: confine adapters to spatial or temporal heads, export them, load any LoRA."""

from effivmt.lora.config import ATTN1_MODULES, HeadGroupLoraConfig
from effivmt.lora.export import export, export_lora, read_run_adapters
from effivmt.lora.formats import LoraWeights, merge_weights
from effivmt.lora.formats.registry import FORMATS, LoraFormat, get_format
from effivmt.lora.head_groups import GROUPS, HeadGroups, head_mask, row_mask
from effivmt.lora.inject import (
    adapter_names,
    adapter_state_dict,
    adapter_weights,
    add_head_group_adapter,
    check_fit,
    ensure_grad_masks,
    inject_weights,
    load_adapter_state_dict,
    load_peft_adapter,
    mask_group_grads,
    save_peft_adapter,
    set_adapter_scales,
    set_trainable_adapter,
    zero_outside_groups,
)
from effivmt.lora.load import detect_format, load_lora, read_lora

__all__ = [
    "ATTN1_MODULES",
    "FORMATS",
    "GROUPS",
    "HeadGroupLoraConfig",
    "HeadGroups",
    "LoraFormat",
    "LoraWeights",
    "adapter_names",
    "adapter_state_dict",
    "adapter_weights",
    "add_head_group_adapter",
    "check_fit",
    "detect_format",
    "ensure_grad_masks",
    "export",
    "export_lora",
    "get_format",
    "head_mask",
    "inject_weights",
    "load_adapter_state_dict",
    "load_lora",
    "load_peft_adapter",
    "mask_group_grads",
    "merge_weights",
    "read_lora",
    "read_run_adapters",
    "row_mask",
    "save_peft_adapter",
    "set_adapter_scales",
    "set_trainable_adapter",
    "zero_outside_groups",
]
