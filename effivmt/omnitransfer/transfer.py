"""The ``effivmt transfer`` command: zero-shot spatio-temporal transfer from a reference video onto a first frame."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from effivmt.errors import ConfigError, VideoError
from effivmt.io import write_json_atomic

if TYPE_CHECKING:
    from effivmt.omnitransfer.pipeline import OmniTransferPipeline

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov"}

#: options of ``effivmt transfer`` that may be given once per task (``--reference A.mp4 --reference B.mp4``).
REPEATABLE: tuple[str, ...] = ("--reference",)
#: ``--checkpoint untrained``: no trained weights, even where packaged ones would be the default (smoke tests).
UNTRAINED = "untrained"
#: what the hint of a task/reference count mismatch tells a command-line user to type (tested to parse).
REFERENCE_LIST_HINT = "--reference '[A.mp4,B.mp4]'"


def merge_repeated(argv: Sequence[str], options: Sequence[str] = REPEATABLE) -> list[str]:
    """Fold every occurrence of a repeatable option into one JSON list: ``--reference A --reference B`` ->
    ``--reference '["A", "B"]'``.

    jsonargparse keeps only the last value of a repeated list option (``B``), and its append form ``--reference+``
    is not accepted behind a subcommand, so a command line is rewritten before parsing. An option given once is
    left alone; ``--option=value`` is understood too.
    """
    argv = list(argv)
    values: dict[str, list[str]] = {}
    spots: dict[str, list[tuple[int, int]]] = {}  # option -> (index, tokens it spans)
    i = 0
    while i < len(argv):
        name, sep, value = argv[i].partition("=")
        if name in options and (sep or i + 1 < len(argv)):
            values.setdefault(name, []).append(value if sep else argv[i + 1])
            spots.setdefault(name, []).append((i, 1 if sep else 2))
            i += 1 if sep else 2
            continue
        i += 1
    drop: set[int] = set()
    first: dict[int, list[str]] = {}
    for name, where in spots.items():
        if len(where) < 2:
            continue
        first[where[0][0]] = [name, json.dumps(values[name])]
        drop |= {j for i, n in where for j in range(i, i + n)}
    out = []
    for i, arg in enumerate(argv):
        if i in first:
            out += first[i]
        elif i not in drop:
            out.append(arg)
    return out


def load_first_frame(path: Path, height: int, width: int) -> torch.Tensor:
    """An image (or a video's first frame) as ``(1, 3, height, width)`` in ``[-1, 1]``, resized and centre-cropped.

    Raises:
        VideoError: a missing or unreadable file.
    """
    from effivmt.data.video import read_video, resize_center_crop

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"first frame {path} does not exist", "give an image (PNG/JPG) or a video")
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                frames = torch.from_numpy(np.asarray(img.convert("RGB")).copy())[None]
        except (UnidentifiedImageError, OSError) as err:
            raise VideoError(f"cannot read image {path}: {err}", "give a PNG or JPG") from None
    else:
        frames = read_video(path)[0][:1]
    frames = resize_center_crop(frames, height, width)
    return frames.permute(3, 0, 1, 2)[:, 0][None].float().div(127.5).sub(1.0)


def transfer(
    task: str,
    reference: Path | list[Path],
    first_frame: Path,
    prompt: str,
    out: Path,
    checkpoint: Path | None = None,
    model: Path | None = None,
    mllm: Path | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    steps: int = 40,
    guidance: float = 5.0,
    negative_prompt: str = "",
    seed: int = 0,
    fps: float | None = None,
    reference_prompt: str | None = None,
    cache_reference: bool = True,
    use_mllm: bool | None = None,
    keep_encoders: bool = False,
    dtype: str = "fp32",
    device: str = "cpu",
) -> Path:
    """Transfer a reference video's motion, camera, effect, identity or style onto a first frame (OmniTransfer).

    Args:
        task: ``id``, ``style``, ``effect``, ``camera`` or ``motion``; combine with ``+`` (``id+motion``), one
            reference video per task, in the same order.
        reference: reference video(s), one per task.
        first_frame: the target's first frame (an image, or a video whose first frame is used).
        prompt: what the target video shows.
        out: output video (``.mp4``); a ``.json`` beside it records the settings and timings.
        checkpoint: trained OmniTransfer weights (``omnitransfer.safetensors`` from training, or a ``.ckpt``); its
            task settings (queries per task, flags, MLLM frame size) are read from the file. Default: the packaged
            micro OmniTransfer when the backbone and MLLM are the packaged micro ones, else none (a warning: the
            video will not follow the reference). ``untrained``: none, always (smoke tests).
        model: diffusers-format Wan 2.1 I2V folder; empty: the packaged micro Wan I2V; ``tiny``: the random tiny one.
        mllm: Qwen2.5-VL folder; empty: the tiny random Qwen2.5-VL.
        num_frames: target frames, ``1 + 4k`` (default: the model's own, 81 for Wan 2.1, 33 for the micro Wan, 9
            for the tiny one); references are read at this length (or the longest ``1 + 4k`` they have).
        height: target height, multiple of 16 (default: the model's own, 480 / 64 / 32).
        width: target width, multiple of 16 (default: the model's own, 832 / 64 / 32).
        steps: denoising steps.
        guidance: classifier-free guidance scale on the target context (1 disables it).
        negative_prompt: prompt of the unconditional half of guidance.
        seed: seed of the initial noise.
        fps: frame rate references are resampled to and the output is written at (default: the model's own; Wan 2.1
            and the tiny model 16, the micro Wan 8).
        reference_prompt: the reference branch's text (default: the task template; never the prompt, so the
            reference stays independent of the target and is cached once).
        cache_reference: compute the reference keys/values once per generation (same result, faster).
        use_mllm: target context from Qwen2.5-VL + connector (``False``: UMT5 of the prompt, as in stage 1).
            Default: from the checkpoint's stage (a stage-1 file trained no connector, so UMT5), else ``True``.
        keep_encoders: keep UMT5, CLIP and Qwen2.5-VL in memory while denoising (default: free them once
            their features are computed; on a 14B GPU run that is ~30 GB back for the denoising loop).
        dtype: model dtype (``bf16`` on GPUs).
        device: ``cpu`` or ``cuda``.

    Returns:
        ``out``.
    """
    from effivmt.backbone.wan import native_video, resolve_model_path
    from effivmt.data.video import check_frame_count, load_clip, write_video
    from effivmt.omnitransfer.reference import decode_latents
    from effivmt.omnitransfer.tasks import parse_tasks

    tasks = parse_tasks(task)
    references = [reference] if isinstance(reference, str | Path) else list(reference)
    if len(references) != len(tasks):
        raise ConfigError(
            f"{len(tasks)} task(s) ({'+'.join(tasks)}) but {len(references)} reference video(s)",
            f"give one reference per task, in the same order; on the command line: {REFERENCE_LIST_HINT}",
        )
    out = Path(out)
    if out.suffix.lower() not in _VIDEO_SUFFIXES:
        raise ConfigError(f"--out must end in .mp4, .mkv or .mov, got {out.name}")
    backbone = resolve_model_path(model, "i2v")
    own = native_video(model, "i2v")
    native = (9, 32, 32, 16.0) if backbone == "tiny" else (own.num_frames, own.height, own.width, own.fps)
    num_frames = check_frame_count(num_frames or native[0])
    height, width, fps = height or native[1], width or native[2], fps or native[3]
    start = time.perf_counter()
    checkpoint = resolve_checkpoint(checkpoint, model, mllm)
    pipe, use_mllm, stage = load_transfer_pipeline(checkpoint, model, mllm, use_mllm, fps, dtype, device)
    frame = load_first_frame(first_frame, height, width)
    clip_args = dict(num_frames=num_frames, height=height, width=width, fps=fps, frame_mode="first", allow_fewer=True)
    videos = [load_clip(r, **clip_args)[0][None] for r in references]
    loaded = time.perf_counter()
    latents = pipe.sample(
        frame,
        videos,
        list(tasks),
        prompt,
        num_frames=num_frames,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        seed=seed,
        cache_reference=cache_reference,
        source="mllm" if use_mllm else "text",
        reference_prompt=reference_prompt,
        release_encoders=not keep_encoders,
    )
    sampled = time.perf_counter()
    video = decode_latents(pipe.wan.vae, latents)
    write_video(out, video[0], fps=fps)
    write_json_atomic(
        out.with_suffix(".json"),
        {
            "task": "+".join(tasks),
            "reference": [str(r) for r in references],
            "first_frame": str(first_frame),
            "prompt": prompt,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model": str(backbone),
            "mllm": (str(mllm) if mllm else "tiny") if use_mllm else None,
            "target_context": "mllm" if use_mllm else "text",
            "checkpoint_stage": stage,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "cache_reference": cache_reference,
            "seconds": {
                "load": round(loaded - start, 3),
                "sample": round(sampled - loaded, 3),
                "per_step": round((sampled - loaded) / max(steps, 1), 4),
            },
        },
    )
    return out


def resolve_checkpoint(checkpoint: Path | None, model: Path | None = None, mllm: Path | None = None) -> Path | None:
    """The weights :func:`transfer` loads: ``checkpoint`` as given; ``untrained`` -> none; none given -> the packaged
    micro OmniTransfer when the backbone is the packaged micro Wan I2V and the MLLM the packaged tiny Qwen2.5-VL
    (the weights were trained on exactly those), else none."""
    from effivmt.backbone.micro import micro_i2v_path
    from effivmt.backbone.wan import resolve_model_path
    from effivmt.omnitransfer.checkpoint import micro_weights_path

    if checkpoint is not None:
        return None if str(checkpoint) == UNTRAINED or Path(checkpoint).name == UNTRAINED else Path(checkpoint)
    packaged = micro_weights_path()
    if mllm is None and str(resolve_model_path(model, "i2v")) == str(micro_i2v_path()) and packaged.is_file():
        log.info("weights: the packaged micro OmniTransfer (%s)", packaged)
        return packaged
    return None


def load_transfer_pipeline(
    checkpoint: Path | None,
    model: Path | None = None,
    mllm: Path | None = None,
    use_mllm: bool | None = None,
    fps: float = 16.0,
    dtype: str = "fp32",
    device: str = "cpu",
) -> tuple[OmniTransferPipeline, bool, int | None]:
    """The pipeline :func:`transfer` samples with: backbone, MLLM and the ``checkpoint``'s weights (``None``: no
    trained weights, with a warning; :func:`resolve_checkpoint` picks the default), in eval mode.

    The task settings (queries per task, flags, MLLM frame size, reference frames) come from the file, so a model
    trained with other settings loads as trained; a stage-1 file reads the prompt through UMT5
    (:func:`_context_source`). Returns the pipeline, whether its target context is the MLLM's, and the file's stage.
    """
    from effivmt.backbone.wan import resolve_model_path
    from effivmt.omnitransfer.checkpoint import file_stage, load_weights, read_metadata
    from effivmt.omnitransfer.pipeline import OmniTransferPipeline
    from effivmt.omnitransfer.tasks import TaskConfig

    meta = read_metadata(checkpoint) if checkpoint is not None else {}  # train with N queries -> infer with N
    stage = file_stage(meta)
    use_mllm = _context_source(checkpoint, stage, use_mllm)
    size = meta.get("mllm_image_size")
    pipe = OmniTransferPipeline.load(
        model,
        mllm,
        use_mllm=use_mllm,
        tasks=TaskConfig(**meta["tasks"]) if "tasks" in meta else None,
        mllm_image_size=tuple(size) if size else None,
        num_reference_frames=int(meta.get("num_reference_frames", 4)),
        fps=fps,
        dtype=dtype,
        device=device,
    )
    if checkpoint is not None:
        load_weights(pipe.model, checkpoint, groups=None if use_mllm else ("dit",))
    else:
        log.warning(
            "no trained weights: OmniTransfer's reference branch, connector and queries are untrained%s, so the "
            "video will not follow the reference (train with `effivmt omnitransfer` and pass --checkpoint)",
            " and the backbone is the random tiny Wan" if resolve_model_path(model, "i2v") == "tiny" else "",
        )
    pipe.model.eval()
    return pipe, use_mllm, stage


def _context_source(checkpoint: Path | None, stage: int | None, use_mllm: bool | None) -> bool:
    """Whether the target context comes from the MLLM: a stage-1 file never trained the connector.

    Raises:
        ConfigError: ``use_mllm=True`` with a stage-1 file (its connector and queries are still random).
    """
    if stage == 1:
        if use_mllm:
            raise ConfigError(
                f"{checkpoint} is a stage-1 file: its connector and task queries were never trained",
                "drop --use_mllm (stage-1 weights read the prompt through UMT5) or give a stage-2/3 file",
            )
        if use_mllm is None:
            log.info("%s is a stage-1 file: target context from UMT5 (its connector was never trained)", checkpoint)
        return False
    return True if use_mllm is None else use_mllm
