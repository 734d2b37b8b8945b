"""The EffiVMT commands: ``effivmt run`` and ``effivmt heads``, each a typed function whose signature is its recipe.

This is the top of the method (``heads`` is :func:`classify`): a command turns its arguments into one
:class:`~effivmt.vmt.plan.RunPlan` and hands it to the per-clip run (:func:`effivmt.vmt.run.run_clip`), or hands
the clip list to the many-clips runner (:func:`effivmt.vmt.many_clips.run_clips`), which makes a plan per row.
"""

from __future__ import annotations

from pathlib import Path

from effivmt.errors import ConfigError
from effivmt.io import AnyPath, as_path
from effivmt.lora import HeadGroupLoraConfig
from effivmt.recipe import ParsedRecipe
from effivmt.training.args import TrainerArgs
from effivmt.vmt.plan import (
    GenerateArgs,
    HeadsArgs,
    LoraStageArgs,
    ModelArgs,
    RunPlan,
    Stage,
    TemporalArgs,
    VideoArgs,
)


def run(
    clip: AnyPath | None = None,
    clip_prompt: str = "",
    prompt: str | None = None,
    out: str = "runs/effivmt",
    model: ModelArgs = ModelArgs(),
    video: VideoArgs = VideoArgs(),
    heads: HeadsArgs = HeadsArgs(),
    lora: HeadGroupLoraConfig = HeadGroupLoraConfig(),
    spatial: LoraStageArgs = LoraStageArgs(),
    temporal: TemporalArgs = TemporalArgs(),
    generate: GenerateArgs = GenerateArgs(),
    trainer: TrainerArgs = TrainerArgs(),
    stages: list[Stage] | None = None,
    seed: int = 0,
    manifest: AnyPath | None = None,
    shard: str | None = None,
    parsed: ParsedRecipe | None = None,
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
        parsed: the recipe as the CLI read it (recorded in ``run.json``; manifest rows build on it). From
            Python, a ``--manifest`` run needs it: ``ParsedRecipe.from_file(run, RECIPE)``.
    """
    if manifest is not None:
        from effivmt.vmt.many_clips import run_clips

        if parsed is None:
            raise ConfigError(
                "run(manifest=...) from Python needs the base recipe",
                "pass parsed=ParsedRecipe.from_file(run, RECIPE), or use the CLI",
            )
        return run_clips(as_path(manifest), as_path(out), parsed, shard)
    if shard is not None:
        raise ConfigError("--shard needs --manifest", "pass --manifest clips.jsonl, or drop --shard")
    from effivmt.vmt.run import run_clip

    plan = RunPlan.from_arguments(
        clip=clip,
        clip_prompt=clip_prompt,
        prompt=prompt,
        out=out,
        model=model,
        video=video,
        heads=heads,
        lora=lora,
        spatial=spatial,
        temporal=temporal,
        generate=generate,
        trainer=trainer,
        stages=stages,
        seed=seed,
        config=None if parsed is None else parsed.dump(),
    )
    return run_clip(plan)


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
    from effivmt.vmt.run import classify_only

    plan = RunPlan.from_arguments(
        clip=clip, clip_prompt=clip_prompt, out=out, model=model, video=video, heads=heads, trainer=trainer
    )
    return classify_only(plan)


__all__ = ["classify", "run"]
