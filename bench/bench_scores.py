"""Head classification memory: chunked template scores vs the naive full N x N attention map.

Both variants are :meth:`effivmt.attention.ScoreCapture.update` on the same random q/k of one block
(``(1, N, heads, head_dim)``, fixed seed): ``chunked`` streams ``--chunk-size`` queries at a time, ``naive``
is one chunk of all N queries, i.e. it materialises the full softmax map, as the released Follow-Your-Motion
code does. Each run is a fresh subprocess (``ru_maxrss`` is a process high-water mark, so variants cannot
share one); the parent alternates chunked, naive, chunked, naive, ... and reports medians. The summed
masses of the two variants must agree (checked), so the saving costs nothing in the scores.

Arithmetic: one float32 map of ``rows`` queries over N keys for every head is ``heads * rows * N * 4`` bytes;
while it is softmaxed the logits and the probabilities coexist, so the peak is ~2 maps. At Wan 1.3B's real
shape (81 x 480 x 832 -> 21 x 30 x 52 = 32,760 tokens, 12 heads) the naive map is
12 x 32,760^2 x 4 B = 51.5 GB per block, the chunked one (1,024 queries) 12 x 1,024 x 32,760 x 4 B = 1.61 GB.

CPU default (21 x 15 x 26 = 8,190 tokens, the 81-frame clip at 240 x 416; naive needs ~6.5 GB)::

    python bench/bench_scores.py

GPU, the real 1.3B token count (the naive run peaks near 2 x 51.5 = 103 GB: a 141 GB H200 holds it; on an
80 GB card the script measures the chunked variant only and the JSON keeps the arithmetic)::

    python bench/bench_scores.py --device cuda --height 480 --width 832
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from common import WAN_1_3B, add_common_args, emit, log, median, setup, video_to_tokens


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.set_defaults(repeats=3, warmup=0)
    p.add_argument("--frames", type=int, default=81, help="video frames (1 + 4k)")
    p.add_argument("--height", type=int, default=240, help="video height in pixels (multiple of 16)")
    p.add_argument("--width", type=int, default=416, help="video width in pixels (multiple of 16)")
    p.add_argument("--heads", type=int, default=WAN_1_3B["num_attention_heads"])
    p.add_argument("--head-dim", type=int, default=WAN_1_3B["attention_head_dim"])
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per chunk (ScoreCapture's default)")
    p.add_argument("--worker", choices=["chunked", "naive"], help=argparse.SUPPRESS)
    return p.parse_args()


def map_bytes(heads: int, rows: int, tokens: int) -> int:
    """Bytes of one float32 ``(heads, rows, tokens)`` attention map."""
    return heads * rows * tokens * 4


def available_bytes(device: str) -> int | None:
    """Memory free for the naive map: the GPU's free memory, or MemAvailable of the host."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def worker(args: argparse.Namespace) -> None:
    """One variant in this process; prints its JSON to stdout."""
    from effivmt.attention import ScoreCapture

    setup(args)
    grid = video_to_tokens(args.frames, args.height, args.width)
    n = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, n, args.heads, args.head_dim, generator=g).to(args.device)
    k = torch.randn(1, n, args.heads, args.head_dim, generator=g).to(args.device)
    chunk = args.chunk_size if args.worker == "chunked" else n
    capture = ScoreCapture(num_layers=1, num_heads=args.heads, chunk_size=chunk, grid=grid)
    # Load kernels on a small input first, so the high-water mark below is the computation's own.
    small = ScoreCapture(1, args.heads, chunk_size=8, num_queries=8, grid=grid)
    small.update(0, q, k)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start, start_cpu = time.perf_counter(), time.process_time()
    capture.update(0, q, k)
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "variant": args.worker,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before": rss_before,
        "rss_peak": rss_peak,
        "extra_bytes": rss_peak - rss_before,
        "spatial": capture.spatial_sum[0].tolist(),
        "temporal": capture.temporal_sum[0].tolist(),
    }
    if cuda:
        out["extra_bytes"] = torch.cuda.max_memory_allocated() - base
    print(json.dumps(out))


def run_worker(args: argparse.Namespace, variant: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--frames",
        str(args.frames),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
        "--heads",
        str(args.heads),
        "--head-dim",
        str(args.head_dim),
        "--chunk-size",
        str(args.chunk_size),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{variant} worker failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    machine = setup(args)
    f, h, w = video_to_tokens(args.frames, args.height, args.width)
    n = f * h * w
    chunk = min(args.chunk_size, n)
    naive_map, chunk_map = map_bytes(args.heads, n, n), map_bytes(args.heads, chunk, n)
    real_n = 21 * 30 * 52  # 81 x 480 x 832 on Wan 1.3B
    log(
        f"scores: {args.heads} heads x {args.head_dim}, grid {f}x{h}x{w} = {n} tokens; one map: naive "
        f"{args.heads} x {n}^2 x 4 B = {naive_map / 1e9:.2f} GB, chunked {args.heads} x {chunk} x {n} x 4 B = "
        f"{chunk_map / 1e9:.3f} GB"
    )
    variants = ["chunked", "naive"]
    avail = available_bytes(args.device)
    if avail is not None and 2.2 * naive_map > 0.9 * avail:
        log(f"naive needs ~{2.2 * naive_map / 1e9:.1f} GB, {avail / 1e9:.1f} GB available: measuring chunked only")
        variants = ["chunked"]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants:
            res = run_worker(args, v)
            log(
                f"  {v:<8} run {r + 1}/{args.repeats}  {res['wall_s']:7.2f} s wall {res['cpu_s']:7.2f} s cpu  "
                f"+{res['extra_bytes'] / 1e9:6.3f} GB"
            )
            runs[v].append(res)
    record = {
        "bench": "scores",
        "config": {
            "heads": args.heads,
            "head_dim": args.head_dim,
            "video": [args.frames, args.height, args.width],
            "grid": [f, h, w],
            "tokens": n,
            "chunk_size": chunk,
            "batch": 1,
            "dtype": "fp32",
        },
        "analytic_map_bytes": {"naive": naive_map, "chunked": chunk_map, "ratio": round(naive_map / chunk_map, 2)},
        "analytic_wan_1_3b_480x832": {
            "tokens": real_n,
            "naive": map_bytes(12, real_n, real_n),
            "chunked": map_bytes(12, 1024, real_n),
        },
        "memory_measure": "CUDA max_memory_allocated delta"
        if args.device.startswith("cuda")
        else "ru_maxrss delta in a fresh subprocess",
    }
    for v in variants:
        record[f"{v}_s"] = median([x["wall_s"] for x in runs[v]])
        record[f"{v}_cpu_s"] = median([x["cpu_s"] for x in runs[v]])
        record[f"{v}_peak_bytes"] = int(median([x["extra_bytes"] for x in runs[v]]))
    if "naive" in runs:
        a, b = torch.tensor(runs["chunked"][0]["spatial"]), torch.tensor(runs["naive"][0]["spatial"])
        c, d = torch.tensor(runs["chunked"][0]["temporal"]), torch.tensor(runs["naive"][0]["temporal"])
        diff = max(((a - b).abs() / b.abs()).max().item(), ((c - d).abs() / d.abs()).max().item())
        if diff > 1e-4:
            raise SystemExit(f"chunked and naive masses differ by {diff:.2e} (relative)")
        record["masses_max_rel_diff"] = float(f"{diff:.2e}")
        record["memory_ratio"] = round(record["naive_peak_bytes"] / record["chunked_peak_bytes"], 2)
        record["time_ratio"] = round(record["naive_s"] / record["chunked_s"], 2)
        record["time_ratio_cpu"] = round(record["naive_cpu_s"] / record["chunked_cpu_s"], 2)
        log(
            f"peak: naive {record['naive_peak_bytes'] / 1e9:.2f} GB / chunked {record['chunked_peak_bytes'] / 1e9:.3f}"
            f" GB = {record['memory_ratio']}x; time naive {record['naive_s']:.2f} s / chunked "
            f"{record['chunked_s']:.2f} s = {record['time_ratio']}x wall, {record['time_ratio_cpu']}x cpu"
        )
    record.update(machine)
    emit(record)


if __name__ == "__main__":
    main()
