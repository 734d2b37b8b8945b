"""Stage 1 of EffiVMT: label every (layer, head) of the DiT spatial or temporal.

The clip is encoded once, noised at a few timesteps, and run through the transformer with
:func:`~effivmt.attention.capture_scores` active; the chunked template scores (DESIGN.md, "Head
classification") are averaged over timesteps and prompts, then thresholded with ``alpha``.
:class:`HeadClassifier` is the same computation as a Lightning predict loop (progress bar, devices), and
:func:`classify_clip` is the run's stage 1: scores, then ``heads.json``, ``heads.png`` and the TensorBoard map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from effivmt.attention import capture_scores, classify_heads, install_processors
from effivmt.attention.scores import Rule, ScoreCapture
from effivmt.backbone.encode import encode_prompts, encode_video
from effivmt.backbone.wan import WanComponents
from effivmt.io import write_json_atomic
from effivmt.training.flow import add_noise

log = logging.getLogger("effivmt")

#: Default noise levels (Wan timesteps): high noise, where layout and motion are decided, and mid noise.
DEFAULT_TIMESTEPS = (950, 750, 500)


Normalization = Literal["uniform", "raw"]


def normalized(
    spatial: torch.Tensor, temporal: torch.Tensor, grid: tuple[int, int, int] | None, normalization: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores the rule compares. ``uniform``: as stored (mass / uniform mass, DESIGN.md); ``raw``: the masses
    themselves, ``S * share`` with shares ``H*W/N`` (spatial) and ``(F-1)/N`` (temporal) of a ``(F, H, W)`` grid."""
    if normalization == "uniform":
        return spatial, temporal
    if normalization != "raw":
        raise ValueError(f"unknown normalization {normalization!r}; use 'uniform' or 'raw'")
    if grid is None:
        raise ValueError("raw scores need the token grid the scores were taken on")
    f, h, w = grid
    n = f * h * w
    return spatial * (h * w / n), temporal * ((f - 1) / n)


@dataclass
class HeadScores:
    """Normalised template scores ``(layers, heads)`` and the labels they give."""

    spatial: torch.Tensor
    temporal: torch.Tensor
    labels: list[list[str]]
    alpha: float = 1.25
    rule: Rule = "paper"
    timesteps: list[int] = field(default_factory=list)
    grid: tuple[int, int, int] | None = None
    normalization: Normalization = "uniform"

    @property
    def num_layers(self) -> int:
        return len(self.labels)

    @property
    def num_heads(self) -> int:
        return len(self.labels[0]) if self.labels else 0

    def counts(self) -> tuple[int, int]:
        """``(spatial, temporal)`` head counts."""
        flat = [label for row in self.labels for label in row]
        return flat.count("spatial"), flat.count("temporal")

    def relabel(self, alpha: float | None = None, rule: Rule | None = None) -> HeadScores:
        """Same scores, labels recomputed with another ``alpha`` / ``rule`` (no model pass)."""
        alpha = self.alpha if alpha is None else alpha
        rule = self.rule if rule is None else rule
        labels = classify_heads(*normalized(self.spatial, self.temporal, self.grid, self.normalization), alpha, rule)
        return replace(self, alpha=alpha, rule=rule, labels=labels)

    def to_json(self, clip: str | None = None) -> dict:
        """The ``heads.json`` layout of the EffiVMT issue."""
        return {
            "alpha": self.alpha,
            "rule": self.rule,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "labels": self.labels,
            "scores": {"spatial": self.spatial.tolist(), "temporal": self.temporal.tolist()},
            "clip": clip,
            "timesteps": list(self.timesteps),
            "grid": list(self.grid) if self.grid else None,
            "normalization": self.normalization,
        }

    @classmethod
    def from_json(cls, data: dict) -> HeadScores:
        return cls(
            spatial=torch.tensor(data["scores"]["spatial"], dtype=torch.float64),
            temporal=torch.tensor(data["scores"]["temporal"], dtype=torch.float64),
            labels=data["labels"],
            alpha=data["alpha"],
            rule=data.get("rule", "paper"),
            timesteps=data.get("timesteps", []),
            grid=tuple(data["grid"]) if data.get("grid") else None,
            normalization=data.get("normalization", "uniform"),
        )


class HeadClassifier(L.LightningModule):
    """Predict loop over (timestep, prompt) pairs; each step is one noisy forward pass with score capture.

    Args:
        transformer: the Wan transformer (processors are installed on it).
        latents: the clip's normalised latents ``(1, C, F, H, W)``.
        prompt_embeds: ``(P, L, D)`` text embeddings, one per prompt.
        chunk_size: queries per chunk (peak extra memory ``heads * chunk_size * N`` floats).
        num_queries: sample this many queries per pass (``None``: all).
        seed: noise seed; the same seed gives the same scores.
    """

    def __init__(
        self,
        transformer,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        chunk_size: int = 1024,
        num_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.latents = latents
        self.prompt_embeds = prompt_embeds
        self.seed = seed
        install_processors(transformer)
        cfg = transformer.config
        _, _, f, h, w = latents.shape
        pt, ph, pw = cfg.patch_size
        self.capture = ScoreCapture(
            cfg.num_layers, cfg.num_attention_heads, chunk_size, num_queries, (f // pt, h // ph, w // pw)
        )

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        timestep, prompt = (int(x) for x in batch.view(-1)[:2])
        gen = torch.Generator().manual_seed(self.seed * 100_003 + timestep)
        noise = torch.randn(self.latents.shape, generator=gen).to(self.device)
        x0 = self.latents.to(self.device)
        dtype = self.transformer.dtype
        xt = add_noise(x0, noise, torch.tensor([timestep / 1000.0]))
        with capture_scores(self.transformer, capture=self.capture):
            self.transformer(
                xt.to(dtype),
                torch.tensor([timestep], device=self.device),
                self.prompt_embeds[prompt : prompt + 1].to(self.device, dtype),
                return_dict=False,
            )


def _pairs(timesteps: Sequence[int], num_prompts: int) -> torch.Tensor:
    return torch.tensor([(t, p) for t in timesteps for p in range(num_prompts)], dtype=torch.long)


def score_heads(
    components: WanComponents,
    video: torch.Tensor,
    prompts: str | list[str],
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    alpha: float = 1.25,
    rule: Rule = "paper",
    chunk_size: int = 1024,
    num_queries: int | None = None,
    seed: int = 0,
    trainer: L.Trainer | None = None,
    normalization: Normalization = "uniform",
) -> HeadScores:
    """Classify every head of ``components.transformer`` on one clip.

    Args:
        video: ``(3, F, H, W)`` in [-1, 1] (e.g. from :func:`effivmt.data.load_clip`); needs >= 2 latent frames.
        prompts: caption(s) of the clip; scores are averaged over prompts and ``timesteps``.
        alpha, rule: see :func:`effivmt.attention.classify_heads`.
        trainer: run through this Lightning trainer's predict loop (progress bar); default a plain loop.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    latents = encode_video(components, video)
    embeds = encode_prompts(components, prompts)
    module = HeadClassifier(components.transformer, latents, embeds, chunk_size, num_queries, seed)
    pairs = _pairs(timesteps, len(prompts))
    if trainer is not None:
        from effivmt.training.trainer import interrupts_as_keyboard_interrupt

        with interrupts_as_keyboard_interrupt(trainer):
            loader = torch.utils.data.DataLoader(pairs, batch_size=1)
            trainer.predict(module, dataloaders=loader, return_predictions=False)
    else:
        with torch.no_grad():
            for i, pair in enumerate(pairs):
                module.predict_step(pair, i)
    spatial, temporal = module.capture.scores()
    grid = tuple(module.capture.grid)
    return HeadScores(
        spatial,
        temporal,
        classify_heads(*normalized(spatial, temporal, grid, normalization), alpha, rule),
        alpha,
        rule,
        [int(t) for t in timesteps],
        grid,
        normalization,
    )


def write_heads(out: Path, scores: HeadScores, clip: Path | None) -> None:
    """``heads.json`` (atomically), ``heads.png`` and the head map in TensorBoard (``logs/heads``)."""
    from effivmt.training.callbacks import log_image
    from effivmt.viz import figure_to_array, head_map_figure, save_figure

    write_json_atomic(out / "heads.json", scores.to_json(clip=None if clip is None else str(clip)))
    figure = head_map_figure(scores.spatial, scores.temporal, scores.labels, scores.alpha, scores.rule)
    save_figure(figure, out / "heads.png")
    log_image(out / "logs", "heads", "heads/map", figure_to_array(figure))


def classify_clip(
    out: Path,
    components: WanComponents,
    frames: torch.Tensor,
    clip_prompt: str,
    args,
    trainer: L.Trainer | None = None,
    clip: Path | None = None,
) -> HeadScores:
    """Stage 1 of a run: :func:`score_heads` with the recipe's ``heads`` group, then :func:`write_heads`.

    Args:
        out: the run (or ``effivmt heads``) folder.
        frames: the clip ``(3, F, H, W)`` in [-1, 1].
        clip_prompt: the clip's caption; ``args.prompts`` are averaged in.
        args: the recipe's :class:`~effivmt.vmt.plan.HeadsArgs`.
        trainer: a predict trainer (progress bar, device).
        clip: the clip's path, recorded in ``heads.json``.
    """
    scores = score_heads(
        components,
        frames,
        [clip_prompt, *(args.prompts or [])],
        args.timesteps,
        args.alpha,
        args.rule,
        args.chunk_size,
        args.num_queries,
        trainer=trainer,
        normalization=args.normalization,
    )
    write_heads(out, scores, clip)
    n_sp, n_t = scores.counts()
    log.info(f"heads: {n_sp} spatial / {n_t} temporal (alpha {scores.alpha}, rule {scores.rule})")
    return scores


__all__ = [
    "DEFAULT_TIMESTEPS",
    "HeadClassifier",
    "HeadScores",
    "classify_clip",
    "encode_prompts",
    "encode_video",
    "score_heads",
    "write_heads",
]
