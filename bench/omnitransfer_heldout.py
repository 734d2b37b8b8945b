"""Does a trained OmniTransfer transfer? Held-out references of the micro world, scored from pixels.

Each held-out row of ``python -m effivmt.omnitransfer.pairs DIR --heldout N`` (motions, cameras, effects, marks
and styles never seen in training) is generated from its target's first frame, its prompt and its reference(s),
by every ``--variant``, and read back with :mod:`effivmt.metrics.world` / :mod:`effivmt.metrics.world_tasks`:

* ``motion``: :func:`path_similarity` of the object's path to the target's (which is the reference's path);
* ``camera``: :func:`camera_agreement` of the background's pan/zoom with the reference's camera track;
* ``effect``: 1 when :func:`read_effect` names the reference's effect, else 0;
* ``id``: :func:`identity_agreement` (colour, shape and mark kept in every read frame);
* ``style``: :func:`style_agreement` (share of read frames drawn in the reference's style);
* ``id+motion``: the mean of the two.

The first frame comes from the target, so it already shows the target's look (ID mark, style): for those tasks
the score measures whether the look is *kept* through the generated motion, which the no-reference row tells
apart from what the reference adds. Variants (repeat ``--variant``):

* ``NAME=PATH``: an ``omnitransfer.safetensors`` (or ``.ckpt``) from ``effivmt omnitransfer``;
* ``untrained``: OmniTransfer with no trained weights (the micro I2V's blocks, random connector and queries);
* ``no-reference``: stock ``WanImageToVideoPipeline`` on the micro I2V, first frame and prompt only;
* ``target``: the true target clip read back (each reader's ceiling on this data).

One JSON line on stdout: per variant and task the mean score with a bootstrap 95% interval over rows, the time
per denoising step, every row, and (``versus``) each variant's score minus ``--versus``'s (default
``no-reference``) on the same rows, with its interval::

    python bench/omnitransfer_heldout.py --pairs runs/omnitransfer-pairs \\
        --variant full=runs/omnitransfer-micro/stage3/omnitransfer.safetensors \\
        --variant untrained --variant no-reference --variant target
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, bootstrap, log, setup  # noqa: E402

SPECIAL = ("untrained", "no-reference", "target")


def score(task: str, frames: np.ndarray, meta: dict) -> dict[str, float]:
    """The row's scores from ``uint8`` ``(F, H, W, 3)`` frames; ``score`` is the task's headline."""
    from effivmt.metrics.world import path_similarity, read_clip
    from effivmt.metrics.world_tasks import (
        camera_agreement,
        identity_agreement,
        read_camera,
        read_effect,
        read_identity,
        read_style,
        style_agreement,
    )

    out: dict[str, float] = {}
    if "motion" in task:
        out["path"] = path_similarity(read_clip(frames).path, np.asarray(meta["target_path"]))
    if task.startswith("id"):
        out |= {f"id_{k}": v for k, v in identity_agreement(read_identity(frames), *_identity(meta)).items()}
    if task == "camera":
        out["camera"] = camera_agreement(read_camera(frames), np.asarray(meta["camera_track"]))
    if task == "effect":
        out["effect"] = float(read_effect(frames) == meta["effect"])
    if task == "style":
        out["style"] = style_agreement(read_style(frames), meta["style"])
    heads = {"motion": ["path"], "camera": ["camera"], "effect": ["effect"], "id": ["id_mean"], "style": ["style"]}
    heads["id+motion"] = ["path", "id_mean"]
    out["score"] = float(np.mean([out[k] for k in heads[task]]))
    return out


def _identity(meta: dict) -> tuple[str, str, str]:
    return meta["color"], meta["shape"], meta["pattern"]


def _versus(results: dict[str, dict], base: str) -> None:
    """Add ``versus[base]`` to every other variant: its score minus ``base``'s on the same rows, per task and over all
    rows, with bootstrap intervals (a paired comparison: the rows' own difficulty cancels). Nothing if ``base`` did
    not run."""
    if base not in results:
        return
    reference = {r["name"]: r["score"] for r in results[base]["rows"]}
    for name, result in results.items():
        if name == base:
            continue
        diffs = [(r["task"], r["score"] - reference[r["name"]]) for r in result["rows"] if r["name"] in reference]
        summary = {t: bootstrap([d for task, d in diffs if task == t]) for t in sorted({t for t, _ in diffs})}
        summary["all"] = bootstrap([d for _, d in diffs])
        result["versus"] = {base: summary}
        log(f"{name} - {base}: " + ", ".join(f"{t} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for t, v in summary.items()))


def _frames(video: torch.Tensor) -> np.ndarray:
    """``(3, F, H, W)`` in [-1, 1] -> ``uint8`` ``(F, H, W, 3)``."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--pairs", type=Path, required=True, help="folder of effivmt.omnitransfer.pairs")
    parser.add_argument("--variant", action="append", required=True, help="NAME=WEIGHTS, or one of " + str(SPECIAL))
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"], help="train: a fitting check")
    parser.add_argument("--rows", type=int, default=0, help="first N rows (0: all)")
    parser.add_argument("--tasks", nargs="+", default=None, help="only these tasks (e.g. motion camera)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--save", type=Path, default=None, help="write each video and a contact sheet here")
    parser.add_argument("--versus", default="no-reference", help="variant the others are compared with, row by row")
    args = parser.parse_args()
    info = setup(args)

    from effivmt.data.video import load_clip
    from effivmt.omnitransfer.data import read_manifest

    manifest = args.pairs / f"{args.split}.jsonl"
    meta_rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = read_manifest(manifest)
    picked = [i for i, m in enumerate(meta_rows) if args.tasks is None or m["task"] in args.tasks]
    picked = picked[: args.rows] if args.rows else picked
    size = json.loads((args.pairs / "pairs.json").read_text())["size"]  # [frames, height, width]
    clip = dict(num_frames=size[0], height=size[1], width=size[2], fps=None, frame_mode="first", allow_fewer=True)

    def read(path) -> torch.Tensor:  # (1, 3, F, H, W) in [-1, 1]
        return load_clip(path, **clip)[0][None]

    results: dict[str, dict] = {}
    samples: dict[str, list[np.ndarray]] = {}
    for spec in args.variant:
        name, _, weights = spec.partition("=")
        if not weights and name not in SPECIAL:
            parser.error(f"--variant {spec}: give NAME=WEIGHTS or one of {SPECIAL}")
        generate, per_step = _generator(name, Path(weights) if weights else None, args)
        out_rows, t0 = [], time.perf_counter()
        for n, i in enumerate(picked):
            row, meta = rows[i], meta_rows[i]
            target = read(row["target"])
            references = [read(p) for p in row["reference"]]
            started = time.perf_counter()
            frames = _frames(target[0]) if generate is None else generate(target, references, row, args)
            seconds = time.perf_counter() - started
            scores = score(meta["task"], frames, meta["meta"])
            out_rows.append({"name": meta["name"], "task": meta["task"], **scores, "seconds": round(seconds, 2)})
            samples.setdefault(name, []).append(frames)
            if spec == args.variant[0]:  # the sheet's first column: the (last) reference, once per row
                samples.setdefault("reference", []).append(_frames(references[-1][0]))
            log(f"[{name} {n + 1}/{len(picked)}] {meta['name']}: {scores['score']:.3f} ({seconds:.1f} s)")
        tasks = sorted({r["task"] for r in out_rows})
        summary = {t: bootstrap([r["score"] for r in out_rows if r["task"] == t]) for t in tasks}
        summary["all"] = bootstrap([r["score"] for r in out_rows])
        wall = time.perf_counter() - t0
        results[name] = {"summary": summary, "wall_s": round(wall, 1), "rows": out_rows}
        if per_step is not None:
            results[name]["seconds_per_step"] = round(per_step(), 4)
        log(f"{name}: " + ", ".join(f"{t} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for t, v in summary.items()))
    _versus(results, args.versus)
    if args.save:
        _save(args.save, samples, [meta_rows[i]["name"] for i in picked])
        _save_paths(args.save, samples, [meta_rows[i] for i in picked])
    print(
        json.dumps(
            {
                "bench": "omnitransfer_heldout",
                "pairs": str(args.pairs),
                "split": args.split,
                "rows": len(picked),
                "steps": args.steps,
                "guidance": args.guidance,
                **info,
                "variants": results,
            }
        )
    )


def _generator(name: str, weights: Path | None, args: argparse.Namespace):
    """``(generate(target, references, row, args) -> frames, seconds_per_step())``; ``(None, None)`` for target."""
    if name == "target":
        return None, None
    spent = {"seconds": 0.0, "steps": 0}

    def per_step() -> float:
        return spent["seconds"] / max(1, spent["steps"])

    if name == "no-reference":
        from diffusers import WanImageToVideoPipeline
        from PIL import Image

        from effivmt.backbone.wan import resolve_model_path

        stock = WanImageToVideoPipeline.from_pretrained(str(resolve_model_path(None, "i2v"))).to(args.device)
        stock.set_progress_bar_config(disable=True)

        def generate(target, references, row, args) -> np.ndarray:
            first = Image.fromarray(_frames(target[0])[0])
            start = time.perf_counter()
            video = stock(
                prompt=row["prompt"],
                image=first,
                num_frames=target.shape[2],
                height=target.shape[3],
                width=target.shape[4],
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            ).frames[0]
            spent["seconds"] += time.perf_counter() - start
            spent["steps"] += args.steps
            return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)

        return generate, per_step

    from effivmt.omnitransfer.reference import decode_latents
    from effivmt.omnitransfer.transfer import load_transfer_pipeline

    pipe, use_mllm, _ = load_transfer_pipeline(weights, fps=8.0, device=args.device)

    def generate(target, references, row, args) -> np.ndarray:
        start = time.perf_counter()
        latents = pipe.sample(
            target[:, :, 0],
            references,
            list(row["task"]),
            row["prompt"],
            num_frames=target.shape[2],
            steps=args.steps,
            guidance=args.guidance,
            seed=0,
            source="mllm" if use_mllm else "text",
        )
        spent["seconds"] += time.perf_counter() - start
        spent["steps"] += args.steps
        return _frames(decode_latents(pipe.wan.vae, latents)[0])

    return generate, per_step


def _save(folder: Path, samples: dict[str, list[np.ndarray]], names: list[str]) -> None:
    """Each video as mp4 and ``sheet.png``: per row, the reference's and then each variant's first, middle and last
    frames side by side."""
    from PIL import Image

    from effivmt.data.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for variant, videos in samples.items():
        for name, video in zip(names, videos, strict=True):
            write_video(folder / f"{name}-{variant}.mp4", torch.from_numpy(video), fps=8.0)
    strip = lambda v: np.concatenate([v[0], v[len(v) // 2], v[-1]], axis=1)  # noqa: E731
    gap = lambda v: np.full((v.shape[1], 4, 3), 255, np.uint8)  # noqa: E731
    lines = []
    order = ["reference"] + [k for k in samples if k != "reference"]
    for i in range(len(names)):
        parts = []
        for videos in (samples[k] for k in order):
            parts += [strip(videos[i]), gap(videos[i])]
        lines.append(np.concatenate(parts[:-1], axis=1))
    sheet = np.concatenate(lines, axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(folder / "sheet.png")


#: Path colours of ``paths.png``: the target's path, then each variant's in ``--variant`` order.
PATH_COLORS = ("white", "#ff3b30", "#0a84ff", "#ffcc00", "#34c759", "#af52de")


def _save_paths(folder: Path, samples: dict[str, list[np.ndarray]], metas: list[dict], scale: int = 4) -> None:
    """``paths.png``: one panel per motion row, the target's first frame (dimmed) with the target's path (white, the
    reference's motion) and each variant's path as read from its pixels (the ``path`` score's input), with a legend.
    Strips of three frames hide a path that returns to its start (orbits, figure-8s); these lines do not."""
    from PIL import Image, ImageDraw

    from effivmt.metrics.world import read_clip

    variants = [k for k in samples if k != "reference"]
    panels = []
    for i, meta in enumerate(metas):
        if "motion" not in meta["task"]:
            continue
        first = samples[variants[0]][i][0].astype(np.float32) * 0.45
        panel = Image.fromarray(first.astype(np.uint8)).resize((first.shape[1] * scale,) * 2, Image.NEAREST)
        draw = ImageDraw.Draw(panel)
        paths = [np.asarray(meta["meta"]["target_path"])] + [read_clip(samples[k][i]).path for k in variants]
        for path, color in zip(paths, PATH_COLORS):
            points = [(float(x) * scale, float(y) * scale) for x, y in path if np.isfinite(x) and np.isfinite(y)]
            if len(points) > 1:
                draw.line(points, fill=color, width=3)
                draw.ellipse([points[0][0] - 4, points[0][1] - 4, points[0][0] + 4, points[0][1] + 4], fill=color)
        draw.text((4, 4), meta["name"], fill="white")
        panels.append(np.asarray(panel))
    if not panels:
        return
    legend = Image.new("RGB", (panels[0].shape[1] * len(panels), 18), "black")
    draw = ImageDraw.Draw(legend)
    for k, (name, color) in enumerate(zip(["target (reference's motion)", *variants], PATH_COLORS)):
        draw.text((4 + 150 * k, 3), name, fill=color)
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    width = max(row.shape[1], legend.width)
    canvas = Image.new("RGB", (width, row.shape[0] + legend.height), "black")
    canvas.paste(Image.fromarray(row), (0, 0))
    canvas.paste(legend, (0, row.shape[0]))
    canvas.save(folder / "paths.png")


if __name__ == "__main__":
    main()
