"""Grid tracker: ground-truth displacement of synthetic shapes, forward-backward check, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effivmt.data import moving_shapes
from effivmt.errors import ConfigError, VideoError
from effivmt.metrics.tracking import CoTrackerTracker, LKTracker, Tracks, grid_points, track_grid


def test_grid_points_are_cell_centres_inside_the_frame():
    points = grid_points(30, 60, 3)
    assert points.shape == (9, 2)
    np.testing.assert_allclose(points[:3], [[10, 5], [30, 5], [50, 5]])
    assert points[:, 0].max() < 60 and points[:, 1].max() < 30


@pytest.mark.parametrize("motion", ["linear", "circular"])
def test_tracker_recovers_ground_truth_shape_displacement(motion):
    clip = moving_shapes(17, motion=motion, seed=0)
    tracks = track_grid(clip.frames, grid_size=24)
    assert isinstance(tracks, Tracks) and tracks.points.shape == (576, 17, 2) and tracks.valid.shape == (576, 17)
    truth = clip.tracks.numpy()  # (K, F, 2) shape centres
    for k in range(truth.shape[0]):
        # grid points well inside shape k (radius 6 px) at frame 0, kept to the end
        inside = (np.linalg.norm(tracks.points[:, 0] - truth[k, 0], axis=-1) < 4) & tracks.valid[:, -1]
        assert inside.sum() >= 5
        tracked = tracks.points[inside] - tracks.points[inside, :1]  # (n, F, 2) displacement since frame 0
        error = np.linalg.norm(tracked - (truth[k] - truth[k, :1]), axis=-1)
        assert np.median(error, axis=0).max() < 1.0  # within a pixel at every frame, over ~30 px of travel


def test_forward_backward_check_drops_points_on_a_cut():
    clip = moving_shapes(2, motion="static", seed=0)
    noise = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tracks = track_grid(torch.cat([clip.frames[:1], noise]), grid_size=16)
    assert tracks.valid[:, 0].all()
    assert tracks.valid[:, 1].mean() < 0.2
    static = track_grid(clip.frames, grid_size=16)
    moved = np.linalg.norm(static.points[:, 1] - static.points[:, 0], axis=-1)[static.valid[:, 1]]
    assert static.valid[:, 1].mean() > 0.5 and moved.max() < 0.1


def test_lk_tracker_is_a_tracker_with_fixed_options():
    clip = moving_shapes(5, seed=1)
    a = LKTracker(fb_threshold=0.5)(clip.frames, grid_size=8)
    b = track_grid(clip.frames.numpy(), grid_size=8, fb_threshold=0.5)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.valid, b.valid)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((1, 8, 8, 3), np.uint8), np.zeros((3, 8, 8), np.uint8), np.zeros((3, 8, 8, 3), np.float32)],
    ids=["one-frame", "no-channels", "float"],
)
def test_bad_frames_raise_video_error(frames):
    with pytest.raises(VideoError):
        track_grid(frames, grid_size=4)


def test_cotracker_without_package_says_what_to_do(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cotracker" else real(name, *a))
    with pytest.raises(ConfigError, match="cotracker package and a local checkpoint"):
        CoTrackerTracker(tmp_path / "cotracker.pth")
