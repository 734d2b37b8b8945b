"""Can the micro Wan be taught its direction words? Train its DiT on straight lines only, then score the words it uses.

The shipped micro T2V ignores the direction words (``bench/micro_word_use.py``: swapping them leaves the flow loss
unchanged at every noise level) and follows them in 2 of 20 prompts. This script tries one remedy at a time, on
straight-line clips of the world only (every caption names a direction), and scores the trained DiT with
``micro_word_use``'s loss test on clips drawn the same way (world seeds outside the pretraining range):

* by default, a warm start from ``--model`` (the packaged micro T2V), DiT and UMT5 trained together as in
  ``effivmt pretrain``'s DiT stages (object-weighted flow loss, EMA weights);
* ``--from-scratch --patch 1``: a new DiT with patch ``(1, 1, 1)``, one token per latent pixel, so that a straight
  motion crosses 2.4-4.8 tokens in a clip instead of 1.2-2.4 (the UMT5 stays warm);
* ``--trail``: every clip drawn with a comet tail behind the object (``effivmt.data.world.render(trail=True)``: 7
  fading discs over 14 px, against the motion), a cue of the direction in every single frame, as motion blur and
  facing give it in real video; without it a frame of a line moving left looks like one of a line moving right.
  The packaged VAE's encoder carries the tail into the latents (behind the object in every latent frame); its
  decoder, trained without tails, does not draw it (docs/micro-wan.md), so samples show no tail;
* ``--motions pretrain``: the whole pretraining draw (lines and standing still) instead of lines only, to keep what
  the model could do besides lines (pretraining also has ``--p-image 0.2 --p-appearance 0.2``).

One JSON line on stdout (training wall time; per noise level the loss increase when the direction or colour words are
swapped, with bootstrap 95% intervals); ``--out DIR`` also writes the trained ``WanPipeline`` folder, which
``bench/micro_prompts.py --model DIR`` samples::

    python bench/micro_direction_probe.py --steps 3000 --out runs/probe-warm | tail -1 | python -m json.tool
    python bench/micro_direction_probe.py --steps 3000 --trail --out runs/probe-trail
    python bench/micro_direction_probe.py --steps 3000 --from-scratch --patch 1 --lr 5e-4 --lr-warmup 200 \\
        --p-image 0.1 --p-appearance 0.1

Results and what they mean: docs/micro-wan.md, "Teaching the direction words".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, log, setup  # noqa: E402
from micro_word_use import word_use  # noqa: E402


def draw_scene(seed: int, motions: str):
    """A straight line of the world (``"lines"``) or the pretraining draw's scene of ``seed`` (``"pretrain"``)."""
    from effivmt.data.world import sample_scene

    return sample_scene(seed, motion="linear") if motions == "lines" else sample_scene(seed)


def encode_clips(vae, seeds: list[int], trail: bool, motions: str = "lines") -> tuple[list, torch.Tensor, torch.Tensor]:
    """The scenes of ``seeds`` (straight lines, or the pretraining draw with ``motions="pretrain"``), their latents
    normalised as the DiT sees them, and their object masks."""
    from effivmt.backbone.encode import vae_encode
    from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE
    from effivmt.data.world import world_video
    from effivmt.training.object_mask import latent_object_mask

    scenes = [draw_scene(s, motions) for s in seeds]
    latents, masks = [], []
    for i in range(0, len(scenes), 16):
        video = world_video(scenes[i : i + 16], MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE, trail=trail).to(vae.device)
        latents.append(vae_encode(vae, video))
        masks.append(latent_object_mask(video))
    return scenes, torch.cat(latents), torch.cat(masks)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--model", default="micro", help="'micro' or a Wan T2V diffusers folder (VAE, UMT5, DiT)")
    parser.add_argument("--from-scratch", action="store_true", help="a new DiT instead of --model's")
    parser.add_argument("--patch", type=int, default=2, choices=[1, 2], help="spatial patch of a new DiT")
    parser.add_argument("--trail", action="store_true", help="draw a comet tail behind each object")
    parser.add_argument("--motions", default="lines", choices=["lines", "pretrain"], help="training clips' motions")
    parser.add_argument("--clips", type=int, default=800, help="training clips (encoded once)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--object-weight", type=float, default=5.0)
    parser.add_argument("--p-image", type=float, default=0.0, help="share of single-frame batches")
    parser.add_argument("--p-appearance", type=float, default=0.0, help="share of captions without motion words")
    parser.add_argument("--p-empty", type=float, default=0.1, help="share of empty captions")
    parser.add_argument("--eval-clips", type=int, default=32)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6, 0.8, 0.95])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the trained WanPipeline folder here")
    args = parser.parse_args(argv)
    if not args.from_scratch and args.patch != 2:
        parser.error("--patch 1 needs --from-scratch (the packaged DiT has patch 2)")
    info = setup(args)

    import lightning as L
    from diffusers import WanPipeline, WanTransformer3DModel
    from lightning.pytorch.callbacks import TQDMProgressBar

    from effivmt.backbone.micro import MICRO_T2V
    from effivmt.backbone.wan import resolve_model_path
    from effivmt.pretrain.dit import Steps, TextToVideoPretrainModule
    from effivmt.pretrain.run import dit_ema

    class ProbeClips(TextToVideoPretrainModule):
        def scene(self, i: int):
            return draw_scene(self.scene_seeds[i], args.motions)

    pipe = WanPipeline.from_pretrained(str(resolve_model_path(args.model))).to(args.device)
    vae = pipe.vae.eval()
    train_seeds = [20_000_000 + args.seed * 100_000 + i for i in range(args.clips)]
    t0 = time.perf_counter()
    _, x0, masks = encode_clips(vae, train_seeds, args.trail, args.motions)
    log(f"encoded {args.clips} clips in {time.perf_counter() - t0:.0f} s")
    if args.from_scratch:
        torch.manual_seed(args.seed)
        config = {**MICRO_T2V, "patch_size": (1, args.patch, args.patch)}
        pipe.transformer = WanTransformer3DModel(**config).to(args.device)
    module = ProbeClips(
        pipe.transformer.train(),
        pipe.text_encoder.train(),
        pipe.tokenizer,
        x0,
        train_seeds,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.lr_warmup,
        max_steps=args.steps,
        p_image=args.p_image,
        p_appearance=args.p_appearance,
        p_empty=args.p_empty,
        shift=args.shift,
        seed=args.seed + 77,
        object_masks=masks,
        object_weight=args.object_weight,
    )
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu" if args.device == "cpu" else "gpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[dit_ema(), TQDMProgressBar(refresh_rate=50)],
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's bar writes to stdout, which carries only the JSON line
        trainer.fit(module, torch.utils.data.DataLoader(Steps(), batch_size=None))
    train_s = time.perf_counter() - t0  # after fit, the EMA callback has put the averaged weights in the module
    trained = pipe.transformer  # its cross-attention still carries the training's compact-padding processors
    pipe.transformer = WanTransformer3DModel.from_config(trained.config).to(args.device)
    pipe.transformer.load_state_dict(trained.state_dict())
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    eval_seeds = [30_000_000 + i for i in range(args.eval_clips)]
    scenes, eval_x0, _ = encode_clips(vae, eval_seeds, args.trail)
    rows = word_use(pipe, scenes, eval_x0, args.sigmas, groups=("direction", "color"))
    if args.out is not None:
        from effivmt.io import atomic_dir

        with atomic_dir(args.out) as tmp:
            pipe.save_pretrained(str(tmp))
    result = {
        "bench": "micro_direction_probe",
        "model": str(args.model),
        **{k: v for k, v in vars(args).items() if k not in ("model", "out", "device", "threads", "repeats", "warmup")},
        "train_s": round(train_s, 1),
        **info,
        "sigmas": rows,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
