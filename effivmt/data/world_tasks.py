"""The micro world, extended for OmniTransfer's five tasks: camera, effects, identity patterns, styles.

:mod:`effivmt.data.world` draws flat shapes on flat backgrounds, which is all a *motion* pair needs. The other
four tasks need something more that is still exactly known and readable from pixels
(:mod:`effivmt.metrics.world_tasks` reads each one back):

* **camera**: a tiled background (random blocks in two shades of the background colour, so that a pan or a
  zoom shows) and a camera applied to the whole frame, objects included. Train: pans left/right/up/down at the
  world's two speeds, and zoom in (x1.5 over the clip). Held out: the four diagonal pans, zoom out, and a
  circling camera.
* **effect**: something happens to the object from 30% of the clip on. Train: ``flash`` (blinks out three
  times), ``grow`` (to 1.8x), ``split`` (into two smaller copies that drift apart), ``recolor`` (turns another
  colour). Held out: ``shrink`` (to 0.45x), ``fade`` (into the background, then gone), ``pulse`` (grows and
  shrinks twice).
* **id**: a distinguishing mark drawn inside the object, in black or white (whichever differs more in luma
  from the object); an identity is (colour, shape, pattern). Train: ``dot``, ``bar``, ``cross``, ``ring``. Held
  out: ``column`` (a vertical bar), ``x``, ``pair`` (two dots).
* **style**: how the object is drawn. Train: ``outline``, ``stripes``, ``dots``. Held out: ``checker``,
  ``diagonal`` (diagonal stripes), ``rings`` (concentric). ``filled`` is the world's own look (no style).

Styles and patterns are anchored to the object's centre (they move with it). Every family is disjoint from its
counterpart; :func:`render_task` is deterministic given the :class:`TaskScene` (its ``scene.seed`` and
``texture`` seed). Sizes scale with ``min(height, width) / 64`` like the world's; clips default to the world's
33 frames at 64x64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# shape_coverage is the world's own shape rasteriser: reusing it keeps task clips' shapes pixel-identical to the world's
from effivmt.data.world import COLORS, DIRECTIONS, SIZE, SPEEDS, Scene, render, shape_coverage
from effivmt.errors import ConfigError


@dataclass(frozen=True)
class Camera:
    """A camera motion: ``kind`` ``"pan"`` (``direction`` a world direction, ``speed`` a world speed word),
    ``"zoom"`` (``direction`` ``"in"`` or ``"out"``) or ``"circle"`` (a small circle, one turn)."""

    kind: str
    direction: str | None = None
    speed: str | None = None

    @property
    def name(self) -> str:
        return {"pan": f"pan {self.direction} {self.speed}", "zoom": f"zoom {self.direction}"}.get(self.kind, self.kind)

    def track(self, num_frames: int, scale: float = 1.0) -> np.ndarray:
        """``(F, 3)``: the camera's offset ``(x, y)`` in pixels from frame 0 (scene pixels, before zoom) and its
        zoom relative to frame 0."""
        f = np.arange(num_frames, dtype=np.float64)
        u = f / max(1, num_frames - 1)
        out = np.zeros((num_frames, 3))
        out[:, 2] = 1.0
        if self.kind == "pan":
            step = np.asarray(DIRECTIONS[self.direction]) * SPEEDS[self.speed] * scale
            out[:, :2] = f[:, None] * step
        elif self.kind == "zoom":
            out[:, 2] = ZOOM ** (u if self.direction == "in" else -u)
        elif self.kind == "circle":
            a, r = -math.pi / 2 + 2 * math.pi * u, CIRCLE_RADIUS * scale
            out[:, 0], out[:, 1] = r * np.cos(a), r * (np.sin(a) + 1)
        else:
            raise ConfigError(f"unknown camera {self.kind!r}", "use pan, zoom or circle")
        return out


ZOOM = 1.5
"""Zoom factor over a whole clip (``zoom in``: x1.5, ``zoom out``: /1.5)."""
CIRCLE_RADIUS = 5.0
"""Radius of the circling camera in pixels at 64x64 (peak speed ~1 px/frame over 33 frames)."""

_AXES, _DIAGONALS = ("right", "left", "up", "down"), ("up and right", "up and left", "down and right", "down and left")
TRAIN_CAMERAS: tuple[Camera, ...] = tuple(Camera("pan", d, s) for d in _AXES for s in SPEEDS) + (Camera("zoom", "in"),)
HELD_OUT_CAMERAS: tuple[Camera, ...] = tuple(Camera("pan", d, s) for d in _DIAGONALS for s in SPEEDS) + (
    Camera("zoom", "out"),
    Camera("circle"),
)
TRAIN_EFFECTS: tuple[str, ...] = ("flash", "grow", "split", "recolor")
HELD_OUT_EFFECTS: tuple[str, ...] = ("shrink", "fade", "pulse")
TRAIN_PATTERNS: tuple[str, ...] = ("dot", "bar", "cross", "ring")
HELD_OUT_PATTERNS: tuple[str, ...] = ("column", "x", "pair")
TRAIN_STYLES: tuple[str, ...] = ("outline", "stripes", "dots")
HELD_OUT_STYLES: tuple[str, ...] = ("checker", "diagonal", "rings")
EFFECTS: tuple[str, ...] = TRAIN_EFFECTS + HELD_OUT_EFFECTS
PATTERNS: tuple[str, ...] = TRAIN_PATTERNS + HELD_OUT_PATTERNS
STYLES: tuple[str, ...] = TRAIN_STYLES + HELD_OUT_STYLES

ONSET = 0.3
"""Effects start 30% into the clip and take 35% of it to unfold (flash: three blinks; pulse: two cycles)."""
TILE = 6.0
"""Background tile size in pixels at 64x64."""
STYLE_PERIOD = 4.0
"""Stripe / dot / ring period of the styles in pixels at 64x64 (2 px of ink, 2 px of gap)."""


def luma(color: str) -> float:
    r, g, b = COLORS[color]
    return 0.299 * r + 0.587 * g + 0.114 * b


def legible(color: str, background: str, min_luma: float = 40.0) -> bool:
    """Whether ``color`` on ``background`` survives yuv420p: H.264 keeps luma at full resolution but halves
    chroma, so thin strokes (stripes, patterns) need a luma difference, not just a hue one."""
    return color != background and abs(luma(color) - luma(background)) >= min_luma


def pattern_color(color: str) -> str:
    """The mark's colour on a ``color`` object: black on light objects, white on dark ones."""
    return "black" if luma(color) > 128 else "white"


def recolor_target(scene: Scene) -> str:
    """The colour a ``recolor`` effect turns object 0 into (from the scene's seed, legible on its background)."""
    pool = [c for c in COLORS if c != scene.objects[0].color and legible(c, scene.background)]
    return pool[np.random.default_rng([scene.seed, 17]).integers(len(pool))]


@dataclass(frozen=True)
class TaskScene:
    """A world :class:`~effivmt.data.world.Scene` plus the task properties; ``None`` leaves the world's look."""

    scene: Scene
    camera: Camera | None = None
    texture: int | None = None
    """Seed of the tiled background; ``None``: the world's flat background."""
    effect: str | None = None
    pattern: str | None = None
    style: str | None = None


@dataclass
class TaskClip:
    frames: torch.Tensor
    """``uint8`` ``(F, H, W, 3)``."""
    tracks: torch.Tensor
    """``float32`` ``(K, F, 2)``: on-screen centre of each object (a split object: the pair's midpoint)."""
    camera: np.ndarray
    """``(F, 3)``: the camera's offset from frame 0 and its zoom (see :meth:`Camera.track`); static: ``(0, 0, 1)``."""
    task_scene: TaskScene


# -- coverage functions (signed distances in pixels -> anti-aliased coverage) -------------------------------


def _fill(sd: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sd, 0.0, 1.0)


def _band(t: np.ndarray, period: float) -> np.ndarray:
    """Bands half a period wide, centred on ``t = period / 2 (mod period)``."""
    return _fill(np.abs(np.mod(t, period) - period / 2) - period / 4)


def _box(u: np.ndarray, v: np.ndarray, hx: float, hy: float) -> np.ndarray:
    return np.maximum(np.abs(u) - hx, np.abs(v) - hy)


def pattern_coverage(pattern: str, dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    """Coverage of an identity mark at offsets ``(dx, dy)`` from the object's centre (lengths in ``size`` units,
    all within 0.6 of the centre so they fit inside the triangle, whose inradius is 0.78)."""
    u, v = dx / size, dy / size
    if pattern == "dot":
        sd = np.hypot(u, v) - 0.3
    elif pattern == "bar":
        sd = _box(u, v, 0.55, 0.16)
    elif pattern == "column":
        sd = _box(u, v, 0.16, 0.55)
    elif pattern in ("cross", "x"):
        if pattern == "x":
            u, v = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        sd = np.minimum(_box(u, v, 0.5, 0.15), _box(u, v, 0.15, 0.5))
    elif pattern == "ring":
        sd = np.abs(np.hypot(u, v) - 0.38) - 0.13
    elif pattern == "pair":
        sd = np.minimum(np.hypot(u - 0.33, v), np.hypot(u + 0.33, v)) - 0.2
    else:
        raise ConfigError(f"unknown pattern {pattern!r}", f"use one of {', '.join(PATTERNS)}")
    return _fill(sd * size)


def style_coverage(
    style: str, shape: str, dx: np.ndarray, dy: np.ndarray, size: float, scale: float = 1.0
) -> np.ndarray:
    """Ink coverage of a ``shape`` drawn in ``style`` (``"filled"``: the world's flat look); periods scale with
    ``scale`` (the frame's ``min(H, W) / 64``)."""
    cov = shape_coverage(shape, dx, dy, size)
    p = STYLE_PERIOD * scale
    if style == "filled":
        return cov
    if style == "outline":
        return cov - shape_coverage(shape, dx, dy, size * 0.62)
    if style == "stripes":
        return cov * _band(dy, p)
    if style == "diagonal":
        return cov * _band((dx + dy) / math.sqrt(2), p)
    if style == "rings":
        return cov * _band(np.hypot(dx, dy), p)
    if style == "dots":
        wx, wy = np.abs(np.mod(dx, p) - p / 2), np.abs(np.mod(dy, p) - p / 2)
        return cov * _fill(np.hypot(wx, wy) - 0.33 * p)
    if style == "checker":
        bx, by = _band(dx, 1.5 * p), _band(dy, 1.5 * p)
        return cov * (bx * by + (1 - bx) * (1 - by))
    raise ConfigError(f"unknown style {style!r}", f"use one of filled, {', '.join(STYLES)}")


# -- backgrounds and effects ---------------------------------------------------------------------------------


def tile_shades(background: str) -> np.ndarray:
    """``(2, 3)`` the tiles' two shades: the background colour -/+ 14 levels, shifted to stay in 0..255, so
    they read back as the background colour (well under the 60-level object threshold of the readers)."""
    c = np.asarray(COLORS[background], dtype=np.float64)
    lo = np.clip(c - 14, 0, 227)
    return np.stack([lo, lo + 28])


def _tile_bits(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """A hash of the tile index: random-looking, not periodic, so a pan of any length is unambiguous."""
    h = (i.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        j.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    h ^= np.uint64((seed * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h & np.uint64(1)).astype(np.float64)


def _tiles(wx: np.ndarray, wy: np.ndarray, footprint: float, tile: float, seed: int) -> np.ndarray:
    """Share of each pixel (centred at scene coordinates ``wx, wy``, ``footprint`` wide) on a "high" tile,
    averaged exactly over the pixel's area, so sub-pixel pans move the image smoothly."""
    x0, y0 = wx - footprint / 2, wy - footprint / 2
    i, j = np.floor(x0 / tile), np.floor(y0 / tile)
    ax = np.clip(((i + 1) * tile - x0) / footprint, 0, 1)
    ay = np.clip(((j + 1) * tile - y0) / footprint, 0, 1)
    bit = lambda di, dj: _tile_bits(i + di, j + dj, seed)  # noqa: E731
    return ax * ay * bit(0, 0) + (1 - ax) * ay * bit(1, 0) + ax * (1 - ay) * bit(0, 1) + (1 - ax) * (1 - ay) * bit(1, 1)


def effect_curves(effect: str | None, num_frames: int) -> dict[str, np.ndarray]:
    """Per-frame ``size`` multiplier, ``alpha`` (opacity), ``recolor`` (blend to the new colour) and ``split``
    (half the distance between the two copies, in object sizes) of an effect."""
    f = np.arange(num_frames, dtype=np.float64)
    onset, span = ONSET * (num_frames - 1), 0.35 * (num_frames - 1)
    ramp = np.clip((f - onset) / span, 0, 1)
    out = {"size": np.ones(num_frames), "alpha": np.ones(num_frames), "recolor": np.zeros(num_frames)}
    out["split"] = np.zeros(num_frames)
    if effect is None:
        return out
    if effect == "flash":  # off for one blink period, on for one, three times
        period = max(1, round((num_frames - 1) / 16))
        k = np.floor((f - round(onset)) / period)
        out["alpha"] = np.where((k >= 0) & (k < 6) & (k % 2 == 0), 0.0, 1.0)
    elif effect == "grow":
        out["size"] = 1 + 0.8 * ramp
    elif effect == "shrink":
        out["size"] = 1 - 0.55 * ramp
    elif effect == "pulse":
        after = np.clip((f - onset) / (num_frames - 1 - onset), 0, 1)
        out["size"] = 1 + 0.35 * np.sin(2 * math.pi * 2 * after)
    elif effect == "fade":
        out["alpha"] = 1 - ramp
    elif effect == "recolor":
        out["recolor"] = np.clip((f - onset) / (0.12 * (num_frames - 1)), 0, 1)
    elif effect == "split":
        out["split"], out["size"] = 1.5 * ramp, 1 - 0.3 * ramp
    else:
        raise ConfigError(f"unknown effect {effect!r}", f"use one of {', '.join(EFFECTS)}")
    return out


# -- rendering -------------------------------------------------------------------------------------------------


def _keep_inside(path: np.ndarray, half: np.ndarray, length: int) -> np.ndarray:
    """Shift a 1-D ``path`` by one constant so that ``path +/- half`` (per frame) stays inside ``0..length-1``."""
    lo, hi = np.max(half + 1 - path), np.min(length - 2 - half - path)
    return path + (np.clip(0.0, lo, hi) if lo <= hi else (lo + hi) / 2)


def render_task(ts: TaskScene, num_frames: int = 33, height: int = 64, width: int = 64) -> TaskClip:
    """Draw ``ts`` (deterministic). The objects follow the world's paths for ``ts.scene``; with a camera or an
    effect each path is shifted as a whole so the object stays fully in frame."""
    scene = ts.scene
    scale = min(height, width) / 64.0
    size = SIZE * scale
    world = render(scene, num_frames, height, width).tracks.numpy().astype(np.float64)
    cam = ts.camera.track(num_frames, scale) if ts.camera else np.tile([0.0, 0.0, 1.0], (num_frames, 1))
    fx = effect_curves(ts.effect, num_frames)
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    zoom = cam[:, 2:3]
    half = size * zoom[:, 0] * fx["size"]
    half_x = half + fx["split"] * size * zoom[:, 0]
    tracks = np.empty_like(world)
    for k in range(len(scene.objects)):
        screen = c + zoom * (world[k] - c - cam[:, :2])
        if ts.camera is not None or ts.effect is not None:
            screen = np.stack([_keep_inside(screen[:, 0], half_x, width), _keep_inside(screen[:, 1], half, height)], -1)
        tracks[k] = screen
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.empty((num_frames, height, width, 3))
    if ts.texture is None:
        image[:] = COLORS[scene.background]
    else:
        shades = tile_shades(scene.background)
        for f in range(num_frames):  # pixel -> scene coordinates: c + offset + (p - c) / zoom
            wx = c[0] + cam[f, 0] + (xx - c[0]) / cam[f, 2]
            wy = c[1] + cam[f, 1] + (yy - c[1]) / cam[f, 2]
            hi = _tiles(wx, wy, 1 / cam[f, 2], TILE * scale, ts.texture)[..., None]
            image[f] = shades[0] * (1 - hi) + shades[1] * hi
    new_color = np.asarray(COLORS[recolor_target(scene)], float) if ts.effect == "recolor" else None
    for k, obj in enumerate(scene.objects):
        color = np.asarray(COLORS[obj.color], dtype=np.float64)
        mark = np.asarray(COLORS[pattern_color(obj.color)], dtype=np.float64)
        for f in range(num_frames):
            s, gap = half[f], fx["split"][f] * size * zoom[f, 0]
            offsets = (-gap, gap) if gap > 0 else (0.0,)
            a = np.zeros((height, width))
            for off in offsets:
                dx, dy = xx - tracks[k, f, 0] - off, yy - tracks[k, f, 1]
                a = np.maximum(a, style_coverage(ts.style or "filled", obj.shape, dx, dy, s, scale * zoom[f, 0]))
            a = a[..., None] * fx["alpha"][f]
            ink = color if new_color is None or k else color + fx["recolor"][f] * (new_color - color)
            image[f] = image[f] * (1 - a) + ink * a
            if ts.pattern is not None:
                dx, dy = xx - tracks[k, f, 0], yy - tracks[k, f, 1]
                p = (pattern_coverage(ts.pattern, dx, dy, s) * shape_coverage(obj.shape, dx, dy, s))[..., None]
                image[f] = image[f] * (1 - p * fx["alpha"][f]) + mark * p * fx["alpha"][f]
    frames = torch.from_numpy(np.round(image).clip(0, 255).astype(np.uint8))
    return TaskClip(frames, torch.from_numpy(tracks).float(), cam, ts)


__all__ = [
    "CIRCLE_RADIUS",
    "EFFECTS",
    "HELD_OUT_CAMERAS",
    "HELD_OUT_EFFECTS",
    "HELD_OUT_PATTERNS",
    "HELD_OUT_STYLES",
    "PATTERNS",
    "STYLES",
    "TRAIN_CAMERAS",
    "TRAIN_EFFECTS",
    "TRAIN_PATTERNS",
    "TRAIN_STYLES",
    "Camera",
    "TaskClip",
    "TaskScene",
    "effect_curves",
    "legible",
    "luma",
    "pattern_color",
    "pattern_coverage",
    "recolor_target",
    "render_task",
    "style_coverage",
    "tile_shades",
]
