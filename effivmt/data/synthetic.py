"""Synthetic clips with known motion: coloured shapes on set trajectories, with ground-truth tracks.

They let tests and the quickstart check motion without real footage: the metrics can compare a
tracker's output with :attr:`SyntheticClip.tracks`, and :func:`reverse` gives a clip with the
same appearance and the opposite motion. Everything is deterministic given ``seed``.

Conventions: ``x`` is the column and ``y`` the row, pixel centres at integer coordinates (OpenCV's,
so Lucas-Kanade points line up with the tracks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from effivmt.errors import ConfigError

Motion = Literal["linear", "circular", "zigzag", "static"]
MOTIONS: tuple[str, ...] = ("linear", "circular", "zigzag", "static")

SHAPE_COLORS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),  # red
    (40, 190, 60),  # green
    (50, 80, 230),  # blue
    (230, 200, 30),  # yellow
    (200, 50, 200),  # magenta
    (30, 190, 200),  # cyan
)
"""Shape ``k`` has colour ``SHAPE_COLORS[k % 6]``: saturated, far from the grey background, so a
colour mask finds each shape (shapes brighten and darken by their texture but keep their hue)."""

SAMPLE_CLIP: dict = {"num_frames": 25, "height": 64, "width": 64, "num_shapes": 2, "motion": "linear", "seed": 0}
"""Arguments of :func:`moving_shapes` for ``data/clips/moving-shapes.mp4``."""
SAMPLE_FPS = 8.0
"""Frame rate of ``data/clips/moving-shapes.mp4``."""


@dataclass
class SyntheticClip:
    """A rendered clip and where each shape's centre is in every frame."""

    frames: torch.Tensor
    """``uint8`` ``(F, H, W, 3)``."""
    tracks: torch.Tensor
    """``float32`` ``(K, F, 2)``: ``(x, y)`` centre of shape ``k`` in frame ``f``."""
    motion: str
    """Trajectory kind (``"linear"``, ...); :func:`reverse` prefixes ``"reversed-"``."""


def _bounce(start: np.ndarray, velocity: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Position along one axis moving at ``velocity`` and reflecting off ``lo`` and ``hi``."""
    length = hi - lo
    u = np.mod(start - lo + velocity * t, 2 * length)
    return lo + np.where(u <= length, u, 2 * length - u)


def _trajectory(rng: np.random.Generator, motion: str, t: np.ndarray, speed: float, box: tuple) -> np.ndarray:
    """``(F, 2)`` centres for one shape; ``box = (x_lo, x_hi, y_lo, y_hi)`` keeps the whole shape in the frame."""
    x_lo, x_hi, y_lo, y_hi = box
    x0, y0 = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
    angle = rng.uniform(0, 2 * math.pi)
    if motion == "static" or speed == 0:
        x, y = np.full_like(t, x0), np.full_like(t, y0)
    elif motion == "linear":
        x = _bounce(x0, speed * math.cos(angle), t, x_lo, x_hi)
        y = _bounce(y0, speed * math.sin(angle), t, y_lo, y_hi)
    elif motion == "circular":
        span = min(x_hi - x_lo, y_hi - y_lo)
        radius = rng.uniform(0.25, 0.45) * span
        cx = rng.uniform(x_lo + radius, x_hi - radius)
        cy = rng.uniform(y_lo + radius, y_hi - radius)
        direction = 1.0 if rng.uniform() < 0.5 else -1.0
        phase = angle + direction * (speed / radius) * t  # arc length per frame = speed
        x, y = cx + radius * np.cos(phase), cy + radius * np.sin(phase)
    elif motion == "zigzag":
        # diagonal at `speed` px/frame; the vertical direction flips every `period` frames
        step = speed / math.sqrt(2)
        period = max(2, math.floor((y_hi - y_lo) / 3 / step))
        vy = step if rng.uniform() < 0.5 else -step
        amplitude = abs(vy) * period
        y_start = rng.uniform(y_lo, y_hi - amplitude) if vy > 0 else rng.uniform(y_lo + amplitude, y_hi)
        g = np.mod(t, 2 * period)
        x = _bounce(x0, step if math.cos(angle) >= 0 else -step, t, x_lo, x_hi)
        y = y_start + vy * np.where(g <= period, g, 2 * period - g)
    else:
        raise ConfigError(f"unknown motion {motion!r}", f"use one of {', '.join(MOTIONS)}")
    return np.stack([x, y], axis=-1)


def _background(height: int, width: int, kind: str, seed: int) -> torch.Tensor:
    """``float32`` ``(H, W, 3)`` background: a grey diagonal gradient plus smooth blotches (corners to track)."""
    if kind == "flat":
        return torch.full((height, width, 3), 128.0)
    if kind != "gradient":
        raise ConfigError(f"unknown background {kind!r}", "use 'gradient' or 'flat'")
    rng = np.random.default_rng([seed, 1])  # own stream: the background does not depend on the shapes
    yy, xx = torch.meshgrid(torch.arange(height) / height, torch.arange(width) / width, indexing="ij")
    level = 80 + 80 * (0.6 * xx + 0.4 * yy)  # 80..160
    coarse = torch.from_numpy(rng.standard_normal((1, 1, height // 8 + 2, width // 8 + 2))).float()
    blotches = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
    level = level + 14 * blotches.clamp(-2, 2)
    tint = torch.tensor([4.0, 0.0, -4.0])  # a faint warm cast; stays far from every SHAPE_COLORS hue
    return (level[..., None] + tint).clamp(0, 255)


def _render(background: torch.Tensor, tracks: torch.Tensor, radius: float) -> torch.Tensor:
    """Composite anti-aliased textured shapes over ``background`` for every frame: ``uint8`` ``(F, H, W, 3)``."""
    height, width, _ = background.shape
    yy, xx = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    period = max(4.0, radius)  # texture cell: gives Lucas-Kanade gradients in both directions inside a shape
    colors = torch.tensor(SHAPE_COLORS, dtype=torch.float32)
    frames = torch.empty((tracks.shape[1], height, width, 3), dtype=torch.uint8)
    for f in range(tracks.shape[1]):
        image = background.clone()
        for k in range(tracks.shape[0]):
            dx, dy = xx - tracks[k, f, 0], yy - tracks[k, f, 1]
            if k % 2 == 0:  # disc; coverage ramps over one pixel at the rim (anti-aliasing)
                alpha = (radius + 0.5 - torch.sqrt(dx**2 + dy**2)).clamp(0, 1)
            else:  # square
                alpha = (radius + 0.5 - dx.abs()).clamp(0, 1) * (radius + 0.5 - dy.abs()).clamp(0, 1)
            # texture fixed to the shape, even in dx and dy so it does not shift the shape's centroid
            shade = 0.78 + 0.22 * torch.cos(2 * math.pi * dx / period) * torch.cos(2 * math.pi * dy / period)
            color = colors[k % len(colors)] * shade[..., None]
            image = image * (1 - alpha[..., None]) + color * alpha[..., None]
        frames[f] = image.round().clamp(0, 255).to(torch.uint8)
    return frames


def moving_shapes(
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    *,
    num_shapes: int = 2,
    motion: Motion = "linear",
    speed: float = 2.0,
    seed: int = 0,
    background: Literal["gradient", "flat"] = "gradient",
) -> SyntheticClip:
    """Render coloured discs (even ``k``) and squares (odd ``k``) moving over a textured background.

    Shapes are anti-aliased and carry a texture that moves with them, and the background has smooth
    blotches, so optical-flow trackers (OpenCV Lucas-Kanade) find features to follow. Each shape's
    trajectory and the background draw from their own seeded streams: adding a shape leaves the
    others, and the background, unchanged.

    Args:
        num_frames: Frames to render.
        height: Frame height (>= 16).
        width: Frame width (>= 16).
        num_shapes: Number of shapes (0 renders the background alone).
        motion: ``"linear"`` (straight lines reflecting off the borders), ``"circular"`` (circles),
            ``"zigzag"`` (diagonal steps that flip vertically), or ``"static"``.
        speed: Pixels per frame along the path.
        seed: Everything random derives from it.
        background: ``"gradient"`` (textured grey) or ``"flat"`` (plain grey 128).

    Returns:
        A :class:`SyntheticClip`; shapes stay wholly inside the frame.
    """
    if num_frames < 1 or num_shapes < 0:
        raise ConfigError(f"need num_frames >= 1 and num_shapes >= 0, got {num_frames} and {num_shapes}")
    if height < 16 or width < 16:
        raise ConfigError(f"synthetic clips need at least 16x16 pixels, got {height}x{width}", "use 64x64")
    if motion not in MOTIONS:
        raise ConfigError(f"unknown motion {motion!r}", f"use one of {', '.join(MOTIONS)}")
    if speed < 0:
        raise ConfigError(f"speed must be >= 0, got {speed}", "speed is in pixels per frame")
    radius = float(max(3, min(height, width) // 10))  # 6 px at 64x64
    margin = radius + 1  # centre box keeping the anti-aliased rim inside the frame
    box = (margin, width - 1 - margin, margin, height - 1 - margin)
    t = np.arange(num_frames, dtype=np.float64)
    paths = [_trajectory(np.random.default_rng([seed, 2, k]), motion, t, speed, box) for k in range(num_shapes)]
    tracks = torch.from_numpy(np.stack(paths) if paths else np.zeros((0, num_frames, 2))).float()
    frames = _render(_background(height, width, background, seed), tracks, radius)
    return SyntheticClip(frames=frames, tracks=tracks, motion=motion)


def reverse(clip: SyntheticClip) -> SyntheticClip:
    """The same clip played backwards: same appearance, opposite motion (``reverse(reverse(c))`` equals ``c``)."""
    motion = clip.motion.removeprefix("reversed-") if clip.motion.startswith("reversed-") else f"reversed-{clip.motion}"
    return SyntheticClip(frames=clip.frames.flip(0), tracks=clip.tracks.flip(1), motion=motion)


def write_sample_clip(path: str | Path) -> Path:
    """Regenerate ``data/clips/moving-shapes.mp4`` (the quickstart clip) at ``path``.

    25 frames of 64x64 at 8 fps (:data:`SAMPLE_CLIP`, :data:`SAMPLE_FPS`), so the quickstart can
    sparsely sample 9 of 25 frames. H.264 encoding may differ across x264 builds by a few grey levels.
    """
    from effivmt.data.video import write_video

    return write_video(path, moving_shapes(**SAMPLE_CLIP).frames, fps=SAMPLE_FPS)
