"""The per-clip EffiVMT pipeline behind ``effivmt run`` and ``effivmt heads``.

Stages, in order: ``heads`` (classify every attention head) -> ``spatial`` (LoRA on spatial heads, single
frames) -> ``temporal`` (LoRA on temporal heads, sparse frames, adaptive RoPE, motion loss) -> ``export``
-> ``generate``. Each stage's result is written under a temporary name and renamed when complete; a
re-run skips finished stages and resumes an interrupted training stage from ``checkpoints/<stage>/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Literal

from effivmt.args import (
    AnyPath,
    GenerateArgs,
    HeadsArgs,
    ModelArgs,
    StageArgs,
    TemporalArgs,
    TrainerArgs,
    VideoArgs,
    as_path,
)
from effivmt.errors import ConfigError, EffivmtError
from effivmt.io import write_json_atomic
from effivmt.lora import HeadGroupLoraConfig
from effivmt.manifest import RESOLVED_CONFIG

log = logging.getLogger("effivmt")

Stage = Literal["heads", "spatial", "temporal", "export", "generate"]
STAGES: tuple[str, ...] = ("heads", "spatial", "temporal", "export", "generate")


def _config_snapshot(**groups) -> dict | str:
    resolved = RESOLVED_CONFIG.get()
    if resolved is not None:
        return resolved
    return {k: (asdict(v) if is_dataclass(v) else v) for k, v in groups.items()}


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


def _load_clip(clip, video: VideoArgs):
    from effivmt.data.video import load_clip

    path = as_path(clip)
    if path is None:
        raise ConfigError("no clip given", "pass --clip PATH or set clip: in the recipe")
    with _native_stderr_to_log():
        frames, info = load_clip(
            path,
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


def _check_model(model: ModelArgs) -> None:
    """A folder that is not Wan fails before the clip is decoded and anything is written."""
    from effivmt.backbone.wan import check_wan_folder

    if model.path is not None:
        check_wan_folder(as_path(model.path))


def _load_inputs(clip, model: ModelArgs, video: VideoArgs):
    from effivmt.backbone import load_wan

    _check_model(model)
    frames, info = _load_clip(clip, video)
    components = load_wan(as_path(model.path), dtype=model.dtype, seed=model.seed)
    return frames, info, components


def _check_sampler(temporal: TemporalArgs, frames, info) -> None:
    """A sparse sample longer than the clip fails now, not after the heads and spatial stages."""
    from effivmt.data.samplers import latent_frames

    count = getattr(temporal.sampler, "count", None)
    if count is None:
        return
    try:
        count(latent_frames(frames.shape[1]))
    except ConfigError as err:
        raise ConfigError(f"{info.path.name} gives {frames.shape[1]} frames: {err.message}", err.hint) from None


def _write_heads(out: Path, scores, clip: Path) -> None:
    from effivmt.callbacks import log_image
    from effivmt.viz import figure_to_array, head_map_figure, save_figure

    write_json_atomic(out / "heads.json", scores.to_json(clip=str(clip)))
    figure = head_map_figure(scores.spatial, scores.temporal, scores.labels, scores.alpha, scores.rule)
    save_figure(figure, out / "heads.png")
    log_image(out / "logs", "heads", "heads/map", figure_to_array(figure))


def _classify(out, frames, components, clip_prompt, heads_args: HeadsArgs, trainer_args: TrainerArgs, clip):
    from effivmt.heads import score_heads
    from effivmt.training import make_predict_trainer

    scores = score_heads(
        components,
        frames,
        [clip_prompt, *(heads_args.prompts or [])],
        heads_args.timesteps,
        heads_args.alpha,
        heads_args.rule,
        heads_args.chunk_size,
        heads_args.num_queries,
        trainer=make_predict_trainer(trainer_args),
    )
    _write_heads(out, scores, clip)
    n_sp, n_t = scores.counts()
    log.info(f"heads: {n_sp} spatial / {n_t} temporal (alpha {scores.alpha}, rule {scores.rule})")
    return scores


def classify(
    clip: AnyPath,
    clip_prompt: str = "",
    out: str = "heads",
    model: ModelArgs = ModelArgs(),
    video: VideoArgs = VideoArgs(),
    heads: HeadsArgs = HeadsArgs(),
    trainer: TrainerArgs = TrainerArgs(),
) -> Path:
    """Classify the attention heads of Wan on a clip: writes OUT/heads.json and OUT/heads.png.

    Args:
        clip: the video whose motion you want (mp4, any length, fps, resolution).
        clip_prompt: a caption of the clip; scores are averaged over it and ``heads.prompts``.
        out: output folder.
        model: which Wan to load.
        video: frame count, size and fps the clip is brought to.
        heads: alpha, rule, timesteps, chunking.
        trainer: accelerator / precision for the forward passes.
    """
    out_dir = as_path(out)
    frames, _, components = _load_inputs(clip, model, video)
    _classify(out_dir, frames, components, clip_prompt, heads, trainer, as_path(clip))
    return out_dir / "heads.json"


def run(
    clip: AnyPath | None = None,
    clip_prompt: str = "",
    prompt: str | None = None,
    out: str = "runs/effivmt",
    model: ModelArgs = ModelArgs(),
    video: VideoArgs = VideoArgs(),
    heads: HeadsArgs = HeadsArgs(),
    lora: HeadGroupLoraConfig = HeadGroupLoraConfig(),
    spatial: StageArgs = StageArgs(),
    temporal: TemporalArgs = TemporalArgs(),
    generate: GenerateArgs = GenerateArgs(),
    trainer: TrainerArgs = TrainerArgs(),
    stages: list[Stage] | None = None,
    seed: int = 0,
    manifest: AnyPath | None = None,
    shard: str | None = None,
) -> Path:
    """Learn a clip's motion and render it with a new prompt (heads -> spatial LoRA -> temporal LoRA -> video).

    Args:
        clip: the reference video (recipe paths are relative to the recipe file, CLI paths to the cwd).
        clip_prompt: a caption of the reference clip, used for head scores and both training stages.
        prompt: the new appearance to render with the clip's motion (default: the clip caption).
        out: run folder; re-running into it skips finished stages and resumes interrupted ones.
        model: which Wan to load.
        video: frame count, size and fps of training.
        heads: stage 1 settings.
        lora: rank, alpha, dropout, target modules and layers of both head-group adapters.
        spatial: stage 2 settings (steps, optimizer, checkpoints).
        temporal: stage 3 settings (+ sampler, motion loss weight, RoPE positions).
        generate: generation settings (steps, guidance, adapter scales).
        trainer: Lightning settings (accelerator, devices, strategy, precision, gradient checkpointing).
        stages: run only these stages (default: all).
        seed: seed of the training randomness (frames, noise levels, noise).
        manifest: a JSON-lines file of clips, one run each into OUT/<id>/ (rows: clip, clip_prompt, prompt,
            overrides; see docs/scaling.md); finished rows are skipped, failures go to OUT/failures.jsonl.
        shard: ``i/n``: run only the manifest rows whose index % n == i (SLURM arrays, several machines).
    """
    from effivmt.backbone import load_wan
    from effivmt.strategies import RankZeroManifest, build_strategy
    from effivmt.training import run_stages

    out_dir = as_path(out)
    if manifest is not None:
        from effivmt.batch import run_manifest

        return run_manifest(as_path(manifest), out_dir, shard)
    if shard is not None:
        raise ConfigError("--shard needs --manifest", "pass --manifest clips.jsonl, or drop --shard")
    selected = list(stages or STAGES)
    unknown = sorted(set(selected) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}", f"choose from {list(STAGES)}")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {out_dir}: {err.strerror}", "choose a writable --out") from err
    try:  # bad input fails here, before anything is written into OUT
        build_strategy(trainer)  # an unknown strategy, or DeepSpeed without deepspeed
        _check_model(model)
        frames, info = _load_clip(clip, video)
        if "temporal" in selected:
            _check_sampler(temporal, frames, info)
    except EffivmtError:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    config = _config_snapshot(
        clip=str(clip),
        clip_prompt=clip_prompt,
        prompt=prompt,
        model=model,
        video=video,
        heads=heads,
        lora=lora,
        spatial=spatial,
        temporal=temporal,
        generate=generate,
        trainer=trainer,
        stages=selected,
        seed=seed,
    )
    run_json = RankZeroManifest(out_dir, config)
    run_json.record(
        "clip",
        **{
            "path": str(info.path),
            "frames": info.num_frames,
            "size": list(info.size),
            "fps": info.fps,
            "notes": info.notes,
        },
    )
    components = load_wan(as_path(model.path), dtype=model.dtype, seed=model.seed)
    return run_stages(
        out_dir,
        run_json,
        selected,
        frames,
        components,
        as_path(clip),
        clip_prompt,
        prompt or clip_prompt,
        heads,
        lora,
        spatial,
        temporal,
        generate,
        trainer,
        seed,
    )


__all__ = ["STAGES", "classify", "run"]
