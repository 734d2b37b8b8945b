"""VAE and text-encoder passes shared by every stage: clip -> normalised latents, prompts -> embeddings.

Latents are normalised the way diffusers' Wan pipelines do it (``(z - mean) / std`` per channel from
the VAE config), so the transformer sees exactly what it sees at inference.
"""

from __future__ import annotations

import torch

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
