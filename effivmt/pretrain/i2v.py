"""Stage 4 of pretraining: the micro Wan I2V learns to continue a first frame, from the micro T2V.

Wan 2.1 I2V is its T2V widened: the DiT reads ``[z_t, m, c]`` (noise latent, the 4-channel first-frame mask,
the latent of ``[first frame, zeros...]``; 36 channels) and attends to CLIP-vision features of the first frame
through added K/V in every cross-attention. :func:`effivmt.backbone.micro.i2v_from_t2v` builds that DiT from the
trained T2V so that it starts as the T2V exactly (the new weights that read the condition are zero); this stage
then trains it with the T2V's flow-matching objective on the same cached clips, each with its own first frame's
condition, computed once (:func:`effivmt.pretrain.run.cached_i2v_inputs`). UMT5 stays frozen: the I2V shares the
T2V's text encoder, as Wan 2.1's do. Every batch is whole clips: a single frame given its own first frame has
nothing to learn.
"""

from __future__ import annotations

import torch

from effivmt.backbone.encode import clip_image_features, first_frame_condition
from effivmt.pretrain.dit import TextToVideoPretrainModule, encode_prompts_trainable


@torch.no_grad()
def first_frame_inputs(vae, image_encoder, image_processor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``WanImageToVideoPipeline`` derives from a clip's first frame: the condition ``[m, c]``
    ``(B, 20, f, h, w)`` and the CLIP features ``(B, tokens, image_dim)``. ``video`` ``(B, 3, F, H, W)`` in [-1, 1]."""
    first = video[:, :, 0]
    condition = first_frame_condition(vae, first, video.shape[2])
    return condition, clip_image_features(image_encoder, image_processor, first).float()


class ImageToVideoPretrainModule(TextToVideoPretrainModule):
    """Flow matching of a Wan I2V DiT on cached latents, each clip conditioned on its own first frame.

    Args (beyond :class:`~effivmt.pretrain.dit.TextToVideoPretrainModule`'s):
        conditions: ``[m, c]`` of every clip ``(N, 20, f, h, w)`` (:func:`first_frame_inputs`).
        image_embeds: CLIP features of every clip's first frame ``(N, tokens, image_dim)``.
    """

    def __init__(self, transformer, text_encoder, tokenizer, latents, scene_seeds, conditions, image_embeds, **kwargs):
        kwargs.update(p_image=0.0, compact_padding=False)  # the I2V processor splits its context at 512 text tokens
        super().__init__(transformer, text_encoder, tokenizer, latents, scene_seeds, **kwargs)
        self.text_encoder.requires_grad_(False).eval()
        self.register_buffer("conditions", conditions, persistent=False)
        self.register_buffer("image_embeds", image_embeds, persistent=False)

    def embed(self, prompts: list[str], device) -> torch.Tensor:
        with torch.no_grad():  # zero-padded to 512, as the pipeline does
            return encode_prompts_trainable(self.text_encoder, self.tokenizer, prompts, device)

    def velocity(self, xt: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([xt, self.conditions[idx].to(xt)], dim=1)  # WanImageToVideoPipeline's channel order
        image = self.image_embeds[idx].to(xt)
        return self.transformer(hidden, t, embeds, encoder_hidden_states_image=image, return_dict=False)[0]

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.transformer.parameters())
