"""The MLLM of Task-adaptive Multimodal Alignment: Qwen2.5-VL from a local folder, or a tiny random one built offline.

:func:`build_tiny_qwen` builds a deterministic tiny ``Qwen2_5_VLForConditionalGeneration`` from a config in code
(2 text layers of width 32, a 2-block vision tower with 4-pixel patches) over the same word-level tokenizer as the
tiny Wan (:func:`effivmt.backbone.build_tokenizer`), with the vision special tokens appended to its vocabulary.
It is not pretrained (there is no image-text data in the micro world to pretrain it on): OmniTransfer's task
queries, connector and LoRA learn to read it. ``load_mllm(None)`` loads it from the package (:data:`TINY_QWEN_FOLDER`);
``load_mllm(path)`` loads a real Qwen2.5-VL folder (e.g. ``Qwen2.5-VL-7B-Instruct``) and its tokenizer; nothing
is ever fetched from a hub. Images are preprocessed by :mod:`effivmt.omnitransfer.alignment` in torch, with the
mean/std stored here, so no image processor object is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effivmt.errors import ModelFolderError

#: Qwen2.5-VL text config kwargs of the tiny model (head_dim 8: mrope sections must sum to head_dim / 2).
TINY_QWEN_TEXT: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
)

#: Vision tower: 4-pixel patches merged 2x2, so a 16x16 frame gives 2x2 = 4 tokens per temporal patch.
TINY_QWEN_VISION: dict[str, Any] = dict(
    depth=2,
    hidden_size=16,
    intermediate_size=32,
    num_heads=2,
    patch_size=4,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=16,
    out_hidden_size=32,
    fullatt_block_indexes=[1],
    tokens_per_second=2,
)

#: The oldest transformers this module runs on (pyproject.toml's floor says the same; a test keeps them equal):
#: Qwen2.5-VL with ``.model.language_model`` needs 4.52, ``rope_parameters`` in its config 5.0, and the 3D rotary
#: positions of image/video tokens read from ``mm_token_type_ids`` (what :mod:`alignment` passes) 5.3.
MIN_TRANSFORMERS = "5.3"

#: OpenAI CLIP normalisation, Qwen2-VL's image processor default.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class MLLMComponents:
    """A Qwen2.5-VL model plus what the aligner needs to build its inputs without a processor object."""

    model: Any
    """``Qwen2_5_VLForConditionalGeneration`` (or a bare ``Qwen2_5_VLModel``)."""
    tokenizer: Any
    """Text tokenizer; called with ``add_special_tokens=False``."""
    image_token_id: int
    video_token_id: int
    vision_start_id: int
    vision_end_id: int
    pad_id: int
    """Filler for left padding and for the query slots (their embeddings are replaced)."""
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    source: str = "tiny"

    @property
    def hidden_size(self) -> int:
        """Width of the language model's last hidden states (the query features)."""
        return self.model.config.text_config.hidden_size

    @property
    def vision(self) -> Any:
        """The vision config (patch sizes)."""
        return self.model.config.vision_config


def build_tiny_qwen(seed: int = 0) -> MLLMComponents:
    """A tiny random Qwen2.5-VL over the tiny Wan word list; the same ``seed`` gives the same weights."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from effivmt.backbone import build_tokenizer

    tokenizer = build_tokenizer()
    base = len(tokenizer)  # image, video, vision start, vision end ids follow the word list
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=base + 4, bos_token_id=1, eos_token_id=1, pad_token_id=tokenizer.pad_token_id, **TINY_QWEN_TEXT
        ),
        vision_config=dict(TINY_QWEN_VISION),
        image_token_id=base,
        video_token_id=base + 1,
        vision_start_token_id=base + 2,
        vision_end_token_id=base + 3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return MLLMComponents(model, tokenizer, base, base + 1, base + 2, base + 3, tokenizer.pad_token_id)


#: The packaged tiny Qwen2.5-VL (``effivmt/assets/<this>``): :func:`build_tiny_qwen` ``(seed=0)`` saved by
#: :func:`save_mllm`, so the weights OmniTransfer's connector and LoRA were trained against do not depend on the
#: random generator of a later torch.
TINY_QWEN_FOLDER = "tiny-qwen2.5-vl"


def tiny_qwen_path() -> Path:
    """The packaged tiny Qwen2.5-VL folder."""
    from effivmt.io import package_asset

    return package_asset(TINY_QWEN_FOLDER)


def save_mllm(mllm: MLLMComponents, folder: str | Path) -> Path:
    """Write ``mllm`` as a Qwen2.5-VL folder that :func:`load_mllm` reads back: ``config.json`` and weights
    (``save_pretrained``), the tokenizer, and ``preprocessor_config.json`` with the image mean/std."""
    folder = Path(folder)
    mllm.model.save_pretrained(str(folder))
    mllm.tokenizer.save_pretrained(str(folder))
    pre = {"image_mean": list(mllm.image_mean), "image_std": list(mllm.image_std)}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return folder


def load_mllm(
    path: str | Path | None = None, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> MLLMComponents:
    """Load Qwen2.5-VL from a local folder, or the packaged tiny one (``path=None``; :func:`tiny_qwen_path`).

    Raises:
        ModelFolderError: the folder is missing or holds no Qwen2.5-VL config.
    """
    if path is None:
        path = tiny_qwen_path()
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(path).expanduser()
    hint = "give a local Qwen2.5-VL folder (e.g. Qwen2.5-VL-7B-Instruct) or leave mllm empty for the tiny model"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{folder} has no config.json", hint)
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "qwen2_5_vl":
        raise ModelFolderError(f"{folder} holds a {config.get('model_type', 'unknown')} model, not qwen2_5_vl", hint)
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"cannot load Qwen2.5-VL from {folder}: {err}".split("\n")[0], hint) from err
    mean, std = CLIP_MEAN, CLIP_STD
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        pcfg = json.loads(pre.read_text())
        mean, std = tuple(pcfg.get("image_mean", mean)), tuple(pcfg.get("image_std", std))
    cfg = model.config
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return MLLMComponents(
        model,
        tokenizer,
        cfg.image_token_id,
        cfg.video_token_id,
        cfg.vision_start_token_id,
        cfg.vision_end_token_id,
        pad,
        mean,
        std,
        str(folder),
    )
