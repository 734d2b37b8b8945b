"""The ``effivmt eval`` command: motion fidelity, text similarity and temporal consistency of a generated clip."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from effivmt.errors import ConfigError
from effivmt.io import write_json_atomic
from effivmt.metrics.flow_agreement import agreement, motion_fields
from effivmt.metrics.motion_fidelity import MOTION_METRICS, Align, MotionMetric, Weighting, motion_similarity
from effivmt.metrics.tracking import CoTrackerTracker, LKTracker, Tracker

CLIP_NOTE = "text similarity and temporal consistency need --clip_model PATH (a local CLIP folder)"


def _read_frames(path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    """(F, H, W, 3) uint8 frames of a clip, cut to its first ``max_frames``, and its frame rate."""
    from effivmt.data import read_video

    frames, fps = read_video(path)
    if max_frames is not None:
        frames = frames[:max_frames]
    return frames.numpy(), fps


def make_tracker(tracker: Literal["lk", "cotracker"], cotracker_checkpoint: Path | None = None) -> Tracker:
    """The grid tracker named on the command line (CoTracker only from a local checkpoint)."""
    if tracker == "lk":
        return LKTracker()
    if tracker == "cotracker":
        if cotracker_checkpoint is None:
            raise ConfigError(
                "CoTracker backend needs the cotracker package and a local checkpoint",
                "pass --cotracker_checkpoint FILE (downloaded yourself), or use --tracker lk",
            )
        return CoTrackerTracker(cotracker_checkpoint)
    raise ConfigError(f"unknown tracker {tracker!r}", "use 'lk' or 'cotracker'")


def _print_table(result: dict[str, Any]) -> None:
    """Print the metrics as a two-column table, skipped ones as '-'."""
    rows = ["motion_fidelity", "motion_fidelity_reference", "text_similarity", "temporal_consistency"]
    print(f"{'metric':<28}{'value':>8}")
    for name in rows:
        value = result[name]
        print(f"{name:<28}{'-' if value is None else f'{value:.4f}':>8}")
    print(f"motion metric: {result['motion_metric']} ({MOTION_METRICS[result['motion_metric']]})")
    for note in result["notes"]:
        print(f"note: {note}")


def evaluate(
    reference: Path,
    generated: Path,
    prompt: str | None = None,
    clip_model: Path | None = None,
    motion_metric: MotionMetric = "flow",
    tracker: Literal["lk", "cotracker"] = "lk",
    cotracker_checkpoint: Path | None = None,
    grid_size: int = 55,
    max_frames: int | None = None,
    align: Align = "resample",
    min_motion: float = 0.5,
    weighting: Weighting = "motion",
    json: Path | None = None,
) -> dict[str, Any]:
    """Score a generated clip against its reference: motion fidelity, text similarity, temporal consistency.

    Motion fidelity (DESIGN.md, 'Motion fidelity') is always computed, by ``motion_metric``: ``flow`` (default,
    the headline) compares the clips' dense optical flow in place and scores a frozen, noisy or time-reversed
    copy near or below 0; ``smm`` is the published score (grid tracks, best reference match per generated
    track, which a frozen clip fools), with ``motion_fidelity_reference`` the best generated match per
    reference track. The CLIP metrics need a local CLIP folder and are skipped without one.

    Args:
        reference: the reference clip whose motion should be transferred.
        generated: the generated clip to score.
        prompt: the prompt of the generated clip, for text similarity.
        clip_model: a local CLIP folder (e.g. a copy of openai/clip-vit-base-patch32); nothing is downloaded.
        motion_metric: ``flow`` (dense-flow agreement, the headline) or ``smm`` (the published track score, for
            comparison with papers). The options below down to ``weighting`` apply to ``smm`` only.
        tracker: ``lk`` (OpenCV Lucas-Kanade, no weights) or ``cotracker`` (needs the cotracker package).
        cotracker_checkpoint: a local CoTracker checkpoint file, with ``--tracker cotracker``.
        grid_size: tracks per side of the grid seeded on the first frame (55 as published).
        max_frames: score only the first this many frames of each clip.
        align: clips of different lengths: ``resample`` the longer one over the shorter one's frame count
            (same motion, different speed), or ``truncate`` to it (generated = start of reference).
        min_motion: steps shorter than this many pixels are static (two static steps match; see
            ``effivmt.metrics.motion_fidelity``).
        weighting: ``motion`` (each track counts by its number of moving steps, so a static background does
            not drown the moving subject) or ``uniform`` (every track once, as the published scripts).
        json: also write the results to this JSON file (atomically).

    Returns:
        The results: the four metrics (``None`` when skipped), clip sizes, settings, notes and runtime.
    """
    if max_frames is not None and max_frames < 2:
        raise ConfigError(f"max_frames must be >= 2, got {max_frames}", "motion needs at least two frames")
    if motion_metric not in MOTION_METRICS:
        raise ConfigError(f"unknown motion_metric {motion_metric!r}", f"use one of {', '.join(MOTION_METRICS)}")
    start = time.perf_counter()
    track = make_tracker(tracker, cotracker_checkpoint) if motion_metric == "smm" else None
    ref_frames, ref_fps = _read_frames(Path(reference), max_frames)
    gen_frames, gen_fps = _read_frames(Path(generated), max_frames)
    notes: list[str] = []
    if ref_frames.shape[0] != gen_frames.shape[0]:
        notes.append(f"{ref_frames.shape[0]} reference vs {gen_frames.shape[0]} generated frames: {align}d")

    result: dict[str, Any] = {
        "reference": str(reference),
        "generated": str(generated),
        "motion_metric": motion_metric,
        "motion_fidelity": None,
        "motion_fidelity_reference": None,
        "text_similarity": None,
        "temporal_consistency": None,
        "reference_clip": {"frames": ref_frames.shape[0], "size": list(ref_frames.shape[1:3]), "fps": ref_fps},
        "generated_clip": {"frames": gen_frames.shape[0], "size": list(gen_frames.shape[1:3]), "fps": gen_fps},
        "moving_tracks": None,
        "settings": {"motion_metric": motion_metric, "align": align},
        "notes": notes,
    }
    if motion_metric == "flow":
        ref_flow, gen_flow = motion_fields(ref_frames, gen_frames, align=align)
        result["motion_fidelity"] = agreement(ref_flow, gen_flow)
        for side, flow in (("reference", ref_flow), ("generated", gen_flow)):
            if not np.abs(flow).max() >= 1e-3:  # 1e-3 of the frame a step: 0.06 px at the 64 px working size
                notes.append(f"nothing in the {side} clip moves (flow below 0.1% of the frame a step)")
    else:
        ref_tracks, gen_tracks = track(ref_frames, grid_size=grid_size), track(gen_frames, grid_size=grid_size)
        similarity = motion_similarity(ref_tracks, gen_tracks, min_motion=min_motion, align=align, weighting=weighting)
        for side, moving in (("reference", similarity.ref_moving), ("generated", similarity.gen_moving)):
            if not moving.any():
                notes.append(f"nothing in the {side} clip moves more than {min_motion} px a frame")
        result["motion_fidelity"] = similarity.generated()
        result["motion_fidelity_reference"] = similarity.reference()
        result["moving_tracks"] = {
            "reference": int((similarity.ref_moving > 0).sum()),
            "generated": int((similarity.gen_moving > 0).sum()),
            "total": grid_size * grid_size,
        }
        result["settings"].update(tracker=tracker, grid_size=grid_size, min_motion=min_motion, weighting=weighting)

    if clip_model is None:
        notes.append(CLIP_NOTE)
    else:
        from effivmt.metrics.clip_scores import CLIPScorer, temporal_consistency, text_similarity

        scorer = CLIPScorer.from_pretrained(clip_model)
        result["settings"]["clip_model"] = str(clip_model)
        result["temporal_consistency"] = temporal_consistency(gen_frames, scorer)
        if prompt:
            result["text_similarity"] = text_similarity(gen_frames, prompt, scorer)
        else:
            notes.append("text similarity needs --prompt TEXT")
    result["seconds"] = round(time.perf_counter() - start, 3)

    _print_table(result)
    if json is not None:
        write_json_atomic(json, result)
        print(f"wrote {json}")
    return result
