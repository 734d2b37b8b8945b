"""Which words does the micro Wan's DiT use? The flow-matching loss with each clip's true caption against the
same caption with one word group swapped (direction, object colour, shape or background).

On clips of straight motions rendered from the world (seeds outside the pretraining range) and encoded by
the model's own VAE, every noise level draws one noise per clip and scores the DiT's velocity against the
target ``eps - x0`` (DESIGN.md, "Flow matching (Wan)") under each caption. A word the model uses raises the
loss when it is wrong; a word it ignores leaves the loss where it was. Cheap (forward passes only) and sharp:
it says *why* a prompt is not followed, where ``micro_prompts.py`` only says that it is not::

    python bench/micro_word_use.py --model micro | tail -1 | python -m json.tool

Reported per noise level and word group: the mean loss increase over clips with a bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, add_world_clip_args, encoded_world_clips, log, setup  # noqa: E402

GROUPS = ("direction", "color", "shape", "background")


def swapped(scene, group: str, rng: random.Random):
    """``scene`` with one word group changed to another valid value (never the background's or object's colour)."""
    from effivmt.data.world import COLORS, DIRECTIONS, SHAPES

    obj = scene.objects[0]
    if group == "direction":
        return dataclasses.replace(scene, direction=rng.choice([d for d in DIRECTIONS if d != scene.direction]))
    if group == "background":
        others = [c for c in COLORS if c not in (scene.background, obj.color)]
        return dataclasses.replace(scene, background=rng.choice(others))
    if group == "color":
        obj = dataclasses.replace(obj, color=rng.choice([c for c in COLORS if c not in (obj.color, scene.background)]))
    else:
        obj = dataclasses.replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    return dataclasses.replace(scene, objects=(obj,))


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def word_use(pipe, scenes: list, x0: torch.Tensor, sigmas: list[float], groups: tuple[str, ...] = GROUPS) -> dict:
    """Per noise level: the DiT's mean flow loss under the true captions, and for each word group the loss increase
    when that group is swapped (mean over clips and its bootstrap 95% interval). One noise draw per level, shared by
    every caption."""
    from effivmt.data.world import caption
    from effivmt.pretrain.dit import MAX_SEQUENCE_LENGTH

    transformer = pipe.transformer
    rng = random.Random(0)
    captions = {"true": [caption(s) for s in scenes]}
    captions.update({g: [caption(swapped(s, g, rng)) for s in scenes] for g in groups})
    rows = {}
    with torch.no_grad():
        # padded to 512 tokens, as in pretraining and in WanPipeline.__call__ (encode_prompt defaults to 226)
        embeds = {
            k: pipe.encode_prompt(v, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)[0]
            for k, v in captions.items()
        }
        for sigma in sigmas:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(x0)
            xt = (1 - sigma) * x0 + sigma * noise
            t = torch.full((len(scenes),), sigma * 1000, device=x0.device)
            target = noise - x0
            loss = {
                k: (transformer(xt, t, e, return_dict=False)[0] - target).square().mean((1, 2, 3, 4)).cpu().numpy()
                for k, e in embeds.items()
            }
            rows[str(sigma)] = {"true": float(loss["true"].mean())}
            for g in groups:
                diff = loss[g] - loss["true"]
                rows[str(sigma)][g] = {"increase": float(diff.mean()), "ci95": bootstrap(diff)}
            log(f"sigma {sigma}: " + ", ".join(f"{g} +{rows[str(sigma)][g]['increase']:.4f}" for g in groups))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    add_world_clip_args(parser, clips=32)
    args = parser.parse_args()
    info = setup(args)

    pipe, scenes, x0 = encoded_world_clips(args)
    rows = word_use(pipe, scenes, x0, args.sigmas)
    result = {"bench": "micro_word_use", "model": str(args.model), "clips": args.clips, **info, "sigmas": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
