"""Stage 3 of pretraining: the Wan DiT and the UMT5 text encoder learn text-to-video flow matching.

Both train together from scratch on latents cached once by the trained VAE (DESIGN.md, "Flow
matching (Wan)": ``x_t = (1 - s) x0 + s eps``, target ``eps - x0``, ``t = 1000 s``). Prompts are encoded
exactly as ``WanPipeline`` encodes them (UMT5 over the real tokens, zero-padded to 512), so the model
meets at inference what it met in training. Each batch mixes captions with motion words,
appearance-only captions (so a prompt may leave the motion open, as EffiVMT's target prompts do) and
empty ones (classifier-free guidance); one batch in five is single frames (the spatial stage's
text-to-image case). Every draw comes from a generator seeded by the step, so a resumed run replays it.

The object covers about 14% of the latent pixels of a clip
(:func:`~effivmt.training.object_mask.latent_object_mask`), so with a plain mean the loss is mostly about the
background's colour. ``object_weight`` weights the latent pixels the
object touches, as the VAE stages weight its pixels (:func:`effivmt.pretrain.vae.foreground_weight`).
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import IterableDataset

from effivmt.data.world import Scene, caption, sample_scene
from effivmt.pretrain import text_padding
from effivmt.training.flow import add_noise, denoising_loss, sample_sigmas, timesteps_from_sigmas, velocity_target

MAX_SEQUENCE_LENGTH = 512


class Steps(IterableDataset):
    """Yields step numbers forever: the module draws each batch itself from a step-seeded generator."""

    def __iter__(self):
        i = 0
        while True:
            yield i
            i += 1


def encode_prompts_trainable(text_encoder, tokenizer, prompts: list[str], device, pad: bool = True) -> torch.Tensor:
    """``WanPipeline._get_t5_prompt_embeds`` with gradients: real tokens through UMT5, zeros to 512
    (``pad=False``: to the batch's longest prompt only, for :func:`~effivmt.pretrain.text_padding.compact_padding`)."""
    tokens = tokenizer(prompts, padding="longest", add_special_tokens=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state
    hidden = hidden * mask[..., None].to(hidden.dtype)  # what the pipeline keeps: real tokens, then zeros
    if not pad:
        return hidden
    zeros = hidden.new_zeros(hidden.shape[0], MAX_SEQUENCE_LENGTH - hidden.shape[1], hidden.shape[2])
    return torch.cat([hidden, zeros], dim=1)


class TextToVideoPretrainModule(L.LightningModule):
    """Flow-matching pretraining of ``WanTransformer3DModel`` + ``UMT5EncoderModel`` on cached latents.

    Args:
        transformer, text_encoder, tokenizer: the micro components (trained in place).
        latents: normalised clip latents ``(N, 16, f, h, w)``.
        scene_seeds: the world seed of each clip (captions are rebuilt from it).
        batch_size: clips per step.
        lr, warmup, max_steps: AdamW with linear warm-up and cosine decay.
        p_image, p_appearance, p_empty: shares of single-frame batches, appearance-only and empty captions.
        shift: timestep shift when sampling noise levels (1.0: uniform).
        seed: base seed of the per-step generator.
        compact_padding: compute cross-attention over the 512-token padding once, with its exact logit
            bias (:mod:`effivmt.pretrain.text_padding`): the same function, 1.7x the steps per second.
        object_masks: :func:`latent_object_mask` of each clip ``(N, 1, f, h, w)``; needed when
            ``object_weight != 1``.
        object_weight: loss weight of the latent pixels the object touches (1.0: a plain mean).
    """

    def __init__(
        self,
        transformer,
        text_encoder,
        tokenizer,
        latents: torch.Tensor,
        scene_seeds: list[int],
        batch_size: int = 8,
        lr: float = 5e-4,
        warmup: int = 200,
        max_steps: int = 5000,
        p_image: float = 0.2,
        p_appearance: float = 0.2,
        p_empty: float = 0.1,
        shift: float = 1.0,
        seed: int = 0,
        compact_padding: bool = True,
        object_masks: torch.Tensor | None = None,
        object_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if object_weight != 1.0 and object_masks is None:
            raise ValueError("object_weight != 1 needs object_masks")
        self.transformer, self.text_encoder, self.tokenizer = transformer, text_encoder, tokenizer
        self.register_buffer("latents", latents, persistent=False)
        self.scene_seeds = scene_seeds
        self.batch_size, self.lr, self.warmup, self.max_steps = batch_size, lr, warmup, max_steps
        self.p_image, self.p_appearance, self.p_empty = p_image, p_appearance, p_empty
        self.shift, self.seed = shift, seed
        self.padding_state = text_padding.install_padding_bias(transformer) if compact_padding else None
        self.object_weight = object_weight
        if object_weight != 1.0:
            self.register_buffer("object_masks", object_masks, persistent=False)

    def scene(self, i: int) -> Scene:
        """The world scene of cached clip ``i``, from which its captions are made (a pretraining scene of its seed)."""
        return sample_scene(self.scene_seeds[i])

    def prompts_for(self, indices: list[int], g: torch.Generator) -> list[str]:
        out = []
        for i in indices:
            r = float(torch.rand((), generator=g))
            scene = self.scene(i)
            if r < self.p_empty:
                out.append("")
            else:
                out.append(caption(scene, with_motion=r >= self.p_empty + self.p_appearance))
        return out

    def draw(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:
        """One step's clips: ``(indices, x0, loss weight or None, prompts)``. A share ``p_image`` of the batches are
        single frames (the causal VAE's first latent is the first frame alone; their captions lose the motion)."""
        idx = torch.randint(0, self.latents.shape[0], (self.batch_size,), generator=g)
        x0 = self.latents[idx]
        weight = None if self.object_weight == 1.0 else 1.0 + (self.object_weight - 1.0) * self.object_masks[idx]
        image_batch = float(torch.rand((), generator=g)) < self.p_image
        if image_batch:
            x0 = x0[:, :, :1]
            weight = None if weight is None else weight[:, :, :1]
        prompts = self.prompts_for(idx.tolist(), g)
        if image_batch:  # a still image has no motion to caption
            prompts = [p if not p else caption(self.scene(i), with_motion=False) for p, i in zip(prompts, idx.tolist())]
        self.log("dit/image_batch", float(image_batch), on_step=True)
        return idx, x0, weight, prompts

    def embed(self, prompts: list[str], device) -> torch.Tensor:
        """The prompts as ``WanPipeline`` encodes them (with UMT5's gradients; compacted padding if installed)."""
        compact = self.padding_state is not None
        embeds = encode_prompts_trainable(self.text_encoder, self.tokenizer, prompts, device, pad=not compact)
        if compact:
            embeds = text_padding.compact_padding(embeds, self.padding_state, MAX_SEQUENCE_LENGTH)
        return embeds

    def velocity(self, xt: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The DiT's prediction for clips ``idx`` (an I2V adds their first-frame condition here)."""
        return self.transformer(xt, t, embeds, return_dict=False)[0]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        idx, x0, weight, prompts = self.draw(g)
        sigma = sample_sigmas(self.batch_size, self.shift, g)
        noise = torch.randn(x0.shape, generator=g).to(x0)
        xt = add_noise(x0, noise, sigma)
        embeds = self.embed(prompts, x0.device)
        pred = self.velocity(xt, timesteps_from_sigmas(sigma).to(x0.device), embeds, idx)
        target = velocity_target(x0, noise)
        loss = denoising_loss(pred, target, weight)
        self.log("dit/loss", loss, prog_bar=True, on_step=True)
        if weight is not None:  # comparable with unweighted runs
            self.log("dit/plain_loss", denoising_loss(pred.detach(), target), on_step=True)
        return loss

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.transformer.parameters()) + list(self.text_encoder.parameters())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=0.01, betas=(0.9, 0.99))
        import math

        def factor(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            p = min(1.0, (step - self.warmup) / max(1, self.max_steps - self.warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
