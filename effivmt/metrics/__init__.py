"""Evaluation metrics: motion fidelity, CLIP text similarity and temporal consistency.

Motion fidelity has two variants: :func:`flow_agreement` (dense-flow agreement, the headline figure, which a
frozen, noisy or time-reversed clip cannot fool) and :func:`motion_fidelity` (the published SMM / DiTFlow
track score, kept for comparison with papers); :func:`motion_fidelity_score` picks one by name (``"flow"``
by default, or ``"smm"``).

Metric functions take frames, ``uint8`` ``(F, H, W, 3)`` arrays or tensors, not paths, so they can be used on
clips in memory; ``effivmt.metrics.evaluate.evaluate`` (the ``effivmt eval`` command) reads files. It is not
re-exported here: the name ``evaluate`` belongs to that submodule once imported.
CLIP classes live in :mod:`effivmt.metrics.clip_scores` and load lazily (they import transformers).
"""

from effivmt.metrics.flow_agreement import flow_agreement, motion_fields
from effivmt.metrics.motion_fidelity import (
    MOTION_METRICS,
    MotionSimilarity,
    align_tracks,
    motion_fidelity,
    motion_fidelity_score,
    motion_similarity,
)
from effivmt.metrics.tracking import CoTrackerTracker, LKTracker, Tracker, Tracks, grid_points, track_grid

__all__ = [
    "MOTION_METRICS",
    "CLIPScorer",
    "CoTrackerTracker",
    "LKTracker",
    "MotionSimilarity",
    "Tracker",
    "Tracks",
    "align_tracks",
    "build_tiny_clip",
    "flow_agreement",
    "grid_points",
    "motion_fidelity",
    "motion_fidelity_score",
    "motion_fields",
    "motion_similarity",
    "temporal_consistency",
    "text_similarity",
    "track_grid",
]

_LAZY = {
    "CLIPScorer": "effivmt.metrics.clip_scores",
    "text_similarity": "effivmt.metrics.clip_scores",
    "temporal_consistency": "effivmt.metrics.clip_scores",
    "build_tiny_clip": "effivmt.metrics.tiny_clip",
}


def __getattr__(name: str):
    """Import the CLIP helpers on first use (PEP 562), keeping ``import effivmt.metrics`` light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effivmt.metrics' has no attribute {name!r}")
