"""Run OmniTransfer's training stages from a recipe: ``recipes/omnitransfer-stage{1,2,3}.yaml``, ``-tiny.yaml``.

A recipe's top-level keys are :func:`train`'s parameters. Stages run in the order given; each writes
``OUT/stage{k}/omnitransfer.safetensors`` when it finishes and starts from the previous stage's file, so the
three stage recipes share one ``out`` folder and chain (stage 2 picks up ``OUT/stage1/...``). A finished stage
is skipped; an interrupted one resumes from ``OUT/checkpoints/stage{k}/last.ckpt``. The stages run through the
same trainer builder as EffiVMT's (:func:`effivmt.training.trainer.fit_stage`) with the same
:class:`~effivmt.training.args.StageArgs` and :class:`~effivmt.training.args.TrainerArgs`, and record ``run.json``.

Strategies: the weights file is written from the live model by global rank 0, which holds whole weights under
``auto`` and ``ddp``. Strategies that shard the parameters themselves (``fsdp*``, ``deepspeed_stage_3*``) are
refused before anything is written: nothing gathers the shards back into the file yet, and under the shared wrap
policy (one FSDP unit per Wan block) the bf16 base and the fp32 queries and connector would share one flat
parameter, which must have one dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effivmt.data.video import check_frame_count, check_multiple_of_16
from effivmt.errors import ConfigError
from effivmt.io import AnyPath
from effivmt.omnitransfer.checkpoint import WEIGHTS_NAME, install_weights, save_weights
from effivmt.omnitransfer.tasks import TaskConfig, parse_tasks
from effivmt.training.args import StageArgs, TrainerArgs
from effivmt.training.strategies import SHARDED_PARAMS, is_global_zero

log = logging.getLogger(__name__)


@dataclass
class OmniModelArgs:
    """Backbone, MLLM and adapter settings."""

    path: AnyPath | None = None
    """Wan 2.1 I2V diffusers folder (the paper uses 14B); empty: the packaged micro Wan I2V; ``tiny``: a random one."""
    mllm: AnyPath | None = None
    """Qwen2.5-VL folder; empty: the tiny random Qwen2.5-VL."""
    dtype: str = "bf16"
    """Model dtype (``fp32`` on CPUs)."""
    mllm_image_size: tuple[int, int] | None = None
    """Frame size the MLLM sees (default 16x16 tiny, 448x448 real)."""
    num_reference_frames: int = 8
    """Reference frames the MLLM reads."""
    lora_rank: int = 16
    """MLLM LoRA rank (stage 3)."""
    lora_alpha: int = 16
    """MLLM LoRA alpha."""
    tasks: TaskConfig = field(default_factory=TaskConfig)
    """Task flags, positional-bias axes, templates and queries per task."""
    cache_features: bool = True
    """Before each stage, compute the UMT5/CLIP features of every manifest row once and free UMT5 and CLIP (and
    Qwen2.5-VL in stage 1, which does not use it); ``false`` keeps them loaded and runs them every step."""
    cache_latents: bool = False
    """Also keep the VAE latents of every row's clips (target, first-frame condition, references) after their first
    encoding, in memory and in ``out/cache/vae-latents.safetensors`` for the next stage and re-runs: the frozen VAE
    then runs once per clip instead of every step (the micro run's main cost). Costs host memory and disk: about
    4 x 16 x f x h x w x 4 bytes per row, 35 MB at 81x480x832, 150 KB at 33x64x64."""
    object_weight: float = 1.0
    """Loss weight of the latent pixels the target's object touches (pixels unlike the frame's border; for flat
    backgrounds such as the micro world's), the rest 1. 1.0: the paper's plain mean."""


@dataclass
class PairedDataArgs:
    """The paired-clip manifest and the clip shape."""

    manifest: AnyPath
    """JSONL manifest of reference/target/prompt/task rows (paths relative to it)."""
    num_frames: int = 81
    height: int = 480
    width: int = 832
    fps: float | None = 16.0
    batch_size: int = 1
    num_workers: int = 2
    stage_tasks: dict[int, list[str]] = field(default_factory=dict)
    """Rows a stage trains on, by task (``{1: [motion]}``: stage 1 sees only the ``motion`` rows; a row's task must
    equal one listed, so ``id+motion`` is its own entry); a stage not named trains on every row."""

    def __post_init__(self) -> None:
        check_frame_count(self.num_frames, "data.num_frames")
        check_multiple_of_16("data.height", self.height)
        check_multiple_of_16("data.width", self.width)
        for stage, tasks in self.stage_tasks.items():
            if stage not in (1, 2, 3):
                raise ConfigError(f"data.stage_tasks names stage {stage}", "stages are 1, 2 and 3")
            if not tasks:
                raise ConfigError(f"data.stage_tasks gives stage {stage} no task", "name its tasks or drop the entry")
            for task in tasks:
                parse_tasks(task)  # an unknown task fails here, before any stage writes


def paper_stage(max_steps: int) -> StageArgs:
    """A stage at the paper's optimiser: AdamW, lr 1e-5, no weight decay (10K / 2K / 5K steps)."""
    return StageArgs(
        max_steps=max_steps,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.0),
        checkpoint_every=500,
    )


def check_sharding(trainer: TrainerArgs) -> None:
    """Refuse a strategy that shards parameters: the weights file would get each rank's slice, not the weights.

    Raises:
        ConfigError: ``trainer.strategy`` is ``fsdp*`` or ``deepspeed_stage_3*``.
    """
    if str(trainer.strategy).startswith(SHARDED_PARAMS):
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} shards the parameters, and `effivmt omnitransfer` cannot "
            "gather them back into omnitransfer.safetensors yet",
            "use trainer.strategy=ddp (every GPU holds the whole model; see docs/omnitransfer-memory.md)",
        )


def train(
    out: Path,
    data: PairedDataArgs,
    model: OmniModelArgs | None = None,
    stages: list[int] | None = None,
    stage1: StageArgs | None = None,
    stage2: StageArgs | None = None,
    stage3: StageArgs | None = None,
    trainer: TrainerArgs | None = None,
    init_from: AnyPath | None = None,
    seed: int = 0,
    install: bool = False,
) -> Path:
    """Train OmniTransfer (stage 1: DiT blocks, 2: connector, 3: joint with MLLM LoRA) on paired videos.

    Args:
        out: run folder: ``stage{k}/omnitransfer.safetensors``, ``checkpoints/``, ``logs/``.
        data: the paired manifest and clip shape.
        model: backbone, MLLM and LoRA settings.
        stages: stages to run, in order (default ``[1, 2, 3]``).
        stage1: steps, optimizer, checkpoints of stage 1 (paper: 10K steps, AdamW lr 1e-5).
        stage2: the same for stage 2 (paper: 2K steps).
        stage3: the same for stage 3 (paper: 5K steps).
        trainer: Lightning settings (devices, strategy, precision, gradient checkpointing), as for ``effivmt run``.
        init_from: weights to start the first listed stage from (default: the previous stage's file in ``out``).
        seed: seed of the tiny models, data order and noise.
        install: after the last stage, also write its weights (in bf16) into the package, where ``effivmt transfer``
            finds them by default (``effivmt/assets/micro-omnitransfer``; a stage-1 file reads the prompt through
            UMT5); only for the packaged micro Wan I2V and tiny Qwen2.5-VL (``model.path`` and ``model.mllm``
            empty), the models they were trained on.

    Returns:
        The weights file of the last stage run (the ``--checkpoint`` of ``effivmt transfer``).
    """
    import lightning as L

    from effivmt.omnitransfer.data import PairedVideoDataModule
    from effivmt.omnitransfer.module import OmniTransferModule
    from effivmt.training.record import RunRecord, plain_json
    from effivmt.training.trainer import check_trainer, fit_stage

    model = model or OmniModelArgs()
    stages = stages or [1, 2, 3]
    per_stage = {1: stage1 or paper_stage(10_000), 2: stage2 or paper_stage(2_000), 3: stage3 or paper_stage(5_000)}
    # the default trainer matches the model: a bf16 base trains under bf16 autocast over fp32 trained weights
    trainer = trainer or TrainerArgs(precision="32-true" if model.dtype == "fp32" else "bf16-mixed")
    if any(s not in per_stage for s in stages):
        raise ConfigError(f"unknown stage in {stages}", "stages are 1 (DiT), 2 (connector), 3 (joint)")
    check_sharding(trainer)
    check_trainer(trainer)
    if install and (model.path is not None or model.mllm is not None):
        raise ConfigError(
            "install: true packages weights for the packaged micro Wan I2V and tiny Qwen2.5-VL only",
            "leave model.path and model.mllm empty, or drop install",
        )
    if model.dtype != "fp32" and "mixed" not in str(trainer.precision) and str(trainer.precision) not in ("bf16", "16"):
        raise ConfigError(
            f"model.dtype={model.dtype} with trainer.precision={trainer.precision}: the trained blocks stay fp32 "
            "beside the half-precision base, which needs autocast",
            "use trainer.precision=bf16-mixed",
        )
    probe = torch.nn.Parameter(torch.zeros(1))
    for stage in stages:
        try:  # a bad learning rate fails now, before any stage writes
            per_stage[stage].optimizer([probe])
        except (ValueError, TypeError) as err:
            raise ConfigError(f"stage{stage}.optimizer cannot be built: {err}", f"fix stage{stage}.optimizer") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"data": data, "model": model, "stages": stages, "trainer": trainer, "seed": seed}
    record = RunRecord(out, plain_json({**config, **{f"stage{k}": per_stage[k] for k in stages}}))
    previous = init_from
    for stage in stages:
        final = out / f"stage{stage}" / WEIGHTS_NAME
        if previous is None and stage > 1 and (out / f"stage{stage - 1}" / WEIGHTS_NAME).is_file():
            previous = out / f"stage{stage - 1}" / WEIGHTS_NAME
        if final.is_file():
            log.info("stage %d already finished: %s", stage, final)
            previous = final
            continue
        args = per_stage[stage]
        L.seed_everything(seed + stage, workers=True, verbose=False)
        module = OmniTransferModule(
            stage=stage,
            model_path=model.path,
            mllm_path=model.mllm,
            init_from=previous,
            tasks=model.tasks,
            mllm_image_size=model.mllm_image_size,
            num_reference_frames=model.num_reference_frames,
            lora_rank=model.lora_rank,
            lora_alpha=model.lora_alpha,
            seed=seed,
            dtype=model.dtype,
            gradient_checkpointing=trainer.gradient_checkpointing,
            optimizer=args.optimizer,
            cache_features=model.cache_features,
            cache_latents=model.cache_latents,
            object_weight=model.object_weight,
            latent_cache_file=out / "cache" / "vae-latents.safetensors",
        )
        datamodule = PairedVideoDataModule(
            data.manifest,
            data.num_frames,
            data.height,
            data.width,
            data.fps,
            data.batch_size,
            data.num_workers,
            tasks=data.stage_tasks.get(stage),
        )
        name = f"stage{stage}"
        with record.stage(name):
            fit = fit_stage(name, module, datamodule, args, trainer, out, lr_key=f"{name}.optimizer.init_args.lr")
            meta = {
                "stage": stage,
                "lora_rank": model.lora_rank,
                "lora_alpha": model.lora_alpha,
                "tasks": dataclasses.asdict(model.tasks),
                "num_reference_frames": model.num_reference_frames,
                "mllm_image_size": model.mllm_image_size,
                "num_frames": data.num_frames,
                "size": [data.height, data.width],
                "steps": fit.global_step,
                "loss": float(fit.callback_metrics.get("train/loss", float("nan"))),
            }
            if fit.is_global_zero:  # every rank holds the same whole weights (sharding is refused above)
                save_weights(module.model, final, meta)
            fit.strategy.barrier("omnitransfer-weights")  # the next stage reads the file on every rank
            previous = final
        record.record(name, path=str(final), steps=fit.global_step)
        log.info("stage %d done: %s", stage, final)
    if install and is_global_zero():
        log.info("installed the stage-%d weights in the package: %s", stages[-1], install_weights(previous))
    return previous
