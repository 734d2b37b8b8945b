"""The quickstart recipe end to end, per stage: ``effivmt run recipes/quickstart.yaml --out TMP``.

Runs the command in a subprocess (a fresh run folder each time, so no stage is skipped or resumed), reads
the per-stage ``wall_s`` that ``run.json`` records, and adds ``other_s``: the process wall time outside the
stages (imports, building the tiny model, reading the clip, caching latents, the summary). Arguments this
script does not know go to ``effivmt run`` unchanged.

CPU::

    python bench/bench_quickstart.py

GPU, the same recipe on the real 1.3B weights (a local diffusers folder; sizes of your own choosing)::

    python bench/bench_quickstart.py --device cuda -- --model.path /models/Wan2.1-T2V-1.3B-Diffusers \\
        --model.dtype bf16 --trainer.precision bf16-true --heads.alpha 1.25
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_common_args, emit, log, median, setup

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("heads", "spatial", "temporal", "export", "generate")


def parse() -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.set_defaults(repeats=1, warmup=0)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.yaml"))
    p.add_argument("--keep", help="run into this folder (must not exist) and keep it; default: a temp dir")
    args, extra = p.parse_known_args()
    return args, [a for a in extra if a != "--"]


def run_once(args: argparse.Namespace, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "effivmt", "run", args.recipe, "--out", str(out), "--trainer.progress_bar", "false"]
    if args.device.startswith("cuda"):
        cmd += ["--trainer.accelerator", "gpu"]
    cmd += extra
    env = dict(os.environ)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's intra-op threads in the child
    log("  " + " ".join(cmd[1:]))
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode:
        raise SystemExit(f"effivmt run failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "run.json").read_text())
    stages = {k: v["wall_s"] for k, v in manifest["stages"].items() if "wall_s" in v}
    staged = {k: stages[k] for k in (*STAGES, *sorted(set(stages) - set(STAGES))) if k in stages}
    return {
        "stages": staged,
        "process_s": wall,
        "process_cpu_s": cpu,
        "other_s": wall - sum(staged.values()),
        "peak_rss_mb": max((v.get("peak_rss_mb", 0) for v in manifest["stages"].values()), default=None),
    }


def main() -> None:
    args, extra = parse()
    machine = setup(args)
    runs = []
    for r in range(args.warmup + args.repeats):
        with tempfile.TemporaryDirectory(prefix="effivmt-bench-") as tmp:
            out = Path(args.keep) if args.keep and r == args.warmup + args.repeats - 1 else Path(tmp) / "run"
            res = run_once(args, extra, out)
        log(
            f"  run {r + 1}: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in res["stages"].items())
            + f"; other {res['other_s']:.1f} s; process {res['process_s']:.1f} s"
        )
        if r >= args.warmup:
            runs.append(res)
    stages = {k: median([x["stages"][k] for x in runs]) for k in runs[0]["stages"]}
    record = {
        "bench": "quickstart",
        "recipe": os.path.relpath(Path(args.recipe).resolve(), ROOT),
        "extra_args": extra,
        "stages_s": stages,
        "stages_total_s": round(sum(stages.values()), 2),
        "other_s": median([x["other_s"] for x in runs]),
        "process_s": median([x["process_s"] for x in runs]),
        "process_cpu_s": median([x["process_cpu_s"] for x in runs]),
        "peak_rss_mb": runs[-1]["peak_rss_mb"],
        "repeats": args.repeats,
        **machine,
    }
    emit(record)


if __name__ == "__main__":
    main()
