"""Stage 1 of pretraining: the Wan VAE learns to reconstruct micro-world clips.

The loss is L1 + MSE on pixels plus a small KL (no GAN: flat colours need none). Reconstruction goes
through the posterior *mode*: every consumer (the latent cache, ``vae_encode``, the I2V pipeline's
``sample_mode="argmax"``) encodes with the mode, and at this width the posterior's unit initial variance
drowns the encoder's signal (std ~0.13 at initialisation) and stalled training at 11 dB PSNR for
hundreds of steps. Short windows are not enough on their own: trained on windows of 3 latent frames, the
causal VAE drifts from the 4th latent frame on, so ``effivmt.pretrain.run`` trains it on whole clips after,
and then retrains its decoder without memory across latent frames (:func:`memoryless_decoder`).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from effivmt.data.world import render, sample_scene
from effivmt.training.object_mask import foreground_mask


class WorldWindows(IterableDataset):
    """Endless batches of pretraining scenes, ``(B, 3, F, H, W)`` in [-1, 1]; seeded, resumable by batch index.

    A share ``p_image`` of the batches are single frames (the VAE's first, image-only chunk); the rest are
    windows of ``frames`` frames at a random offset. ``trail`` draws the world's comet tails
    (:func:`effivmt.data.world.render`).
    """

    def __init__(
        self,
        frames: int,
        size: int,
        clip_frames: int,
        batch_size: int = 4,
        seed: int = 0,
        start: int = 0,
        p_image: float = 0.0,
        trail: bool = False,
    ) -> None:
        self.frames, self.size, self.clip_frames, self.seed, self.start = frames, size, clip_frames, seed, start
        self.batch_size, self.p_image, self.trail = batch_size, p_image, trail

    def __iter__(self):
        i = self.start
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            frames = 1 if float(torch.rand((), generator=g)) < self.p_image else self.frames
            batch = []
            for k in range(self.batch_size):
                scene = sample_scene(10_000_000 + i * self.batch_size + k)
                clip = render(scene, self.clip_frames, self.size, self.size, trail=self.trail)
                first = int(torch.randint(0, self.clip_frames - frames + 1, (1,), generator=g))
                batch.append(clip.frames[first : first + frames].permute(3, 0, 1, 2).float() / 127.5 - 1)
            i += 1
            yield torch.stack(batch)


def teacher_latents(video: torch.Tensor, z_dim: int = 16, seed: int = 0) -> torch.Tensor:
    """An informative latent to start from: pooled pixels, rotated into ``z_dim`` channels.

    ``(B, 3, 1 + 4k, H, W)`` -> ``(B, z_dim, 1 + k, H/8, W/8)``. Latent frame 0 holds the first frame's
    2x2 sub-block means of each 8x8 block (12 values); latent frame i >= 1 holds the 8x8 block means of its
    four frames (12 values). The rest is zero, and a fixed orthogonal matrix mixes the channels.
    """
    b, c, f, h, w = video.shape
    first = F.pixel_unshuffle(F.avg_pool2d(video[:, :, 0], 4), 2)  # (B, 12, H/8, W/8)
    frames = [first]
    for i in range(1, f, 4):
        group = video[:, :, i : i + 4]  # (B, 3, 4, H, W)
        pooled = F.avg_pool3d(group, (1, 8, 8))  # (B, 3, 4, H/8, W/8)
        frames.append(pooled.transpose(1, 2).reshape(b, 3 * group.shape[2], h // 8, w // 8))
    z = torch.stack([F.pad(x, (0, 0, 0, 0, 0, z_dim - x.shape[1])) for x in frames], dim=2)
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(z_dim, z_dim, generator=g))[0].to(video)
    return 2.0 * torch.einsum("oc,bcfhw->bofhw", rotation, z)


def foreground_weight(video: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel loss weight ``(B, 1, F, H, W)``: 1 on the background, ``object_weight`` on the
    :func:`foreground_mask`. Objects cover ~5% of a frame: unweighted, the decoder learns the
    background colours and leaves the shapes for later."""
    return 1.0 + (object_weight - 1.0) * foreground_mask(video)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of videos in [-1, 1] (peak-to-peak 2, hence 4 over the MSE); no gradient."""
    return 10 * torch.log10(4.0 / (recon - target).detach().pow(2).mean().clamp_min(1e-10))


def pixel_loss(recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 + MSE, normalised by the weights' mean so the scale does not depend on the object's size."""
    error = (recon - target).abs() + (recon - target).pow(2)
    return (weight * error).mean() / weight.mean()


class VaePretrainModule(L.LightningModule):
    """Trains an ``AutoencoderKLWan`` by reconstruction from the posterior mode, starting from a teacher.

    Trained end to end from scratch, this narrow Wan VAE collapses: the decoder settles on the mean colour
    (9-11 dB PSNR) and never learns to read the latent (we measured no progress in 600 steps at learning
    rates 1e-4 to 5e-3, with and without residual shortcuts). With an informative latent the decoder
    learns at once (18 dB in 100 steps). So for the first ``teacher_steps`` the two halves learn apart:
    the encoder regresses :func:`teacher_latents` and the decoder reconstructs from them; after that the
    plain autoencoder loss (through the encoder's own latent) refines both. With ``teacher_weight > 0`` the
    teacher stays as an anchor in that second phase (``teacher_weight * |z - z_teacher|^2``): on whole clips,
    the plain loss let latent frames 3-8 drift away from the teacher (mean squared distance 0.5-0.96 against
    0.04-0.06 for frames 0-2) and the moving object faded out of them.
    """

    def __init__(
        self,
        vae,
        lr: float = 4e-4,
        kl_weight: float = 1e-6,
        max_steps: int = 1500,
        teacher_steps: int | None = None,
        object_weight: float = 10.0,
        teacher_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.object_weight = object_weight
        self.teacher_weight = teacher_weight
        self.lr, self.kl_weight, self.max_steps = lr, kl_weight, max_steps
        self.teacher_steps = (2 * max_steps) // 3 if teacher_steps is None else teacher_steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        posterior = self.vae.encode(batch).latent_dist
        z = posterior.mode()
        kl = posterior.kl().mean()
        weight = foreground_weight(batch, self.object_weight)
        if self.global_step < self.teacher_steps:
            # two supervised problems instead of one collapsing one: encoder -> teacher latent, teacher -> pixels
            target = teacher_latents(batch, z.shape[1])
            recon = self.vae.decode(target).sample
            loss = (z - target).pow(2).mean() + pixel_loss(recon, batch, weight)
        else:
            recon = self.vae.decode(z).sample
            loss = pixel_loss(recon, batch, weight) + self.kl_weight * kl
            if self.teacher_weight > 0:  # an anchor: every latent frame keeps its pooled pixels
                loss = loss + self.teacher_weight * (z - teacher_latents(batch, z.shape[1])).pow(2).mean()
        self.log_dict({"vae/loss": loss, "vae/psnr": psnr(recon, batch), "vae/kl": kl}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=self.max_steps, pct_start=0.02, final_div_factor=20
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def memoryless_decoder(vae) -> None:
    """Zero the past taps of every causal temporal convolution in ``vae.decoder``, and keep them zero.

    Wan's decoder is recurrent across latent frames: each causal convolution reads two cached frames of the
    previous chunk, and its receptive field in time outlasts a whole clip. At this width it decoded the first
    three latent frames of a clip (those the window stage trained) and turned the object into a blob of the
    wrong colour from the fourth on, even with the encoder's latents right at every frame. With only the
    current tap, latent frame ``k`` is decoded from itself alone (frames ``4k-3 .. 4k``; frame 0 from latent 0),
    so what the decoder learns on one latent frame holds for every other. The checkpoint is still a stock
    ``AutoencoderKLWan``: the zeroed taps are plain weights.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    for conv in vae.decoder.modules():
        if isinstance(conv, WanCausalConv3d) and conv.kernel_size[0] > 1:
            mask = torch.zeros_like(conv.weight)
            mask[:, :, -1] = 1.0
            with torch.no_grad():
                conv.weight.mul_(mask)
            conv.weight.register_hook(lambda grad, mask=mask: grad * mask)


class DecoderPretrainModule(L.LightningModule):
    """Trains a :func:`memoryless_decoder` on cached latents of a frozen encoder.

    The encoder is not touched, so the latent cache (and a DiT trained on it) stay valid whatever the decoder
    becomes. Without memory, latent frame ``k`` decodes the same after latent 0 as after latents ``0..k-1``, so
    a sample is a pair ``(z_0, z_k)`` of a random clip and ``k``: two latent frames to decode instead of nine,
    and more clips per step for the same time. The target is the clip rendered again from its seed (frame 0
    and frames ``4k-3 .. 4k``, with comet tails when ``trail``, as the cache was rendered; weighted L1 + MSE, as
    :class:`VaePretrainModule`). Draws come from a generator seeded by the step, so a resumed run replays them.
    """

    def __init__(
        self,
        vae,
        latents: torch.Tensor,
        scene_seeds: list[int],
        batch_size: int = 8,
        lr: float = 5e-4,
        max_steps: int = 1000,
        object_weight: float = 10.0,
        seed: int = 0,
        trail: bool = False,
    ) -> None:
        super().__init__()
        self.vae, self.trail = vae, trail
        self.register_buffer("latents", latents, persistent=False)
        self.scene_seeds, self.batch_size, self.lr, self.max_steps = scene_seeds, batch_size, lr, max_steps
        self.object_weight, self.seed = object_weight, seed
        self.vae.requires_grad_(False)
        self.trained = [*self.vae.decoder.parameters(), *self.vae.post_quant_conv.parameters()]
        for p in self.trained:
            p.requires_grad_(True)
        memoryless_decoder(self.vae)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        n, _, latent_frames, h, w = self.latents.shape
        idx = torch.randint(0, n, (self.batch_size,), generator=g).tolist()
        ks = torch.randint(1, latent_frames, (self.batch_size,), generator=g).tolist()
        frames = latent_frames * 4 - 3
        targets = []
        for i, k in zip(idx, ks):
            clip = render(sample_scene(self.scene_seeds[i]), frames, h * 8, w * 8, trail=self.trail).frames
            targets.append(torch.cat([clip[:1], clip[4 * k - 3 : 4 * k + 1]]))
        target = torch.stack(targets).permute(0, 4, 1, 2, 3).to(self.latents) / 127.5 - 1
        z = torch.stack([self.latents[i][:, [0, k]] for i, k in zip(idx, ks)])
        recon = self.vae.decode(z).sample
        loss = pixel_loss(recon, target, foreground_weight(target, self.object_weight))
        self.log_dict({"decoder/loss": loss, "decoder/psnr": psnr(recon, target)}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.trained, lr=self.lr, weight_decay=0.0)  # no decay: zeroed taps stay zero
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=self.max_steps, pct_start=0.05, final_div_factor=20
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
