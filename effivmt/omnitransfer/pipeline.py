"""``OmniTransferPipeline``: frozen Wan encoders + :class:`OmniTransferModel`, shared by training and inference.

It turns pixels and strings into the two branches' inputs (Reference Latent Construction, contexts) and runs
the denoising loop. The reference record (:class:`~effivmt.omnitransfer.attention.ReferenceKV`) is built once
per generation when ``cache_reference=True`` (the default) and reused by every step and by both halves of
classifier-free guidance, which is valid because the reference branch sees neither the noisy target nor the
prompt.

Memory: once the features are computed (UMT5 text, CLIP images, Qwen2.5-VL aligned context, reference latents),
:meth:`OmniTransferPipeline.release_encoders` frees or offloads UMT5, CLIP and Qwen2.5-VL, so the denoising loop
holds only the transformer, the reference record and the VAE (for the final decode). ``sample(...,
release_encoders=True)`` does it inside a generation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from effivmt.backbone import WanComponents, load_wan
from effivmt.errors import ConfigError, EffivmtError
from effivmt.omnitransfer.alignment import MultimodalAligner
from effivmt.omnitransfer.attention import ReferenceKV
from effivmt.omnitransfer.encoders import FeatureCache, encode_image, encode_latents, encode_text
from effivmt.omnitransfer.model import OmniTransferModel, TaskSpec, item_tasks, pad_context
from effivmt.omnitransfer.reference import reference_input, target_condition, target_input
from effivmt.omnitransfer.tasks import TaskConfig
from effivmt.omnitransfer.tiny_qwen import load_mllm

ContextSource = Literal["mllm", "text"]


@dataclass
class ReferenceBatch:
    """Everything the reference branch reads, one entry per reference slot."""

    inputs: list[torch.Tensor]
    """``l_ref = [z_ref, 1, flag]`` ``(B, 2n+4, f, h, w)``."""
    contexts: list[torch.Tensor]
    """UMT5 features ``(B, 512, text_dim)`` of the prompt-free reference text (task template by default)."""
    images: list[torch.Tensor | None]
    """CLIP features of the reference's own first frame (I2V image context), ``None`` for models without it."""
    tasks: list[tuple[str, ...]]
    """Per item, the task of each slot."""


@dataclass
class OmniTransferPipeline:
    """The frozen Wan parts (VAE, UMT5, CLIP, scheduler) and the trainable :class:`OmniTransferModel`."""

    wan: WanComponents
    model: OmniTransferModel
    released: list[str] = field(default_factory=list)
    """Encoders freed by :meth:`release_encoders` (asking them for features afterwards raises)."""
    latent_cache: FeatureCache | None = None
    """VAE latents by clip (:func:`~effivmt.omnitransfer.encoders.encode_latents`; training sets it); None: encode."""

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        mllm: str | Path | None = None,
        *,
        use_mllm: bool = True,
        tasks: TaskConfig | None = None,
        mllm_image_size: tuple[int, int] | None = None,
        num_reference_frames: int = 4,
        fps: float = 16.0,
        dtype: str = "fp32",
        device: str = "cpu",
        seed: int = 0,
    ) -> OmniTransferPipeline:
        """Wan 2.1 I2V (a local folder, the packaged micro one, or tiny) and, if ``use_mllm``, Qwen2.5-VL and connector.

        Args:
            model: diffusers-format Wan 2.1 I2V folder; ``None``: the packaged micro Wan I2V; ``"tiny"``: a random one.
            mllm: local Qwen2.5-VL folder; ``None``: the tiny random Qwen2.5-VL.
            use_mllm: build the aligner (stage 1 and ablations train without it).
            tasks: task flags, offsets, templates, queries per task.
            mllm_image_size: pixel budget of the MLLM's frames (aspect kept); default 16x16 (tiny) or 448x448.
            num_reference_frames: reference frames the MLLM sees.
            fps: frame rate of the reference videos (their frame spacing reaches the MLLM's positions).
            dtype: Wan transformer / text encoder dtype.
            device: where everything goes.
            seed: seed of the tiny models.
        """
        wan = load_wan(model, variant="i2v", dtype=dtype, device=device, seed=seed)
        if wan.variant != "i2v":
            raise ConfigError(f"OmniTransfer needs Wan 2.1 I2V, {model} is {wan.variant}", "give an I2V folder")
        tasks = tasks or TaskConfig()
        aligner = None
        if use_mllm:
            mllm_parts = load_mllm(mllm, dtype=wan.transformer.dtype, device=device)
            size = mllm_image_size or ((16, 16) if mllm is None else (448, 448))
            with torch.random.fork_rng(devices=[]):  # queries and connector start the same for a given seed
                torch.manual_seed(seed + 10)
                aligner = MultimodalAligner(
                    mllm_parts, wan.transformer.config.text_dim, tasks, size, num_reference_frames, fps=fps
                ).to(device)
        return cls(wan, OmniTransferModel(wan.transformer, aligner, tasks))

    @property
    def device(self) -> torch.device:
        return next(self.model.transformer.parameters()).device

    def to(self, device: torch.device | str) -> OmniTransferPipeline:
        """Move the frozen encoders (the model is moved by whoever owns it, e.g. Lightning)."""
        for name in ("vae", "text_encoder", "image_encoder"):
            part = getattr(self.wan, name)
            if part is not None:
                part.to(device)
        return self

    def release_encoders(self, offload_to: str | torch.device | None = None) -> list[str]:
        """Free (``offload_to=None``) or move UMT5, CLIP and the MLLM once their features are computed.

        The denoising loop needs none of them: the reference record and the contexts are tensors by then. On Wan
        2.1 I2V 14B in bf16 that is UMT5-XXL (~11 GB), CLIP ViT-H (~1.3 GB) and Qwen2.5-VL-7B (~16.6 GB). Freed
        encoders are gone for this pipeline (a later feature request raises); offloaded ones can be moved back
        with :meth:`to` (the MLLM with the model).

        Returns:
            The names of the encoders released.
        """
        names = []
        for name in ("text_encoder", "image_encoder"):
            part = getattr(self.wan, name)
            if part is not None:
                if offload_to is None:
                    setattr(self.wan, name, None)
                else:
                    part.to(offload_to)
                names.append(name)
        aligner = self.model.aligner
        if aligner is not None and aligner.mllm is not None:
            if offload_to is None:
                aligner.release_mllm()
            else:
                aligner.mllm.to(offload_to)
            names.append("mllm")
        if offload_to is None:
            self.released += names
        return names

    def _check_encoder(self, name: str) -> None:
        if name in self.released:
            raise EffivmtError(
                f"the {name} was freed by release_encoders()", "compute every feature before releasing the encoders"
            )

    # ------------------------------------------------------------------------------------------ conditioning
    def _clip(self, frames: torch.Tensor) -> torch.Tensor | None:
        self._check_encoder("image_encoder")
        if self.wan.image_encoder is None or self.model.transformer.config.image_dim is None:
            return None
        return encode_image(self.wan.image_encoder, self.wan.image_processor, frames).to(self.device)

    def _text(self, prompts: list[str]) -> torch.Tensor:
        self._check_encoder("text_encoder")
        return encode_text(self.wan.text_encoder, self.wan.tokenizer, prompts).to(self.device)

    def encode_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latents of ``videos`` ``(B, 3, F, H, W)``, through :attr:`latent_cache` when set."""
        return encode_latents(self.wan.vae, videos, self.latent_cache).to(self.device)

    def encode_first_frame(
        self, first_frame: torch.Tensor, num_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target condition ``[m, c]`` ``(B, 4+n, f, h, w)`` and CLIP features of ``first_frame`` ``(B, 3, H, W)``."""
        return self.first_frame_condition(first_frame, num_frames), self._clip(first_frame)

    def first_frame_condition(self, first_frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Target condition ``[m, c]`` of ``first_frame`` ``(B, 3, H, W)``, its latent through :attr:`latent_cache`."""
        encode = lambda vae, video: encode_latents(vae, video, self.latent_cache)  # noqa: E731
        return target_condition(self.wan.vae, first_frame, num_frames, encode).to(self.device)

    def prepare_references(
        self, videos: list[torch.Tensor], tasks: TaskSpec, reference_prompts: list[str] | None = None
    ) -> ReferenceBatch:
        """Encode each reference video ``(B, 3, F, H, W)``: latent, flag, mask, prompt-free text, own CLIP image.

        Args:
            videos: one video per slot.
            tasks: one task per slot, or per item a tuple of them.
            reference_prompts: per item, the reference's text; ``None``/empty uses the task templates.
        """
        batch = videos[0].shape[0] if videos else 1
        per_item = item_tasks(tasks, len(videos))
        per_item = per_item * batch if len(per_item) == 1 else per_item
        templates = self.model.tasks.templates
        inputs, contexts, images = [], [], []
        for slot, video in enumerate(videos):
            slot_tasks = [t[slot] for t in per_item]
            latent = self.encode_latents(video)
            inputs.append(reference_input(latent, slot_tasks, self.model.tasks, self._mask_channels(latent)))
            texts = [
                (reference_prompts[b] if reference_prompts and reference_prompts[b] else templates[slot_tasks[b]])
                for b in range(batch)
            ]
            contexts.append(self._text(texts))
            images.append(self._clip(video[:, :, 0]))
        return ReferenceBatch(inputs, contexts, images, per_item)

    def _mask_channels(self, latent: torch.Tensor) -> int:
        return self.model.transformer.config.in_channels - 2 * latent.shape[1]

    def target_context(
        self,
        first_frame: torch.Tensor,
        videos: list[torch.Tensor],
        prompts: list[str],
        tasks: list[tuple[str, ...]],
        source: ContextSource = "mllm",
    ) -> torch.Tensor:
        """Target cross-attention text context ``(B, 512, text_dim)``: padded aligned MLLM features, or UMT5."""
        if source == "text" or self.model.aligner is None:
            return self._text(prompts)
        self._check_encoder("mllm")
        return pad_context(self.model.aligner(first_frame, videos, prompts, tasks))

    # ------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        first_frame: torch.Tensor,
        references: list[torch.Tensor],
        tasks: TaskSpec,
        prompt: str,
        *,
        num_frames: int,
        negative_prompt: str = "",
        steps: int = 40,
        guidance: float = 5.0,
        seed: int = 0,
        cache_reference: bool = True,
        source: ContextSource = "mllm",
        reference_prompt: str | None = None,
        noise: torch.Tensor | None = None,
        release_encoders: bool = False,
    ) -> torch.Tensor:
        """Denoise a target latent ``(1, n, f, h, w)`` from the first frame ``(1, 3, H, W)`` and the references.

        Args:
            cache_reference: build the reference keys/values once (``True``) or at every step (``False``, the
                reference result the cache is tested against; same numbers, more time).
            noise: initial latent noise (default: drawn from ``seed``).
            release_encoders: free UMT5, CLIP and the MLLM once the features are computed, before denoising
                (:meth:`release_encoders`; a one-shot generation such as ``effivmt transfer``).
        """
        dev = self.device
        first_frame, videos = first_frame.to(dev), [r.to(dev) for r in references]
        cond, image = self.encode_first_frame(first_frame, num_frames)
        refs = self.prepare_references(videos, tasks, [reference_prompt or ""])
        ctx = self.target_context(first_frame, videos, [prompt], refs.tasks, source)
        if guidance > 1.0:
            neg = self.target_context(first_frame, videos, [negative_prompt], refs.tasks, source)
            ctx = torch.cat([ctx, neg])
            image = None if image is None else torch.cat([image, image])
            cond = torch.cat([cond, cond])
        if release_encoders:
            self.release_encoders()
        n = self.wan.vae.config.z_dim
        if noise is None:
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn((1, n, *cond.shape[2:]), generator=g)
        latents = noise.to(dev, torch.float32)
        scheduler = copy.deepcopy(self.wan.scheduler)
        scheduler.set_timesteps(steps, device=dev)
        record: ReferenceKV | None = None
        dtype = self.model.transformer.dtype
        for t in scheduler.timesteps:
            if record is None or not cache_reference:
                record = self.model.encode_references(
                    [r.to(dtype) for r in refs.inputs],
                    refs.tasks,
                    [c.to(dtype) for c in refs.contexts],
                    [None if i is None else i.to(dtype) for i in refs.images],
                    self.model.grid(cond),
                )
            x = target_input(latents.repeat(cond.shape[0], 1, 1, 1, 1), cond).to(dtype)
            v = self.model(
                x, t.expand(x.shape[0]).to(dev), ctx.to(dtype), None if image is None else image.to(dtype), record
            ).float()
            if guidance > 1.0:
                v = v[1:] + guidance * (v[:1] - v[1:])
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
        return latents
