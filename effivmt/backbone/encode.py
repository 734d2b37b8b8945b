"""VAE and text-encoder passes shared by every stage: clip -> normalised latents, prompts -> embeddings.

Latents are normalised the way diffusers' Wan pipelines do it (``(z - mean) / std`` per channel from
the VAE config), so the transformer sees exactly what it sees at inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from effivmt.backbone.wan import WanComponents


def latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan VAE ``latents_mean`` and ``latents_std`` as ``(1, z, 1, 1, 1)`` tensors like ``like``."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=like.dtype, device=like.device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=like.dtype, device=like.device).view(1, z, 1, 1, 1)
    return mean, std


@torch.no_grad()
def vae_encode(vae, video: torch.Tensor) -> torch.Tensor:
    """Video ``(B, 3, F, H, W)`` in [-1, 1] -> normalised latents ``(B, z, 1 + (F-1)/4, H/8, W/8)`` (float32).

    Uses the posterior mode (as the pipelines do for condition latents), so the same clip always gives the same
    latents and the cache is deterministic.
    """
    param = next(vae.parameters())
    latent = vae.encode(video.to(param.device, param.dtype)).latent_dist.mode().float()
    mean, std = latent_stats(vae, latent)
    return (latent - mean) * (1.0 / std)  # upstream multiplies by 1/std: bit-identical to the pipelines


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``(B, z, f, h, w)`` -> video ``(B, 3, F, H, W)`` in [-1, 1] (float32)."""
    param = next(vae.parameters())
    mean, std = latent_stats(vae, latents.float())
    video = vae.decode((latents.float() / (1.0 / std) + mean).to(param.device, param.dtype), return_dict=False)[0]
    return video.float().clamp(-1, 1)


def first_frame_mask(batch: int, num_frames: int, latent_hw: tuple[int, int], temporal: int = 4) -> torch.Tensor:
    """The I2V mask ``m`` ``(B, temporal, f, h, w)``: 1 where a pixel frame is given (the first), else 0.

    Mirrors ``WanImageToVideoPipeline.prepare_latents``: the first frame's mask is repeated ``temporal`` times so
    that ``1 + (F - 1)`` pixel-frame masks fold into ``f = 1 + (F-1)/temporal`` latent frames of ``temporal`` each.
    """
    h, w = latent_hw
    mask = torch.ones(batch, 1, num_frames, h, w)
    mask[:, :, 1:] = 0
    mask = torch.cat([mask[:, :, :1].repeat_interleave(temporal, dim=2), mask[:, :, 1:]], dim=2)
    return mask.view(batch, -1, temporal, h, w).transpose(1, 2)


@torch.no_grad()
def first_frame_condition(
    vae, first_frame: torch.Tensor, num_frames: int, encode: Callable[..., torch.Tensor] = vae_encode
) -> torch.Tensor:
    """Wan 2.1 I2V's condition ``[m, c]`` ``(B, 4 + n, f, h, w)``: mask and latent of ``[first frame, zeros...]``.

    Args:
        vae: the Wan VAE.
        first_frame: ``(B, 3, H, W)`` in ``[-1, 1]``.
        num_frames: pixel frames of the video to generate (``1 + 4k``).
        encode: ``encode(vae, video)`` -> normalised latents; :func:`vae_encode`, or one that serves a cache.
    """
    b, _, h, w = first_frame.shape
    video = torch.cat([first_frame[:, :, None], first_frame.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)
    cond = encode(vae, video)
    temporal = 2 ** sum(vae.config.temperal_downsample)  # 4 for Wan 2.1 (sic: diffusers' spelling)
    mask = first_frame_mask(b, num_frames, cond.shape[-2:], temporal).to(cond)
    return torch.cat([mask, cond], dim=1)


def _resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shortest edge to ``size`` (bicubic), then centre-crop ``size x size`` (CLIP preprocessing)."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    images = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top : top + size, left : left + size]


@torch.no_grad()
def clip_image_features(image_encoder, image_processor, images: torch.Tensor) -> torch.Tensor:
    """CLIP ``hidden_states[-2]`` ``(B, tokens, image_dim)`` of frames ``(B, 3, H, W)`` in [-1, 1], in the encoder's
    dtype: ``WanImageToVideoPipeline.encode_image`` in torch (the processor's crop size, mean and std), without PIL."""
    param = next(image_encoder.parameters())
    crop = image_processor.crop_size
    size = crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop)
    pixels = _resize_crop((images.float() + 1) / 2, int(size)).clamp(0, 1)
    mean = torch.tensor(image_processor.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=pixels.device).view(1, 3, 1, 1)
    out = image_encoder(pixel_values=((pixels - mean) / std).to(param.device, param.dtype), output_hidden_states=True)
    return out.hidden_states[-2]


def encode_video(components: WanComponents, video: torch.Tensor) -> torch.Tensor:
    """:func:`vae_encode` with ``components.vae``; also takes a single clip ``(3, F, H, W)``."""
    return vae_encode(components.vae, video[None] if video.ndim == 4 else video)


def encode_frames(components: WanComponents, video: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Each video frame encoded on its own as an image: ``(3, F, H, W)`` -> ``(F, z, 1, H/8, W/8)``.

    The spatial stage trains on single frames (text-to-image); a frame encoded alone is what Wan sees for a
    one-frame video, unlike a slice of the clip's latent (whose later frames each summarise four frames).
    """
    frames = video.transpose(0, 1)[:, :, None]  # (F, 3, 1, H, W)
    return torch.cat([vae_encode(components.vae, chunk) for chunk in frames.split(batch)])


def decode_latents(components: WanComponents, latents: torch.Tensor) -> torch.Tensor:
    """:func:`vae_decode` with ``components.vae``."""
    return vae_decode(components.vae, latents)


@torch.no_grad()
def encode_prompts(components: WanComponents, prompts: str | list[str], max_sequence_length: int = 512) -> torch.Tensor:
    """Prompts -> UMT5 embeddings ``(B, max_sequence_length, text_dim)``, zero-padded as ``WanPipeline`` does."""
    from diffusers import WanPipeline

    pipe = WanPipeline(
        **{k: v for k, v in components.as_dict().items() if k not in ("image_encoder", "image_processor")}
    )
    embeds, _ = pipe.encode_prompt(
        prompts,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=components.text_encoder.device,
    )
    return embeds.float()
