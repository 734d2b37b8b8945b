"""Reading a micro-world clip back from its pixels: background, object colour, shape and path.

In the micro world (:mod:`effivmt.data.world`) appearance is exact, so a generated clip can be scored
without any learned model: the background is the colour of the frame's border, the object is what
differs from it, its colour is the nearest palette colour of its core pixels, its shape follows from
how much of its bounding box it fills (square ~1.0, circle ~0.79, triangle ~0.5), and its path is the
mask's centroid per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effivmt.data.world import COLORS

_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_NAMES = list(COLORS)


def nearest_color(rgb: np.ndarray, exclude: str | None = None) -> str:
    d = np.linalg.norm(_PALETTE - np.asarray(rgb, dtype=np.float64)[None], axis=1)
    if exclude is not None:
        d[_NAMES.index(exclude)] = np.inf
    return _NAMES[int(d.argmin())]


@dataclass
class FrameReading:
    background: str
    color: str | None
    shape: str | None
    center: tuple[float, float] | None
    area: float


@dataclass
class ClipReading:
    frames: list[FrameReading]

    def majority(self, attr: str) -> str | None:
        values = [getattr(f, attr) for f in self.frames if getattr(f, attr) is not None]
        return max(set(values), key=values.count) if values else None

    @property
    def path(self) -> np.ndarray:
        """``(F, 2)`` centroids; frames without an object repeat the last seen centroid (NaN before any)."""
        out = np.full((len(self.frames), 2), np.nan)
        last = None
        for i, f in enumerate(self.frames):
            last = f.center if f.center is not None else last
            if last is not None:
                out[i] = last
        return out


def _shape_from_mask(mask: np.ndarray) -> str | None:
    ys, xs = np.nonzero(mask)
    if len(xs) < 6:
        return None
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = len(xs) / float(w * h)
    if fill > 0.9:
        return "square"
    return "circle" if fill > 0.64 else "triangle"


def read_frame(frame: np.ndarray) -> FrameReading:
    """Read one ``uint8`` ``(H, W, 3)`` frame."""
    img = frame.astype(np.float64)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = nearest_color(bg_rgb)
    dist = np.linalg.norm(img - np.asarray(COLORS[background], dtype=np.float64), axis=-1)
    loose = dist > 60.0
    if loose.sum() < 6:
        return FrameReading(background, None, None, None, 0.0)
    color = nearest_color(np.median(img[loose], axis=0), exclude=background)
    # the rim is a blend of both colours: cut halfway between them
    gap = np.linalg.norm(np.asarray(COLORS[color], float) - np.asarray(COLORS[background], float))
    mask = dist > 0.5 * gap
    if mask.sum() < 6:
        return FrameReading(background, color, None, None, 0.0)
    ys, xs = np.nonzero(mask)
    center = (float(xs.mean()), float(ys.mean()))
    return FrameReading(background, color, _shape_from_mask(mask), center, float(mask.sum()))


def read_clip(frames: torch.Tensor | np.ndarray) -> ClipReading:
    """Read every frame of ``uint8`` ``(F, H, W, 3)``."""
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
    return ClipReading([read_frame(f) for f in frames])


def frame_agreement(frames, **wanted) -> dict[str, float]:
    """Per attribute, the share of ``frames`` whose reading of it equals the wanted value; and their ``mean``."""
    n = max(1, len(frames))
    out = {name: sum(getattr(f, name) == value for f in frames) / n for name, value in wanted.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def appearance_accuracy(reading: ClipReading, color: str, shape: str, background: str) -> dict[str, float]:
    """Share of frames whose object colour, shape and background match the target, and their mean."""
    return frame_agreement(reading.frames, color=color, shape=shape, background=background)


def temporal_consistency(reading: ClipReading) -> float:
    """How steadily the object keeps its look: the share of frames that agree with the clip's majority colour
    and shape, times ``1 - CV`` of its area (a flickering or melting object scores low)."""
    if not reading.frames:
        return 0.0
    color, shape = reading.majority("color"), reading.majority("shape")
    agree = np.mean([(f.color == color and f.shape == shape) for f in reading.frames])
    areas = np.array([f.area for f in reading.frames])
    cv = areas.std() / areas.mean() if areas.mean() > 0 else 1.0
    return float(agree * max(0.0, 1.0 - cv))


def path_similarity(generated: np.ndarray, reference: np.ndarray, stride: int = 4) -> float:
    """Similarity of two centroid paths ``(F, 2)`` in [0, 1]: 1 - mean distance of the paths, each taken
    relative to its own start, divided by the reference path's extent (floored at 8 px).

    Relative to the start, because the target prompt may legitimately place the object elsewhere; the
    score is about the motion. Steps of ``stride`` frames (one latent frame) skip sub-latent jitter.
    """
    n = min(len(generated), len(reference))
    g, r = generated[:n:stride], reference[:n:stride]
    ok = ~(np.isnan(g).any(1) | np.isnan(r).any(1))
    if ok.sum() < 2:
        return 0.0
    g, r = g[ok] - g[ok][0], r[ok] - r[ok][0]
    extent = max(8.0, float(np.linalg.norm(r - r.mean(0), axis=1).max()) * 2)
    return float(max(0.0, 1.0 - np.linalg.norm(g - r, axis=1).mean() / extent))


__all__ = [
    "ClipReading",
    "FrameReading",
    "appearance_accuracy",
    "frame_agreement",
    "nearest_color",
    "path_similarity",
    "read_clip",
    "read_frame",
    "temporal_consistency",
]
