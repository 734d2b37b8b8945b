"""Helpers shared by the bench scripts: threads, timing, the one JSON line, Wan shapes and FLOP counts.

Every script prints human-readable progress to stderr and exactly one JSON line to stdout at the end, so
``python bench/bench_x.py ... | tail -1 | jq`` gives its figures. Ratios are measured side by side in one
run (A, B, A, B, ...) and reported as medians, every repetition beside them: on a CPU shared with other jobs
a contended run shows itself as scattered repetitions (bench/README.md, Results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: Wan 2.1 T2V 1.3B (diffusers ``transformer/config.json``): 30 blocks, 12 heads x 128 = 1536 wide.
WAN_1_3B: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)

#: Wan's text context: 512 umT5 tokens, always padded to that length.
TEXT_LEN = 512


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bootstrap(values: list[float], seed: int = 0, draws: int = 2000) -> list[float]:
    """Mean and its 95% bootstrap interval over rows."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return [float("nan")] * 3
    idx = np.random.default_rng(seed).integers(0, len(x), (draws, len(x)))
    means = x[idx].mean(1)
    return [float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU); 0 leaves torch's default")
    parser.add_argument("--repeats", type=int, default=3, help="measured repetitions per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured repetitions per variant first")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Fix the thread count; returns the machine description every JSON line carries."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info: dict[str, Any] = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "date": datetime.date.today().isoformat(),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(args.device)
    return info


def add_world_clip_args(parser: argparse.ArgumentParser, clips: int) -> None:
    """Options of the scripts that score the micro Wan's DiT on encoded straight-motion clips of the world."""
    parser.add_argument("--model", default="micro", help="'micro' or a Wan T2V diffusers folder")
    parser.add_argument("--clips", type=int, default=clips)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6, 0.8, 0.95])
    parser.add_argument("--seed", type=int, default=10_000_000, help="first world seed (pretraining uses 0..clips)")


def encoded_world_clips(args: argparse.Namespace) -> tuple[Any, list, torch.Tensor]:
    """The pipeline ``--model`` names, ``--clips`` straight-motion scenes from ``--seed`` and their latents
    ``(B, z, f, h, w)``: the VAE's posterior mode, normalised by its ``latents_mean``/``latents_std`` as the DiT
    sees them."""
    from diffusers import WanPipeline

    from effivmt.backbone.encode import vae_encode
    from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE
    from effivmt.backbone.wan import resolve_model_path
    from effivmt.data.world import sample_scene, world_video

    pipe = WanPipeline.from_pretrained(str(resolve_model_path(args.model))).to(args.device)
    vae = pipe.vae.eval()
    pipe.transformer.eval()
    scenes = [sample_scene(args.seed + i, motion="linear") for i in range(args.clips)]
    video = world_video(scenes, MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE).to(args.device)
    return pipe, scenes, torch.cat([vae_encode(vae, v[None]) for v in video])


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()``, with the GPU drained before and after.

    ``cpu`` is this process's CPU time, all threads (``time.process_time``). On a CPU shared with other jobs
    it is the steadier figure: wall time also counts the time other processes held the cores.
    """
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time each variant ``warmup + repeats`` times, alternating A, B, A, B, ...; returns measured (wall, cpu)."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + repeats):
        for name, fn in variants.items():
            dt, ct = timed(fn, device)
            tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeats}"
            log(f"  {name:<8} {tag:<9} {dt:8.2f} s wall {ct:8.2f} s cpu")
            if r >= warmup:
                wall[name].append(dt)
                cpu[name].append(ct)
    return wall, cpu


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def emit(record: dict[str, Any]) -> None:
    """The script's one JSON line on stdout."""
    print(json.dumps(record), flush=True)


def video_to_tokens(
    frames: int, height: int, width: int, patch: tuple[int, int, int] = (1, 2, 2)
) -> tuple[int, int, int]:
    """Video ``frames x height x width`` -> Wan patch grid ``(F, H, W)``: VAE 4x in time (1 + 4k), 8x in space.

    81 x 480 x 832 -> latents 21 x 60 x 104 -> grid 21 x 30 x 52 = 32,760 tokens.
    """
    if (frames - 1) % 4 or height % (8 * patch[1]) or width % (8 * patch[2]):
        raise SystemExit(
            f"need frames = 1 + 4k and height, width divisible by {8 * patch[1]}; got {frames} x {height} x {width}"
        )
    return (frames - 1) // 4 + 1, height // 8 // patch[1], width // 8 // patch[2]


def block_flops(tokens: int, dim: int, ffn: int, text: int = TEXT_LEN) -> dict[str, float]:
    """Forward FLOPs of one Wan block (2 per multiply-add): linears over the video tokens, over the text, maps.

    self-attention: q, k, v, out projections 4 x 2*N*d^2; maps QK^T and AV 2 x 2*N^2*d.
    cross-attention: q, out 2 x 2*N*d^2; k, v of the L text tokens 2 x 2*L*d^2; maps 2 x 2*N*L*d.
    FFN: 2 x 2*N*d*ffn.  Norms, RoPE and modulation are O(N*d) and left out.
    """
    n, d, lt = tokens, dim, text
    linear = 4 * 2 * n * d * d + 2 * 2 * n * d * d + 2 * 2 * n * d * ffn
    text_kv = 2 * 2 * lt * d * d
    maps = 2 * 2 * n * n * d + 2 * 2 * n * lt * d
    return {
        "linear": float(linear),
        "text": float(text_kv),
        "attention": float(maps),
        "total": float(linear + text_kv + maps),
    }
