"""Which parameters each training stage owns, and the weights file that carries them between stages and to inference.

The paper trains in three stages (10K / 2K / 5K steps, lr 1e-5, batch 16): 1. the DiT blocks; 2. the connector
(with the learnable task queries); 3. everything jointly, the MLLM through LoRA. :data:`STAGE_GROUPS` names the
groups each stage trains; every other parameter is frozen (``requires_grad=False``) and stays bit-identical.

``omnitransfer.safetensors`` holds every group (what any stage may have changed: DiT blocks, queries,
connector, MLLM LoRA), with the LoRA rank/alpha in the safetensors metadata, so one file moves a model from
stage to stage and into ``effivmt transfer --checkpoint``. Lightning ``.ckpt`` files load too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from effivmt.errors import AdapterMismatchError, EffivmtError
from effivmt.io import atomic_path, package_asset

#: parameter groups trained by each stage (paper: DiT blocks; connector; joint incl. MLLM LoRA).
STAGE_GROUPS: dict[int, tuple[str, ...]] = {1: ("dit",), 2: ("connector",), 3: ("dit", "connector", "mllm_lora")}
WEIGHTS_NAME = "omnitransfer.safetensors"
#: The packaged OmniTransfer weights for the packaged micro Wan I2V and tiny Qwen2.5-VL (``effivmt/assets/<this>``).
MICRO_WEIGHTS_FOLDER = "micro-omnitransfer"


def micro_weights_path() -> Path:
    """``effivmt/assets/micro-omnitransfer/omnitransfer.safetensors``: what ``effivmt transfer`` uses by default."""
    return package_asset(MICRO_WEIGHTS_FOLDER, WEIGHTS_NAME)


def parameter_groups(model: nn.Module) -> dict[str, dict[str, nn.Parameter]]:
    """``{"dit": transformer.blocks.*, "connector": aligner.queries + aligner.connector.*, "mllm_lora": ...}``."""
    groups: dict[str, dict[str, nn.Parameter]] = {"dit": {}, "connector": {}, "mllm_lora": {}}
    for name, param in model.named_parameters():
        group = _group_of(name)
        if group is not None:
            groups[group][name] = param
    return groups


def _group_of(name: str) -> str | None:
    """The :func:`parameter_groups` group a parameter name belongs to (``None``: frozen, in no group)."""
    if name.startswith("transformer.blocks."):
        return "dit"
    if name == "aligner.queries" or name.startswith("aligner.connector."):
        return "connector"
    if name.startswith("aligner.mllm.") and "lora_" in name:
        return "mllm_lora"
    return None


def set_stage_trainable(model: nn.Module, stage: int) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the groups of ``stage``; return the trainable parameters.

    Raises:
        EffivmtError: an unknown stage, or a stage whose groups are empty (stage 2/3 without an aligner).
    """
    if stage not in STAGE_GROUPS:
        raise EffivmtError(f"unknown OmniTransfer stage {stage}", "use 1 (DiT), 2 (connector) or 3 (joint)")
    groups = parameter_groups(model)
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = []
    for group in STAGE_GROUPS[stage]:
        if not groups[group] and group != "mllm_lora":
            raise EffivmtError(
                f"stage {stage} trains '{group}', which this model does not have",
                "stages 2 and 3 need the MLLM aligner (use_mllm: true)",
            )
        for param in groups[group].values():
            param.requires_grad_(True)
            trainable.append(param)
    return trainable


def weights_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every group's tensors (``dit``, ``connector``, ``mllm_lora``), detached, on the CPU, contiguous."""
    return {
        name: param.detach().cpu().contiguous()
        for group in parameter_groups(model).values()
        for name, param in group.items()
    }


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, object] | None = None) -> Path:
    """Write :func:`weights_state` as safetensors, atomically; ``metadata`` (LoRA rank, tasks...) goes in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(weights_state(model), str(tmp), metadata=_header(metadata))
    return path


def _header(metadata: dict[str, object] | None) -> dict[str, str]:
    """The safetensors header of a weights file: its format, then each setting as JSON (:func:`read_metadata`)."""
    return {"format": "omnitransfer", **{k: json.dumps(v) for k, v in (metadata or {}).items()}}


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and metadata of an ``omnitransfer.safetensors`` or a Lightning ``.ckpt`` of the training module."""
    path = Path(path)
    if not path.is_file():
        raise EffivmtError(f"checkpoint {path} does not exist", "give the omnitransfer.safetensors a stage wrote")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("model."): v for k, v in ckpt.get("state_dict", ckpt).items()}
    return state, _ckpt_metadata(ckpt.get("hyper_parameters") or {}, state)


#: settings of the training module that inference needs (the rest of its hyper-parameters are training-only).
CKPT_SETTINGS = ("stage", "lora_rank", "lora_alpha", "num_reference_frames", "mllm_image_size", "tasks")


def _ckpt_metadata(hparams: dict, state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The ``omnitransfer.safetensors`` metadata of a Lightning ``.ckpt``: its hyper-parameters, then its shapes.

    A ``.ckpt`` whose hyper-parameters lack ``tasks`` (the module stores only plain types) still says how many
    queries per task it learnt: ``aligner.queries`` is ``(tasks, num_queries, hidden)``.
    """
    meta: dict[str, object] = {k: hparams[k] for k in CKPT_SETTINGS if hparams.get(k) is not None}
    tasks = meta.get("tasks")
    if not isinstance(tasks, dict):
        tasks = {}
    queries = state.get("aligner.queries")
    if queries is not None and queries.ndim == 3:
        tasks = {**tasks, "num_queries": int(queries.shape[1])}
    if tasks:
        meta["tasks"] = tasks
    return meta


def install_weights(path: str | Path, dest: str | Path | None = None, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Copy a weights file to ``dest`` (default: the packaged :func:`micro_weights_path`), tensors in ``dtype``.

    The packaged micro models are stored in bf16 (they load as fp32), which halves the OmniTransfer file and keeps
    every packaged model within the package's 16 MiB; the metadata (stage, tasks, LoRA rank) is kept as it is.
    """
    from safetensors.torch import save_file

    state, meta = read_weights(path)
    dest = Path(dest) if dest is not None else micro_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    with atomic_path(dest) as tmp:
        save_file(state, str(tmp), metadata=_header(meta))
    return dest


def read_metadata(path: str | Path) -> dict[str, object]:
    """The settings a weights file was trained with (``tasks``, ``num_reference_frames``, ...), without its tensors."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}
    return read_weights(path)[1]


def file_stage(meta: dict[str, object]) -> int | None:
    """The training stage a weights file comes from (``None``: not recorded, e.g. a hand-made file)."""
    stage = meta.get("stage")
    return int(stage) if isinstance(stage, int | float | str) and str(stage).isdigit() else None


def load_weights(model: nn.Module, path: str | Path, groups: Sequence[str] | None = None) -> dict[str, object]:
    """Load a weights file into ``model`` (adding the MLLM LoRA first if the file has one); returns its metadata.

    Args:
        model: the :class:`~effivmt.omnitransfer.model.OmniTransferModel`.
        path: ``omnitransfer.safetensors`` or a Lightning ``.ckpt``.
        groups: load only these :func:`parameter_groups` (e.g. ``("dit",)`` for a model without the aligner);
            ``None``: every tensor of the file.

    Raises:
        AdapterMismatchError: keys the model lacks (e.g. connector weights but no aligner) or shape mismatches.
    """
    state, meta = read_weights(path)
    if groups is not None:
        state = {k: v for k, v in state.items() if _group_of(k) in groups}
    aligner = getattr(model, "aligner", None)
    if any(".lora_" in k for k in state) and aligner is not None:
        rank = next(v.shape[0] for k, v in state.items() if "lora_A" in k)
        aligner.add_lora(rank=int(meta.get("lora_rank", rank)), alpha=int(meta.get("lora_alpha", rank)))
    own = dict(model.named_parameters())
    missing = [k for k in state if k not in own]
    if missing:
        hint = "load it with the MLLM enabled" if any(k.startswith("aligner.") for k in missing) else None
        raise AdapterMismatchError(f"{path} has {len(missing)} tensor(s) this model lacks, e.g. {missing[0]}", hint)
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AdapterMismatchError(
                f"{path}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}",
                "the checkpoint was trained on another backbone size",
            )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
    return meta
