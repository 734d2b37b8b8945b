"""Does the micro Wan's DiT know where in the frame a token is? Its prediction on a shifted clip against the
shifted prediction.

Wan has no absolute position embedding: the patch embedding is a convolution, RoPE in self-attention sees
only offsets between tokens, and cross-attention has no positions at all. So the DiT can tell where a token
lies in the frame only from the frame's edges (a token near the left edge has no keys to its left). This
script rolls clips (encoded by the model's own VAE, with noise at several levels) by whole tokens in space
and compares the DiT's velocity on the rolled input with the rolled velocity of the original::

    python bench/micro_equivariance.py --model micro | tail -1 | python -m json.tool

For scale, the same relative change is reported for swapping the object's colour word (a word the DiT
uses; ``bench/micro_word_use.py``). A relative error near 0 means the DiT is translation-equivariant:
rolling across the frame's edge (which puts the left edge's tokens beside the right edge's) changes
nothing it computes. The error is an upper bound on what the DiT knows of absolute position: an object
rolled across the edge is cut in two halves far apart, which a non-cyclic DiT may read differently. An
equivariant DiT cannot place an object by absolute position, so a prompt word can change where the
object goes only through how its positions in different frames relate (docs/micro-wan.md, "Which words the DiT uses").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, add_world_clip_args, encoded_world_clips, log, setup  # noqa: E402


def _other(scene, colors) -> str:
    """The next palette colour after the object's that is not the background's."""
    names = list(colors)
    k = names.index(scene.objects[0].color)
    return next(c for c in names[k + 1 :] + names[:k] if c != scene.background)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    add_world_clip_args(parser, clips=8)
    args = parser.parse_args()
    info = setup(args)

    from effivmt.data.world import COLORS, WorldObject, caption

    pipe, scenes, x0 = encoded_world_clips(args)
    transformer = pipe.transformer
    _, ph, pw = transformer.config.patch_size
    shifts = [(0, pw), (ph, 0), (ph, 2 * pw)]  # whole tokens, so the patch grid stays aligned
    with torch.no_grad():
        embeds = pipe.encode_prompt([caption(s) for s in scenes], do_classifier_free_guidance=False)[0]
        recoloured = [
            dataclasses.replace(s, objects=(WorldObject(_other(s, COLORS), s.objects[0].shape),)) for s in scenes
        ]
        swapped = pipe.encode_prompt([caption(s) for s in recoloured], do_classifier_free_guidance=False)[0]
        rows = {}
        for sigma in args.sigmas:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(x0)
            xt = (1 - sigma) * x0 + sigma * noise
            t = torch.full((len(scenes),), sigma * 1000, device=x0.device)
            pred = transformer(xt, t, embeds, return_dict=False)[0]
            errors = []
            for dy, dx in shifts:
                moved = transformer(torch.roll(xt, (dy, dx), dims=(3, 4)), t, embeds, return_dict=False)[0]
                back = torch.roll(moved, (-dy, -dx), dims=(3, 4))
                errors.append(float((back - pred).square().mean() / pred.square().mean()))
            other = transformer(xt, t, swapped, return_dict=False)[0]
            colour = float((other - pred).square().mean() / pred.square().mean())
            rows[str(sigma)] = {"relative_error": float(np.mean(errors)), "per_shift": errors, "colour_swap": colour}
            log(f"sigma {sigma}: relative error {np.mean(errors):.4f} (colour word swapped: {colour:.4f})")
    shift_names = [f"{dy},{dx}" for dy, dx in shifts]
    result = {"bench": "micro_equivariance", "model": str(args.model), "clips": args.clips, "shifts": shift_names}
    print(json.dumps({**result, **info, "sigmas": rows}))


if __name__ == "__main__":
    main()
