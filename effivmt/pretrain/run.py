"""``effivmt pretrain``: the whole micro-Wan pretraining, from nothing to a diffusers folder, resumable.

Stages, each skipped once done and resumed from its last checkpoint when interrupted:

1. ``vae``: ``AutoencoderKLWan`` on short windows of pretraining scenes (:mod:`effivmt.pretrain.vae`), then
   ``vae-clips``: fine-tuned on whole clips;
2. ``cache``: every pretraining clip encoded once (posterior mode); per-channel mean/std become the
   VAE's ``latents_mean``/``latents_std``, as in Wan 2.1's config; then ``vae-decoder``: the decoder retrained
   on the cached latents without memory across latent frames (the encoder, hence the cache, unchanged);
3. ``dit``: ``WanTransformer3DModel`` + ``UMT5EncoderModel`` on the cached latents, EMA weights
   (:mod:`effivmt.pretrain.dit`); a snapshot folder is written every ``snapshot_every`` steps;
   ``dit-restart`` (when ``dit_restart_steps > 0``): a warm restart from ``dit``'s EMA weights, with a fresh
   optimizer and cosine schedule (SGDR, Loshchilov & Hutter 2017), so a finished run can be trained further;
   ``dit_restarts`` > 1 chains more of them (``dit-restart-2`` from ``dit-restart``, and so on);
4. ``i2v`` (when ``i2v_steps > 0``): the micro Wan I2V, warm-started from the latest DiT stage
   (:mod:`effivmt.pretrain.i2v`) on the same cached clips, each with its first frame's condition and CLIP
   features (cached once in ``cache/i2v-inputs.safetensors``);
5. ``export``: ``DIR/micro-wan-t2v``, a ``WanPipeline`` folder that ``load_wan`` and stock diffusers load: the
   latest DiT stage with the latest VAE stage; and ``DIR/micro-wan-i2v``, a ``WanImageToVideoPipeline`` folder.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import load_file, save_file

from effivmt.backbone.micro import (
    MICRO_FOLDER,
    MICRO_FRAMES,
    MICRO_I2V_FOLDER,
    MICRO_SIZE,
    build_micro_components,
    build_micro_image_encoder,
)
from effivmt.data.world import sample_scene, world_video
from effivmt.errors import ConfigError
from effivmt.io import atomic_dir, atomic_path, write_json_atomic


def _trainer(out: Path, name: str, max_steps: int, every: int, callbacks: list) -> L.Trainer:
    ckpt = ModelCheckpoint(
        dirpath=out / name / "checkpoints",
        every_n_train_steps=every,
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,  # a moved run folder still resumes from, and writes, last.ckpt
    )
    if not sys.stderr.isatty():  # a log file: tqdm's plain lines instead of Rich's live bar
        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=10)]
    return L.Trainer(
        max_steps=max_steps,
        accelerator="auto",
        devices=1,
        logger=TensorBoardLogger(str(out / "logs"), name=name, version=0),
        callbacks=[ckpt, *callbacks],
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


class StageClock(Callback):
    """A stage's wall time over every call that trained it. The seconds of earlier calls travel in the checkpoint
    (Lightning saves a callback's ``state_dict``), so a stage resumed after an interruption reports its whole
    time, not only the last call's. An interrupted call's time after its last checkpoint is not counted: those
    steps are trained again, and counted, in the call that resumes."""

    def __init__(self) -> None:
        self.start = time.time()
        self.before = 0.0

    @property
    def seconds(self) -> float:
        return round(self.state_dict()["seconds"], 1)

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.before + time.time() - self.start}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before = float(state_dict["seconds"])


def _last(out: Path, name: str) -> str | None:
    last = out / name / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def _done(out: Path, name: str) -> bool:
    return (out / name / "done.json").is_file()


def _mark(out: Path, name: str, **info) -> None:
    write_json_atomic(out / name / "done.json", info)


def train_vae(out: Path, steps: int, batch_size: int, seed: int) -> None:
    from effivmt.pretrain.vae import VaePretrainModule, WorldWindows

    if _done(out, "vae"):
        return
    clock = StageClock()
    vae = build_micro_components(seed)["vae"].train()
    module = VaePretrainModule(vae, max_steps=steps)
    resume = _last(out, "vae")
    start = torch.load(resume, map_location="cpu", weights_only=False)["global_step"] if resume else 0
    windows = WorldWindows(9, MICRO_SIZE, MICRO_FRAMES, batch_size, seed, start, p_image=0.5, trail=world_trail(out))
    data = torch.utils.data.DataLoader(windows, batch_size=None)
    _trainer(out, "vae", steps, 100, [clock]).fit(module, data, ckpt_path=resume)
    with atomic_dir(out / "vae" / "model") as tmp:
        vae.eval().save_pretrained(str(tmp))
    _mark(out, "vae", steps=steps, wall_s=clock.seconds)


def train_vae_clips(out: Path, steps: int, batch_size: int, seed: int) -> None:
    """Stage 1b: the VAE from stage 1 trained on whole clips, the teacher latent kept as an anchor.

    Trained on windows of 3 latent frames, the causal VAE reconstructs those but not the later ones: its
    receptive field in time (~110 frames) is longer than a clip, so latent frame k sees a history no
    window had. With the plain autoencoder loss on whole clips, latent frames 3-8 drifted away from the
    teacher latent and the moving object faded out of them; the anchor keeps it in every latent frame."""
    from diffusers import AutoencoderKLWan

    from effivmt.pretrain.vae import VaePretrainModule, WorldWindows

    if _done(out, "vae-clips"):
        return
    clock = StageClock()
    vae = AutoencoderKLWan.from_pretrained(str(out / "vae" / "model")).train()
    module = VaePretrainModule(vae, lr=2e-4, max_steps=steps, teacher_steps=steps // 3, teacher_weight=1.0)
    resume = _last(out, "vae-clips")
    start = torch.load(resume, map_location="cpu", weights_only=False)["global_step"] if resume else 0
    windows = WorldWindows(MICRO_FRAMES, MICRO_SIZE, MICRO_FRAMES, batch_size, seed + 1, start, trail=world_trail(out))
    data = torch.utils.data.DataLoader(windows, batch_size=None)
    _trainer(out, "vae-clips", steps, 50, [clock]).fit(module, data, ckpt_path=resume)
    with atomic_dir(out / "vae-clips" / "model") as tmp:
        vae.eval().save_pretrained(str(tmp))
    _mark(out, "vae-clips", steps=steps, wall_s=clock.seconds)


def train_vae_decoder(out: Path, steps: int, batch_size: int, seed: int) -> None:
    """Stage 2b: the decoder retrained on the cached latents, without memory across latent frames.

    After ``vae-clips`` the encoder's latents match the teacher at every latent frame, yet the recurrent
    decoder still lost the object from the 4th latent frame on (:func:`effivmt.pretrain.vae.memoryless_decoder`).
    The encoder is frozen, so the cache and the DiT trained on it stay valid."""
    from diffusers import AutoencoderKLWan

    from effivmt.pretrain.dit import Steps
    from effivmt.pretrain.vae import DecoderPretrainModule

    if _done(out, "vae-decoder"):
        return
    clock = StageClock()
    stats = load_file(str(out / "cache" / "latents.safetensors"))
    vae = AutoencoderKLWan.from_pretrained(str(out / "vae-clips" / "model")).train()
    module = DecoderPretrainModule(
        vae,
        stats["raw"],
        stats["seeds"].tolist(),
        batch_size=batch_size,
        max_steps=steps,
        seed=seed,
        trail=world_trail(out),
    )
    data = torch.utils.data.DataLoader(Steps(), batch_size=None)
    _trainer(out, "vae-decoder", steps, 100, [clock]).fit(module, data, ckpt_path=_last(out, "vae-decoder"))
    with atomic_dir(out / "vae-decoder" / "model") as tmp:
        vae.eval().save_pretrained(str(tmp))
    _mark(out, "vae-decoder", steps=steps, wall_s=clock.seconds)


VAE_STAGES = ("vae-decoder", "vae-clips")
"""Latest first: the exported VAE comes from the first of these whose model folder exists."""


def final_vae(out: Path):
    """The latest trained VAE of ``out``, with the cache's latent statistics in its config."""
    from diffusers import AutoencoderKLWan

    stage = next(n for n in VAE_STAGES if (out / n / "model").is_dir())
    stats = load_file(str(out / "cache" / "latents.safetensors"))
    vae = AutoencoderKLWan.from_pretrained(str(out / stage / "model"))
    vae.register_to_config(latents_mean=stats["mean"].tolist(), latents_std=stats["std"].tolist())
    return stage, vae


WORLD_FILE = "world.json"
"""How a run folder's clips are drawn (``{"trail": bool}``); every stage that renders clips reads it."""


def world_trail(out: Path) -> bool:
    """Whether ``out``'s clips have comet tails (a folder from before ``world.json`` was rendered without)."""
    path = out / WORLD_FILE
    return bool(json.loads(path.read_text())["trail"]) if path.is_file() else False


def record_world(out: Path, trail: bool) -> None:
    """Write ``out/world.json``, or refuse a call whose world differs from the one ``out``'s stages were made in:
    a VAE, a latent cache and a DiT trained on tail-less clips must not be resumed or extended on tailed ones."""
    started = (out / WORLD_FILE).is_file() or any((out / n).is_dir() for n in ("vae", "cache", "dit"))
    if started and world_trail(out) != trail:
        raise ConfigError(
            f"{out} holds a run whose clips were drawn with trail={world_trail(out)}, not trail={trail}",
            "give another --out to pretrain in that world, or drop --trail to continue this run",
        )
    write_json_atomic(out / WORLD_FILE, {"trail": trail})


def _rendered(seeds: list[int], trail: bool) -> torch.Tensor:
    """The pretraining clips of ``seeds`` as the VAE takes them: ``(B, 3, F, H, W)`` in [-1, 1]."""
    return world_video([sample_scene(s) for s in seeds], MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE, trail=trail)


@torch.no_grad()
def cache_latents(out: Path, clips: int, seed: int) -> None:
    from diffusers import AutoencoderKLWan
    from tqdm.auto import tqdm

    if _done(out, "cache"):
        return
    t0 = time.time()
    vae = AutoencoderKLWan.from_pretrained(str(out / "vae-clips" / "model")).eval()
    seeds = [seed * 100_000 + i for i in range(clips)]
    chunks, trail = [], world_trail(out)
    for start in tqdm(range(0, clips, 16), desc="cache latents", unit="x16 clips"):
        chunks.append(vae.encode(_rendered(seeds[start : start + 16], trail)).latent_dist.mode())
    raw = torch.cat(chunks)
    mean = raw.mean(dim=(0, 2, 3, 4))
    std = raw.std(dim=(0, 2, 3, 4))
    with atomic_path(out / "cache" / "latents.safetensors") as tmp:
        save_file({"raw": raw.contiguous(), "mean": mean, "std": std, "seeds": torch.tensor(seeds)}, str(tmp))
    _mark(out, "cache", clips=clips, wall_s=round(time.time() - t0, 1))


@torch.no_grad()
def rendered_clip_cache(
    out: Path, name: str, compute: Callable[[torch.Tensor], dict[str, torch.Tensor]], tags: dict[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """What ``compute`` derives from every cached clip, rendered again from its seed 16 at a time, kept in
    ``cache/NAME.safetensors`` with the seeds (and ``tags``) it was made from and reused only while they match."""
    from tqdm.auto import tqdm

    path = out / "cache" / f"{name}.safetensors"
    seeds = load_file(str(out / "cache" / "latents.safetensors"))["seeds"].tolist()
    made_from = {"seeds": torch.tensor(seeds), **{k: torch.tensor(v) for k, v in (tags or {}).items()}}
    if path.is_file():
        stored = load_file(str(path))
        if all(k in stored and torch.equal(stored[k], v) for k, v in made_from.items()):
            return {k: v for k, v in stored.items() if k not in made_from}
    trail = world_trail(out)
    batches = tqdm(range(0, len(seeds), 16), desc=name, unit="x16 clips")
    parts = [compute(_rendered(seeds[i : i + 16], trail)) for i in batches]
    tensors = {k: torch.cat([part[k] for part in parts]).contiguous() for k in parts[0]}
    with atomic_path(path) as tmp:
        save_file({**tensors, **made_from}, str(tmp))
    return tensors


def cached_object_masks(out: Path) -> torch.Tensor:
    """:func:`~effivmt.training.object_mask.latent_object_mask` of every cached clip, kept beside the cache
    (``cache/object-masks.safetensors``; a cache made before the masks gets them here)."""
    from effivmt.training.object_mask import latent_object_mask

    return rendered_clip_cache(out, "object-masks", lambda video: {"masks": latent_object_mask(video)})["masks"]


class Snapshots(Callback):
    """Every ``every`` steps, write the EMA weights as a full diffusers folder (look at a model mid-training)."""

    def __init__(self, out: Path, every: int, prefix: str = "step") -> None:
        self.out, self.every, self.prefix = out, every, prefix

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step > 0:
            dest = self.out / "snapshots" / f"{self.prefix}-{step:06d}"
            export_folder(self.out, dest, _ema_module(trainer, pl_module))


def _ema_module(trainer, pl_module):
    for cb in trainer.callbacks:
        if isinstance(cb, EMAWeightAveraging) and cb._average_model is not None:
            return cb._average_model.module
    return pl_module


def export_folder(out: Path, dest: Path, module) -> Path:
    """A ``WanPipeline`` folder from the trained VAE (with latent statistics) and ``module``'s DiT + UMT5."""
    from diffusers import WanPipeline

    parts = build_micro_components()
    parts["vae"] = final_vae(out)[1]
    parts["transformer"].load_state_dict(module.transformer.state_dict())
    parts["text_encoder"].load_state_dict(module.text_encoder.state_dict())
    with atomic_dir(dest) as tmp:
        WanPipeline(**parts).save_pretrained(str(tmp))
    return dest


def normalised_latents(out: Path) -> tuple[torch.Tensor, list[int]]:
    """The cached clip latents normalised as the pipelines normalise them (the cache's own per-channel statistics,
    which the exported VAE carries as ``latents_mean``/``latents_std``), and each clip's world seed."""
    stats = load_file(str(out / "cache" / "latents.safetensors"))
    z = stats["raw"].shape[1]
    latents = (stats["raw"] - stats["mean"].view(1, z, 1, 1, 1)) / stats["std"].view(1, z, 1, 1, 1)
    return latents, stats["seeds"].tolist()


def dit_ema() -> EMAWeightAveraging:
    """The EMA the DiT stages export: parameters only (with buffers it also averaged the 110 MB latent cache at
    every step, 42% of a step)."""
    return EMAWeightAveraging(decay=0.998, update_starting_at_step=200, use_buffers=False)


def train_dit(
    out: Path,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    snapshot_every: int,
    name: str = "dit",
    init: str | None = None,
    shift: float = 1.0,
    object_weight: float = 1.0,
) -> None:
    """Train the DiT + UMT5 for ``steps`` into ``out/name``; from scratch, or from the EMA weights that stage
    ``init`` exported (a warm restart: fresh AdamW, warm-up and cosine schedule). ``shift``: noise levels
    drawn as ``shift u / (1 + (shift - 1) u)`` (1.0: uniform; above 1, more of them high, where the layout of a
    video is decided). ``object_weight``: loss weight of the latent pixels the object touches (1.0: none)."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from effivmt.pretrain.dit import Steps, TextToVideoPretrainModule

    if _done(out, name):
        return
    clock = StageClock()
    latents, seeds = normalised_latents(out)
    parts = build_micro_components(seed)
    if init is not None:
        folder = out / init / "model"
        transformer = WanTransformer3DModel.from_pretrained(str(folder / "transformer"))
        text_encoder = UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"))
        parts["transformer"].load_state_dict(transformer.state_dict())
        parts["text_encoder"].load_state_dict(text_encoder.state_dict())
    module = TextToVideoPretrainModule(
        parts["transformer"].train(),
        parts["text_encoder"].train(),
        parts["tokenizer"],
        latents,
        seeds,
        batch_size=batch_size,
        lr=lr,
        max_steps=steps,
        shift=shift,
        seed=seed if init is None else seed + 1,  # a restart draws other batches than the first round
        object_masks=cached_object_masks(out) if object_weight != 1.0 else None,
        object_weight=object_weight,
    )
    ema = dit_ema()
    data = torch.utils.data.DataLoader(Steps(), batch_size=None)
    prefix = "step" if name == "dit" else name
    trainer = _trainer(out, name, steps, 200, [clock, ema, Snapshots(out, snapshot_every, prefix)])
    trainer.fit(module, data, ckpt_path=_last(out, name))
    # after fit, the EMA callback has copied the averaged weights into the module
    export_folder(out, out / name / "model", module)
    _mark(out, name, steps=steps, wall_s=clock.seconds, init=init, shift=shift, object_weight=object_weight)


def cached_i2v_inputs(out: Path, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The I2V condition ``[m, c]`` and CLIP features of every cached clip's first frame, encoded by the exported VAE
    and the micro CLIP of ``seed``, kept in ``cache/i2v-inputs.safetensors``."""
    from effivmt.pretrain.i2v import first_frame_inputs

    @functools.cache
    def encoders():  # only when the file is missing or stale
        return final_vae(out)[1].eval(), *build_micro_image_encoder(seed)

    def compute(video: torch.Tensor) -> dict[str, torch.Tensor]:
        condition, image = first_frame_inputs(*encoders(), video)
        return {"conditions": condition, "image_embeds": image}

    stored = rendered_clip_cache(out, "i2v-inputs", compute, {"clip_seed": seed})
    return stored["conditions"], stored["image_embeds"]


def export_i2v_folder(out: Path, dest: Path, module, seed: int) -> Path:
    """A ``WanImageToVideoPipeline`` folder: the trained VAE, ``module``'s I2V DiT and frozen UMT5, the seeded CLIP."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from effivmt.backbone.micro import MICRO_I2V

    parts = build_micro_components()
    parts["vae"] = final_vae(out)[1]
    parts["transformer"] = WanTransformer3DModel(**MICRO_I2V)
    parts["transformer"].load_state_dict(module.transformer.state_dict())
    parts["text_encoder"].load_state_dict(module.text_encoder.state_dict())
    image_encoder, image_processor = build_micro_image_encoder(seed)
    with atomic_dir(dest) as tmp:
        pipe = WanImageToVideoPipeline(**parts, image_encoder=image_encoder, image_processor=image_processor)
        pipe.save_pretrained(str(tmp))
    return dest


def train_i2v(
    out: Path,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    init: str,
    shift: float = 1.0,
    object_weight: float = 1.0,
) -> None:
    """Train the micro I2V for ``steps`` into ``out/i2v``, warm-started from the T2V that stage ``init`` exported.

    The stage remembers its T2V (``i2v/init.json``): once the T2V has moved on (another restart), an I2V made
    from the old one is refused, never silently reused."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from effivmt.backbone.micro import i2v_from_t2v
    from effivmt.pretrain.dit import Steps
    from effivmt.pretrain.i2v import ImageToVideoPretrainModule

    origin = out / "i2v" / "init.json"
    if origin.is_file() and json.loads(origin.read_text())["init"] != init:
        made = json.loads(origin.read_text())["init"]
        raise ConfigError(
            f"{out / 'i2v'} was trained from the T2V of stage {made}, but the latest T2V is now {init}",
            f"delete {out / 'i2v'} to train the I2V again from {init}, or pass --i2v_steps 0",
        )
    if _done(out, "i2v"):
        return
    write_json_atomic(origin, {"init": init})
    clock = StageClock()
    latents, seeds = normalised_latents(out)
    conditions, image_embeds = cached_i2v_inputs(out, seed)
    folder = out / init / "model"
    transformer = i2v_from_t2v(WanTransformer3DModel.from_pretrained(str(folder / "transformer")), seed)
    text_encoder = UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"))
    module = ImageToVideoPretrainModule(
        transformer.train(),
        text_encoder,
        build_micro_components(seed)["tokenizer"],
        latents,
        seeds,
        conditions,
        image_embeds,
        batch_size=batch_size,
        lr=lr,
        max_steps=steps,
        shift=shift,
        seed=seed + 101,  # other batches than any T2V stage drew
        object_masks=cached_object_masks(out) if object_weight != 1.0 else None,
        object_weight=object_weight,
    )
    ema = dit_ema()
    data = torch.utils.data.DataLoader(Steps(), batch_size=None)
    trainer = _trainer(out, "i2v", steps, 200, [clock, ema])
    trainer.fit(module, data, ckpt_path=_last(out, "i2v"))
    export_i2v_folder(out, out / "i2v" / "model", module, seed)
    _mark(out, "i2v", steps=steps, wall_s=clock.seconds, init=init, shift=shift, object_weight=object_weight)


def restart_cycles(steps: int | list[int], count: int) -> list[int]:
    """Steps of each warm restart: ``count`` cycles of ``steps``, or one cycle per entry of a list."""
    if isinstance(steps, int):
        return [steps] * count if steps > 0 else []
    if any(n <= 0 for n in steps):
        raise ConfigError(f"dit_restart_steps: every cycle needs steps > 0, got {steps}", "e.g. [4000, 4000, 20000]")
    return list(steps)


def restart_stages(count: int) -> list[str]:
    """Stage names of ``count`` chained warm restarts: ``dit-restart``, ``dit-restart-2``, ..."""
    return ["dit-restart" if k == 0 else f"dit-restart-{k + 1}" for k in range(count)]


def pretrain_micro(
    out: str | Path = "runs/pretrain-micro",
    vae_steps: int = 1800,
    vae_batch_size: int = 4,
    vae_clip_steps: int = 450,
    clips: int = 3000,
    vae_decoder_steps: int = 1000,
    dit_steps: int = 4000,
    dit_batch_size: int = 8,
    dit_lr: float = 5e-4,
    dit_restart_steps: int | list[int] = 0,
    dit_restarts: int = 1,
    dit_shift: float = 1.0,
    dit_object_weight: float = 1.0,
    i2v_steps: int = 10000,
    snapshot_every: int = 1000,
    seed: int = 0,
    trail: bool = False,
    threads: int = 0,
    install: bool = False,
) -> Path:
    """Pretrain the micro Wan from scratch into ``out`` (resumable); returns ``out/micro-wan-t2v``.

    Args:
        out: working folder (checkpoints, TensorBoard logs under ``out/logs``, snapshots, the result).
        vae_steps, vae_batch_size: VAE stage length and batch (9-frame windows, i.e. 3 latent frames: the
            causal cache's steady state; or single frames).
        vae_clip_steps: then this many steps on whole clips, 2 a batch (every latent frame a clip has).
        clips: pretraining clips encoded once into the latent cache.
        vae_decoder_steps: then the decoder alone, without memory across latent frames, on cached latents.
        dit_steps, dit_batch_size, dit_lr: DiT + UMT5 stage.
        dit_restart_steps: then a warm restart from its EMA weights for this many steps (0: none); the result
            is this stage's model. Raising it on a finished run trains that run further.
        dit_restarts: how many warm restarts of ``dit_restart_steps`` each, every one from the previous one's
            EMA weights; raising it on a finished run adds cycles. A list ``dit_restart_steps`` (``[4000, 4000,
            20000]``) gives each cycle its own length instead.
        dit_shift: timestep shift of the noise levels the DiT stages draw (1.0: uniform). Like every knob, it
            applies to the stages this call trains; finished stages keep theirs (``pretrain.json`` records it).
        dit_object_weight: loss weight of the latent pixels the object touches in the DiT stages (1.0: a
            plain mean; the object covers ~14% of them). Recorded per stage like the shift.
        i2v_steps: then the micro I2V for this many steps, warm-started from the latest DiT stage (0: none);
            exported as ``out/micro-wan-i2v``. It uses the DiT stages' batch size, learning rate, shift and object
            weight.
        snapshot_every: write a diffusers folder of the EMA weights every this many DiT steps.
        seed: everything random derives from it.
        trail: draw every moving object with a comet tail (:func:`effivmt.data.world.render`), a cue of its
            direction inside each frame. Without it the micro DiT never learned its direction words; with it a warm
            start learned them (docs/micro-wan.md). Recorded in ``out/world.json``; a run folder keeps its world.
        install: also write the results into the package (``effivmt/assets/micro-wan-t2v`` and ``micro-wan-i2v``,
            bf16 weights), where ``model.path: null`` finds them.
        threads: torch intra-op threads (0: torch's default). On a CPU shared with other work, 1 avoids
            OpenMP threads waiting on each other (we measured 6 s per VAE step with 2 contended threads).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_world(out, trail)
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    t0 = time.time()
    train_vae(out, vae_steps, vae_batch_size, seed)
    train_vae_clips(out, vae_clip_steps, 2, seed)
    cache_latents(out, clips, seed)
    train_vae_decoder(out, vae_decoder_steps, 8, seed)
    weighting = dict(shift=dit_shift, object_weight=dit_object_weight)
    train_dit(out, dit_steps, dit_batch_size, dit_lr, seed, snapshot_every, **weighting)
    last = "dit"
    cycles = restart_cycles(dit_restart_steps, dit_restarts)
    restarts = restart_stages(len(cycles))
    for k, (name, steps) in enumerate(zip(restarts, cycles)):  # each cycle draws other batches than the one before
        train_dit(out, steps, dit_batch_size, dit_lr, seed + k, snapshot_every, name, last, **weighting)
        last = name
    if i2v_steps > 0:
        train_i2v(out, i2v_steps, dit_batch_size, dit_lr, seed, last, **weighting)
    vae_stage, vae = final_vae(out)
    final = _export(out, MICRO_FOLDER, "export.json", {"dit": last, "vae": vae_stage}, out / last / "model", vae)
    finals = [final]
    if _done(out, "i2v"):  # made from the T2V it records (with --i2v_steps 0, perhaps not the latest one)
        made_from = {"i2v": json.loads((out / "i2v" / "done.json").read_text())["init"], "vae": vae_stage}
        finals.append(_export(out, MICRO_I2V_FOLDER, "export-i2v.json", made_from, out / "i2v" / "model", vae))
    names = ("vae", "vae-clips", "cache", "vae-decoder", "dit", *restarts, "i2v")
    stages = {n: json.loads((out / n / "done.json").read_text()) for n in names if _done(out, n)}
    write_json_atomic(out / "pretrain.json", {"stages": stages, "this_call_wall_s": round(time.time() - t0, 1)})
    if install:
        from effivmt.backbone.micro import micro_i2v_path, micro_path

        for folder, dest in zip(finals, (micro_path(), micro_i2v_path())):
            pack_folder(folder, dest)
    return final


def _export(out: Path, name: str, marker: str, made_from: dict, model: Path, vae) -> Path:
    """``out/name``: the pipeline folder ``model`` with the latest ``vae``, rewritten only when what it is made
    from (``made_from``, kept in ``out/marker``) changed."""
    final = out / name
    marker = out / marker
    if not (final.is_dir() and marker.is_file() and json.loads(marker.read_text()) == made_from):
        with atomic_dir(final) as tmp:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
            shutil.rmtree(tmp / "vae")
            vae.save_pretrained(str(tmp / "vae"))
        write_json_atomic(marker, made_from)
    return final


def pack_folder(src: Path, dest: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Copy a pipeline folder with its floating-point weights in ``dtype`` (half the bytes; diffusers and
    transformers load them back as float32 unless told otherwise). Configs and ``model_index.json`` lose
    ``_name_or_path``: the folder a pipeline or component was loaded from on the machine that trained it means
    nothing where the package goes."""
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        for file in [*tmp.rglob("config.json"), *tmp.rglob("model_index.json")]:
            config = json.loads(file.read_text())
            if config.pop("_name_or_path", None) is not None:
                file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for file in tmp.rglob("*.safetensors"):
            tensors = load_file(str(file))
            packed = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
            save_file(packed, str(file), metadata={"format": "pt"})
    return dest


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(pretrain_micro)
