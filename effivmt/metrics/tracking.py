"""Point tracks on a regular grid, the input of motion fidelity (DESIGN.md, 'Motion fidelity').

The published motion-fidelity scripts (SMM, DiTFlow) track a 55 x 55 grid with CoTracker, whose weights
come from a hub. The default here is OpenCV's pyramidal Lucas-Kanade, which needs no weights: points are
seeded on the first frame, followed frame to frame, and a point is dropped for good the first time its
forward-backward round trip misses by more than ``fb_threshold`` pixels (an occlusion, a drift, or the
point leaving the frame). CoTracker stays available as a seam for users who have it and a local checkpoint.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from effivmt.errors import ConfigError, VideoError


@dataclass(frozen=True)
class Tracks:
    """Grid tracks of one clip, in pixel coordinates of that clip."""

    points: np.ndarray
    """(K, F, 2) float32 (x, y) positions; after a track is lost its last position is repeated."""
    valid: np.ndarray
    """(K, F) bool: the position at frame f is a trusted observation (True up to the frame a track is lost)."""
    height: int
    """Frame height in pixels, to normalise ``y`` (clips of different resolutions compare in [0, 1] units)."""
    width: int
    """Frame width in pixels, to normalise ``x``."""

    @property
    def num_frames(self) -> int:
        """F, the number of frames tracked."""
        return self.points.shape[1]

    def normalized(self) -> np.ndarray:
        """Positions divided by (width, height): (K, F, 2) in [0, 1], independent of the resolution."""
        return self.points / np.array([self.width, self.height], dtype=np.float32)


class Tracker(Protocol):
    """Anything that tracks a ``grid_size`` x ``grid_size`` grid seeded on the first frame."""

    def __call__(self, frames: np.ndarray | torch.Tensor, grid_size: int = 55) -> Tracks: ...


def _as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB as a numpy array; reject anything else with a VideoError."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"expected frames of shape (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise VideoError(f"motion needs at least 2 frames, got {frames.shape[0]}", "pass a longer clip")
    if frames.dtype != np.uint8:
        raise VideoError(f"expected uint8 frames, got {frames.dtype}", "convert with effivmt.data.to_uint8_frames")
    return frames


def grid_points(height: int, width: int, grid_size: int) -> np.ndarray:
    """Centres of a ``grid_size`` x ``grid_size`` tiling of the frame, (grid_size**2, 2) float32 (x, y).

    Cell centres rather than CoTracker's margin-padded linspace: every point lies inside the frame whatever
    the grid size, and the tiling is the same at any resolution in normalised units.
    """
    if grid_size < 1:
        raise ConfigError(f"grid_size must be >= 1, got {grid_size}")
    xs = (np.arange(grid_size, dtype=np.float32) + 0.5) * width / grid_size
    ys = (np.arange(grid_size, dtype=np.float32) + 0.5) * height / grid_size
    gx, gy = np.meshgrid(xs, ys)  # row-major: point k = (row k // G, column k % G)
    return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def track_grid(
    frames: np.ndarray | torch.Tensor,
    grid_size: int = 55,
    fb_threshold: float = 1.0,
    win_size: int | None = None,
    max_level: int | None = None,
) -> Tracks:
    """Track a regular grid through a clip with pyramidal Lucas-Kanade, forward-backward checked.

    Args:
        frames: (F, H, W, 3) uint8 RGB frames.
        grid_size: points per side of the grid seeded on frame 0 (55 as in the published metric).
        fb_threshold: largest forward-backward round-trip error, in pixels, for a step to be trusted.
        win_size: side of the Lucas-Kanade window in pixels; ``None``: about 1/9 of the shorter side, within
            [7, 21]. A window much larger than an object averages its motion with the background's.
        max_level: pyramid levels above full resolution (each doubles the largest motion followed); ``None``:
            up to 3, as long as the coarsest level is at least two windows wide.

    Returns:
        :class:`Tracks` with ``grid_size**2`` tracks over all F frames.
    """
    import cv2

    frames = _as_frames(frames)
    num_frames, height, width = frames.shape[:3]
    points = np.empty((grid_size * grid_size, num_frames, 2), dtype=np.float32)
    valid = np.zeros((grid_size * grid_size, num_frames), dtype=bool)
    points[:, 0] = grid_points(height, width, grid_size)
    valid[:, 0] = True
    win_size, max_level = _lk_window(height, width, win_size, max_level)
    lk = dict(
        winSize=(win_size, win_size),
        maxLevel=max_level,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
    )
    prev = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    for f in range(1, num_frames):
        nxt = cv2.cvtColor(frames[f], cv2.COLOR_RGB2GRAY)
        points[:, f] = points[:, f - 1]
        alive = np.flatnonzero(valid[:, f - 1])
        if alive.size:
            p0 = points[alive, f - 1].reshape(-1, 1, 2)
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p0, None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, p1, None, **lk)
            p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
            round_trip = np.linalg.norm(back - p0.reshape(-1, 2), axis=-1)
            inside = (p1[:, 0] >= 0) & (p1[:, 0] <= width - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= height - 1)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (round_trip <= fb_threshold) & inside
            ok &= np.isfinite(p1).all(axis=-1)
            points[alive[ok], f] = p1[ok]
            valid[alive[ok], f] = True
        prev = nxt
    return Tracks(points=points, valid=valid, height=height, width=width)


def _lk_window(height: int, width: int, win_size: int | None, max_level: int | None) -> tuple[int, int]:
    """Window and pyramid depth for a frame size (explicit values win): 21 px and 3 levels from ~190 px up."""
    short = min(height, width)
    if win_size is None:
        win_size = max(7, min(21, (short // 9) | 1))  # | 1: odd, centred on the point
    if max_level is None:
        max_level = 0
        while max_level < 3 and short / 2 ** (max_level + 1) >= 2 * win_size:
            max_level += 1
    return win_size, max_level


class LKTracker:
    """:func:`track_grid` with its options fixed, as a :class:`Tracker`."""

    def __init__(self, fb_threshold: float = 1.0, win_size: int | None = None, max_level: int | None = None) -> None:
        self.options = dict(fb_threshold=fb_threshold, win_size=win_size, max_level=max_level)

    def __call__(self, frames: np.ndarray | torch.Tensor, grid_size: int = 55) -> Tracks:
        return track_grid(frames, grid_size=grid_size, **self.options)


class CoTrackerTracker:
    """CoTracker (the published metric's tracker) from a local checkpoint, when the package is installed.

    CoTracker is not on PyPI and its weights come from a hub, so it is never a default: install the
    ``cotracker`` package from its repository and pass the checkpoint file you downloaded yourself.
    """

    def __init__(self, checkpoint: Path | str, device: str | None = None) -> None:
        if importlib.util.find_spec("cotracker") is None:
            raise ConfigError(
                "CoTracker backend needs the cotracker package and a local checkpoint",
                "install cotracker from github.com/facebookresearch/co-tracker or use --tracker lk",
            )
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise ConfigError(f"CoTracker checkpoint {checkpoint} is not a file", "pass --cotracker_checkpoint FILE")
        from cotracker.predictor import CoTrackerPredictor  # type: ignore[import-not-found]

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CoTrackerPredictor(checkpoint=str(checkpoint)).to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray | torch.Tensor, grid_size: int = 55) -> Tracks:
        frames = _as_frames(frames)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(self.device)  # (1, F, 3, H, W)
        tracks, visibility = self.model(video, grid_size=grid_size)  # (1, F, K, 2), (1, F, K)
        points = tracks[0].permute(1, 0, 2).float().cpu().numpy()
        # CoTracker reports occlusion per frame; once hidden, treat a track as lost (as the LK tracker does).
        valid = np.logical_and.accumulate(visibility[0].permute(1, 0).bool().cpu().numpy(), axis=1)
        return Tracks(points=points, valid=valid, height=frames.shape[1], width=frames.shape[2])
