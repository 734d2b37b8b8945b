"""Generation with trained adapters: stock diffusers ``WanPipeline``, our transformer, mp4 out.

``effivmt generate`` loads any LoRA file diffusers, ComfyUI or peft users have (ours or another
trainer's) or a run folder's adapters, and renders a prompt with it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import torch

from effivmt.errors import ConfigError
from effivmt.io import AnyPath, as_path
from effivmt.vmt.plan import GenerateArgs, ModelArgs

log = logging.getLogger("effivmt")


def sample_name(prompt: str, seed: int) -> str:
    """``a-red-car-turns-s0.mp4``: the prompt's first words and the seed, safe as a file name."""
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower())[:8]) or "sample"
    return f"{slug}-s{seed}.mp4"


def synthesize(
    components,
    prompt: str,
    args: GenerateArgs,
    num_frames: int,
    height: int,
    width: int,
    device: str = "cpu",
) -> np.ndarray:
    """Frames ``(F, H, W, 3)`` in [0, 1] for ``prompt``, with the transformer's adapters as the caller set them.

    Adapter scales are the caller's (:func:`effivmt.lora.set_adapter_scales`): a run sets ``args.scale_*`` on its
    spatial/temporal adapters, ``effivmt generate`` each ``--lora``'s ``--lora_scale``; nothing here resets them.
    """
    pipe = components.pipeline().to(device)
    pipe.set_progress_bar_config(desc="generate")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        return pipe(
            prompt=prompt,
            negative_prompt=args.negative_prompt,
            num_frames=args.num_frames or num_frames,
            height=args.height or height,
            width=args.width or width,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=generator,
            output_type="np",
        ).frames[0]


def render(
    components,
    prompt: str,
    out: Path,
    args: GenerateArgs,
    num_frames: int,
    height: int,
    width: int,
    device: str = "cpu",
) -> Path:
    """:func:`synthesize`, then write the mp4 atomically."""
    from effivmt.data.video import write_video

    frames = synthesize(components, prompt, args, num_frames, height, width, device)
    return write_video(out, frames, fps=args.fps)


def _run_adapters(run_dir: Path) -> list[str]:
    """The head-group adapters of an ``effivmt run`` folder.

    Raises:
        ConfigError: the folder is missing or holds no trained adapter (rendering the bare model instead would
            look like success).
    """
    if not run_dir.is_dir():
        raise ConfigError(f"--run_dir {run_dir} does not exist", "give the --out folder of an `effivmt run`")
    groups = [g for g in ("spatial", "temporal") if (run_dir / "adapters" / g).is_dir()]
    if not groups:
        raise ConfigError(
            f"--run_dir {run_dir} holds no trained adapter (no adapters/spatial or adapters/temporal)",
            "give the --out folder of an `effivmt run` whose spatial or temporal stage finished",
        )
    return groups


def generate(
    prompt: str,
    out: AnyPath = "sample.mp4",
    model: ModelArgs = ModelArgs(),
    lora: AnyPath | list[AnyPath] | None = None,
    lora_scale: float | list[float] | None = None,
    run_dir: AnyPath | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    options: GenerateArgs = GenerateArgs(),
) -> Path:
    """Generate a video with Wan and LoRA adapters (diffusers, ComfyUI or peft files, or a run folder's).

    Args:
        prompt: what to render.
        out: the mp4 to write (atomically).
        model: which Wan to load.
        lora: a LoRA file or peft folder in any of the three formats; several as ``--lora '[a, b]'``.
        lora_scale: one scale per LoRA (default 1.0 each).
        run_dir: an ``effivmt run`` folder: loads its spatial/temporal adapters at ``options.scale_*``.
        num_frames: frames to generate (1 + 4k), unless ``options.num_frames`` is set; empty: the model's native
            length (micro Wan 33, Wan 2.1 81).
        height: frame height (multiple of 16), unless ``options.height`` is set; empty: the model's.
        width: frame width (multiple of 16), unless ``options.width`` is set; empty: the model's.
        options: steps, guidance, seed, negative prompt, adapter scales, fps (empty: the model's native rate).
    """
    from effivmt.backbone import load_wan
    from effivmt.backbone.wan import native_video
    from effivmt.lora import load_lora, load_peft_adapter, set_adapter_scales

    GenerateArgs(num_frames=num_frames, height=height, width=width)  # validates the three values
    native = native_video(as_path(model.path))
    num_frames, height, width = num_frames or native.num_frames, height or native.height, width or native.width
    if options.fps is None:
        options = dataclasses.replace(options, fps=native.fps)
    components = load_wan(as_path(model.path), dtype=model.dtype, seed=model.seed)
    transformer = components.transformer
    files = [as_path(p) for p in (lora if isinstance(lora, list) else [lora] if lora is not None else [])]
    scale_list = lora_scale if isinstance(lora_scale, list) else [lora_scale] if lora_scale is not None else None
    weights = list(scale_list or [1.0] * len(files))
    if len(weights) != len(files):
        raise ConfigError(f"{len(files)} --lora but {len(weights)} --lora_scale", "give one scale per --lora")
    scales: dict[str, float] = {}
    for i, (path, scale) in enumerate(zip(files, weights)):
        name = f"lora{i}"
        load_lora(transformer, path, adapter_name=name)
        scales[name] = scale
    if run_dir is not None:
        for group in _run_adapters(as_path(run_dir)):
            load_peft_adapter(transformer, as_path(run_dir) / "adapters" / group, group)
            scales[group] = getattr(options, f"scale_{group}")
    if scales:
        set_adapter_scales(transformer, scales)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = render(components, prompt, as_path(out), options, num_frames, height, width, device=device)
    log.info(f"wrote {path}")
    return path
