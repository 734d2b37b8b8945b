"""Is the head split real? Switch each attention head of the micro Wan off and see what changes.

For every (block, head) of the micro DiT's self-attention, the head's output is zeroed at inference (a
pre-hook on ``attn1.to_out.0`` that zeroes the head's input columns) and a fixed set of prompts is rendered
with the same noise as the intact model. Two effects are read from pixels (:mod:`effivmt.metrics.world`):

* **motion effect** ``1 - path_similarity(path_off, path_intact)``: how much the object's path changed;
* **appearance effect**: how much each frame's look changed regardless of where the object is: the mean
  absolute difference of each frame's *sorted* pixel values (a position-free histogram distance), /255.

A head whose removal changes the path much more than the look is behaviourally *temporal*. The template
scores come from ``effivmt heads`` on clips of the same prompts (``heads.json``), under the two score
normalisations DESIGN.md discusses: ``uniform`` (each template's mass divided by what uniform attention
puts there; the paper's description) and ``raw`` (the masses themselves; the released code compares raw
masses over templates of similar area). Printed: Spearman correlation between each normalisation's
temporal-vs-spatial log ratio and the behavioural log ratio, and how each labelling (paper rule at its
alpha) agrees with the behavioural split (the median behavioural ratio). One JSON line on stdout::

    python bench/head_study.py --out runs/head-study | tail -1 | python -m json.tool
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, log, setup  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def sorted_pixel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of ``|sort(a_f) - sort(b_f)|`` per channel, /255: blind to where things are."""
    fa = np.sort(a.reshape(a.shape[0], -1, 3).astype(np.float64), axis=1)
    fb = np.sort(b.reshape(b.shape[0], -1, 3).astype(np.float64), axis=1)
    return float(np.abs(fa - fb).mean() / 255.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    args = parser.parse_args()
    info = setup(args)

    from diffusers import WanPipeline

    from effivmt.backbone.micro import MICRO_FPS, MICRO_FRAMES, MICRO_SIZE, micro_path
    from effivmt.data.video import write_video
    from effivmt.data.world import caption, render, sample_scene
    from effivmt.metrics.world import path_similarity, read_clip

    pipe = WanPipeline.from_pretrained(str(micro_path()))
    pipe.set_progress_bar_config(disable=True)
    blocks = pipe.transformer.blocks
    heads, dim = pipe.transformer.config.num_attention_heads, pipe.transformer.config.attention_head_dim
    scenes = [sample_scene(9000 + i, motion="linear") for i in range(args.prompts)]
    prompts = [caption(s) for s in scenes]

    def render_all() -> list[np.ndarray]:
        out = []
        for i, p in enumerate(prompts):
            v = pipe(
                p,
                num_frames=MICRO_FRAMES,
                height=MICRO_SIZE,
                width=MICRO_SIZE,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(i),
                output_type="np",
            ).frames[0]
            out.append((np.clip(v, 0, 1) * 255).round().astype(np.uint8))
        return out

    intact = render_all()
    paths = [read_clip(v).path for v in intact]
    motion = np.zeros((len(blocks), heads))
    look = np.zeros((len(blocks), heads))
    for layer, block in enumerate(blocks):
        for h in range(heads):

            def off(module, inputs, h=h):
                x = inputs[0].clone()
                x[..., h * dim : (h + 1) * dim] = 0
                return (x,)

            hook = block.attn1.to_out[0].register_forward_pre_hook(off)
            try:
                videos = render_all()
            finally:
                hook.remove()
            motion[layer, h] = np.mean([1 - path_similarity(read_clip(v).path, p) for v, p in zip(videos, paths)])
            look[layer, h] = np.mean([sorted_pixel_distance(v, w) for v, w in zip(videos, intact)])
            log(f"block {layer} head {h}: motion effect {motion[layer, h]:.3f}, appearance effect {look[layer, h]:.4f}")

    # template scores on the intact model's own clips (the clips whose motion the prompts describe)
    args.out.mkdir(parents=True, exist_ok=True)
    spatial, temporal = [], []
    for i, scene in enumerate(scenes):
        clip = args.out / f"clip-{i}.mp4"
        write_video(
            clip, torch.from_numpy(render(scene, MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE).frames.numpy()), MICRO_FPS
        )
        folder = args.out / f"heads-{i}"
        cmd = [sys.executable, "-m", "effivmt", "heads", "--clip", str(clip), "--clip_prompt", prompts[i]]
        cmd += ["--out", str(folder), "--model.path", str(micro_path()), "--trainer.progress_bar", "false"]
        cmd += ["--video.num_frames", str(MICRO_FRAMES), "--video.height", str(MICRO_SIZE)]
        cmd += ["--video.width", str(MICRO_SIZE), "--video.fps", str(MICRO_FPS)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        meta = json.loads((folder / "heads.json").read_text())
        spatial.append(np.array(meta["scores"]["spatial"]))
        temporal.append(np.array(meta["scores"]["temporal"]))
        grid = meta["grid"]
    s_uni, t_uni = np.mean(spatial, 0), np.mean(temporal, 0)
    f, hh, ww = grid
    n = f * hh * ww
    s_raw, t_raw = s_uni * (hh * ww / n), t_uni * ((f - 1) / n)
    behaviour = np.log((motion + 1e-3) / (look + 1e-3))
    temporal_behaviour = behaviour > np.median(behaviour)
    result = {"bench": "head_study", "grid": grid, "prompts": prompts, **info}
    for name, (s, t) in {"uniform": (s_uni, t_uni), "raw": (s_raw, t_raw)}.items():
        ratio = np.log(t / s)
        labels_paper = s < 1.25 * t  # temporal iff S_spatial < 1.25 S_temporal
        result[name] = {
            "spearman_with_behaviour": spearman(ratio.ravel(), behaviour.ravel()),
            "temporal_heads_paper_rule": int(labels_paper.sum()),
            "agreement_paper_rule": float((labels_paper == temporal_behaviour).mean()),
            "agreement_median_split": float(((ratio > np.median(ratio)) == temporal_behaviour).mean()),
        }
    result["per_head"] = {
        "motion_effect": motion.round(4).tolist(),
        "appearance_effect": look.round(5).tolist(),
        "S_spatial_uniform": s_uni.round(4).tolist(),
        "S_temporal_uniform": t_uni.round(4).tolist(),
    }
    (args.out / "head_study.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_head"}))


if __name__ == "__main__":
    main()
