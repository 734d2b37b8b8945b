"""``OmniTransferModule``: one LightningModule for the paper's three training stages.

A training step (paper, "Method"; DESIGN.md, "Flow matching (Wan)"):

1. encode the target clip ``x0`` and its first frame (condition ``[m, c]``, CLIP image) with the frozen VAE/CLIP;
2. build the reference branch (``[z_ref, 1, flag]``, prompt-free UMT5 text, own CLIP image) and record its
   keys/values (``t = 0``, positions shifted by the task offset);
3. the target context: UMT5(prompt) in stage 1, aligned MLLM features (queries -> connector) in stages 2-3;
4. draw ``s`` with Wan's shift, ``x_t = (1 - s) x0 + s eps``, ``t = 1000 s``; predict ``v`` for the target tokens
   only and regress ``v = eps - x0`` (the reference tokens produce no output and take no loss).

Only the stage's parameter groups (:data:`~effivmt.omnitransfer.checkpoint.STAGE_GROUPS`) have
``requires_grad``; the optimizer sees nothing else, so every other weight stays bit-identical.

Memory: UMT5 and CLIP are frozen in every stage and read only fixed inputs (prompts, reference texts, first
frames), so :meth:`OmniTransferModule.setup` computes their features for every row of the DataModule once
(:meth:`~OmniTransferModule.cache_encoder_features`) and frees both; a stage whose target context is UMT5
(stage 1) frees Qwen2.5-VL too. Stages 2-3 keep Qwen2.5-VL: the task queries train through it. The VAE stays.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

from effivmt.omnitransfer.checkpoint import load_weights, parameter_groups, set_stage_trainable, weights_state
from effivmt.omnitransfer.encoders import FeatureCache, encode_image, encode_text
from effivmt.omnitransfer.model import item_tasks
from effivmt.omnitransfer.pipeline import OmniTransferPipeline
from effivmt.omnitransfer.reference import target_input
from effivmt.omnitransfer.tasks import TaskConfig
from effivmt.training.flow import add_noise, denoising_loss, sample_sigmas, timesteps_from_sigmas, velocity_target
from effivmt.training.object_mask import latent_object_mask
from effivmt.training.trainer import step_generator

log = logging.getLogger(__name__)


def default_optimizer(params) -> torch.optim.Optimizer:
    """AdamW at the paper's lr 1e-5, no weight decay (the paper does not state one)."""
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)


class OmniTransferModule(L.LightningModule):
    """Train OmniTransfer stage ``stage`` on paired reference/target clips.

    The MLLM aligner is always built (stage 1 simply does not use it), so one weights file carries every
    group from stage to stage.

    Args:
        stage: 1 (DiT blocks), 2 (connector + task queries) or 3 (joint: blocks, connector, queries, MLLM LoRA).
        model_path: Wan 2.1 I2V diffusers folder; ``None``: the packaged micro Wan I2V; ``"tiny"``: the random tiny one.
        mllm_path: Qwen2.5-VL folder; ``None``: tiny random Qwen2.5-VL.
        init_from: weights of the previous stage (``omnitransfer.safetensors`` or ``.ckpt``).
        tasks: task flags / offsets / templates / queries per task.
        target_context: ``"auto"`` (UMT5 in stage 1, MLLM after), ``"text"`` or ``"mllm"``.
        mllm_image_size: frame size the MLLM sees (``None``: 16x16 tiny, 448x448 real).
        num_reference_frames: reference frames the MLLM reads.
        lora_rank: MLLM LoRA rank (stage 3).
        lora_alpha: MLLM LoRA alpha.
        optimizer: optimizer factory over the stage's parameters.
        shift: Wan's timestep shift for drawing noise levels.
        seed: base seed of the per-step noise generator.
        dtype: Wan/MLLM dtype (``"bf16"`` for real models).
        gradient_checkpointing: recompute the target branch's blocks in the backward pass.
        cache_features: at ``setup``, compute the UMT5/CLIP features of every row of the trainer's DataModule and
            free both encoders (and the MLLM when the target context is UMT5); ``False`` runs them every step.
        cache_latents: keep the VAE latents of each clip after its first encoding (a
            :class:`~effivmt.omnitransfer.encoders.FeatureCache` of the VAE, keyed by the clip's bytes, filled at
            ``setup`` with the features); the VAE stays loaded for clips not seen before.
        latent_cache_file: where ``cache_latents`` keeps the latents between stages and re-runs (safetensors, with
            the backbone's identity: a file from another model is ignored and rewritten); ``None``: in memory only.
        object_weight: loss weight of the target's latent pixels its object touches
            (:func:`~effivmt.training.object_mask.latent_object_mask`: pixels unlike the frame's border), the rest
            1; the loss is normalised by the mean weight. 1.0 is the paper's plain mean. A micro-world object covers
            ~14% of the latent pixels, so unweighted the loss is mostly about the background.
    """

    def __init__(
        self,
        stage: Literal[1, 2, 3] = 1,
        model_path: Path | None = None,
        mllm_path: Path | None = None,
        init_from: Path | None = None,
        tasks: TaskConfig | None = None,
        target_context: Literal["auto", "text", "mllm"] = "auto",
        mllm_image_size: tuple[int, int] | None = None,
        num_reference_frames: int = 4,
        lora_rank: int = 16,
        lora_alpha: int = 16,
        optimizer: OptimizerCallable = default_optimizer,
        shift: float = 3.0,
        seed: int = 0,
        dtype: str = "fp32",
        gradient_checkpointing: bool = False,
        cache_features: bool = True,
        cache_latents: bool = False,
        object_weight: float = 1.0,
        latent_cache_file: Path | None = None,
    ) -> None:
        super().__init__()
        # plain types only, so the .ckpt loads with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["optimizer", "tasks", "model_path", "mllm_path", "init_from"])
        self.hparams["tasks"] = dataclasses.asdict(tasks or TaskConfig())  # transfer rebuilds the task settings
        self.stage = stage
        self.paths = (model_path, mllm_path, init_from)
        self.task_config = tasks or TaskConfig()
        self.context_source = ("text" if stage == 1 else "mllm") if target_context == "auto" else target_context
        self.mllm_image_size = mllm_image_size
        self.num_reference_frames = num_reference_frames
        self.lora = (lora_rank, lora_alpha)
        self.optimizer_factory = optimizer
        self.shift = shift
        self.seed = seed
        self.dtype_name = dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.cache_features = cache_features
        self.cache_latents = cache_latents
        self.object_weight = object_weight
        self.latent_cache_file = latent_cache_file
        self.pipe: OmniTransferPipeline | None = None
        self.strict_loading = False

    def configure_model(self) -> None:
        """Build Wan + MLLM once (idempotent), load the previous stage, add LoRA for stage 3, set trainable groups."""
        if self.pipe is not None:
            return
        model_path, mllm_path, init_from = self.paths
        self.pipe = OmniTransferPipeline.load(
            model_path,
            mllm_path,
            use_mllm=True,
            tasks=self.task_config,
            mllm_image_size=self.mllm_image_size,
            num_reference_frames=self.num_reference_frames,
            dtype=self.dtype_name,
            seed=self.seed,
        )
        self.model = self.pipe.model
        if init_from is not None:
            load_weights(self.model, init_from)
        if self.stage == 3:
            self.model.aligner.add_lora(*self.lora)
        if self.gradient_checkpointing:
            self.model.transformer.enable_gradient_checkpointing()
        for param in set_stage_trainable(self.model, self.stage):
            # trainable weights stay fp32 beside a bf16 base (mixed precision): a bf16 weight at lr 1e-5 would
            # round most updates away; bf16-mixed autocast runs the matmuls in bf16 all the same
            param.data = param.data.float()

    def setup(self, stage: str) -> None:
        """Before fitting: build the model and cache what ``cache_features`` / ``cache_latents`` ask for."""
        if stage != "fit" or not (self.cache_features or self.cache_latents):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            log.warning("no DataModule to compute features from: the frozen encoders run every step")
            return
        self.configure_model()
        self.cache_encoder_features(datamodule.train_dataloader(), self.trainer.strategy.root_device)

    @torch.no_grad()
    def cache_encoder_features(self, batches: Iterable[dict[str, Any]], device: torch.device | None = None) -> None:
        """Compute every frozen-encoder output :meth:`compute_loss` will ask of ``batches`` once.

        With ``cache_features``, UMT5 and CLIP are replaced in ``pipe.wan`` by
        :class:`~effivmt.omnitransfer.encoders.FeatureCache` s holding the CLIP features of each target's and
        reference's first frame and the UMT5 features of each reference text (and of each prompt when the target
        context is UMT5), then freed; the MLLM is freed too when the target context is UMT5 (it is not used then).
        A second call can only serve inputs already cached: the encoders are gone. With ``cache_latents``,
        ``pipe.latent_cache`` keeps the VAE latents of each target, first-frame condition and reference; the VAE
        stays. ``device``: where the encoders run meanwhile.
        """
        self.configure_model()
        pipe, wan = self.pipe, self.pipe.wan
        caches = []
        for name in ("text_encoder", "image_encoder") if self.cache_features else ():
            part = getattr(wan, name)
            if part is not None:
                if not isinstance(part, FeatureCache):
                    setattr(wan, name, part := FeatureCache(part, name))
                caches.append(part.to(device or self.device))
        identity, stored = None, 0
        if self.cache_latents:
            wan.vae.to(device or self.device)
            pipe.latent_cache = pipe.latent_cache or FeatureCache(wan.vae, "vae")
            if self.latent_cache_file is not None:
                from effivmt.backbone.wan import model_identity

                identity = model_identity(self.paths[0], "i2v")
                stored = pipe.latent_cache.load(self.latent_cache_file, identity)
        rows = 0
        for batch in batches:  # what compute_loss encodes: target, first frame, references, contexts
            videos, prompts, target = batch["references"], list(batch["prompt"]), batch["target"]
            if self.cache_latents:
                pipe.encode_latents(target)
                pipe.first_frame_condition(target[:, :, 0], target.shape[2])
                for video in videos:
                    pipe.encode_latents(video)
            if not self.cache_features:
                rows += len(prompts)
                continue
            frames = [target[:, :, 0]] + [video[:, :, 0] for video in videos]
            texts = list(prompts) if self.context_source == "text" else []
            per_item = item_tasks([tuple(t) for t in batch["tasks"]], len(videos))
            ref_prompts = batch.get("reference_prompt") or [""] * len(prompts)
            for slot in range(len(videos)):
                texts += [ref_prompts[b] or self.model.tasks.templates[per_item[b][slot]] for b in range(len(prompts))]
            if wan.image_encoder is not None and self.model.transformer.config.image_dim is not None:
                for frame in frames:
                    encode_image(wan.image_encoder, wan.image_processor, frame)
            encode_text(wan.text_encoder, wan.tokenizer, texts)
            rows += len(prompts)
        for cache in caches:
            cache.release()
        if self.cache_features and self.context_source == "text" and self.model.aligner is not None:
            if self.model.aligner.mllm is not None:
                self.model.aligner.release_mllm()
        caches += [pipe.latent_cache] if self.cache_latents else []
        if identity is not None and len(pipe.latent_cache.entries) > stored:
            pipe.latent_cache.save(self.latent_cache_file, identity)
        kept = ", ".join(f"{c.name} {len(c.entries)} ({c.nbytes / 2**20:.1f} MiB)" for c in caches)
        log.info("cached frozen-encoder outputs of %d rows: %s", rows, kept)

    def resident_parameter_bytes(self) -> dict[str, int]:
        """Parameter bytes held for training, by part (a freed part is absent): the model's, then Wan's frozen ones."""
        aligner = self.model.aligner
        mllm = getattr(aligner, "mllm", None)
        parts = {"transformer": self.model.transformer, "mllm": mllm}
        parts |= {name: getattr(self.pipe.wan, name) for name in ("vae", "text_encoder", "image_encoder")}
        nbytes = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
        out = {name: nbytes(part.parameters()) for name, part in parts.items() if isinstance(part, torch.nn.Module)}
        if aligner is not None:  # the task queries and the connector
            own = {id(p) for p in mllm.parameters()} if mllm is not None else set()
            out["queries+connector"] = nbytes(p for p in aligner.parameters() if id(p) not in own)
        return out

    def on_fit_start(self) -> None:
        self.pipe.to(self.device)
        self.model.train()  # tiny/pretrained parts arrive in eval mode; dropout is 0 in Wan and Qwen2.5-VL anyway

    def trainable_names(self) -> list[str]:
        """Names of the parameters this stage trains."""
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss on the target tokens of one paired batch (see the module docstring)."""
        pipe, model = self.pipe, self.model
        target, videos = batch["target"].to(self.device), [r.to(self.device) for r in batch["references"]]
        tasks, prompts = [tuple(t) for t in batch["tasks"]], list(batch["prompt"])
        first = target[:, :, 0]
        x0 = pipe.encode_latents(target)
        cond, image = pipe.encode_first_frame(first, target.shape[2])
        refs = pipe.prepare_references(videos, tasks, batch.get("reference_prompt"))
        context = pipe.target_context(first, videos, prompts, refs.tasks, self.context_source)
        dtype = model.transformer.dtype
        cast = lambda x: None if x is None else x.to(dtype)  # noqa: E731
        branch_trains = any(p.requires_grad for p in model.transformer.parameters())
        with torch.set_grad_enabled(branch_trains and torch.is_grad_enabled()):
            record = model.encode_references(
                [cast(r) for r in refs.inputs],
                refs.tasks,
                [cast(c) for c in refs.contexts],
                [cast(i) for i in refs.images],
                model.grid(x0),
            )
        sigma = sample_sigmas(x0.shape[0], self.shift, generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        x_t = add_noise(x0, noise, sigma)
        pred = model(cast(target_input(x_t, cond)), timesteps_from_sigmas(sigma), cast(context), cast(image), record)
        weight = None
        if self.object_weight != 1.0:
            weight = 1.0 + (self.object_weight - 1.0) * latent_object_mask(target).to(pred)
        return denoising_loss(pred, velocity_target(x0, noise), weight)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = step_generator(self, batch_idx, self.seed)  # its own draw per accumulated micro-batch
        loss = self.compute_loss(batch, generator)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Only the trainable groups (DiT blocks, queries, connector, MLLM LoRA): frozen encoders are not saved."""
        if self.pipe is None:
            return {}
        return {f"model.{k}": v for k, v in weights_state(self.model).items()}

    def load_state_dict(self, state_dict, strict: bool = False, assign: bool = False):
        """Load group tensors (e.g. on resume); tolerates the absence of frozen weights by design."""
        own = {f"model.{k}": p for g in parameter_groups(self.model).values() for k, p in g.items()}
        with torch.no_grad():
            for key, value in state_dict.items():
                if key in own:
                    own[key].copy_(value.to(own[key].dtype))
        return None
