"""The micro world: flat-coloured shapes on flat backgrounds, with captions and exactly known motion.

The micro Wan (``effivmt.pretrain``) is pretrained here, and MicroMotionBench measures EffiVMT here,
because in this world both halves of "motion transfer" can be read from pixels: an object's colour,
shape and the background's colour are exact, and its path is known to the pixel.

Motions come in two disjoint families:

* **pretraining** (:data:`PRETRAIN_MOTIONS`): straight lines in 8 directions at two speeds, and
  standing still. These, and only these, appear in pretraining clips and captions.
* **held out** (:data:`HELD_OUT_MOTIONS`): orbits, zigzags, figure-8s, wall bounces, spirals,
  accelerate-and-stop, and two objects at once. The micro model never sees them; a motion LoRA has to
  learn them from one clip, which is what MicroMotionBench measures.

Captions follow one grammar (:func:`caption`, :func:`parse_caption`)::

    a red circle moving left quickly on a black background      (pretraining motion)
    a red circle standing still on a black background
    a blue square on a white background                          (appearance only)

Conventions: ``x`` is the column, ``y`` the row (down is +y), pixel centres at integer coordinates.
Everything is deterministic given the scene's ``seed``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from effivmt.errors import ConfigError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 215, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
"""Object and background colours (sRGB), far enough apart that the nearest one is never ambiguous."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

DIRECTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up and right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "up and left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "down and right": (math.sqrt(0.5), math.sqrt(0.5)),
    "down and left": (-math.sqrt(0.5), math.sqrt(0.5)),
}
"""Unit vectors ``(dx, dy)`` in image coordinates."""

SPEEDS: dict[str, float] = {"slowly": 0.6, "quickly": 1.2}
"""Pixels per frame at 64x64 (scaled with the frame size); a fast line crosses ~60% of the frame in 33 frames."""

PRETRAIN_MOTIONS: tuple[str, ...] = ("linear", "still")
HELD_OUT_MOTIONS: tuple[str, ...] = ("orbit", "zigzag", "figure8", "bounce", "spiral", "accelerate-stop", "two-objects")

SIZE = 8.0
"""Half-extent of a shape at 64x64 pixels (circle radius; scaled with the frame size)."""


@dataclass(frozen=True)
class WorldObject:
    color: str
    shape: str


@dataclass(frozen=True)
class Scene:
    """One clip of the world: what is in it and how it moves (the path itself comes from ``seed``)."""

    objects: tuple[WorldObject, ...]
    background: str
    motion: str
    direction: str | None = None
    speed: str | None = None
    seed: int = 0
    reversed: bool = field(default=False)

    @property
    def held_out(self) -> bool:
        return self.motion in HELD_OUT_MOTIONS


def caption(scene: Scene, *, with_motion: bool = True) -> str:
    """The scene's caption; held-out motions have no words, so their captions are appearance-only."""
    obj = scene.objects[0]
    text = f"a {obj.color} {obj.shape}"
    if with_motion and scene.motion == "linear" and not scene.reversed:
        text += f" moving {scene.direction} {scene.speed}"
    elif with_motion and scene.motion == "still":
        text += " standing still"
    return f"{text} on a {scene.background} background"


_COLOR = "|".join(COLORS)
_CAPTION = re.compile(
    rf"^\s*an? (?P<color>{_COLOR}) (?P<shape>{'|'.join(SHAPES)})"
    rf"(?: (?:moving (?P<direction>{'|'.join(sorted(DIRECTIONS, key=len, reverse=True))})"
    rf"(?: (?P<speed>{'|'.join(SPEEDS)}))?|(?P<still>standing still)))?"
    rf" on an? (?P<background>{_COLOR}) background\s*\.?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedCaption:
    color: str
    shape: str
    background: str
    motion: str | None
    """``"linear"``, ``"still"`` or ``None`` (appearance only)."""
    direction: str | None = None
    speed: str | None = None


def parse_caption(text: str) -> ParsedCaption:
    """Read a caption of the world's grammar; raises :class:`ConfigError` naming the grammar otherwise."""
    m = _CAPTION.match(text)
    if m is None:
        raise ConfigError(
            f"{text!r} is not a caption of the micro world",
            "write e.g. 'a red circle moving left quickly on a black background' "
            "or 'a blue square on a white background'",
        )
    g = {k: (v.lower() if v else v) for k, v in m.groupdict().items()}
    motion = "still" if g["still"] else ("linear" if g["direction"] else None)
    return ParsedCaption(g["color"], g["shape"], g["background"], motion, g["direction"], g["speed"])


# -- sampling scenes ---------------------------------------------------------------------------------------


def _appearance(rng: np.random.Generator, count: int = 1) -> tuple[tuple[WorldObject, ...], str]:
    names = list(COLORS)
    background = names[rng.integers(len(names))]
    objects = []
    for _ in range(count):
        color = names[rng.integers(len(names))]
        while color == background or any(o.color == color for o in objects):
            color = names[rng.integers(len(names))]
        objects.append(WorldObject(color, SHAPES[rng.integers(len(SHAPES))]))
    return tuple(objects), background


def sample_scene(seed: int, family: str = "pretrain", motion: str | None = None) -> Scene:
    """A random scene of ``family`` (``"pretrain"`` or ``"held-out"``), or of one named ``motion``."""
    rng = np.random.default_rng([seed, 11])
    if motion is None:
        pool = {"pretrain": PRETRAIN_MOTIONS, "held-out": HELD_OUT_MOTIONS}.get(family)
        if pool is None:
            raise ConfigError(f"unknown motion family {family!r}", "use 'pretrain' or 'held-out'")
        # straight lines are 8 directions x 2 speeds: weight them so 'still' is about 1 clip in 9
        weights = np.array([8.0, 1.0]) if pool is PRETRAIN_MOTIONS else np.ones(len(pool))
        motion = pool[rng.choice(len(pool), p=weights / weights.sum())]
    if motion not in PRETRAIN_MOTIONS + HELD_OUT_MOTIONS:
        raise ConfigError(f"unknown motion {motion!r}", f"use one of {', '.join(PRETRAIN_MOTIONS + HELD_OUT_MOTIONS)}")
    objects, background = _appearance(rng, 2 if motion == "two-objects" else 1)
    direction = speed = None
    if motion == "linear":
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        speed = list(SPEEDS)[rng.integers(len(SPEEDS))]
    return Scene(objects, background, motion, direction, speed, seed)


def restyle(scene: Scene, color: str, shape: str, background: str) -> Scene:
    """The same motion (same seed, same path) with another look: a motion-transfer target."""
    if color == background:
        raise ConfigError(f"object and background are both {color}", "pick two different colours")
    objects = (WorldObject(color, shape),) + scene.objects[1:]
    return replace(scene, objects=objects, background=background)


# -- paths -------------------------------------------------------------------------------------------------


def _path(scene: Scene, index: int, t: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(F, 2)`` centres of object ``index``; the whole shape stays inside the frame."""
    rng = np.random.default_rng([scene.seed, 13, index])
    scale = min(width, height) / 64.0
    margin = SIZE * scale + 2
    lo_x, hi_x, lo_y, hi_y = margin, width - 1 - margin, margin, height - 1 - margin
    span = min(hi_x - lo_x, hi_y - lo_y)
    n = len(t) - 1 if len(t) > 1 else 1
    u = t / n  # 0..1 over the clip
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    motion = scene.motion
    if motion == "two-objects":  # each object a straight line, in roughly opposite directions
        base = rng.uniform(0, 2 * math.pi) if index == 0 else None
        if base is None:
            base = np.random.default_rng([scene.seed, 13, 0]).uniform(0, 2 * math.pi) + math.pi
        vec = (math.cos(base), math.sin(base))
        return _line(rng, vec, 1.0 * scale, t, (lo_x, hi_x, lo_y, hi_y))
    if motion == "still":
        return np.stack([np.full_like(t, rng.uniform(lo_x, hi_x)), np.full_like(t, rng.uniform(lo_y, hi_y))], -1)
    if motion == "linear":
        return _line(rng, DIRECTIONS[scene.direction], SPEEDS[scene.speed] * scale, t, (lo_x, hi_x, lo_y, hi_y))
    turn = 1.0 if rng.uniform() < 0.5 else -1.0
    phase = rng.uniform(0, 2 * math.pi)
    if motion == "orbit":  # one full turn around a centre
        r = rng.uniform(0.28, 0.4) * span
        a = phase + turn * 2 * math.pi * u
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], -1)
    if motion == "spiral":  # 1.5 turns, radius growing from near 0
        r = (0.06 + 0.38 * u) * span
        a = phase + turn * 3 * math.pi * u
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], -1)
    if motion == "figure8":  # Lissajous 1:2
        a = 2 * math.pi * u
        return np.stack([cx + turn * 0.4 * span * np.sin(a), cy + 0.3 * span * np.sin(2 * a)], -1)
    if motion == "zigzag":  # across the frame, vertically up/down twice
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        x = cx + sign * (u - 0.5) * 0.9 * span
        tri = 2 * np.abs(2 * ((2 * u + 0.25) % 1.0) - 1) - 1  # triangle wave, 2 periods
        return np.stack([x, cy + 0.32 * span * tri], -1)
    if motion == "bounce":  # fast straight lines reflecting off the walls
        ang = rng.uniform(0.2, 1.3) + (math.pi / 2) * rng.integers(4)
        speed = 3.0 * scale
        x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        return np.stack(
            [
                _reflect(x0 + speed * math.cos(ang) * t, lo_x, hi_x),
                _reflect(y0 + speed * math.sin(ang) * t, lo_y, hi_y),
            ],
            -1,
        )
    if motion == "accelerate-stop":  # speeds up along a line, then stops dead two thirds of the way in
        ang = phase
        vec = np.array([math.cos(ang), math.sin(ang)])
        s = np.clip(u / 0.66, 0, 1) ** 2  # constant acceleration, then standing still
        length = 0.8 * span
        start = np.array([cx, cy]) - vec * length / 2
        return start + s[:, None] * vec * length
    raise ConfigError(f"unknown motion {motion!r}")


def _line(rng: np.random.Generator, vec, speed: float, t: np.ndarray, box) -> np.ndarray:
    lo_x, hi_x, lo_y, hi_y = box
    dx, dy = vec[0] * speed * t[-1], vec[1] * speed * t[-1]
    x0 = rng.uniform(max(lo_x, lo_x - dx), min(hi_x, hi_x - dx))
    y0 = rng.uniform(max(lo_y, lo_y - dy), min(hi_y, hi_y - dy))
    return np.stack([x0 + vec[0] * speed * t, y0 + vec[1] * speed * t], -1)


def _reflect(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    length = hi - lo
    w = np.mod(v - lo, 2 * length)
    return lo + np.where(w <= length, w, 2 * length - w)


# -- rendering ---------------------------------------------------------------------------------------------


def shape_coverage(shape: str, dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (one-pixel ramp at the rim)."""
    if shape == "circle":
        sd = np.sqrt(dx**2 + dy**2) - size
    elif shape == "square":
        sd = np.maximum(np.abs(dx), np.abs(dy)) - size * 0.886  # same area as the circle
    elif shape == "triangle":  # equilateral, pointing up, centroid at the centre
        side = size * 2.7
        r_in = side / (2 * math.sqrt(3))
        normals = [(0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5)]
        sd = np.max([nx * dx + ny * dy for nx, ny in normals], axis=0) - r_in
    else:
        raise ConfigError(f"unknown shape {shape!r}", f"use one of {', '.join(SHAPES)}")
    return np.clip(0.5 - sd, 0.0, 1.0)


@dataclass
class WorldClip:
    frames: torch.Tensor
    """``uint8`` ``(F, H, W, 3)``."""
    tracks: torch.Tensor
    """``float32`` ``(K, F, 2)``: ``(x, y)`` centre of object ``k`` in frame ``f``."""
    scene: Scene


def render(scene: Scene, num_frames: int = 33, height: int = 64, width: int = 64, *, trail: bool = False) -> WorldClip:
    """Draw ``scene`` (deterministic); ``scene.reversed`` plays the same path backwards.

    ``trail`` draws a comet tail behind every moving object (:func:`_draw_trail`): a cue of the direction of motion
    inside every single frame, as motion blur and facing give it in real video. Without it a frame of a circle moving
    left looks like one of a circle moving right, and the micro DiT did not learn its direction words in 38,000 steps;
    with it, it did (docs/micro-wan.md, "Teaching the direction words").
    """
    t = np.arange(num_frames, dtype=np.float64)
    paths = np.stack([_path(scene, k, t, width, height) for k in range(len(scene.objects))])
    if scene.reversed:
        paths = paths[:, ::-1].copy()
    size = SIZE * min(width, height) / 64.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.empty((num_frames, height, width, 3), dtype=np.float64)
    image[:] = COLORS[scene.background]
    for k, obj in enumerate(scene.objects):
        color = np.array(COLORS[obj.color], dtype=np.float64)
        for f in range(num_frames):
            if trail:
                _draw_trail(image[f], paths[k], f, color, size, xx, yy)
            a = shape_coverage(obj.shape, xx - paths[k, f, 0], yy - paths[k, f, 1], size)[..., None]
            image[f] = image[f] * (1 - a) + color * a
    frames = torch.from_numpy(np.round(image).clip(0, 255).astype(np.uint8))
    return WorldClip(frames, torch.from_numpy(paths).float(), scene)


def world_video(scenes, num_frames: int, height: int, width: int, *, trail: bool = False) -> torch.Tensor:
    """The clips of ``scenes`` as the Wan VAE takes them: ``float32`` ``(B, 3, F, H, W)`` in [-1, 1]."""
    frames = torch.stack([render(s, num_frames, height, width, trail=trail).frames for s in scenes])
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


TRAIL_LENGTH = 14.0
"""Length of the comet tail at 64x64 pixels (scaled with the frame size), whatever the speed."""
TRAIL_DISCS = 7


def _draw_trail(
    image: np.ndarray, path: np.ndarray, f: int, color: np.ndarray, size: float, xx: np.ndarray, yy: np.ndarray
) -> None:
    """Blend the comet tail of frame ``f`` into ``image`` (in place): ``TRAIL_DISCS`` circles of 0.7 the object's size
    spaced over ``TRAIL_LENGTH`` against the local direction of motion (the path's central difference), opacity
    falling from 0.53 next to the object to 0.08 at the far end. An object that does not move has no tail."""
    velocity = np.gradient(path, axis=0)[f]
    speed = float(np.hypot(*velocity))
    if speed < 1e-6:
        return
    back = -velocity / speed
    length = TRAIL_LENGTH * size / SIZE
    for k in range(TRAIL_DISCS, 0, -1):  # far end first, so nearer discs cover it
        centre = path[f] + back * length * k / TRAIL_DISCS
        a = 0.6 * (1 - k / (TRAIL_DISCS + 1)) * shape_coverage("circle", xx - centre[0], yy - centre[1], size * 0.7)
        image[...] = image * (1 - a[..., None]) + color * a[..., None]


def time_reversed(scene: Scene) -> Scene:
    """The same scene played backwards (captions of reversed lines drop the direction words)."""
    return replace(scene, reversed=not scene.reversed)


QUICKSTART_SCENE = Scene((WorldObject("yellow", "circle"),), "blue", "orbit", seed=3)
"""The quickstart's reference clip, ``data/clips/micro-orbit.mp4``: a held-out motion (one orbit)."""


def write_quickstart_clip(path) -> object:
    """Regenerate ``data/clips/micro-orbit.mp4`` (33 frames, 64x64, 8 fps) at ``path``."""
    from effivmt.data.video import write_video

    return write_video(path, render(QUICKSTART_SCENE).frames, fps=8.0)
