"""Stage execution for ``effivmt run``: Lightning trainers, skip/resume, adapters on disk, the summary.

``run.py`` holds the command's signature; this module holds what it does, so each piece stays small.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from diffusers.training_utils import cast_training_params
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from effivmt.args import GenerateArgs, HeadsArgs, StageArgs, TemporalArgs, TrainerArgs
from effivmt.backbone.encode import decode_latents
from effivmt.callbacks import SampleFramesLogger, frame_strip, log_image
from effivmt.data.cache import ClipCache, ClipDataModule, build_clip_cache
from effivmt.data.video import write_video
from effivmt.generate import sample_name, synthesize
from effivmt.lora import HeadGroupLoraConfig
from effivmt.manifest import RunManifest
from effivmt.strategies import FiniteGuard, build_strategy, checkpoint_plugins, is_global_zero

log = logging.getLogger("effivmt")


def make_predict_trainer(args: TrainerArgs) -> L.Trainer:
    """A trainer for forward-only passes (head classification): no logger, no checkpoints."""
    return L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=args.progress_bar,
    )


def make_trainer(
    args: TrainerArgs, stage: StageArgs, out: Path, name: str, callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    """The Lightning trainer of one LoRA stage: TensorBoard under ``logs/<name>``, ``checkpoints/<name>/last.ckpt``."""
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints" / name,
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=1,
        every_n_train_steps=stage.checkpoint_every,
    )
    strategy = build_strategy(args)
    guard = FiniteGuard(name, out / "checkpoints" / name)  # a NaN/inf stops the stage before it is checkpointed
    return L.Trainer(
        max_steps=stage.max_steps,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=strategy,
        precision=args.precision,
        plugins=checkpoint_plugins(strategy),
        logger=TensorBoardLogger(save_dir=out / "logs", name=name, version="", default_hp_metric=False),
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step"), guard, *(callbacks or [])],
        log_every_n_steps=stage.log_every,
        accumulate_grad_batches=stage.accumulate_grad_batches,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_progress_bar=args.progress_bar,
        default_root_dir=out,
        max_epochs=-1,
    )


def train_stage(
    name: str,
    module: L.LightningModule,
    cache: ClipCache,
    stage: StageArgs,
    trainer_args: TrainerArgs,
    out: Path,
    callbacks: list[L.Callback] | None = None,
) -> None:
    """Fit ``module`` for ``stage.max_steps`` steps, resuming from ``last.ckpt`` when one exists."""
    last = out / "checkpoints" / name / "last.ckpt"
    if last.exists():
        log.info(f"{name}: resuming from {last}")
    log.info(f"stage {name}: {stage.max_steps} steps")
    trainer = make_trainer(trainer_args, stage, out, name, callbacks)
    datamodule = ClipDataModule(cache, stage.max_steps * stage.accumulate_grad_batches)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)


def _offload(components, device: str) -> None:
    """Move the frozen VAE and text encoder (only needed for heads, caching and generation) to ``device``."""
    for part in (components.vae, components.text_encoder):
        part.to(device)
    if device == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand the freed blocks back before the transformer trains


def _encode_device(args: TrainerArgs) -> str:
    """This process's GPU when the trainer uses one (``LOCAL_RANK``, or ``SLURM_LOCALID`` under srun), else the CPU."""
    import os

    if torch.cuda.is_available() and args.accelerator in ("auto", "gpu", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', os.environ.get('SLURM_LOCALID', 0)))}"
    return "cpu"


def _head_scores(out, manifest, selected, frames, components, clip, clip_prompt, heads_args, trainer_args, device):
    """Stage 1, or the labels of a finished one from ``heads.json``."""
    from effivmt.heads import HeadScores
    from effivmt.run import _classify

    heads_json = out / "heads.json"
    if heads_json.exists() and (manifest.done("heads") or "heads" not in selected):
        log.info("heads: reusing heads.json")
        scores = HeadScores.from_json(json.loads(heads_json.read_text()))
    else:
        _offload(components, device)
        with manifest.stage("heads"):
            scores = _classify(out, frames, components, clip_prompt, heads_args, trainer_args, clip)
    n_spatial, n_temporal = scores.counts()
    manifest.record("heads", spatial=n_spatial, temporal=n_temporal)
    return scores


def _clip_cache(out: Path, frames: torch.Tensor, components, clip_prompt: str, device: str) -> ClipCache:
    """Latents and prompt embeddings, encoded once per clip and kept in ``cache/clip.safetensors``."""
    path = out / "cache" / "clip.safetensors"
    if path.exists():
        return ClipCache.load(path)
    _offload(components, device)
    cache = build_clip_cache(components, frames, clip_prompt)
    cache.save(path)
    return cache


def _train_adapter(name, scores, cache, components, lora, settings, trainer_args, out, seed) -> None:
    """Add the ``name`` head-group adapter and fit it (the spatial or temporal stage)."""
    from effivmt.lora import adapter_names, add_head_group_adapter
    from effivmt.modules.spatial import SpatialLoRAModule
    from effivmt.modules.temporal import TemporalLoRAModule

    transformer = components.transformer
    with torch.random.fork_rng(devices=[]):  # the same initial adapter in a resumed run and on every rank
        torch.manual_seed(seed + 1 + (name == "temporal"))
        add_head_group_adapter(transformer, name, scores.labels, name, lora)
    cast_training_params(transformer, torch.float32)  # fp32 adapter weights under a bf16 base model
    common = dict(
        optimizer=settings.optimizer,
        lr_scheduler=settings.lr_scheduler,
        shift=settings.shift,
        seed=seed,
        gradient_checkpointing=trainer_args.gradient_checkpointing,
        active_adapters=adapter_names(transformer),
    )
    if name == "spatial":
        module = SpatialLoRAModule(transformer, **common)
    else:
        module = TemporalLoRAModule(
            transformer,
            sampler=settings.sampler,
            motion_weight=settings.motion_weight,
            position_mode=settings.position_mode,
            **common,
        )
    if settings.max_steps > 0:
        _offload(components, "cpu")
        probe = SampleFramesLogger(
            cache.video_latents, cache.prompt_embeds, lambda z: decode_latents(components, z), settings.sample_every
        )
        train_stage(name, module, cache, settings, trainer_args, out, [probe])


def run_stages(
    out: Path,
    manifest: RunManifest,
    selected: list[str],
    frames: torch.Tensor,
    components,
    clip: Path,
    clip_prompt: str,
    prompt: str,
    heads_args: HeadsArgs,
    lora: HeadGroupLoraConfig,
    spatial: StageArgs,
    temporal: TemporalArgs,
    generate: GenerateArgs,
    trainer_args: TrainerArgs,
    seed: int,
) -> Path:
    """Run the selected stages in order, skipping those already done; returns the run folder."""
    from effivmt.attention import install_processors
    from effivmt.lora import adapter_names, export_lora, load_peft_adapter, save_peft_adapter

    transformer = components.transformer
    # the same modules whether or not this process ran the heads stage: DDP ranks > 0 and resumed runs skip it,
    # and DDP hangs when the ranks' buffers differ (the heads stage swaps WanRotaryPosEmbed for PositionalRope)
    install_processors(transformer)
    # the frozen VAE and text encoder work on the accelerator (heads, cache, generation) and wait on the CPU meanwhile
    device = _encode_device(trainer_args)
    scores = _head_scores(
        out, manifest, selected, frames, components, clip, clip_prompt, heads_args, trainer_args, device
    )
    cache = _clip_cache(out, frames, components, clip_prompt, device)

    counts = dict(zip(("spatial", "temporal"), scores.counts()))
    for name, settings in (("spatial", spatial), ("temporal", temporal)):
        folder = out / "adapters" / name
        if folder.exists():
            load_peft_adapter(transformer, folder, name)
            log.info(f"{name}: reusing {folder}")
        elif name in selected:
            with manifest.stage(name):
                if counts[name] == 0:
                    log.warning(f"{name}: no {name} heads at alpha {scores.alpha}; stage skipped, no {name} adapter")
                    continue
                _train_adapter(name, scores, cache, components, lora, settings, trainer_args, out, seed)
                if is_global_zero():  # other ranks hold the same weights; they only train
                    save_peft_adapter(transformer, name, folder)
    if not is_global_zero():
        return out

    trained = adapter_names(transformer)
    merged = out / "adapters" / "pytorch_lora_weights.safetensors"
    if "export" in selected and trained and not (manifest.done("export") and merged.exists()):
        scales = {"spatial": generate.scale_spatial, "temporal": generate.scale_temporal}
        with manifest.stage("export"):
            export_lora(out, "diffusers", scales={n: scales[n] for n in trained}, merge=True, names=trained, out=merged)

    target = out / "samples" / sample_name(prompt, generate.seed)
    if "generate" in selected and not (manifest.done("generate") and target.exists()):
        _offload(components, device)
        with manifest.stage("generate"):
            num_frames, height, width = frames.shape[1:]
            video = synthesize(components, prompt, generate, num_frames, height, width, device=device)
            write_video(target, video, fps=generate.fps)
        log_image(out / "logs", "generate", "samples/generated", frame_strip(video))
        manifest.record("generate", path=str(target))

    print_summary(out, manifest)
    return out


def print_summary(out: Path, manifest: RunManifest) -> None:
    """Where each output lies, per-stage times, the TensorBoard command and the head split."""
    stages = manifest.data["stages"]
    lines = [f"effivmt run finished: {out}"]
    if "heads" in stages:
        h = stages["heads"]
        lines.append(
            f"  heads     {h.get('spatial', '?')} spatial / {h.get('temporal', '?')} temporal   "
            f"{out / 'heads.json'}, {out / 'heads.png'}"
        )
    for name in ("heads", "spatial", "temporal", "export", "generate"):
        if name in stages and "wall_s" in stages[name]:
            lines.append(f"  {name:<9} {stages[name]['wall_s']:>8.1f} s  ({stages[name].get('status')})")
    lines.append(f"  adapters  {out / 'adapters'}")
    if "path" in stages.get("generate", {}):
        lines.append(f"  sample    {stages['generate']['path']}")
    lines.append(f"  logs      tensorboard --logdir {out / 'logs'}")
    print("\n".join(lines), flush=True)
