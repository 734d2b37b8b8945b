"""One clip's EffiVMT run: heads -> spatial LoRA -> temporal LoRA -> export -> generate, into one folder.

:func:`run_clip` takes a :class:`~effivmt.vmt.plan.RunPlan` and does everything for one clip; it calls down into
stage 1 (:mod:`effivmt.vmt.heads`), the stage modules, the shared trainer (:mod:`effivmt.training`) and the
LoRA formats, never up. Each stage's result is written under a temporary name and renamed when complete; a
re-run skips finished stages and resumes an interrupted training stage from ``checkpoints/<stage>/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from effivmt.errors import ConfigError
from effivmt.vmt.plan import ModelArgs, RunPlan, TemporalArgs, VideoArgs

log = logging.getLogger("effivmt")


# ------------------------------------------------------------------------------------------------ inputs
@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Hold what C libraries print straight to file descriptor 2 (FFmpeg's and decord's decoder complaints).

    A corrupt clip makes them print two lines before our own error; the user should see one. What they said
    goes to the debug log (``--debug`` shows it).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace").strip()
            if text:
                log.debug(f"decoder: {text}")


def read_clip(clip: Path | None, video: VideoArgs):
    """The clip as the recipe's ``video`` group asks: ``(frames (3, F, H, W) in [-1, 1], ClipInfo)``.

    The one place a run, ``effivmt heads`` and a manifest row load their clip.
    """
    from effivmt.data.video import load_clip

    if clip is None:
        raise ConfigError("no clip given", "pass --clip PATH or set clip: in the recipe")
    with _native_stderr_to_log():
        frames, info = load_clip(
            clip,
            num_frames=video.num_frames,
            height=video.height,
            width=video.width,
            fps=video.fps,
            frame_mode=video.frame_mode,
            allow_fewer=video.allow_fewer,
        )
    for note in info.notes:
        log.info(f"clip: {note}")
    return frames, info


def load_model(model: ModelArgs):
    """Wan's components from ``model.path`` (or the embedded default)."""
    from effivmt.backbone import load_wan
    from effivmt.io import as_path

    return load_wan(as_path(model.path), dtype=model.dtype, seed=model.seed)


def _check_sampler(temporal: TemporalArgs, frames: torch.Tensor, info) -> None:
    """A sparse sample longer than the clip fails now, not after the heads and spatial stages."""
    from effivmt.data.samplers import latent_frames

    count = getattr(temporal.sampler, "count", None)
    if count is None:
        return
    try:
        count(latent_frames(frames.shape[1]))
    except ConfigError as err:
        raise ConfigError(f"{info.path.name} gives {frames.shape[1]} frames: {err.message}", err.hint) from None


def _offload(components, device: str) -> None:
    """Move the frozen VAE and text encoder (only needed for heads, caching and generation) to ``device``."""
    for part in (components.vae, components.text_encoder):
        part.to(device)
    if device == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand the freed blocks back before the transformer trains


def _encode_device(accelerator: str) -> str:
    """This process's GPU when the trainer uses one (``LOCAL_RANK``, or ``SLURM_LOCALID`` under srun), else the CPU."""
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', os.environ.get('SLURM_LOCALID', 0)))}"
    return "cpu"


# ------------------------------------------------------------------------------------------------ stages
def _head_scores(plan: RunPlan, record, frames, components, device: str):
    """Stage 1, or the labels of a finished one from ``heads.json``."""
    from effivmt.training.trainer import predict_trainer
    from effivmt.vmt.heads import HeadScores, classify_clip

    heads_json = plan.out / "heads.json"
    if heads_json.exists() and (record.done("heads") or "heads" not in plan.stages):
        log.info("heads: reusing heads.json")
        scores = HeadScores.from_json(json.loads(heads_json.read_text()))
    else:
        _offload(components, device)
        with record.stage("heads"):
            trainer = predict_trainer(plan.trainer)
            scores = classify_clip(plan.out, components, frames, plan.clip_prompt, plan.heads, trainer, plan.clip)
    n_spatial, n_temporal = scores.counts()
    record.record("heads", spatial=n_spatial, temporal=n_temporal)
    return scores


def _clip_cache(out: Path, frames: torch.Tensor, components, clip_prompt: str, device: str):
    """Latents and prompt embeddings, encoded once per clip and kept in ``cache/clip.safetensors``."""
    from effivmt.data.cache import ClipCache, build_clip_cache

    path = out / "cache" / "clip.safetensors"
    if path.exists():
        return ClipCache.load(path)
    _offload(components, device)
    cache = build_clip_cache(components, frames, clip_prompt)
    cache.save(path)
    return cache


def _train_adapter(plan: RunPlan, name: str, scores, cache, components) -> None:
    """Add the ``name`` head-group adapter and fit it (the spatial or temporal stage)."""
    from diffusers.training_utils import cast_training_params

    from effivmt.backbone.encode import decode_latents
    from effivmt.data.cache import ClipDataModule
    from effivmt.lora import adapter_names, add_head_group_adapter
    from effivmt.training.callbacks import SampleFramesLogger
    from effivmt.training.trainer import fit_stage
    from effivmt.vmt.spatial import SpatialLoRAModule
    from effivmt.vmt.temporal import TemporalLoRAModule

    settings = getattr(plan, name)
    transformer = components.transformer
    with torch.random.fork_rng(devices=[]):  # the same initial adapter in a resumed run and on every rank
        torch.manual_seed(plan.seed + 1 + (name == "temporal"))
        # without the split (ablation) every head is in this stage's group
        labels = scores.labels if plan.heads.split else [[name] * len(row) for row in scores.labels]
        add_head_group_adapter(transformer, name, labels, name, plan.lora)
    cast_training_params(transformer, torch.float32)  # fp32 adapter weights under a bf16 base model
    common = dict(
        optimizer=settings.optimizer,
        lr_scheduler=settings.lr_scheduler,
        shift=settings.shift,
        timestep_range=settings.timestep_range,
        seed=plan.seed,
        gradient_checkpointing=plan.trainer.gradient_checkpointing,
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

        def decode_where_it_is(z: torch.Tensor) -> torch.Tensor:
            """The probe's few latent frames decoded on their own device; the VAE goes back to the CPU after."""
            home = next(components.vae.parameters()).device
            components.vae.to(z.device)
            try:
                return decode_latents(components, z).cpu()
            finally:
                components.vae.to(home)

        probe = SampleFramesLogger(cache.video_latents, cache.prompt_embeds, decode_where_it_is, settings.sample_every)
        datamodule = ClipDataModule(cache, settings.max_steps * settings.accumulate_grad_batches)
        fit_stage(name, module, datamodule, settings, plan.trainer, plan.out, [probe])


def _adapters(plan: RunPlan, record, scores, cache, components) -> None:
    """Stages 2 and 3: reuse an adapter folder that is there, train the selected ones that are not."""
    from effivmt.lora import load_peft_adapter, save_peft_adapter
    from effivmt.training.strategies import is_global_zero

    transformer = components.transformer
    counts = dict(zip(("spatial", "temporal"), scores.counts()))
    for name in ("spatial", "temporal"):
        folder = plan.out / "adapters" / name
        if folder.exists():
            load_peft_adapter(transformer, folder, name)
            log.info(f"{name}: reusing {folder}")
        elif name in plan.stages:
            with record.stage(name):
                if counts[name] == 0:
                    log.warning(f"{name}: no {name} heads at alpha {scores.alpha}; stage skipped, no {name} adapter")
                    continue
                _train_adapter(plan, name, scores, cache, components)
                if is_global_zero():  # other ranks hold the same weights; they only train
                    save_peft_adapter(transformer, name, folder)


#: What the export stage writes into ``adapters/``: one merged LoRA per tool, at the generation scales.
#: diffusers' ``load_lora_weights(folder)`` finds the first by name; ComfyUI needs the second's key layout.
RUN_EXPORTS: dict[str, str] = {"diffusers": "pytorch_lora_weights.safetensors", "comfy": "comfyui_lora.safetensors"}


def _export(plan: RunPlan, record, transformer) -> None:
    """The run's adapters as one merged LoRA per tool (:data:`RUN_EXPORTS`) at the scales the run generates with."""
    from effivmt.lora import adapter_names, export_lora

    trained = adapter_names(transformer)
    files = {fmt: plan.out / "adapters" / name for fmt, name in RUN_EXPORTS.items()}
    if "export" in plan.stages and trained and not (record.done("export") and all(f.exists() for f in files.values())):
        scales = {"spatial": plan.generate.scale_spatial, "temporal": plan.generate.scale_temporal}
        chosen = {n: scales[n] for n in trained}
        with record.stage("export"):
            for fmt, target in files.items():
                export_lora(plan.out, fmt, scales=chosen, merge=True, names=trained, out=target)
        record.record("export", scales=chosen, files=[str(f) for f in files.values()])


def _generate(plan: RunPlan, record, frames, components, device: str, clip_fps: float) -> None:
    """Render the prompt with the trained adapters into ``samples/<prompt>-s<seed>.mp4``, at ``generate.fps`` or
    else the rate the clip was trained at (``clip_fps``)."""
    from effivmt.data.video import write_video
    from effivmt.lora import adapter_names, set_adapter_scales
    from effivmt.training.callbacks import frame_strip, log_image
    from effivmt.vmt.generate import sample_name, synthesize

    target = plan.out / "samples" / sample_name(plan.prompt, plan.generate.seed)
    if "generate" in plan.stages and not (record.done("generate") and target.exists()):
        _offload(components, device)
        with record.stage("generate"):
            scales = {"spatial": plan.generate.scale_spatial, "temporal": plan.generate.scale_temporal}
            trained = adapter_names(components.transformer)
            if trained:
                set_adapter_scales(components.transformer, {n: scales[n] for n in trained})
            num_frames, height, width = frames.shape[1:]
            video = synthesize(components, plan.prompt, plan.generate, num_frames, height, width, device=device)
            write_video(target, video, fps=plan.generate.fps or clip_fps)
        log_image(plan.out / "logs", "generate", "samples/generated", frame_strip(video))
        record.record("generate", path=str(target))


# ------------------------------------------------------------------------------------------------ the run
def _prepare(plan: RunPlan):
    """Check the plan and read the clip; a bad input fails here, before anything is written into OUT.

    Returns:
        ``(frames, info)``.
    """
    plan.check()
    frames, info = read_clip(plan.clip, plan.video)
    if "temporal" in plan.stages:
        _check_sampler(plan.temporal, frames, info)
    return frames, info


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``OUT/run.lock`` (``flock``) for the whole run: a second run into the same folder is refused at once.

    Only global rank 0 locks: the other ranks of a multi-process stage re-run the command into the same folder.
    """
    import fcntl

    from effivmt.training.strategies import is_global_zero

    if not is_global_zero():
        yield
        return
    with open(out / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = (handle.read().split() or ["?"])[-1]
            raise ConfigError(
                f"{out} is in use by another effivmt run (pid {holder})",
                "wait for it to finish, or choose another --out",
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recorded(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_clip(plan: RunPlan) -> Path:
    """Run the plan's stages for its clip in order, skipping those already done; returns the run folder.

    A folder whose kept stages were made with other inputs is refused (:mod:`effivmt.vmt.fingerprint`), and a
    folder another run is writing into is refused (``run.lock``); both before ``run.json`` is touched.
    """
    from effivmt.attention import install_processors
    from effivmt.training.record import RunRecord
    from effivmt.training.strategies import is_global_zero
    from effivmt.vmt.fingerprint import check_reuse, file_digest, stage_inputs

    out = plan.out
    frames, info = _prepare(plan)
    inputs = stage_inputs(plan, file_digest(info.path))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {out}: {err.strerror}", "choose a writable --out") from err
    with _locked(out):
        stale = check_reuse(out, _recorded(out), inputs)
        record = RunRecord(out, plan.config)
        record.data["inputs"] = inputs
        for name in stale:  # export/generate made with other inputs: run them again
            record.data["stages"].get(name, {})["status"] = "stale"
        # the scales generation uses, and what `effivmt export --merge` defaults to: one default, written down
        record.data["adapter_scales"] = {
            "spatial": plan.generate.scale_spatial,
            "temporal": plan.generate.scale_temporal,
        }
        clip = {"path": str(info.path), "frames": info.num_frames, "size": list(info.size), "fps": info.fps}
        record.record("clip", **clip, notes=info.notes)
        components = load_model(plan.model)
        # the same modules whether or not this process ran the heads stage: DDP ranks > 0 and resumed runs skip it,
        # and DDP hangs when the ranks' buffers differ (the heads stage swaps WanRotaryPosEmbed for PositionalRope)
        install_processors(components.transformer)
        # the frozen VAE and text encoder work on the accelerator (heads, cache, generation), wait on the CPU meanwhile
        device = _encode_device(plan.trainer.accelerator)
        scores = _head_scores(plan, record, frames, components, device)
        cache = _clip_cache(out, frames, components, plan.clip_prompt, device)
        _adapters(plan, record, scores, cache, components)
        if not is_global_zero():
            return out
        _export(plan, record, components.transformer)
        _generate(plan, record, frames, components, device, info.fps)
        print_summary(out, record)
    return out


def classify_only(plan: RunPlan) -> Path:
    """``effivmt heads``: stage 1 alone into ``plan.out`` (``heads.json``, ``heads.png``); returns ``heads.json``."""
    from effivmt.backbone.wan import check_model_path
    from effivmt.training.trainer import predict_trainer
    from effivmt.vmt.heads import classify_clip

    check_model_path(plan.model.path)
    frames, _ = read_clip(plan.clip, plan.video)
    components = load_model(plan.model)
    classify_clip(plan.out, components, frames, plan.clip_prompt, plan.heads, predict_trainer(plan.trainer), plan.clip)
    return plan.out / "heads.json"


def print_summary(out: Path, record) -> None:
    """Where each output lies, per-stage times, the TensorBoard command and the head split."""
    stages = record.data["stages"]
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


__all__ = ["classify_only", "load_model", "print_summary", "read_clip", "run_clip"]
