"""Motion fidelity: how well the tracks of a generated clip follow those of the reference (DESIGN.md).

This is the *published* variant (``"smm"`` in :data:`MOTION_METRICS`), kept for comparison with papers. It is
not the headline: a frozen or noisy clip finds still or short-lived tracks that match (woman-bike, first 49
frames: frozen 1.000, noise 0.898). The headline, ``"flow"``, is :mod:`effivmt.metrics.flow_agreement`;
:func:`motion_fidelity_score` picks either by name.

The published metric (SMM, reused by DiTFlow and Follow-Your-Motion) takes the displacement of every grid
track at every step, normalises it to unit length, averages the cosine between each generated track and each
reference track over time, keeps the best reference match of every generated track and averages those.

Four things are left undefined by the published scripts and are decided here:

* **Static steps (0/0).** A step that moves less than ``min_motion`` pixels (tracker noise is sub-pixel) has
  no direction. Its unit vector is zero, and a per-step *static* flag carries the information instead: two
  static steps agree (similarity 1: "both stand still" is matching motion), a static step against a moving one
  disagrees (0), two moving steps score their cosine. No NaN can arise.
* **Lost tracks.** A step counts for a track only while the tracker trusts it. The similarity of generated
  track b to reference track a is the sum of the per-step scores over the steps where both are trusted,
  divided by the number of trusted steps of b: where the reference partner is missing, b earns 0. A track
  is therefore never rewarded for agreeing over a short overlap, and identical clips score exactly 1.
* **How tracks are weighted.** Without the foreground mask the published scripts pass to CoTracker, a
  static background is most of the grid and its tracks match each other perfectly, so even a reversed
  motion scores high. With ``weighting="motion"`` (default) each scored track's best match counts in
  proportion to its number of moving steps: every moving step of the scored clip has one vote, and background
  points dragged for a few frames by a passing object (Lucas-Kanade has no occlusion model) weigh little.
  If nothing moves in the scored clip, every track counts once (a static clip against a static clip is 1).
  ``weighting="uniform"`` counts every track once, as published.
* **Different lengths and sizes.** Positions are divided by the frame width and height, so unit vectors do
  not depend on resolution; the longer clip's tracks are resampled in time to the shorter clip's frame count
  (``align="resample"``, the clips span the same motion) or cut to it (``align="truncate"``, the generated clip
  is the start of the reference).

The published ``get_score`` also subtracts an identity matrix before the maximum, which with equal grids
forbids a generated track to take full credit from the reference track with its own index; that is not a
property of motion similarity and is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from effivmt.errors import ConfigError, VideoError
from effivmt.metrics.tracking import Tracks

Align = Literal["resample", "truncate"]
Direction = Literal["generated", "reference", "symmetric"]
Weighting = Literal["motion", "uniform"]


def resample_tracks(tracks: Tracks, num_frames: int) -> Tracks:
    """Linearly resample tracks in time to ``num_frames`` frames spanning the same interval.

    A resampled position is trusted when both frames it is interpolated from are trusted.
    """
    if num_frames == tracks.num_frames:
        return tracks
    t = np.linspace(0.0, tracks.num_frames - 1, num_frames)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, tracks.num_frames - 1)
    w = (t - i0).astype(np.float32)[None, :, None]  # (1, F', 1)
    points = (1 - w) * tracks.points[:, i0] + w * tracks.points[:, i1]
    valid = tracks.valid[:, i0] & (tracks.valid[:, i1] | (w[..., 0] == 0))
    return Tracks(points=points.astype(np.float32), valid=valid, height=tracks.height, width=tracks.width)


def align_tracks(ref: Tracks, gen: Tracks, align: Align = "resample") -> tuple[Tracks, Tracks]:
    """Bring two track sets to the shorter frame count (see the module docstring for the two modes)."""
    num_frames = min(ref.num_frames, gen.num_frames)
    if align == "resample":
        return resample_tracks(ref, num_frames), resample_tracks(gen, num_frames)
    if align == "truncate":

        def cut(tr: Tracks) -> Tracks:
            return Tracks(tr.points[:, :num_frames], tr.valid[:, :num_frames], tr.height, tr.width)

        return cut(ref), cut(gen)
    raise ConfigError(f"unknown align {align!r}", "use 'resample' or 'truncate'")


def step_features(tracks: Tracks, min_motion: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step features whose dot products are the summed per-step similarities.

    Args:
        tracks: tracks over F frames (T = F - 1 steps).
        min_motion: steps shorter than this many pixels (of this clip) are static.

    Returns:
        ``features`` (K, 3T): [unit dx, unit dy, static flag] per step, zero on untrusted steps, so that
        ``features_a @ features_b`` = sum over common trusted steps of cos (both moving), 1 (both static) or
        0 (one of each); ``steps`` (K,), the number of trusted steps of each track; ``moving`` (K,), the number
        of moving steps of each track.
    """
    step_ok = tracks.valid[:, 1:] & tracks.valid[:, :-1]  # (K, T)
    disp = tracks.points[:, 1:] - tracks.points[:, :-1]  # (K, T, 2) pixels
    moving = step_ok & (np.linalg.norm(disp, axis=-1) >= min_motion)
    static = step_ok & ~moving
    disp = disp / np.array([tracks.width, tracks.height], dtype=np.float32)  # resolution-free direction
    norm = np.linalg.norm(disp, axis=-1, keepdims=True)
    unit = np.where(moving[..., None], disp / np.maximum(norm, 1e-12), 0.0)  # the 0/0 guard
    features = np.concatenate([unit[..., 0], unit[..., 1], static.astype(np.float32)], axis=1)
    return features.astype(np.float32), step_ok.sum(axis=1), moving.sum(axis=1)


@dataclass(frozen=True)
class MotionSimilarity:
    """Track-to-track similarity of a reference and a generated clip."""

    summed: np.ndarray
    """(K_ref, K_gen) per-step similarity summed over the steps both tracks trust."""
    ref_steps: np.ndarray
    """(K_ref,) trusted steps of each reference track."""
    gen_steps: np.ndarray
    """(K_gen,) trusted steps of each generated track."""
    ref_moving: np.ndarray
    """(K_ref,) moving steps of each reference track."""
    gen_moving: np.ndarray
    """(K_gen,) moving steps of each generated track."""
    weighting: Weighting = "motion"
    """How the best matches of the scored tracks are averaged (see the module docstring)."""

    def generated(self) -> float:
        """Best reference match of every generated track, averaged: the published score (precision-like)."""
        return self._best_match_mean(self.summed.T, self.gen_steps, self.gen_moving, "generated")

    def reference(self) -> float:
        """Best generated match of every reference track, averaged: catches a generation that drops motion."""
        return self._best_match_mean(self.summed, self.ref_steps, self.ref_moving, "reference")

    def score(self, direction: Direction = "generated") -> float:
        """The score in one direction, or the mean of both (``"symmetric"``)."""
        if direction == "generated":
            return self.generated()
        if direction == "reference":
            return self.reference()
        if direction == "symmetric":
            return 0.5 * (self.generated() + self.reference())
        raise ConfigError(f"unknown direction {direction!r}", "use 'generated', 'reference' or 'symmetric'")

    def _best_match_mean(self, summed: np.ndarray, steps: np.ndarray, moving: np.ndarray, side: str) -> float:
        """Weighted mean over rows of max over columns of summed / steps (rows: the side being scored)."""
        rows = steps > 0
        if not rows.any():
            raise VideoError(
                f"no point of the {side} clip could be tracked over two frames",
                "check that the clip is not blank or flat; try a larger grid_size",
            )
        if self.weighting not in ("motion", "uniform"):
            raise ConfigError(f"unknown weighting {self.weighting!r}", "use 'motion' or 'uniform'")
        weights = moving[rows].astype(np.float64)
        if self.weighting == "uniform" or weights.sum() == 0:
            weights = np.ones_like(weights)
        best = np.clip(summed[rows].max(axis=1) / steps[rows], -1.0, 1.0)
        return float(np.average(best, weights=weights))


def motion_similarity(
    ref: Tracks, gen: Tracks, *, min_motion: float = 0.5, align: Align = "resample", weighting: Weighting = "motion"
) -> MotionSimilarity:
    """Similarity of every reference track to every generated track (one matrix product, O(K_ref * K_gen)).

    Args:
        ref: tracks of the reference clip.
        gen: tracks of the generated clip.
        min_motion: steps shorter than this many pixels are static (see the module docstring).
        align: how clips of different lengths are brought to the shorter frame count.
        weighting: ``"motion"`` (a track counts by its moving steps) or ``"uniform"`` (see the module docstring).
    """
    if min(ref.num_frames, gen.num_frames) < 2:
        raise VideoError("motion fidelity needs at least 2 frames in both clips")
    ref, gen = align_tracks(ref, gen, align)
    ref_feat, ref_steps, ref_moving = step_features(ref, min_motion)
    gen_feat, gen_steps, gen_moving = step_features(gen, min_motion)
    summed = ref_feat.astype(np.float64) @ gen_feat.T.astype(np.float64)  # (K_ref, K_gen)
    return MotionSimilarity(summed, ref_steps, gen_steps, ref_moving, gen_moving, weighting)


def motion_fidelity(
    ref_tracks: Tracks,
    gen_tracks: Tracks,
    *,
    direction: Direction = "generated",
    min_motion: float = 0.5,
    align: Align = "resample",
    weighting: Weighting = "motion",
) -> float:
    """Motion fidelity of a generated clip to a reference, in [-1, 1] (1: same motion).

    Args:
        ref_tracks: grid tracks of the reference clip (:func:`~effivmt.metrics.tracking.track_grid`).
        gen_tracks: grid tracks of the generated clip.
        direction: ``"generated"`` (best match per generated track, as published), ``"reference"`` (best match
            per reference track) or ``"symmetric"`` (their mean).
        min_motion: steps shorter than this many pixels count as static.
        align: ``"resample"`` or ``"truncate"`` the longer clip to the shorter one's frame count.
        weighting: ``"motion"``: a track's best match counts by its number of moving steps; ``"uniform"``: every
            track once, as published without a mask (a static background then dominates the score).

    Returns:
        The averaged best-match similarity.
    """
    similarity = motion_similarity(ref_tracks, gen_tracks, min_motion=min_motion, align=align, weighting=weighting)
    return similarity.score(direction)


MotionMetric = Literal["flow", "smm"]
MOTION_METRICS: dict[str, str] = {
    "flow": "dense-flow agreement (headline; effivmt.metrics.flow_agreement)",
    "smm": "published SMM / DiTFlow: best reference track per generated track (effivmt.metrics.motion_fidelity)",
}
"""Motion-fidelity variants by name; ``flow`` is the default and the headline figure."""


def motion_fidelity_score(
    generated: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    metric: MotionMetric = "flow",
    *,
    grid_size: int = 55,
) -> float:
    """Motion fidelity of generated frames to reference frames by variant name.

    Args:
        generated: (F, H, W, 3) uint8 frames of the generated clip.
        reference: (F', H', W', 3) uint8 frames of the reference clip.
        metric: ``"flow"`` (the headline, :func:`~effivmt.metrics.flow_agreement.flow_agreement`) or ``"smm"``
            (the published score, Lucas-Kanade grid tracks and :func:`motion_fidelity`).
        grid_size: tracks per side of the grid, for ``"smm"``.
    """
    if metric == "flow":
        from effivmt.metrics.flow_agreement import flow_agreement

        return flow_agreement(reference, generated)
    if metric == "smm":
        from effivmt.metrics.tracking import track_grid

        return motion_fidelity(track_grid(reference, grid_size=grid_size), track_grid(generated, grid_size=grid_size))
    raise ConfigError(f"unknown motion metric {metric!r}", f"use one of {', '.join(MOTION_METRICS)}")
