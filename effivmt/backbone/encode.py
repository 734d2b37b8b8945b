"""VAE and text-encoder passes shared by every stage: clip -> normalised latents, prompts -> embeddings.

Latents are normalised the way diffusers' Wan pipelines do it (``(z - mean) / std`` per channel from
the VAE config), so the transformer sees exactly what it sees at inference.
"""

from __future__ import annotations

import torch

from effivmt.backbone.wan import WanComponents


def _latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(like)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(like)
    return mean, std


@torch.no_grad()
def encode_video(components: WanComponents, video: torch.Tensor) -> torch.Tensor:
    """Video ``(3, F, H, W)`` or ``(B, 3, F, H, W)`` in [-1, 1] -> normalised latents ``(B, 16, 1 + (F-1)/4, H/8, W/8)``.

    Uses the posterior mean (``mode``), so the cache is deterministic.
    """
    vae = components.vae
    if video.ndim == 4:
        video = video[None]
    x = video.to(device=vae.device, dtype=vae.dtype)
    z = vae.encode(x).latent_dist.mode()
    mean, std = _latent_stats(vae, z)
    return ((z - mean) / std).float()


@torch.no_grad()
def encode_frames(components: WanComponents, video: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Each video frame encoded on its own as an image: ``(3, F, H, W)`` -> ``(F, 16, 1, H/8, W/8)``.

    The spatial stage trains on single frames (text-to-image); a frame encoded alone is what Wan sees for a
    one-frame video, unlike a slice of the clip's latent (whose later frames each summarise four frames).
    """
    frames = video.transpose(0, 1)[:, :, None]  # (F, 3, 1, H, W)
    return torch.cat([encode_video(components, chunk) for chunk in frames.split(batch)])


@torch.no_grad()
def decode_latents(components: WanComponents, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``(B, 16, F', H', W')`` -> video ``(B, 3, F, H, W)`` in [-1, 1]."""
    vae = components.vae
    z = latents.to(device=vae.device, dtype=vae.dtype)
    mean, std = _latent_stats(vae, z)
    return vae.decode(z * std + mean, return_dict=False)[0].clamp(-1, 1).float()


@torch.no_grad()
def encode_prompts(
    components: WanComponents, prompts: str | list[str], max_sequence_length: int = 512
) -> torch.Tensor:
    """Prompts -> UMT5 embeddings ``(B, max_sequence_length, text_dim)``, zero-padded as ``WanPipeline`` does."""
    from diffusers import WanPipeline

    pipe = WanPipeline(**{k: v for k, v in components.as_dict().items() if k not in ("image_encoder", "image_processor")})
    embeds, _ = pipe.encode_prompt(
        prompts,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=components.text_encoder.device,
    )
    return embeds.float()
