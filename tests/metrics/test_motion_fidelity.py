"""Motion fidelity: the per-step rule on hand-made tracks, then synthetic clips of known motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effivmt.data import moving_shapes, reverse
from effivmt.errors import ConfigError, VideoError
from effivmt.metrics.motion_fidelity import align_tracks, motion_fidelity, motion_similarity, resample_tracks
from effivmt.metrics.tracking import Tracks, track_grid


def make_tracks(steps, height: int = 100, width: int = 100, valid=None) -> Tracks:
    """Tracks from per-step pixel displacements ``(K, T, 2)``, all starting at the frame centre."""
    steps = np.asarray(steps, dtype=np.float32)
    start = np.broadcast_to(np.float32([width / 2, height / 2]), (steps.shape[0], 1, 2))
    points = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)
    valid = np.ones(points.shape[:2], bool) if valid is None else np.asarray(valid)
    return Tracks(points=points, valid=valid, height=height, width=width)


RIGHT, LEFT, UP, STILL = [2.0, 0.0], [-2.0, 0.0], [0.0, -2.0], [0.0, 0.0]


@pytest.mark.parametrize(
    ("ref", "gen", "expected"),
    [
        (RIGHT, RIGHT, 1.0),
        (RIGHT, LEFT, -1.0),
        (RIGHT, UP, 0.0),
        (STILL, STILL, 1.0),  # both stand still: the same (absence of) motion
        (RIGHT, STILL, 0.0),  # the 0/0 guard: a static step has no direction and agrees with no motion
        ([0.1, 0.1], [-0.2, 0.0], 1.0),  # below min_motion = 0.5 px both are static: tracker noise is not motion
    ],
)
def test_per_step_rule(ref, gen, expected):
    score = motion_fidelity(make_tracks([[ref] * 4]), make_tracks([[gen] * 4]))
    assert score == pytest.approx(expected, abs=1e-6)


def test_best_match_per_generated_track_and_the_reverse_direction():
    ref = make_tracks([[RIGHT] * 4, [UP] * 4])
    gen = make_tracks([[RIGHT] * 4])  # matches one of the two reference tracks
    assert motion_fidelity(ref, gen) == pytest.approx(1.0)
    assert motion_fidelity(ref, gen, direction="reference") == pytest.approx(0.5)
    assert motion_fidelity(ref, gen, direction="symmetric") == pytest.approx(0.75)
    with pytest.raises(ConfigError):
        motion_fidelity(ref, gen, direction="both")


def test_a_lost_partner_counts_as_disagreement():
    valid = np.ones((1, 5), bool)
    valid[0, 3:] = False  # reference track lost after 2 of 4 steps
    ref = make_tracks([[RIGHT] * 4], valid=valid)
    gen = make_tracks([[RIGHT] * 4])
    assert motion_fidelity(ref, gen) == pytest.approx(0.5)
    assert motion_fidelity(gen, ref) == pytest.approx(1.0)  # scored over its own 2 trusted steps


def test_motion_weighting_lets_moving_tracks_outvote_a_static_background():
    ref = make_tracks([[RIGHT] * 4] + [[STILL] * 4] * 9)
    gen = make_tracks([[LEFT] * 4] + [[STILL] * 4] * 9)  # background matches, the subject moves backwards
    assert motion_fidelity(ref, gen) == pytest.approx(0.0)  # subject: best match is a static track (0), not -1
    assert motion_fidelity(ref, gen, weighting="uniform") == pytest.approx(0.9)


def test_resolution_and_length_are_normalised_away():
    diagonal = make_tracks([[[2.0, 1.0]] * 8], height=100, width=200)
    stretched = make_tracks([[[16.0, 8.0]] * 4], height=400, width=800)  # 4x the size, half the frames
    assert motion_fidelity(diagonal, stretched) == pytest.approx(1.0)
    ref, gen = align_tracks(diagonal, stretched, "truncate")
    assert ref.num_frames == gen.num_frames == 5
    half = resample_tracks(diagonal, 5)
    np.testing.assert_allclose(half.points[0, :, 0], 100 + np.arange(5) * 4.0)


def test_untrackable_clip_raises_instead_of_nan():
    lost = make_tracks([[RIGHT] * 2], valid=np.array([[True, False, False]]))
    with pytest.raises(VideoError, match="could be tracked"):
        motion_fidelity(make_tracks([[RIGHT] * 2]), lost)


@pytest.fixture(scope="module")
def linear():
    """One shape on a straight bouncing path and its grid tracks."""
    clip = moving_shapes(17, motion="linear", num_shapes=1, seed=0)
    return clip, track_grid(clip.frames, grid_size=24)


def test_identical_and_reencoded_motion_score_near_one(linear):
    clip, tracks = linear
    assert motion_fidelity(tracks, tracks) == pytest.approx(1.0)
    # the same motion at 1.5x the resolution (a different tracker window), and at half the speed over 33 frames
    big = F.interpolate(clip.frames.permute(0, 3, 1, 2).float(), size=(96, 96), mode="bilinear")
    big = big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    slow = moving_shapes(33, motion="linear", num_shapes=1, seed=0, speed=1.0)
    for frames in (big, slow.frames):
        similarity = motion_similarity(tracks, track_grid(frames, grid_size=24))
        assert similarity.generated() >= 0.95 and similarity.reference() >= 0.95


def test_reversed_and_unrelated_motion_score_lower(linear):
    clip, tracks = linear
    reversed_score = motion_fidelity(tracks, track_grid(reverse(clip).frames, grid_size=24))
    assert reversed_score < 0.5
    for motion in ("circular", "zigzag"):
        other = moving_shapes(17, motion=motion, num_shapes=1, seed=0)
        score = motion_fidelity(tracks, track_grid(other.frames, grid_size=24))
        assert score < 0.85 and math.isfinite(score)


def test_static_clips_are_finite(linear):
    _, tracks = linear
    static = track_grid(moving_shapes(17, motion="static", num_shapes=1, seed=0).frames, grid_size=24)
    assert motion_fidelity(static, static) == pytest.approx(1.0)
    frozen = motion_similarity(tracks, static)  # a generation that dropped the motion
    assert frozen.generated() == pytest.approx(1.0)  # nothing it does contradicts the reference...
    assert frozen.reference() < 0.3  # ...but the reference's motion is missing from it
