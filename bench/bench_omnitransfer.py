"""Denoising time per step: reference-decoupled attention with cached reference K/V vs full joint attention.

Same random Wan 2.1 I2V-shaped transformer, same target and reference tokens, one process. Three ways to
run one denoising step of the target:

* ``joint_full``: one sequence ``[target; reference]``, full attention, per-token timesteps (the paper's
  full-attention baseline); every step recomputes every token. Its time embedding runs once per distinct
  timestep (``t`` and 0) and is gathered per token, as the model needs; it is not charged for ``2N`` MLP rows;
* ``decoupled_recompute``: Reference-decoupled Causal Learning without a cache: each step runs the reference
  branch (self-attention over itself) and then the target (over target + reference), as the paper measures RCL;
* ``decoupled_cached``: the reference keys/values recorded once per generation (``one_time_ms``), every step
  runs the target tokens only.

Prints one JSON line with milliseconds per step, the per-step ratios ``joint_full / decoupled_*``, and the ratio
over a whole generation of ``--generation_steps`` steps, the one-time reference pass included::

    amortised = steps * joint_full / (one_time_reference + steps * decoupled_cached)

for one reference (``motion``) and for two (``id+motion``: the target attends over both). Classifier-free guidance
doubles the target batch of every method alike and is left out.

    python bench/bench_omnitransfer.py                      # CPU, mid-sized model (a few minutes on 2 cores)
    python bench/bench_omnitransfer.py --preset wan1.3b-81f --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

PRESETS = {
    # name: (transformer overrides, pixel frames, height, width)
    "tiny": (dict(num_attention_heads=4, attention_head_dim=12, num_layers=2, ffn_dim=32), 9, 32, 32),
    "cpu-mid": (dict(num_attention_heads=6, attention_head_dim=64, num_layers=4, ffn_dim=1024), 17, 256, 256),
    "wan1.3b-81f": (dict(num_attention_heads=12, attention_head_dim=128, num_layers=30, ffn_dim=8960), 81, 480, 832),
    "wan14b-33f": (dict(num_attention_heads=40, attention_head_dim=128, num_layers=40, ffn_dim=13824), 33, 480, 832),
}


def build(preset: str, device: str, dtype: torch.dtype):
    """A random Wan I2V transformer of the preset's size inside an OmniTransferModel, plus random branch inputs.

    Returns the model, the target input, two reference inputs (``id``, ``motion``), text and image contexts.
    """
    from diffusers import WanTransformer3DModel

    from effivmt.backbone.tiny import TINY_I2V
    from effivmt.omnitransfer.model import OmniTransferModel
    from effivmt.omnitransfer.reference import reference_input

    overrides, frames, height, width = PRESETS[preset]
    big = preset.startswith("wan")
    inner = overrides["num_attention_heads"] * overrides["attention_head_dim"]
    config = {
        **TINY_I2V,
        **overrides,
        "text_dim": 4096 if big else 64,
        "image_dim": 1280 if big else 32,
        "added_kv_proj_dim": inner,
        "freq_dim": 256,
        "rope_max_seq_len": 1024,
    }
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(**config).eval()
    if dtype != torch.float32:  # what from_pretrained(torch_dtype=...) does: Wan's norms/modulation stay fp32
        keep = transformer._keep_in_fp32_modules
        for name, param in transformer.named_parameters():
            if not any(k in name.split(".") for k in keep):
                param.data = param.data.to(dtype)
    model = OmniTransferModel(transformer)
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    g = torch.Generator(device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    image_tokens = 257 if big else 16
    target = rand(1, 36, f, h, w)
    refs = [reference_input(rand(1, 16, f, h, w), task).to(dtype) for task in ("id", "motion")]
    ctx, img = rand(1, 512, config["text_dim"]), rand(1, image_tokens, config["image_dim"])
    return model, target, refs, ctx, img


def interleaved(fns: dict, rounds: int, sync) -> dict[str, float]:
    """Median milliseconds of each function, timed round-robin so that load drifts hit every method alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(v) for name, v in samples.items()}


def measure(model, target, refs, tasks, ctx, img, rounds: int, generation_steps: int, sync, device) -> dict:
    """Time the three ways (and the one-time reference pass) for ``refs``; ratios per step and per generation."""
    grid = model.grid(target)
    t = torch.tensor([500.0], device=device)
    ref_ctx, ref_img = [ctx] * len(refs), [img] * len(refs)
    with torch.inference_mode():
        record = model.encode_references(refs, tasks, ref_ctx, ref_img, grid)

        def joint():
            return model.joint_forward(target, t, refs, tasks, ctx, img, one_way=False)

        def recompute():
            rec = model.encode_references(refs, tasks, ref_ctx, ref_img, grid)
            return model(target, t, ctx, img, rec)

        def cached():
            return model(target, t, ctx, img, record)

        def one_time():
            return model.encode_references(refs, tasks, ref_ctx, ref_img, grid)

        fns = {
            "joint_full": joint,
            "decoupled_recompute": recompute,
            "decoupled_cached": cached,
            "one_time_reference": one_time,
        }
        outputs = {name: fn() for name, fn in fns.items()}  # warm-up (allocator, kernels)
        ms = interleaved(fns, rounds, sync)
        same = (outputs["decoupled_recompute"].float() - outputs["decoupled_cached"].float()).abs().max().item()
    steps = generation_steps
    joint_gen = steps * ms["joint_full"]
    cached_gen = ms["one_time_reference"] + steps * ms["decoupled_cached"]
    return {
        "references": len(refs),
        "tasks": "+".join(tasks),
        "ms_per_step": {k: round(v, 2) for k, v in ms.items() if k != "one_time_reference"},
        "one_time_reference_ms": round(ms["one_time_reference"], 2),
        "ratio_joint_over_cached": round(ms["joint_full"] / ms["decoupled_cached"], 3),
        "ratio_joint_over_recompute": round(ms["joint_full"] / ms["decoupled_recompute"], 3),
        "generation_ms": {"joint_full": round(joint_gen, 1), "decoupled_cached": round(cached_gen, 1)},
        "ratio_amortised": round(joint_gen / cached_gen, 3),
        "cached_vs_recompute_max_abs_diff": same,
        "cache_bytes": record.nbytes(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-mid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=5, help="timed rounds per method (after 1 warm-up)")
    parser.add_argument("--generation_steps", type=int, default=40, help="denoising steps of one generation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    model, target, refs, ctx, img = build(args.preset, args.device, dtype)
    timed = dict(rounds=args.steps, generation_steps=args.generation_steps, sync=sync, device=args.device)
    one = measure(model, target, refs[1:], ["motion"], ctx, img, **timed)
    two = measure(model, target, refs, ["id", "motion"], ctx, img, **timed)

    tokens = target.shape[2] * (target.shape[3] // 2) * (target.shape[4] // 2)
    report = {
        "bench": "omnitransfer_reference_attention",
        "preset": args.preset,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "layers": model.transformer.config.num_layers,
        "dim": model.transformer.config.num_attention_heads * model.transformer.config.attention_head_dim,
        "target_tokens": tokens,
        "reference_tokens": tokens,
        "steps_timed": args.steps,
        "generation_steps": args.generation_steps,
        **{k: v for k, v in one.items() if k not in ("references", "tasks")},
        "two_references": two,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
