"""Does the untuned micro Wan follow its prompts? Object colour, shape, background and straight-line direction.

Twenty captions of the pretraining grammar ("a red circle moving left quickly on a black background"),
drawn from a fixed seed, are rendered by **stock** ``diffusers.WanPipeline`` loaded from the micro folder,
and each video is read back from its pixels (:mod:`effivmt.metrics.world`): majority object colour, shape
and background colour, and the direction of the object's net displacement (the nearest of the 8
directions; a displacement under 4 px counts as "still"). One JSON line on stdout::

    python bench/micro_prompts.py --model micro | tail -1 | python -m json.tool
    python bench/micro_prompts.py --model micro-i2v | tail -1 | python -m json.tool

An I2V folder (``micro-i2v``: the packaged micro I2V) renders each caption from its scene's first frame with stock
``WanImageToVideoPipeline``; its rows also give ``start_px``, how far the object's first-frame centre lies from the
given frame's, and ``kept``, the share of frames whose colours and shape are the first frame's.

``--save DIR`` also writes every video and a contact sheet (first, middle and last frame of each).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, log, setup  # noqa: E402


def direction_of(path: np.ndarray, still_px: float = 4.0) -> str:
    """Nearest of the world's 8 directions to the net displacement, or ``"still"``."""
    from effivmt.data.world import DIRECTIONS

    ok = ~np.isnan(path).any(1)
    if ok.sum() < 2:
        return "none"
    p = path[ok]
    d = p[-1] - p[0]
    if np.hypot(*d) < still_px:
        return "still"
    angle = math.atan2(d[1], d[0])
    return min(
        DIRECTIONS,
        key=lambda k: abs(math.remainder(angle - math.atan2(DIRECTIONS[k][1], DIRECTIONS[k][0]), 2 * math.pi)),
    )


def prompts(n: int, seed: int) -> list:
    from effivmt.data.world import caption, sample_scene

    scenes = [sample_scene(seed * 1000 + i, motion="linear") for i in range(n)]
    return [(caption(s), s) for s in scenes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--model", default="micro", help="'micro', 'micro-i2v' or a Wan T2V / I2V diffusers folder")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7, help="prompt draw (not a pretraining seed)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    info = setup(args)

    import diffusers
    from PIL import Image

    from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE
    from effivmt.backbone.wan import PIPELINES, check_wan_folder, resolve_model_path
    from effivmt.data.world import render
    from effivmt.metrics.world import read_clip

    i2v_keyword = args.model == "micro-i2v"
    folder, variant = check_wan_folder(
        resolve_model_path("micro" if i2v_keyword else args.model, "i2v" if i2v_keyword else "t2v")
    )
    pipe = getattr(diffusers, PIPELINES[variant]).from_pretrained(str(folder)).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    rows, videos = [], []
    t0 = time.perf_counter()
    for i, (text, scene) in enumerate(prompts(args.n, args.seed)):
        g = torch.Generator().manual_seed(i)
        given = render(scene, MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE)
        image = {"image": Image.fromarray(given.frames[0].numpy())} if variant == "i2v" else {}
        video = pipe(
            prompt=text,
            **image,
            num_frames=MICRO_FRAMES,
            height=MICRO_SIZE,
            width=MICRO_SIZE,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=g,
            output_type="np",
        ).frames[0]
        frames = (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
        videos.append(frames)
        r = read_clip(frames)
        got = {
            "color": r.majority("color"),
            "shape": r.majority("shape"),
            "background": r.majority("background"),
            "direction": direction_of(r.path),
        }
        want = {"color": scene.objects[0].color, "shape": scene.objects[0].shape, "background": scene.background}
        want["direction"] = scene.direction
        ok = {k: got[k] == want[k] for k in want}
        rows.append({"prompt": text, "got": got, "ok": ok, "all": all(ok.values())})
        if variant == "i2v":
            start = r.path[0] - given.tracks[0, 0].numpy()
            rows[-1]["start_px"] = None if np.isnan(start).any() else float(np.hypot(*start))
            rows[-1]["kept"] = float(
                np.mean(
                    [
                        f.color == want["color"] and f.background == want["background"] and f.shape == want["shape"]
                        for f in r.frames
                    ]
                )
            )
        log(f"[{i + 1}/{args.n}] {'ok ' if all(ok.values()) else 'BAD'} {text!r} -> {got}")
    wall = time.perf_counter() - t0
    rates = {k: float(np.mean([r["ok"][k] for r in rows])) for k in ("color", "shape", "background", "direction")}
    rates["color+background+direction"] = float(
        np.mean([r["ok"]["color"] and r["ok"]["background"] and r["ok"]["direction"] for r in rows])
    )
    rates["all"] = float(np.mean([r["all"] for r in rows]))
    if variant == "i2v":
        starts = [r["start_px"] for r in rows if r["start_px"] is not None]
        rates["start_px_median"] = float(np.median(starts)) if starts else None
        rates["start_found"] = len(starts) / len(rows)
        rates["kept"] = float(np.mean([r["kept"] for r in rows]))
    if args.save:
        from effivmt.data.video import write_video

        args.save.mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(videos):
            write_video(args.save / f"{i:02d}.mp4", torch.from_numpy(v), fps=8.0)
        sheet = np.concatenate(
            [np.concatenate([v[0], v[len(v) // 2], v[-1]], axis=1) for v in videos[: min(10, len(videos))]], axis=0
        )
        from PIL import Image

        Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(
            args.save / "sheet.png"
        )
    print(
        json.dumps(
            {
                "bench": "micro_prompts",
                "model": str(args.model),
                "variant": variant,
                "rates": rates,
                "wall_s": round(wall, 1),
                **info,
                "steps": args.steps,
                "guidance": args.guidance,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
