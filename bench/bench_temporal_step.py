"""One optimizer step of EffiVMT's temporal stage: sparse sampling (17 of 81 frames) vs all 81 frames.

Same model, same clip latents, same process: a random Wan transformer with a frozen spatial LoRA and a
trainable temporal LoRA (rank 16, alpha 16, every self-attention projection, half the heads of each block
in each group), and :class:`effivmt.vmt.temporal.TemporalLoRAModule` with the motion loss on. A step is
``training_step`` (sampler -> noise -> adaptive RoPE -> forward -> denoising + motion loss), ``backward``
and ``AdamW.step``. The two samplers alternate (sparse, full, sparse, full, ...) and the medians are compared.

Why the ratio can beat the token ratio: 81 frames are 21 latent frames, 17 are 5, so the sparse step has
5/21 of the tokens. Projections and FFN scale with N, the attention maps with N^2: per block the maps cost
``4 N^2 d`` FLOPs against ``2 N (6 d^2 + 2 d ffn)`` for the linears, a ratio of ``N / (3 d + ffn)`` = N / 13,568
at Wan 1.3B's widths (d = 1,536, ffn = 8,960). At 480 x 832 (N = 32,760) the maps are 2.4x the linears and
the estimated step FLOPs fall 10.2x (767 -> 75 TFLOP over 30 blocks; ``--dry-run`` prints the estimate for
any shape). The CPU default is far smaller (2,352 tokens): there the maps are minor and the ratio sits near
the token ratio 4.2x (4.7x measured, bench/README.md); ``--height 240 --width 416`` (8,190 tokens) gives 7.1x.

CPU (default, fits a few minutes on 2 cores)::

    python bench/bench_temporal_step.py

GPU, the real Wan 2.1 1.3B shape (30 blocks, 81 x 480 x 832 -> 32,760 tokens vs 7,800)::

    python bench/bench_temporal_step.py --device cuda --dtype bf16 --layers 30 --height 480 --width 832 \\
        --gradient-checkpointing --repeats 5
"""

from __future__ import annotations

import argparse
import warnings

import torch
from common import (
    TEXT_LEN,
    WAN_1_3B,
    add_common_args,
    block_flops,
    emit,
    interleaved,
    log,
    median,
    setup,
    video_to_tokens,
)

#: EffiVMT paper: total per-clip time 2068 s with all frames, 727 s with sparse sampling.
PAPER_RATIO = round(2068 / 727, 2)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--frames", type=int, default=81, help="video frames of the clip (1 + 4k)")
    p.add_argument("--sparse-frames", type=int, default=17, help="video frames the sparse sampler keeps (1 + 4k)")
    p.add_argument("--height", type=int, default=128, help="video height in pixels (multiple of 16)")
    p.add_argument("--width", type=int, default=224, help="video width in pixels (multiple of 16)")
    p.add_argument("--layers", type=int, default=1, help="transformer blocks (Wan 1.3B: 30)")
    p.add_argument("--heads", type=int, default=WAN_1_3B["num_attention_heads"])
    p.add_argument("--head-dim", type=int, default=WAN_1_3B["attention_head_dim"])
    p.add_argument("--ffn-dim", type=int, default=WAN_1_3B["ffn_dim"])
    p.add_argument("--text-dim", type=int, default=WAN_1_3B["text_dim"])
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = rank)")
    p.add_argument("--motion-weight", type=float, default=1.0)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the shapes and FLOP estimate, run nothing")
    return p.parse_args()


def step_flops(tokens: int, layers: int, dim: int, ffn: int, text_dim: int) -> float:
    """Training-step FLOPs: the forward, plus a backward of ~1x for the frozen linears over the video tokens
    (input gradients only) and ~2x for the attention maps (dS -> dQ, dK; dP -> dV). The text side (embedder,
    cross-attention k/v) has no backward: nothing upstream of it trains."""
    f = block_flops(tokens, dim, ffn)
    text_embedder = 2 * TEXT_LEN * (text_dim * dim + dim * dim)
    return layers * (2 * f["linear"] + f["text"] + 3 * f["attention"]) + text_embedder


def build(args: argparse.Namespace, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    from effivmt.data.samplers import AllFrames, UniformStride
    from effivmt.lora import HeadGroupLoraConfig, add_head_group_adapter
    from effivmt.vmt.temporal import TemporalLoRAModule

    config = {
        **WAN_1_3B,
        "num_layers": args.layers,
        "num_attention_heads": args.heads,
        "attention_head_dim": args.head_dim,
        "ffn_dim": args.ffn_dim,
        "text_dim": args.text_dim,
    }
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**config).to(args.device, dtype)
    # Half the heads of every block in each group: 6 spatial + 6 temporal on a 12-head block.
    labels = [["temporal" if h % 2 else "spatial" for h in range(args.heads)] for _ in range(args.layers)]
    lora = HeadGroupLoraConfig(rank=args.rank, alpha=args.rank)
    add_head_group_adapter(transformer, "spatial", labels, "spatial", lora)
    add_head_group_adapter(transformer, "temporal", labels, "temporal", lora)
    transformer.to(args.device, dtype)  # the new LoRA factors too
    module = TemporalLoRAModule(
        transformer,
        sampler=UniformStride(args.sparse_frames),
        motion_weight=args.motion_weight,
        position_mode="adaptive",
        active_adapters=["spatial", "temporal"],
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.5),  # released temporal defaults
        gradient_checkpointing=args.gradient_checkpointing,
    )
    module.configure_model()
    transformer.train()
    optimizer = module.configure_optimizers()
    return module, optimizer, {"sparse": UniformStride(args.sparse_frames), "full": AllFrames()}


def main() -> None:
    args = parse()
    machine = setup(args)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    dim = args.heads * args.head_dim
    f, h, w = video_to_tokens(args.frames, args.height, args.width)
    fs = (args.sparse_frames - 1) // 4 + 1
    n_full, n_sparse = f * h * w, fs * h * w
    flops = {
        "full": step_flops(n_full, args.layers, dim, args.ffn_dim, args.text_dim),
        "sparse": step_flops(n_sparse, args.layers, dim, args.ffn_dim, args.text_dim),
    }
    # The same estimate at the real 1.3B shape (81 x 480 x 832 vs 17 frames): ~9.5x forward, ~10x per step.
    f13, h13, w13 = video_to_tokens(81, 480, 832)
    real = {k: step_flops(n * h13 * w13, 30, 1536, 8960, 4096) for k, n in (("full", f13), ("sparse", 5))}
    config = {
        "layers": args.layers,
        "heads": args.heads,
        "head_dim": args.head_dim,
        "dim": dim,
        "ffn_dim": args.ffn_dim,
        "text_dim": args.text_dim,
        "text_len": TEXT_LEN,
        "video": [args.frames, args.height, args.width],
        "latent": [f, h * 2, w * 2],
        "grid_full": [f, h, w],
        "grid_sparse": [fs, h, w],
        "sparse_frames": args.sparse_frames,
        "tokens_full": n_full,
        "tokens_sparse": n_sparse,
        "lora_rank": args.rank,
        "labels": "half temporal per block",
        "motion_weight": args.motion_weight,
        "dtype": args.dtype,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optimizer": "AdamW",
    }
    log(
        f"temporal step: {args.layers} block(s) of {args.heads}x{args.head_dim}, video {args.frames}x{args.height}x"
        f"{args.width} -> grid {f}x{h}x{w} = {n_full} tokens (all frames) vs {fs}x{h}x{w} = {n_sparse} "
        f"({args.sparse_frames} frames); estimated step FLOPs {flops['full'] / 1e12:.2f} vs "
        f"{flops['sparse'] / 1e12:.2f} TFLOP ({flops['full'] / flops['sparse']:.2f}x)"
    )
    if args.dry_run:
        return

    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer here: logging is a no-op
    module, optimizer, samplers = build(args, dtype)
    g = torch.Generator().manual_seed(0)
    batch = {
        "video_latents": torch.randn(1, 16, f, h * 2, w * 2, generator=g).to(args.device, dtype),
        "prompt_embeds": torch.randn(1, TEXT_LEN, args.text_dim, generator=g).to(args.device, dtype),
    }
    frames_seen: dict[str, int] = {}
    peak_mb: dict[str, float] = {}

    def step(name: str):
        def run() -> None:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(args.device)
            module.sampler = samplers[name]
            loss = module.training_step(batch, 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            frames_seen[name] = samplers[name].sample(f, module.step_generator()).numel()
            if args.device.startswith("cuda"):
                peak_mb[name] = round(torch.cuda.max_memory_allocated(args.device) / 2**20, 1)

        return run

    wall, cpu = interleaved({"sparse": step("sparse"), "full": step("full")}, args.repeats, args.warmup, args.device)
    if frames_seen["sparse"] != fs or frames_seen["full"] != f:
        raise SystemExit(f"samplers saw {frames_seen}, expected sparse {fs} / full {f} latent frames")
    sparse_s, full_s = median(wall["sparse"]), median(wall["full"])
    record = {
        "bench": "temporal_step",
        "config": config,
        "sparse_s": sparse_s,
        "full_s": full_s,
        "ratio": round(full_s / sparse_s, 2),
        "ratio_best": round(min(wall["full"]) / min(wall["sparse"]), 2),
        "token_ratio": round(n_full / n_sparse, 2),
        "flops_ratio_est": round(flops["full"] / flops["sparse"], 2),
        "flops_ratio_est_wan_1_3b_480x832": round(real["full"] / real["sparse"], 2),
        "paper_total_ratio": PAPER_RATIO,
        "sparse_all": [round(t, 3) for t in wall["sparse"]],
        "full_all": [round(t, 3) for t in wall["full"]],
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    if not args.device.startswith("cuda"):
        record["sparse_cpu_s"], record["full_cpu_s"] = median(cpu["sparse"]), median(cpu["full"])
        record["ratio_cpu"] = round(record["full_cpu_s"] / record["sparse_cpu_s"], 2)
    if peak_mb:
        record["peak_mb"] = peak_mb
    record.update(machine)
    log(
        f"full {full_s:.2f} s / sparse {sparse_s:.2f} s = {record['ratio']}x wall (median), {record['ratio_best']}x "
        f"best, {record.get('ratio_cpu', '-')}x cpu time; paper, whole clip: {PAPER_RATIO}x"
    )
    emit(record)


if __name__ == "__main__":
    main()
