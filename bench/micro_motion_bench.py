"""MicroMotionBench: EffiVMT and its ablations on held-out motions of the micro world, scored from pixels.

Every reference clip is a **held-out** motion (orbit, zigzag, figure-8, wall bounce, spiral,
accelerate-and-stop, two objects: never in the micro Wan's pretraining data or captions), rendered
deterministically (:func:`references`), with a target prompt that changes the object's colour, shape
and/or the background. Each method runs the real CLI (``effivmt run recipes/quickstart.yaml --clip REF
--clip_prompt ... --prompt TARGET``) with its overrides (:data:`METHODS`); the untuned base only
generates from the target prompt. Per clip and method:

* ``motion``: the headline motion fidelity (``effivmt.metrics``) of the generated clip against the reference;
* ``path``: similarity of the generated object's centroid path to the reference object's path (exact in
  this world: :func:`effivmt.metrics.world.path_similarity`);
* ``appearance``: share of frames whose object colour, shape and background match the target prompt;
* ``consistency``: :func:`effivmt.metrics.world.temporal_consistency`;
* ``wall_s``: the whole run, and the temporal stage alone (``temporal_s``).

Means with bootstrap 95% intervals over clips, paired differences to the base, and a time-reversal check
(full EffiVMT on the reversed reference must follow the reversed path better than the forward one).
Writes ``--out/results.json`` (per clip and summary; resumable: finished runs are reused only if their
inputs match) and prints one JSON line::

    python bench/micro_motion_bench.py --out runs/mmb            # all methods, 16 clips (hours on 2 cores)
    python bench/micro_motion_bench.py --out runs/mmb --clips 4 --methods base full
    python bench/micro_motion_bench.py --out runs/mmb-same --clips 8 --methods base full --same-appearance
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, log, setup  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "quickstart.yaml"

#: method -> overrides of the quickstart recipe (None: no training, generate from the prompt only).
METHODS: dict[str, list[str] | None] = {
    "base": None,
    "full": [],
    "no-head-split": ["--heads.split", "false"],
    "no-adaptive-rope": ["--temporal.position_mode", "contiguous"],
    "no-sparse": ["--temporal.sampler.class_path", "effivmt.data.samplers.AllFrames"],
    "positions-sampled": ["--temporal.position_mode", "sampled"],
    "high-noise-only": ["--temporal.timestep_range", "[600, 1000]"],
}
"""``full`` uses the paper's positions formula (``position_mode: adaptive``); ``positions-sampled`` puts each
sampled latent frame at the index it was actually sampled from; ``high-noise-only`` restricts the temporal
stage to t in [600, 1000] (Timestep-Constrained One-Shot Video Motion Customization)."""

HELD_OUT = ("orbit", "zigzag", "figure8", "bounce", "spiral", "accelerate-stop", "two-objects")


def references(n: int, same_appearance: bool = False, clip_prompt: str = "caption") -> list[dict]:
    """``n`` held-out reference scenes and their targets (cycling over the held-out motions).

    ``same_appearance``: every target is the reference's own look (the prompt is the clip's caption). This
    asks whether a method learns the reference's motion at all, apart from carrying it over to a new look.
    ``clip_prompt``: ``"caption"`` trains on the clip's appearance caption; ``"empty"`` on the empty prompt, so
    the adapters are not keyed to the words of the old look."""
    from effivmt.data.world import COLORS, SHAPES, caption, restyle, sample_scene

    colors = list(COLORS)
    out = []
    for i in range(n):
        motion = HELD_OUT[i % len(HELD_OUT)]
        scene = sample_scene(500 + i, motion=motion)
        obj = scene.objects[0]
        rng = np.random.default_rng([i, 99])
        # change the colour always, the shape on odd clips, the background on clips 1, 2 mod 3
        color = [c for c in colors if c not in (obj.color, scene.background)][rng.integers(5)]
        shape = SHAPES[(SHAPES.index(obj.shape) + 1) % 3] if i % 2 else obj.shape
        background = scene.background
        if i % 3:
            background = [c for c in colors if c not in (color, scene.background, obj.color)][rng.integers(4)]
        others = {o.color for o in scene.objects[1:]}
        if color in others or background in others:  # two-objects: keep the second object distinguishable
            color = next(c for c in colors if c not in others | {background, obj.color})
        target = scene if same_appearance else restyle(scene, color, shape, background)
        out.append(
            {
                "name": f"{i:02d}-{motion}",
                "scene": scene,
                "target": target,
                "clip_prompt": caption(scene, with_motion=False) if clip_prompt == "caption" else "",
                "prompt": caption(target, with_motion=False),
            }
        )
    return out


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_method(method: str, ref: dict, clip: Path, out: Path, extra: list[str], env: dict) -> dict:
    """Run one method on one clip (reusing a finished run with the same inputs); returns paths and timings."""
    overrides = METHODS[method]
    clip_sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    key = _digest(method, overrides, ref["clip_prompt"], ref["prompt"], extra, clip_sha, model_fingerprint(extra))
    folder = out / "runs" / method / ref["name"]
    done = folder / "bench.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if overrides is None:
        sample = folder / "sample.mp4"
        cmd = ["generate", "--prompt", ref["prompt"], "--out", str(sample), *_generate_args(extra)]
        stages = {}
    else:
        cmd = ["run", str(RECIPE), "--clip", str(clip), "--clip_prompt", ref["clip_prompt"]]
        cmd += ["--prompt", ref["prompt"], "--out", str(folder / "run"), "--trainer.progress_bar", "false"]
        cmd += overrides + extra
    log(f"  {method:<18} {ref['name']:<20} effivmt {' '.join(cmd[:2])} ...")
    proc = subprocess.run([sys.executable, "-m", "effivmt", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{method} on {ref['name']} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    if overrides is not None:
        manifest = json.loads((folder / "run" / "run.json").read_text())
        stages = {k: v.get("wall_s") for k, v in manifest["stages"].items()}
        sample = sorted((folder / "run" / "samples").glob("*.mp4"))[0]
    info = {"key": key, "sample": str(sample), "wall_s": round(wall, 2), "stages": stages}
    done.write_text(json.dumps(info))
    return info


def _generate_args(extra: list[str]) -> list[str]:
    """The recipe's generation settings, so the base renders exactly like the tuned runs."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    gen, video = recipe["generate"], recipe["video"]
    args = ["--num_frames", str(video["num_frames"]), "--height", str(video["height"]), "--width", str(video["width"])]
    args += ["--options.steps", str(gen["steps"]), "--options.guidance", str(gen["guidance"])]
    args += ["--options.seed", str(gen["seed"]), "--options.fps", str(gen["fps"])]
    return args + _model_args(extra)


def model_fingerprint(extra: list[str]) -> str:
    """A digest of the weights the runs will load (the ``--model.path`` among ``extra``, else the default), so
    a results folder made with other weights (a re-pretrained micro Wan) is never reused."""
    from effivmt.backbone.wan import resolve_model_path

    args, path = _model_args(extra), None
    for i, a in enumerate(args):
        if a.startswith("--model.path"):
            path = a.split("=", 1)[1] if "=" in a else args[i + 1]
    folder = resolve_model_path(None if path in (None, "null") else path)
    return "tiny" if folder == "tiny" else _weights_digest(str(folder))


@functools.cache
def _weights_digest(folder: str) -> str:
    """The folder's safetensors hashed once per bench process (run_method asks for it per clip and method)."""
    digest = hashlib.sha256()
    for file in sorted(Path(folder).rglob("*.safetensors")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _model_args(extra: list[str]) -> list[str]:
    """The ``--model.*`` options (and their values) among the extra arguments."""
    out = []
    for i, a in enumerate(extra):
        if a.startswith("--model"):
            out.append(a)
            if "=" not in a and i + 1 < len(extra):
                out.append(extra[i + 1])
    return out


def score(frames: np.ndarray, ref: dict, ref_frames: np.ndarray) -> dict:
    """Scores of generated ``uint8`` frames ``(F, H, W, 3)`` against the reference's, for ``ref``'s target."""
    from effivmt.metrics.world import appearance_accuracy, path_similarity, read_clip, temporal_consistency

    target = ref["target"]
    got = read_clip(frames)
    want = read_clip(ref_frames)
    obj = target.objects[0]
    return {
        "motion": motion_fidelity(frames, ref_frames),
        "path": path_similarity(got.path, want.path),
        "appearance": appearance_accuracy(got, obj.color, obj.shape, target.background)["mean"],
        "consistency": temporal_consistency(got),
    }


def write_strip(path: Path, rows: dict[str, np.ndarray], every: int = 4, scale: int = 2) -> Path:
    """One PNG: a labelled row of every ``every``-th frame per clip (reference first, then each method)."""
    from PIL import Image, ImageDraw

    label_w = 120
    strips = []
    for name, frames in rows.items():
        strip = np.concatenate(list(frames[::every]), axis=1)
        strip = np.asarray(Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), 0))
        canvas = Image.new("RGB", (label_w + strip.shape[1], strip.shape[0]), "white")
        canvas.paste(Image.fromarray(strip), (label_w, 0))
        ImageDraw.Draw(canvas).text((4, strip.shape[0] // 2 - 6), name, fill="black")
        strips.append(np.asarray(canvas))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strips, axis=0)).save(path)
    return path


def motion_fidelity(generated: np.ndarray, reference: np.ndarray) -> float:
    """The package's headline motion-fidelity score (default variant)."""
    from effivmt.metrics import motion_fidelity_score

    return float(motion_fidelity_score(generated, reference))


def bootstrap(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def summarise(rows: dict[str, list[dict]]) -> dict:
    summary = {}
    base = rows.get("base")
    for method, per_clip in rows.items():
        entry = {}
        for metric in ("motion", "path", "appearance", "consistency", "wall_s", "temporal_s"):
            vals = [r[metric] for r in per_clip if r.get(metric) is not None]
            if vals:
                entry[metric] = dict(zip(("mean", "lo", "hi"), bootstrap(vals)))
        if base and method != "base":
            for metric in ("motion", "path"):
                diffs = [a[metric] - b[metric] for a, b in zip(per_clip, base)]
                entry[f"{metric}_minus_base"] = dict(zip(("mean", "lo", "hi"), bootstrap(diffs)))
        summary[method] = entry
    if "full" in rows and "no-sparse" in rows:
        ratio = [b["temporal_s"] / a["temporal_s"] for a, b in zip(rows["full"], rows["no-sparse"]) if a["temporal_s"]]
        summary["sparse_vs_full_temporal_time_ratio"] = dict(zip(("mean", "lo", "hi"), bootstrap(ratio)))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-reversal", action="store_true", help="skip the time-reversed reference check")
    parser.add_argument(
        "--same-appearance", action="store_true", help="target prompt = the clip's own caption (does the motion fit?)"
    )
    parser.add_argument(
        "--clip-prompt", choices=("caption", "empty"), default="caption", help="what the clip is trained with"
    )
    args, extra = parser.parse_known_args()
    info = setup(args)
    extra = [a for a in extra if a != "--"]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads)))
    from effivmt.backbone.micro import MICRO_FPS, MICRO_FRAMES, MICRO_SIZE
    from effivmt.data.video import read_video, write_video
    from effivmt.data.world import render, time_reversed

    refs = references(args.clips, args.same_appearance, args.clip_prompt)
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    for ref in refs:
        clip = render(ref["scene"], MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE)
        path = args.out / "clips" / f"{ref['name']}.mp4"
        if not path.is_file():
            write_video(path, clip.frames, fps=MICRO_FPS)
        log(f"{ref['name']}: {ref['clip_prompt']!r} -> {ref['prompt']!r}")
        strip = {"reference": clip.frames.numpy()}
        for method in args.methods:
            res = run_method(method, ref, path, args.out, extra, env)
            strip[method] = read_video(Path(res["sample"]))[0].numpy()
            scores = score(strip[method], ref, clip.frames.numpy())
            temporal_s = res["stages"].get("temporal") if res["stages"] else None
            rows[method].append({"clip": ref["name"], **scores, "wall_s": res["wall_s"], "temporal_s": temporal_s})
            log(f"    {method:<18} " + " ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        write_strip(args.out / "strips" / f"{ref['name']}.png", strip)
    reversal = None
    if not args.no_reversal and "full" in args.methods:
        reversal = []
        for ref in refs[: max(4, args.clips // 4)]:
            rev = dict(ref, name=ref["name"] + "-reversed", scene=time_reversed(ref["scene"]))
            rev["target"] = time_reversed(ref["target"])
            frames = render(rev["scene"], MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE).frames.numpy()
            fwd = render(ref["scene"], MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE).frames.numpy()
            path = args.out / "clips" / f"{rev['name']}.mp4"
            if not path.is_file():
                write_video(path, frames, fps=MICRO_FPS)
            res = run_method("full", rev, path, args.out, extra, env)
            generated = read_video(Path(res["sample"]))[0].numpy()
            against_rev = score(generated, rev, frames)
            against_fwd = score(generated, rev, fwd)
            reversal.append(
                {
                    "clip": rev["name"],
                    "path_vs_reversed": against_rev["path"],
                    "path_vs_forward": against_fwd["path"],
                    "motion_vs_reversed": against_rev["motion"],
                    "motion_vs_forward": against_fwd["motion"],
                }
            )
    result = {
        "bench": "micro_motion_bench",
        "clips": [r["name"] for r in refs],
        "summary": summarise(rows),
        "per_clip": rows,
        "reversal": reversal,
        "same_appearance": args.same_appearance,
        "clip_prompt": args.clip_prompt,
        "extra_args": extra,
        **info,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("bench", "summary", "reversal")}))


if __name__ == "__main__":
    main()
