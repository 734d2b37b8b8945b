"""Figures of attention heads: head maps, attention rows over frames, alpha sweeps, per-layer splits.

Users explore heads in Jupyter and watch runs in TensorBoard (issue 7); these helpers draw the same pictures
for both. Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` and rendered by
the Agg canvas, so nothing here touches pyplot's global state, changes the user's backend or opens a window.
Save a figure with :func:`save_figure`, turn it into an image for ``SummaryWriter.add_image`` with
:func:`figure_to_array`, or display it in a notebook.

Score conventions follow DESIGN.md, "Head classification": ``S_spatial`` and ``S_temporal`` are template
masses normalised so uniform attention scores 1 on both; the paper's rule labels a head temporal iff
``S_spatial < alpha * S_temporal``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from effivmt.attention.inspect import frame_mass
from effivmt.attention.scores import Rule, classify_heads
from effivmt.data.video import to_uint8_frames
from effivmt.io import atomic_path

#: Label colours, shared by every figure so spatial/temporal read the same everywhere.
SPATIAL_COLOR = "#4c72b0"
TEMPORAL_COLOR = "#dd8452"

__all__ = [
    "alpha_sweep_figure",
    "attention_map_figure",
    "figure_to_array",
    "head_map_figure",
    "noise_level_figure",
    "save_figure",
    "split_bar_figure",
    "SPATIAL_COLOR",
    "TEMPORAL_COLOR",
]


def _np(x: Any) -> np.ndarray:
    """Tensor / array / nested list -> float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(spatial, temporal)`` from a tuple or from anything with ``.spatial``/``.temporal`` (``HeadScores``)."""
    if hasattr(scores, "spatial") and hasattr(scores, "temporal"):
        return _np(scores.spatial), _np(scores.temporal)
    spatial, temporal = scores
    return _np(spatial), _np(temporal)


def _temporal_count(spatial: np.ndarray, temporal: np.ndarray, alpha: float, rule: Rule) -> int:
    labels = classify_heads(torch.as_tensor(spatial), torch.as_tensor(temporal), alpha, rule)
    return sum(lab == "temporal" for row in labels for lab in row)


def _cell_inches(layers: int, heads: int) -> float:
    """Heat-map cell size: roomy for the tiny model, compact for Wan 1.3B (30 x 12) and 14B (40 x 40)."""
    biggest = max(layers, heads)
    return 0.42 if biggest <= 16 else 0.28 if biggest <= 32 else 0.18


def head_map_figure(
    spatial: torch.Tensor | np.ndarray,
    temporal: torch.Tensor | np.ndarray,
    labels: Sequence[Sequence[str]] | None = None,
    alpha: float | None = None,
    rule: Rule = "paper",
    title: str | None = None,
) -> Figure:
    """Layer x head heat maps of ``log2 S_spatial``, ``log2 S_temporal`` and the classification margin.

    The third panel shows ``log2(S_spatial / (alpha * S_temporal))`` (paper rule; the released rule uses
    ``log2(alpha * S_spatial / S_temporal)``): blue cells are spatial, orange temporal, and the colour depth says
    how far a head sits from the decision boundary. Every cell of that panel carries its label, ``S`` or ``T``.
    ``log2`` makes uniform attention (score 1) the white midpoint of the first two panels.

    Args:
        spatial: ``(layers, heads)`` S_spatial.
        temporal: ``(layers, heads)`` S_temporal.
        labels: ``labels[layer][head]`` in ``{"spatial", "temporal"}``; computed from ``alpha``/``rule`` if omitted.
        alpha: threshold of the rule; default 1.25 (paper) or 1.3 (released). Only draws the margin panel.
        rule: ``"paper"`` or ``"released"`` (see :func:`effivmt.attention.classify_heads`).
        title: figure title; default says the split, e.g. ``"5 spatial / 3 temporal (alpha=1.25, paper)"``.
    """
    s, t = _np(spatial), _np(temporal)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"spatial and temporal must both be (layers, heads), got {s.shape} and {t.shape}")
    if alpha is None:
        alpha = 1.25 if rule == "paper" else 1.3
    if labels is None:
        labels = classify_heads(torch.as_tensor(s), torch.as_tensor(t), alpha, rule)
    layers, heads = s.shape
    if len(labels) != layers or any(len(row) != heads for row in labels):
        raise ValueError(f"labels must be {layers} lists of {heads} labels")
    tiny = 1e-12
    log_s, log_t = np.log2(np.maximum(s, tiny)), np.log2(np.maximum(t, tiny))
    margin = log_s - log_t - math.log2(alpha) if rule == "paper" else log_s + math.log2(alpha) - log_t
    n_temporal = sum(lab == "temporal" for row in labels for lab in row)

    cell = _cell_inches(layers, heads)
    width = 3 * max(heads * cell, 2.2) + 2.4
    height = max(layers * cell, 1.6) + 1.3
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    fontsize = float(np.clip(cell * 72 * 0.32, 3.5, 9))  # about a third of the cell height, in points
    panels = [
        (log_s, "log2 S_spatial", "RdBu_r"),
        (log_t, "log2 S_temporal", "RdBu_r"),
        (margin, "margin (purple spatial, orange temporal)", "PuOr"),
    ]
    for ax, (values, name, cmap) in zip(axes, panels):
        bound = max(float(np.abs(values).max()), 1e-3)
        image = ax.imshow(
            values, cmap=cmap, norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto", interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_xticks(range(heads) if heads <= 16 else range(0, heads, max(1, heads // 8)))
    axes[0].set_ylabel("layer")
    axes[0].set_yticks(range(layers) if layers <= 16 else range(0, layers, max(1, layers // 8)))
    strong = 0.6 * max(float(np.abs(margin).max()), 1e-3)
    for layer in range(layers):
        for head in range(heads):
            letter = "T" if labels[layer][head] == "temporal" else "S"
            color = "white" if abs(margin[layer, head]) > strong else "black"  # readable on dark cells
            axes[2].text(
                head, layer, letter, ha="center", va="center", fontsize=fontsize, fontweight="bold", color=color
            )
    if title is None:
        title = f"{layers * heads - n_temporal} spatial / {n_temporal} temporal (alpha={alpha:g}, {rule} rule)"
    fig.suptitle(title, fontsize=10)
    return fig


def _pixel_frame(latent_frame: int, latent_frames: int, pixel_frames: int) -> int:
    """The pixel frame shown under a latent frame: spread evenly, so 17 frames -> latents 0..4 -> 0, 4, 8, 12, 16.

    Wan's causal VAE maps pixel frame 0 to latent 0 and frames 4f-3..4f to latent f; the last frame of each
    group is the one the spacing lands on when ``pixel_frames = 4 * (latent_frames - 1) + 1``.
    """
    if latent_frames <= 1:
        return 0
    return int(round(latent_frame * (pixel_frames - 1) / (latent_frames - 1)))


def attention_map_figure(
    row: torch.Tensor | np.ndarray,
    grid: Sequence[int],
    query: Sequence[int],
    frames: np.ndarray | torch.Tensor | None = None,
    title: str | None = None,
    cmap: str = "magma",
    overlay_alpha: float = 0.75,
) -> Figure:
    """One attention row drawn over the clip: one panel per latent frame, the query marked.

    Each panel shows the attention the query token pays to the tokens of that latent frame, on one shared colour
    scale, with the frame's mass in its title. A spatial head lights up the query's own frame (the panel with
    the ``x``); a temporal head lights up the same position (the ``o``) in the other frames.

    Args:
        row: ``(N,)`` or ``(F, H, W)`` attention row over the patch grid (e.g. from
            :func:`effivmt.attention.inspect.attention_rows`).
        grid: patch grid ``(F, H, W)``.
        query: the query token's ``(frame, y, x)`` on the grid.
        frames: optional pixel frames in any layout :func:`effivmt.data.to_uint8_frames` reads (uint8
            ``(T, H_px, W_px, 3)``, a float ``(3, T, H_px, W_px)`` video in ``[-1, 1]`` from ``load_clip``, ...);
            the attention is overlaid on the pixel frame under each latent frame.
        title: figure title.
        cmap: colour map of the attention.
        overlay_alpha: opacity of the attention over the frames where it is largest (a quarter of it at zero).
    """
    f, h, w = (int(v) for v in grid)
    values = _np(row).reshape(-1)
    if values.size != f * h * w:
        raise ValueError(f"row has {values.size} entries, the grid {tuple(grid)} has {f * h * w} tokens")
    values = values.reshape(f, h, w)
    qf, qy, qx = (int(v) for v in query)
    if not (0 <= qf < f and 0 <= qy < h and 0 <= qx < w):
        raise ValueError(f"query {tuple(query)} is outside the grid {tuple(grid)}")
    masses = frame_mass(torch.as_tensor(values), grid).numpy()
    pixels = None if frames is None else to_uint8_frames(frames).numpy()
    if pixels is not None:
        extent = (0, pixels.shape[2], pixels.shape[1], 0)
        aspect = pixels.shape[1] / pixels.shape[2]
    else:
        extent = (0, w, h, 0)
        aspect = h / w
    sx, sy = extent[1] / w, extent[2] / h  # pixels per token, to mark the query at its token centre

    cols = min(f, 6)
    rows = math.ceil(f / cols)
    panel = 2.2
    fig = Figure(figsize=(cols * panel + 0.8, rows * panel * aspect + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    vmax = max(float(values.max()), 1e-12)
    norm = Normalize(0.0, vmax)
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= f:
            ax.set_axis_off()
            continue
        if pixels is not None:
            ax.imshow(pixels[_pixel_frame(i, f, pixels.shape[0])], extent=extent)
            # Opacity grows with the attention, so the clip stays visible where the head does not look.
            opacity = overlay_alpha * (0.25 + 0.75 * np.clip(values[i] / vmax, 0.0, 1.0))
        else:
            opacity = None
        ax.imshow(values[i], cmap=cmap, norm=norm, extent=extent, interpolation="nearest", alpha=opacity)
        cx, cy = (qx + 0.5) * sx, (qy + 0.5) * sy
        if i == qf:
            ax.plot(cx, cy, marker="x", color="cyan", markersize=9, markeredgewidth=2.5)
            for spine in ax.spines.values():
                spine.set_edgecolor("cyan")
                spine.set_linewidth(2.5)
        else:
            ax.plot(cx, cy, marker="o", markerfacecolor="none", color="cyan", markersize=8, markeredgewidth=1.5)
        ax.set_title(f"frame {i}{' (query)' if i == qf else ''}\nmass {masses[i]:.2f}", fontsize=8)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes.tolist(), shrink=0.8, label="attention")
    fig.suptitle(title or f"query token (frame {qf}, y {qy}, x {qx})", fontsize=10)
    return fig


def alpha_sweep_figure(
    spatial: torch.Tensor | np.ndarray,
    temporal: torch.Tensor | np.ndarray,
    alphas: Iterable[float] | None = None,
    per_timestep: Mapping[int, Any] | None = None,
    rule: Rule = "paper",
    alpha: float | None = None,
) -> Figure:
    """Number of temporal heads as a function of alpha, for the averaged scores and per noise level.

    Raising alpha relabels the heads nearest the boundary first; a long flat stretch around the chosen alpha
    means the split is robust, a steep one that it depends on the threshold.

    Args:
        spatial: ``(layers, heads)`` S_spatial (averaged over noise levels and prompts).
        temporal: ``(layers, heads)`` S_temporal.
        alphas: the alphas to evaluate; default 41 values from 0.5 to 2.5.
        per_timestep: optional ``{timestep: scores}``, each a ``(spatial, temporal)`` pair or a ``HeadScores``;
            one thin line each.
        rule: ``"paper"`` or ``"released"``.
        alpha: the alpha in use, drawn as a vertical line (default 1.25 / 1.3 by rule).
    """
    s, t = _np(spatial), _np(temporal)
    grid = np.linspace(0.5, 2.5, 41) if alphas is None else np.asarray(list(alphas), dtype=np.float64)
    if grid.size == 0:
        raise ValueError("alphas is empty")
    if alpha is None:
        alpha = 1.25 if rule == "paper" else 1.3
    total = s.size
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for timestep, scores in sorted((per_timestep or {}).items()):
        ps, pt = _pair(scores)
        counts = [_temporal_count(ps, pt, a, rule) for a in grid]
        ax.plot(grid, counts, linewidth=1.0, alpha=0.8, label=f"t = {timestep}")
    counts = [_temporal_count(s, t, a, rule) for a in grid]
    ax.plot(grid, counts, color="black", linewidth=2.2, label="averaged")
    ax.axvline(alpha, color="grey", linestyle="--", linewidth=1)
    ax.annotate(
        f"alpha = {alpha:g}: {_temporal_count(s, t, alpha, rule)} temporal",
        (alpha, total),
        xytext=(4, -12),
        textcoords="offset points",
        fontsize=8,
    )
    ax.set_xlabel("alpha")
    ax.set_ylabel(f"temporal heads (of {total})")
    ax.set_ylim(-0.5, total + 0.5)
    ax.set_title(f"Temporal heads vs alpha ({rule} rule)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def noise_level_figure(
    per_timestep: Mapping[int, Any],
    alpha: float | None = None,
    rule: Rule = "paper",
    averaged: Any = None,
) -> Figure:
    """Each head's label at each noise level: rows are timesteps, columns are heads (``layer.head``).

    Heads whose colour changes down a column are the unstable ones; averaging the scores over noise levels
    (DESIGN.md) is what settles them.

    Args:
        per_timestep: ``{timestep: scores}``, each a ``(spatial, temporal)`` pair or a ``HeadScores``.
        alpha: threshold (default 1.25 / 1.3 by rule).
        rule: ``"paper"`` or ``"released"``.
        averaged: optional averaged scores, drawn as a last row.
    """
    if not per_timestep:
        raise ValueError("per_timestep is empty")
    if alpha is None:
        alpha = 1.25 if rule == "paper" else 1.3
    rows, names = [], []
    for timestep, scores in sorted(per_timestep.items(), reverse=True):  # high noise on top, as sampling runs
        rows.append(_np(_label_matrix(*_pair(scores), alpha, rule)).reshape(-1))
        names.append(f"t = {timestep}")
    if averaged is not None:
        rows.append(_np(_label_matrix(*_pair(averaged), alpha, rule)).reshape(-1))
        names.append("averaged")
    layers, heads = _pair(next(iter(per_timestep.values())))[0].shape
    matrix = np.stack(rows)
    stable = int((matrix == matrix[:1]).all(axis=0).sum())
    fig = Figure(
        figsize=(min(max(matrix.shape[1] * 0.28, 5.5), 16.0) + 1.0, 0.45 * len(rows) + 1.6), layout="constrained"
    )
    ax = fig.subplots()
    ax.imshow(
        matrix,
        cmap=ListedColormap([SPATIAL_COLOR, TEMPORAL_COLOR]),
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    step = max(1, heads) if layers * heads > 48 else 1
    ticks = list(range(0, layers * heads, step))
    ax.set_xticks(ticks, [f"{i // heads}.{i % heads}" for i in ticks], fontsize=7, rotation=90)
    ax.set_xlabel("layer.head")
    for boundary in range(heads, layers * heads, heads):
        ax.axvline(boundary - 0.5, color="white", linewidth=1.5)
    ax.set_title(
        f"Labels per noise level (blue spatial, orange temporal; alpha={alpha:g})\n"
        f"{stable}/{layers * heads} heads keep their label",
        fontsize=9,
    )
    return fig


def _label_matrix(spatial: np.ndarray, temporal: np.ndarray, alpha: float, rule: Rule) -> np.ndarray:
    """``(layers, heads)`` 0/1 matrix, 1 = temporal."""
    labels = classify_heads(torch.as_tensor(spatial), torch.as_tensor(temporal), alpha, rule)
    return np.array([[lab == "temporal" for lab in row] for row in labels], dtype=np.float64)


def split_bar_figure(labels: Sequence[Sequence[str]], title: str | None = None) -> Figure:
    """Spatial / temporal head count per layer as a stacked bar chart (the spatial and temporal LoRA groups).

    Args:
        labels: ``labels[layer][head]`` in ``{"spatial", "temporal"}``.
        title: figure title; default gives the totals, e.g. ``"312 spatial / 168 temporal"``.
    """
    if not labels:
        raise ValueError("labels is empty")
    spatial = np.array([sum(lab == "spatial" for lab in row) for row in labels])
    temporal = np.array([sum(lab == "temporal" for lab in row) for row in labels])
    layers = np.arange(len(labels))
    fig = Figure(figsize=(max(4.0, 0.28 * len(labels) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(layers, spatial, color=SPATIAL_COLOR, label="spatial")
    ax.bar(layers, temporal, bottom=spatial, color=TEMPORAL_COLOR, label="temporal")
    ax.set_xlabel("layer")
    ax.set_ylabel("heads")
    ax.set_xticks(layers if len(labels) <= 20 else layers[:: max(1, len(labels) // 10)])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"{int(spatial.sum())} spatial / {int(temporal.sum())} temporal", fontsize=10)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to a uint8 ``(H, W, 3)`` RGB array (``SummaryWriter.add_image(..., dataformats="HWC")``)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically (PNG unless the suffix names another format); returns the path.

    A half-written PNG never appears under the final name (:func:`effivmt.io.atomic_path`), so a watcher such
    as a notebook viewer or a CI artifact upload sees either the old image or the new one.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower())
    return path
