"""Reading OmniTransfer's task properties back from micro-world pixels: camera, effect, identity mark, style.

:mod:`effivmt.metrics.world` reads what the plain world draws (background, colour, shape, path), which scores the
*motion* task with :func:`~effivmt.metrics.world.path_similarity`. This module reads the other four properties
that :mod:`effivmt.data.world_tasks` draws, with no learned model, so a benchmark can average them:

* **camera** (:func:`read_camera`, :func:`camera_agreement`): the background's global motion, by phase
  correlation of nine overlapping patches between frames four apart, fitted to a pan + zoom model (a pan moves
  every patch alike, a zoom moves each patch away from the centre in proportion to its distance).
* **effect** (:func:`read_effect`): which effect happens, from the object's area, contrast, colour and
  connected-component count over time. Held-out effects are named too.
* **identity** (:func:`read_identity`, :func:`identity_agreement`) and **style** (:func:`read_style`): the
  object's ink (how close each pixel is to the object's colour rather than the background's) is compared with
  the ink each (shape, mark) would draw at the object's centre; the closest template wins. Every pattern and
  style is a candidate, held-out ones included, plus ``"none"`` / ``"filled"`` for a plain object.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from effivmt.data.world import COLORS, SHAPES, SIZE, shape_coverage
from effivmt.data.world_tasks import PATTERNS, STYLES, pattern_coverage, style_coverage
from effivmt.metrics.world import frame_agreement, nearest_color

_LUMA = np.array([0.299, 0.587, 0.114])


def _numpy(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    return (frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)).astype(np.float64)


def _border_rgb(img: np.ndarray) -> np.ndarray:
    return np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]), axis=0)


def object_color(img: np.ndarray, mask: np.ndarray, background: str, strokes: bool = False) -> str | None:
    """The object's palette colour (never the background's) from the pixels under ``mask``.

    By default the colour most pixels lie within 60 levels of: a solid object is mostly pure pixels, and a mark
    inside it covers a fifth at most. With ``strokes`` (stripes, dots, outlines: mostly blends with the
    background, whose chroma H.264 blurs further) the colour whose blends with the background best explain the
    pixels: the mean distance from the background-to-colour segment, plus the distance of the most distinct
    pixels (the 10% farthest from the background) from the colour itself. Not the median in either case: the
    median of black stripes on white is gray.
    """
    pixels = img[mask]
    if len(pixels) == 0:
        return None
    bg = np.asarray(COLORS[background], dtype=np.float64)
    rel = pixels - bg
    far = np.linalg.norm(rel, axis=-1)
    distinct = pixels[far >= np.percentile(far, 90)].mean(0)
    best, cost = None, np.inf
    for name, rgb in COLORS.items():
        if name == background:
            continue
        if strokes:
            axis = np.asarray(rgb, dtype=np.float64) - bg
            t = np.clip(rel @ axis / (axis @ axis), 0, 1)
            c = np.linalg.norm(rel - t[:, None] * axis, axis=-1).mean() + np.linalg.norm(distinct - rgb)
        else:
            c = -float((np.linalg.norm(pixels - np.asarray(rgb, dtype=np.float64), axis=-1) < 60.0).sum())
        best, cost = (name, c) if c < cost else (best, cost)
    return best if cost < 0 or strokes else None


# -- camera ----------------------------------------------------------------------------------------------------


@dataclass
class CameraReading:
    frames: np.ndarray
    """``(K,)`` the frames read (every ``step``-th, and the last)."""
    offset: np.ndarray
    """``(K, 2)`` the camera's offset from frame 0 in pixels (the background moves the other way on screen)."""
    zoom: np.ndarray
    """``(K,)`` the camera's zoom relative to frame 0 (> 1: zooming in)."""
    textured: bool
    """Whether the background had texture to read; without it the camera reads as static."""


def _phase_shift(a: np.ndarray, b: np.ndarray, upsample: int = 20) -> np.ndarray:
    """``(dx, dy)`` by which the content of patch ``a`` moved in ``b``: the phase correlation's integer peak,
    refined on a ``1 / upsample`` pixel grid by a matrix DFT around it (a parabola at the peak is biased toward
    whole pixels, which halves a slow zoom's small shifts)."""
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-9
    r = np.fft.ifft2(cross).real
    py, px = np.unravel_index(int(r.argmax()), r.shape)
    py, px = (py - h if py > h // 2 else py), (px - w if px > w // 2 else px)
    grid = np.arange(-upsample, upsample + 1) / upsample
    ey = np.exp(2j * np.pi * np.outer(py + grid, np.fft.fftfreq(h)))  # (G, h)
    ex = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w), px + grid))  # (w, G)
    fine = (ey @ cross @ ex).real
    iy, ix = np.unravel_index(int(fine.argmax()), fine.shape)
    return np.array([px + grid[ix], py + grid[iy]])


def read_camera(frames: torch.Tensor | np.ndarray, step: int = 4) -> CameraReading:
    """The camera's pan and zoom of a ``uint8`` ``(F, H, W, 3)`` clip, read from its background.

    Pixels far from the background colour (objects) are blanked first; frames ``step`` apart keep shifts of a
    few pixels, where phase correlation is accurate to about a tenth of a pixel.
    """
    img = _numpy(frames)
    num, height, width = img.shape[:3]
    bg = _border_rgb(img[0])
    far = np.linalg.norm(img - bg, axis=-1) > 45.0
    lum = img @ _LUMA
    fill = np.median(lum[~far]) if (~far).any() else 0.0
    lum = np.where(far, fill, lum)
    index = np.unique(np.r_[np.arange(0, num, step), num - 1])
    textured = bool(lum[index][~far[index]].std() > 4.0) if (~far[index]).any() else False
    offset, zoom = np.zeros((len(index), 2)), np.ones(len(index))
    if not textured or num < 2:
        return CameraReading(index, offset, zoom, textured)
    ph, pw = height // 2, width // 2
    tops = [(y, x) for y in (0, height // 4, height - ph) for x in (0, width // 4, width - pw)]
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    q = np.array([[x + (pw - 1) / 2, y + (ph - 1) / 2] for y, x in tops]) - c  # patch centres from the middle
    design = np.zeros((2 * len(tops), 3))
    design[0::2, 0], design[1::2, 1] = 1, 1
    design[0::2, 2], design[1::2, 2] = q[:, 0], q[:, 1]
    for n, (fa, fb) in enumerate(itertools.pairwise(index)):
        d = np.concatenate(
            [_phase_shift(lum[fa, y : y + ph, x : x + pw], lum[fb, y : y + ph, x : x + pw]) for y, x in tops]
        )
        keep = np.ones(len(d), dtype=bool)
        for _ in range(2):  # least squares, then again without the patches it fits worst (an object, an edge)
            sol = np.linalg.lstsq(design[keep], d[keep], rcond=None)[0]
            res = np.abs(design @ sol - d).reshape(-1, 2).max(1).repeat(2)
            keep = res <= max(0.5, 2 * np.median(res))
        zoom[n + 1] = zoom[n] * (1 + sol[2])
        offset[n + 1] = offset[n] - sol[:2] / zoom[n + 1]
    return CameraReading(index, offset, zoom, textured)


def camera_agreement(reading: CameraReading, reference: CameraReading | np.ndarray, floor: float = 4.0) -> float:
    """How well a clip's camera follows a reference's, in [0, 1]: ``1 - (pan error + zoom error)``, each the mean
    error over the read frames over the reference's mean pan (floored at ``floor`` px) or mean log-zoom (floored
    at log 1.1), so a static camera scores 0 against a moving one and 1 against a static one.

    ``reference``: another reading, or a ground-truth ``(F, 3)`` track (:meth:`Camera.track`). An untextured
    reading scores 0: its camera cannot be seen.
    """
    if not reading.textured:
        return 0.0
    if isinstance(reference, CameraReading):
        ref_off, ref_zoom = reference.offset, reference.zoom
        n = min(len(ref_off), len(reading.offset))
        off, zoom = reading.offset[:n], reading.zoom[:n]
        ref_off, ref_zoom = ref_off[:n], ref_zoom[:n]
    else:
        reference = np.asarray(reference, dtype=np.float64)
        keep = reading.frames < len(reference)
        off, zoom = reading.offset[keep], reading.zoom[keep]
        ref_off, ref_zoom = reference[reading.frames[keep], :2], reference[reading.frames[keep], 2]
    pan_extent = max(floor, float(np.linalg.norm(ref_off, axis=1).mean()))
    zoom_extent = max(np.log(1.1), float(np.abs(np.log(ref_zoom)).mean()))
    pan_err = np.linalg.norm(off - ref_off, axis=1).mean() / pan_extent
    zoom_err = np.abs(np.log(zoom) - np.log(ref_zoom)).mean() / zoom_extent
    return float(max(0.0, 1.0 - pan_err - zoom_err))


# -- effects -----------------------------------------------------------------------------------------------------


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = mask[
        max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


def _count_components(mask: np.ndarray, min_pixels: int = 4) -> int:
    """Connected (4-neighbour) regions of at least ``min_pixels``, by propagating the smallest label."""
    big = mask.size
    labels = np.where(mask, np.arange(big).reshape(mask.shape), big)
    while True:
        nxt = labels
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            moved = np.full_like(labels, big)
            moved[max(0, dy) : labels.shape[0] + min(0, dy), max(0, dx) : labels.shape[1] + min(0, dx)] = labels[
                max(0, -dy) : labels.shape[0] + min(0, -dy), max(0, -dx) : labels.shape[1] + min(0, -dx)
            ]
            nxt = np.where(mask, np.minimum(nxt, moved), big)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    _, counts = np.unique(labels[mask], return_counts=True)
    return int((counts >= min_pixels).sum())


@dataclass
class EffectCurves:
    """Per-frame readings the effect is classified from (relative to frame 0)."""

    area: np.ndarray
    """Pixels over 30 levels from the background, over frame 0's count."""
    contrast: np.ndarray
    """90th percentile of those pixels' distance from the background, over frame 0's (0: no object)."""
    colors: list[str | None]
    components: np.ndarray
    """Connected parts at least half as far from the background as the frame's object."""


def effect_curves(frames: torch.Tensor | np.ndarray) -> EffectCurves:
    """The readings :func:`read_effect` classifies, for a clip with one object on a flat background."""
    img = _numpy(frames)
    background = nearest_color(_border_rgb(img[0]))
    dist = np.linalg.norm(img - np.asarray(COLORS[background], dtype=np.float64), axis=-1)
    loose = dist > 30.0
    peak = np.array([np.percentile(d[m], 90) if m.sum() >= 3 else 0.0 for d, m in zip(dist, loose)])
    area = loose.reshape(len(img), -1).sum(1) / max(1.0, float(loose[0].sum()))
    contrast = peak / max(peak[0], 1.0)
    cores = [(d > 0.5 * p) & m for d, m, p in zip(dist, loose, peak)]
    colors = [object_color(f, core, background) if core.sum() >= 3 else None for f, core in zip(img, cores)]
    components = np.array([_count_components(core) for core in cores])
    return EffectCurves(area, contrast, colors, components)


def _legs(series: np.ndarray, ratio: float = 1.4) -> int:
    """Monotone rises and falls of ``series`` by at least ``ratio`` (smaller wiggles do not count; a 3-frame
    median first removes single-frame noise)."""
    padded = np.r_[series[0], series, series[-1]]
    series = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    legs, direction, extreme = 0, 0, series[0]
    for a in series[1:]:
        if direction == 1 and a > extreme or direction == -1 and a < extreme:
            extreme = a  # the leg goes on
        elif direction != 1 and a > extreme * ratio:
            legs, direction, extreme = legs + 1, 1, a
        elif direction != -1 and a < extreme / ratio:
            legs, direction, extreme = legs + 1, -1, a
    return legs


def read_effect(frames: torch.Tensor | np.ndarray) -> str:
    """Which effect happens to the clip's object: one of ``EFFECTS`` or ``"none"``.

    Checked in this order: ``flash`` (gone and back at least twice, there at the end), ``fade`` (gone at the end
    after a visibly faint phase), ``split`` (two parts at the end), ``recolor`` (another colour at the end),
    ``pulse`` (area up and down, three times or more), ``grow`` / ``shrink`` (area x1.5 / x0.6 at the end).
    """
    c = effect_curves(frames)
    visible = (c.area >= 0.15) & (c.contrast >= 0.3)
    tail = max(1, len(visible) // 10)
    if visible[-1] and int((visible[:-1] & ~visible[1:]).sum()) >= 2:
        return "flash"
    if not visible[-tail:].any():
        faint = (c.contrast > 0.2) & (c.contrast < 0.75) & (c.area >= 0.5)
        return "fade" if faint.any() else "none"
    if c.components[0] == 1 and np.median(c.components[-tail:]) >= 2:
        return "split"
    if c.colors[0] is not None and c.colors[-1] is not None and c.colors[0] != c.colors[-1]:
        return "recolor"
    if _legs(c.area) >= 3:
        return "pulse"
    end = float(np.median(c.area[-tail:]))
    return "grow" if end > 1.5 else ("shrink" if end < 0.6 else "none")


# -- identity marks and styles ---------------------------------------------------------------------------------


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out |= _shift(mask, dy, dx)
    return out


def _filled_region(mask: np.ndarray, radius: int) -> np.ndarray:
    """Close the gaps between strokes (stripes, dots), then fill the holes (an outline, a mark)."""
    closed = ~_dilate(~_dilate(mask, radius), radius)
    outside = np.zeros_like(closed)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = ~closed[0], ~closed[-1], ~closed[:, 0], ~closed[:, -1]
    while True:
        grown = _dilate(outside, 1) & ~closed
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


@dataclass
class LookReading:
    """One frame's object read against templates: background, colour, shape, and the best ``mark``."""

    background: str
    color: str | None
    shape: str | None
    mark: str | None
    error: float


def read_look(frame: np.ndarray, marks: dict[str, object], offsets: float = 1.0, strokes: bool = False) -> LookReading:
    """Fit every ``(shape, mark, centre offset)`` template to one frame's object ink; ``marks`` maps a name to
    ``ink(shape, dx, dy, size, scale)``. The centre is the filled region's centroid, refined within ``offsets``
    pixels (half-pixel steps), because a stripe's phase depends on it. ``strokes``: see :func:`object_color`."""
    img = np.asarray(frame, dtype=np.float64)
    height, width = img.shape[:2]
    background = nearest_color(_border_rgb(img))
    bg = np.asarray(COLORS[background], dtype=np.float64)
    dist = np.linalg.norm(img - bg, axis=-1)
    far = dist > 60.0
    if far.sum() < 6:
        return LookReading(background, None, None, None, float("inf"))
    color = object_color(img, far, background, strokes)
    if color is None:
        return LookReading(background, None, None, None, float("inf"))
    obj = np.asarray(COLORS[color], dtype=np.float64)
    gap = float(np.linalg.norm(obj - bg))
    ink = np.clip(1 - np.linalg.norm(img - obj, axis=-1) / gap, 0, 1)
    scale = min(height, width) / 64.0
    region = _filled_region(dist > 0.5 * gap, max(1, round(2 * scale)))
    ys, xs = np.nonzero(region)
    if len(xs) == 0:  # a faint blob (a generated object fading out): no pixel half-way to the object's colour
        return LookReading(background, color, None, None, float("inf"))
    cx, cy = xs.mean(), ys.mean()
    size = SIZE * scale
    r = int(np.ceil(1.6 * size))
    x0, x1 = max(0, int(cx) - r), min(width, int(cx) + r + 2)
    y0, y1 = max(0, int(cy) - r), min(height, int(cy) + r + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    steps = np.arange(-offsets, offsets + 1e-9, 0.5)
    ox, oy = (g.reshape(-1, 1) for g in np.meshgrid(steps, steps))
    dx, dy = xx.reshape(1, -1) - cx - ox, yy.reshape(1, -1) - cy - oy
    seen = ink[y0:y1, x0:x1].reshape(1, -1)
    best = (float("inf"), None, None)
    for shape in SHAPES:
        for name, draw in marks.items():
            err = float(((draw(shape, dx, dy, size, scale) - seen) ** 2).mean(1).min())
            best = min(best, (err, shape, name), key=lambda b: b[0])
    return LookReading(background, color, best[1], best[2], best[0])


def _pattern_ink(name: str):
    def draw(shape, dx, dy, size, scale):
        cov = shape_coverage(shape, dx, dy, size)
        return cov if name == "none" else cov * (1 - pattern_coverage(name, dx, dy, size) * cov)

    return draw


def _style_ink(name: str):
    return lambda shape, dx, dy, size, scale: style_coverage(name, shape, dx, dy, size, scale)


PATTERN_MARKS = {name: _pattern_ink(name) for name in ("none",) + PATTERNS}
STYLE_MARKS = {name: _style_ink(name) for name in ("filled",) + STYLES}


@dataclass
class LookClipReading:
    frames: list[LookReading]

    def majority(self, attr: str) -> str | None:
        values = [getattr(f, attr) for f in self.frames if getattr(f, attr) is not None]
        return Counter(values).most_common(1)[0][0] if values else None


def _read_looks(frames: torch.Tensor | np.ndarray, marks: dict, every: int, strokes: bool) -> LookClipReading:
    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    return LookClipReading([read_look(f, marks, strokes=strokes) for f in arr[::every]])


def read_identity(frames: torch.Tensor | np.ndarray, every: int = 4) -> LookClipReading:
    """Colour, shape and identity mark (``mark``: a pattern name or ``"none"``) of every ``every``-th frame."""
    return _read_looks(frames, PATTERN_MARKS, every, strokes=False)


def identity_agreement(reading: LookClipReading, color: str, shape: str, pattern: str) -> dict[str, float]:
    """Share of read frames whose colour, shape and mark match an identity, and their mean (the ID score)."""
    out = frame_agreement(reading.frames, color=color, shape=shape, mark=pattern)
    return {"color": out["color"], "shape": out["shape"], "pattern": out["mark"], "mean": out["mean"]}


def read_style(frames: torch.Tensor | np.ndarray, every: int = 4) -> LookClipReading:
    """The rendering style (``mark``: a style name or ``"filled"``) of every ``every``-th frame."""
    return _read_looks(frames, STYLE_MARKS, every, strokes=True)


def style_agreement(reading: LookClipReading, style: str) -> float:
    """Share of read frames drawn in ``style`` (the style score)."""
    return sum(f.mark == style for f in reading.frames) / max(1, len(reading.frames))


__all__ = [
    "CameraReading",
    "EffectCurves",
    "LookClipReading",
    "LookReading",
    "camera_agreement",
    "effect_curves",
    "object_color",
    "identity_agreement",
    "read_camera",
    "read_effect",
    "read_identity",
    "read_look",
    "read_style",
    "style_agreement",
]
