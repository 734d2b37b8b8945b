"""OmniTransfer on Wan 2.1 I2V: reference latents, task-aware positions, decoupled reference attention, MLLM alignment.

Public names are imported lazily (PEP 562), so ``effivmt transfer --help`` does not pay for Lightning or the MLLM.

    from effivmt.omnitransfer import OmniTransferPipeline
    pipe = OmniTransferPipeline.load()                      # tiny Wan I2V + tiny Qwen2.5-VL
    latents = pipe.sample(first_frame, [reference], ["motion"], "a dancer on a beach", num_frames=9)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TASKS": "tasks",
    "Task": "tasks",
    "TaskConfig": "tasks",
    "parse_tasks": "tasks",
    "task_offsets": "tasks",
    "encode_video": "reference",
    "decode_latents": "reference",
    "reference_input": "reference",
    "target_condition": "reference",
    "target_input": "reference",
    "ReferenceKV": "attention",
    "JointMask": "attention",
    "reference_state": "attention",
    "MultimodalAligner": "alignment",
    "qwen_patchify": "alignment",
    "MLLMComponents": "tiny_qwen",
    "build_tiny_qwen": "tiny_qwen",
    "load_mllm": "tiny_qwen",
    "OmniTransferModel": "model",
    "OmniTransferPipeline": "pipeline",
    "STAGE_GROUPS": "checkpoint",
    "load_weights": "checkpoint",
    "save_weights": "checkpoint",
    "OmniTransferModule": "module",
    "PairedVideoDataModule": "data",
    "make_synthetic_pairs": "data",
    "read_manifest": "data",
}  # the commands live in .train / .transfer (same names as the modules, so not re-exported here)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
