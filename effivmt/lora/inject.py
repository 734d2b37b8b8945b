"""Head-group adapters on a diffusers ``WanTransformer3DModel``, through peft (DESIGN.md, "Head-group LoRA").

Each group's adapter is a vanilla peft LoRA added with ``transformer.add_adapter`` under its own name
(``"spatial"``, ``"temporal"``), targeting only self-attention (``blocks.{i}.attn1``). Confinement to the group's
heads is zero-init plus gradient masks: lora_B rows of q/k/v and lora_A columns of ``to_out.0`` outside the group
start at 0 and receive a 0 gradient, so AdamW leaves them at exactly 0 (zero moments give a zero step, and
decoupled weight decay of 0 is 0). The mask lives on the factor module as a non-persistent buffer
``effivmt_mask`` (it follows ``.to()`` and stays out of state dicts).

The gradient hooks sit on the LoRA parameters, and under FSDP (``use_orig_params=True``) the forward runs on views
of the flat parameter, so they never fire. Training therefore also calls :func:`mask_group_grads` before each
optimizer step and :func:`zero_outside_groups` after it, which hold whatever the strategy.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effivmt.errors import AdapterMismatchError, ConfigError
from effivmt.lora.config import PEFT_INIT, HeadGroupLoraConfig
from effivmt.lora.formats import LoraWeights
from effivmt.lora.head_groups import Group, HeadGroups, check_labels, is_column_masked

_MASK = "effivmt_mask"
_GROUPS_ATTR = "_effivmt_head_groups"  # {adapter: {"group": ..., "labels": ...}} on the transformer


def _tuner_layers(transformer: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def _active_adapters(transformer: nn.Module) -> list[str]:
    for _, layer in _tuner_layers(transformer):
        return list(layer.active_adapters)
    return []


def _activate(transformer: nn.Module, names: list[str]) -> None:
    """Make ``names`` the active adapters of every LoRA layer, keeping scales and requires_grad as they were."""
    flags = {p: p.requires_grad for p in transformer.parameters()}
    for _, layer in _tuner_layers(transformer):
        layer.set_adapter(names)
    for p, flag in flags.items():
        p.requires_grad_(flag)


def adapter_names(transformer: nn.Module) -> list[str]:
    """Names of the adapters added to ``transformer`` (in order)."""
    return list(getattr(transformer, "peft_config", {}) or {})


def _check_unfused(transformer: nn.Module) -> None:
    for name, module in transformer.named_modules():
        if name.endswith("attn1") and getattr(module, "fused_projections", False):
            raise ConfigError(
                f"{name} has fused q/k/v projections (to_qkv); head-group adapters need to_q/to_k/to_v apart",
                "call transformer.unfuse_qkv_projections() before adding adapters",
            )


def _quiet_add_adapter(transformer: nn.Module, config: Any, name: str) -> None:
    """``transformer.add_adapter``; peft warns on every second adapter, which is what we mean to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        transformer.add_adapter(config, adapter_name=name)


def _mask_hook(factor: nn.Module):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(~getattr(factor, _MASK), 0)

    return hook


def ensure_grad_masks(transformer: nn.Module) -> int:
    """(Re-)register the gradient-mask hooks of every masked LoRA factor; returns how many factors are masked.

    Tensor hooks do not survive ``copy.deepcopy``; the buffers do. :func:`set_trainable_adapter` calls this, so a
    copied model regains its hooks before it trains.
    """
    count = 0
    for module in transformer.modules():
        mask = getattr(module, _MASK, None)
        if mask is None or not isinstance(module, nn.Linear):
            continue
        count += 1
        ref = getattr(module, "_effivmt_hooked", None)
        if ref is not None and ref() is module.weight:
            continue
        weight, flag = module.weight, module.weight.requires_grad
        weight.requires_grad_(True)  # torch refuses hooks on frozen tensors; the hook outlives the toggle
        weight.register_hook(_mask_hook(module))
        weight.requires_grad_(flag)
        module._effivmt_hooked = weakref.ref(weight)
    return count


def _masked_factors(transformer: nn.Module):
    """``(weight, mask)`` of every masked LoRA factor; the mask is ``(out, 1)`` or ``(1, in)``, broadcast on the weight.

    Factors whose weight is not the full matrix here (a sharded slice on another rank) are left out.
    """
    for module in transformer.modules():
        mask = getattr(module, _MASK, None)
        if mask is None or not isinstance(module, nn.Linear) or module.weight.dim() != 2:
            continue
        if all(m in (1, w) for m, w in zip(mask.shape, module.weight.shape)):
            yield module.weight, mask


@torch.no_grad()
def mask_group_grads(transformer: nn.Module) -> None:
    """Zero the gradient of every LoRA entry outside its head group (call before the optimizer step).

    Strategy-independent twin of the gradient hooks: FSDP's ``use_orig_params`` forward bypasses them, but the
    original parameters' ``.grad`` (views into the flat gradient) are what the optimizer reads.
    """
    for weight, mask in _masked_factors(transformer):
        if weight.grad is not None:
            weight.grad.masked_fill_(~mask.to(weight.grad.device), 0)


@torch.no_grad()
def zero_outside_groups(transformer: nn.Module) -> None:
    """Set every LoRA entry outside its head group back to exactly 0 (call after the optimizer step)."""
    for weight, mask in _masked_factors(transformer):
        weight.masked_fill_(~mask.to(weight.device), 0)


_ATTN1 = re.compile(r"blocks\.(\d+)\.attn1\.(to_q|to_k|to_v|to_out\.0)")


def _group_mask(module_name: str, groups: HeadGroups, group: Group, name: str) -> tuple[torch.Tensor, bool]:
    """``(mask, column)``: the mask shaped for lora_A ``(1, in)`` (``to_out.0``) or lora_B ``(out, 1)`` (q/k/v)."""
    m = _ATTN1.fullmatch(module_name)
    if m is None:
        raise ConfigError(f"head-group adapter {name!r} adapts {module_name}, which is not self-attention")
    mask = groups.row_mask(int(m.group(1)), group)
    column = is_column_masked(module_name)
    return (mask[None, :] if column else mask[:, None]), column


def _check_confined(weights: LoraWeights, groups: HeadGroups, group: Group, name: str) -> None:
    """Refuse tensors that move heads outside ``group`` (checked before anything is injected)."""
    for module_name in weights.modules():
        mask, column = _group_mask(module_name, groups, group, name)
        factor = weights.A(module_name) if column else weights.B(module_name)
        if torch.any(factor.masked_select(~mask.to(factor.device)) != 0):
            key = f"{module_name}.lora_{'A' if column else 'B'}.weight"
            raise AdapterMismatchError(
                f"adapter {name!r} is not confined to its {group} heads: {key} is non-zero outside them",
                "it was trained with other head labels; load it without labels",
            )


def _attach_masks(transformer: nn.Module, name: str, groups: HeadGroups, group: Group) -> None:
    """Give each of adapter ``name``'s factors its group mask and zero the entries outside it."""
    for module_name, layer in _tuner_layers(transformer):
        if name not in layer.lora_A:
            continue
        mask, column = _group_mask(module_name, groups, group, name)
        factor = layer.lora_A[name] if column else layer.lora_B[name]
        mask = mask.to(factor.weight.device)
        with torch.no_grad():
            factor.weight.masked_fill_(~mask, 0)
        factor.register_buffer(_MASK, mask, persistent=False)
    transformer.__dict__.setdefault(_GROUPS_ATTR, {})[name] = {"group": group, "labels": groups.labels}
    ensure_grad_masks(transformer)


def _head_groups(transformer: nn.Module, labels: list[list[str]]) -> HeadGroups:
    cfg = transformer.config
    labels = check_labels(labels)
    if (len(labels), len(labels[0])) != (cfg.num_layers, cfg.num_attention_heads):
        raise ConfigError(
            f"head labels are {len(labels)} layers x {len(labels[0])} heads, the model has "
            f"{cfg.num_layers} x {cfg.num_attention_heads}",
            "classify the heads of this model (effivmt heads)",
        )
    return HeadGroups(labels, cfg.attention_head_dim)


def add_head_group_adapter(
    transformer: nn.Module, name: str, labels: list[list[str]], group: Group, config: HeadGroupLoraConfig
) -> None:
    """Add a LoRA named ``name`` confined to the ``group`` heads of ``labels`` (DESIGN.md, "Head-group LoRA").

    Only blocks among ``config.layers`` that hold at least one ``group`` head are adapted. Adapters already on the
    model stay active; afterwards only the new adapter is trainable (:func:`set_trainable_adapter`).

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` with unfused q/k/v.
        name: adapter name, e.g. ``"spatial"``.
        labels: ``labels[layer][head]`` in ``{"spatial", "temporal"}`` (``effivmt.attention.classify_heads``).
        group: which heads the adapter may move.
        config: rank, alpha, dropout, targets, layers and init.

    Raises:
        ConfigError: name taken, fused projections, labels of another model, or no ``group`` head in the layers.
    """
    from peft import LoraConfig

    if name in adapter_names(transformer):
        raise ConfigError(f"adapter {name!r} already exists on the model", "choose another name")
    _check_unfused(transformer)
    groups = _head_groups(transformer, labels)
    layers = groups.layers_with(group, config.layers)
    if not layers:
        raise ConfigError(f"no {group} heads in blocks {config.layers or 'any'}: the {name!r} adapter would be empty")
    # e.g. blocks\.(0|1)\.attn1\.(to_q|to_out\.0): a full match, so attn2 (cross-attention) never matches
    pattern = rf"blocks\.({'|'.join(map(str, layers))})\.attn1\.({'|'.join(map(re.escape, config.target_modules))})"
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=pattern,
        init_lora_weights=PEFT_INIT[config.init],
    )
    previous = _active_adapters(transformer)
    _quiet_add_adapter(transformer, lora, name)
    _attach_masks(transformer, name, groups, group)
    _activate(transformer, previous + [name])
    set_trainable_adapter(transformer, name)


def set_trainable_adapter(transformer: nn.Module, name: str | None) -> list[nn.Parameter]:
    """Freeze everything except adapter ``name``'s LoRA factors (``None``: freeze all); returns the trainable ones."""
    if name is not None and name not in adapter_names(transformer):
        raise ConfigError(f"no adapter named {name!r} on the model", f"adapters: {adapter_names(transformer)}")
    transformer.requires_grad_(False)
    params: list[nn.Parameter] = []
    if name is not None:
        for _, layer in _tuner_layers(transformer):
            for factors in (layer.lora_A, layer.lora_B):
                if name in factors:
                    factors[name].requires_grad_(True)
                    params.extend(factors[name].parameters())
    ensure_grad_masks(transformer)
    return params


def set_adapter_scales(transformer: nn.Module, scales: Mapping[str, float]) -> None:
    """Activate exactly the adapters in ``scales``, each at its scale (diffusers ``set_adapters``).

    Which parameters are trainable is left as it was (peft's ``set_adapter`` would unfreeze every active adapter).
    """
    unknown = [n for n in scales if n not in adapter_names(transformer)]
    if unknown:
        raise ConfigError(f"no adapter named {unknown[0]!r} on the model", f"adapters: {adapter_names(transformer)}")
    flags = {p: p.requires_grad for p in transformer.parameters()}
    transformer.set_adapters(list(scales), weights=[float(s) for s in scales.values()])
    for p, flag in flags.items():
        p.requires_grad_(flag)


def adapter_state_dict(transformer: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name``'s tensors in diffusers key layout without prefix or adapter name (cloned, on the CPU).

    Keys look like ``blocks.0.attn1.to_q.lora_A.weight`` ``(r, in)`` / ``...lora_B.weight`` ``(out, r)``.
    """
    from peft import get_peft_model_state_dict

    if name not in adapter_names(transformer):
        raise ConfigError(f"no adapter named {name!r} on the model", f"adapters: {adapter_names(transformer)}")
    sd = get_peft_model_state_dict(transformer, adapter_name=name)
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


def adapter_weights(transformer: nn.Module, name: str) -> LoraWeights:
    """Adapter ``name`` as :class:`LoraWeights` (tensors and per-module alpha from its peft config)."""
    return LoraWeights.from_lora_config(adapter_state_dict(transformer, name), transformer.peft_config[name].to_dict())


def check_fit(transformer: nn.Module, weights: LoraWeights) -> None:
    """Refuse, naming the first key, a LoRA whose modules the model lacks or whose shapes it cannot take."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = dict(transformer.named_modules())
    hint = "the adapter was made for another model; load it into the model it was trained on"
    for key, tensor in weights.state_dict.items():
        module_name = key.rsplit(".lora_", 1)[0]
        module = modules.get(module_name)
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not isinstance(base, nn.Linear):
            raise AdapterMismatchError(f"adapter does not fit the model: {key} names no linear layer of it", hint)
        rank = weights.rank(module_name)
        if key.endswith("lora_A.weight"):
            expected = (rank, base.in_features)
        elif key.endswith("lora_B.weight"):
            expected = (base.out_features, rank)
        else:
            expected = (base.out_features,)
        if tuple(tensor.shape) != expected:
            raise AdapterMismatchError(
                f"adapter does not fit the model: {key} has shape {tuple(tensor.shape)}, the model expects {expected}",
                hint,
            )


def inject_weights(
    transformer: nn.Module, name: str, weights: LoraWeights, scale: float = 1.0, trainable: bool = False
) -> None:
    """Add ``weights`` as a new peft adapter ``name``, active beside the others at ``scale``.

    The new factors are frozen unless ``trainable``; what else was trainable stays so. They are float32 whatever
    the base's dtype (mixed precision), so the loaded values are exactly the file's.

    Raises:
        AdapterMismatchError: a key or shape that does not fit (checked before anything changes).
        ConfigError: ``name`` already taken.
    """
    from peft import LoraConfig, set_peft_model_state_dict

    if name in adapter_names(transformer):
        raise ConfigError(f"adapter {name!r} already exists on the model", "choose another adapter name")
    check_fit(transformer, weights)
    previous = _active_adapters(transformer)
    flags = {p: p.requires_grad for p in transformer.parameters()}
    _quiet_add_adapter(transformer, LoraConfig(**weights.lora_config_kwargs()), name)
    # adapters stay fp32 beside a bf16/fp16 base, as in training (peft would create them in the base's dtype and round
    # the loaded values): a frozen spatial adapter reloaded for a resumed temporal stage must equal the trained one
    for _, layer in _tuner_layers(transformer):
        for factors in (layer.lora_A, layer.lora_B):
            if name in factors:
                factors[name].float()
    result = set_peft_model_state_dict(transformer, weights.state_dict, adapter_name=name)
    unexpected = [k for k in result.unexpected_keys if ".lora_" in k]
    missing = [k for k in result.missing_keys if ".lora_" in k and f".{name}." in k]
    if unexpected or missing:  # check_fit should make this unreachable
        raise AdapterMismatchError(f"adapter does not fit the model: {(unexpected or missing)[0]} did not load")
    _activate(transformer, previous + [name])
    for p, flag in flags.items():
        p.requires_grad_(flag)
    for _, layer in _tuner_layers(transformer):
        for factors in (layer.lora_A, layer.lora_B):
            if name in factors:
                factors[name].requires_grad_(trainable)
    if scale != 1.0:
        for _, layer in _tuner_layers(transformer):
            layer.set_scale(name, scale)


def load_adapter_state_dict(
    transformer: nn.Module,
    name: str,
    state_dict: Mapping[str, torch.Tensor],
    config: HeadGroupLoraConfig,
    labels: list[list[str]] | None = None,
    group: Group | None = None,
) -> None:
    """Load tensors from :func:`adapter_state_dict` as adapter ``name`` (alpha from ``config``).

    With ``labels`` and ``group`` the head masks are restored too (and the tensors must be zero outside them), so
    a reloaded adapter trains on confined as before. If ``name`` exists its tensors are overwritten in place.
    """
    from peft import set_peft_model_state_dict

    weights = LoraWeights.uniform(state_dict, config.alpha)
    groups = _head_groups(transformer, labels) if labels is not None and group is not None else None
    if groups is not None:
        _check_confined(weights, groups, group, name)
    if name not in adapter_names(transformer):
        inject_weights(transformer, name, weights)
    else:
        check_fit(transformer, weights)
        with torch.no_grad():
            set_peft_model_state_dict(transformer, weights.state_dict, adapter_name=name)
    if groups is not None:
        _attach_masks(transformer, name, groups, group)


def save_peft_adapter(transformer: nn.Module, name: str, folder: str | Path, metadata: dict | None = None) -> Path:
    """Write adapter ``name`` as a peft folder (``adapter_config.json`` + ``adapter_model.safetensors``), atomically.

    The head group and labels of a head-group adapter go into the safetensors header (``effivmt.group``,
    ``effivmt.labels``), so :func:`load_peft_adapter` can restore its masks.
    """
    import effivmt
    from effivmt.io import atomic_dir
    from effivmt.lora.formats.peft import save_peft

    cfg = transformer.peft_config[name] if name in adapter_names(transformer) else None
    if cfg is None:
        raise ConfigError(f"no adapter named {name!r} on the model", f"adapters: {adapter_names(transformer)}")
    meta = {"version": effivmt.__version__, "adapter": name, **getattr(transformer, _GROUPS_ATTR, {}).get(name, {})}
    meta.update(metadata or {})
    init = cfg.init_lora_weights
    with atomic_dir(folder) as tmp:
        save_peft(adapter_weights(transformer, name), tmp, meta, lora_dropout=cfg.lora_dropout, init_lora_weights=init)
    return Path(folder)


def load_peft_adapter(transformer: nn.Module, folder: str | Path, name: str | None = None) -> str:
    """Load a peft adapter folder as adapter ``name`` (default: the name it was saved under, else the folder name).

    Returns:
        The adapter name used. Head masks are restored when the folder records a group and labels.
    """
    from effivmt.lora.formats import read_header_metadata
    from effivmt.lora.formats.peft import read_peft

    weights, header, _ = read_peft(Path(folder))
    meta = read_header_metadata(header)
    name = name or meta.get("adapter") or Path(folder).name
    group, labels = meta.get("group"), meta.get("labels")
    groups = _head_groups(transformer, labels) if group in ("spatial", "temporal") and labels else None
    if groups is not None:
        _check_confined(weights, groups, group, name)
    inject_weights(transformer, name, weights)
    if groups is not None:
        _attach_masks(transformer, name, groups, group)
    return name
