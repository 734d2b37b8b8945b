"""Frozen Wan 2.1 I2V encoders: UMT5 prompt features and CLIP image features, as the stock pipeline makes them.

Both branches of OmniTransfer keep Wan's image context (CLIP features through the I2V added K/V); the reference
branch also keeps Wan's text context (UMT5), the target branch swaps its text context for the MLLM's aligned
features (:mod:`effivmt.omnitransfer.alignment`). These helpers mirror ``WanImageToVideoPipeline.encode_prompt``
and ``encode_image`` in torch, without PIL, so batches of frames go straight from the DataModule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Wan's text context length, hard-coded upstream (the I2V processor splits image/text context at it).
TEXT_LENGTH = 512


@torch.no_grad()
def encode_text(text_encoder, tokenizer, prompts: Sequence[str], max_length: int = TEXT_LENGTH) -> torch.Tensor:
    """UMT5 features ``(B, max_length, text_dim)``: real tokens, then zeros (``WanPipeline._get_t5_prompt_embeds``)."""
    device = next(text_encoder.parameters()).device
    tokens = tokenizer(
        [" ".join(p.split()) for p in prompts],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    hidden = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state.float()
    return hidden * mask[..., None]  # zero past each prompt's length, as upstream re-pads with zeros


def _resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shortest edge to ``size`` (bicubic), then centre-crop ``size x size`` (CLIP preprocessing)."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    images = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top : top + size, left : left + size]


@torch.no_grad()
def encode_image(image_encoder, image_processor, images: torch.Tensor) -> torch.Tensor:
    """CLIP penultimate hidden states ``(B, tokens, image_dim)`` of frames ``(B, 3, H, W)`` in ``[-1, 1]``.

    Same quantity as ``WanImageToVideoPipeline.encode_image`` (``hidden_states[-2]``); preprocessing uses the
    processor's crop size, mean and std.
    """
    param = next(image_encoder.parameters())
    crop = image_processor.crop_size
    size = crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop)
    pixels = _resize_crop((images.float() + 1) / 2, int(size)).clamp(0, 1)
    mean = torch.tensor(image_processor.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=pixels.device).view(1, 3, 1, 1)
    out = image_encoder(pixel_values=((pixels - mean) / std).to(param.device, param.dtype), output_hidden_states=True)
    return out.hidden_states[-2].float()
