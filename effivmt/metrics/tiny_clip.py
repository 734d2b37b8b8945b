"""A tiny random CLIP built offline, so the CLIP metrics run in tests and demos without any download.

Its scores mean nothing (the weights are random); it exercises the exact code path of a real CLIP folder:
:func:`build_tiny_clip` gives a :class:`~effivmt.metrics.clip_scores.CLIPScorer`, whose ``save_pretrained``
writes a folder that ``CLIPScorer.from_pretrained`` (and ``effivmt eval --clip_model``) reads back.
"""

from __future__ import annotations

from typing import Any

import torch

from effivmt.metrics.clip_scores import CLIPScorer

#: CLIPTextConfig kwargs (vocab size comes from the tokenizer). eos 1 / pad 0 follow the packaged
#: T5-like word-level tokenizer, so CLIP pools the text embedding at its end-of-sequence token.
TINY_CLIP_TEXT: dict[str, Any] = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    eos_token_id=1,
    pad_token_id=0,
    bos_token_id=0,
)

#: CLIPVisionConfig kwargs: 32x32 images in 8x8 patches (16 patches + the class token).
TINY_CLIP_VISION: dict[str, Any] = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def build_tiny_clip(seed: int = 0, projection_dim: int = 16) -> CLIPScorer:
    """A randomly initialised ``CLIPModel`` with the packaged word-level tokenizer; same seed, same weights.

    Args:
        seed: seeds the weights without touching the global RNG state.
        projection_dim: size of the shared text/image embedding.

    Returns:
        A :class:`CLIPScorer` on the CPU.
    """
    from transformers import CLIPConfig, CLIPModel

    from effivmt.backbone.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = CLIPConfig(
        text_config={**TINY_CLIP_TEXT, "vocab_size": len(tokenizer)},
        vision_config=TINY_CLIP_VISION,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return CLIPScorer(model, tokenizer, device="cpu")
