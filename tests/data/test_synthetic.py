"""Synthetic clips: the ground-truth tracks match the pixels, trackers can follow them, the shipped clip matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effivmt.data import (
    MOTIONS,
    SAMPLE_CLIP,
    SAMPLE_FPS,
    SHAPE_COLORS,
    moving_shapes,
    read_video,
    reverse,
    write_sample_clip,
)
from effivmt.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _colour_centroids(frame: torch.Tensor, num_shapes: int) -> list[tuple[float, float] | None]:
    """(x, y) centroid of the pixels whose colour points the way of each shape's colour (texture only scales it)."""
    rgb = frame.double()
    direction = rgb / rgb.norm(dim=-1, keepdim=True).clamp_min(1)
    yy, xx = torch.meshgrid(torch.arange(frame.shape[0]), torch.arange(frame.shape[1]), indexing="ij")
    out = []
    for k in range(num_shapes):
        color = torch.tensor(SHAPE_COLORS[k], dtype=torch.float64)
        mask = (direction @ (color / color.norm())) > 0.97
        out.append((float(xx[mask].double().mean()), float(yy[mask].double().mean())) if mask.any() else None)
    return out


@pytest.mark.parametrize("motion", MOTIONS)
def test_tracks_match_pixels(motion):
    """Colour-mask centroid within 1 px of the track, in every frame where the two shapes do not touch."""
    clip = moving_shapes(17, 64, 80, num_shapes=2, motion=motion, speed=2.5, seed=1)
    assert clip.frames.dtype == torch.uint8 and tuple(clip.frames.shape) == (17, 64, 80, 3)
    assert clip.tracks.dtype == torch.float32 and tuple(clip.tracks.shape) == (2, 17, 2)
    assert clip.motion == motion
    apart = (clip.tracks[0] - clip.tracks[1]).norm(dim=-1) > 20  # radius 6: discs and squares cannot overlap
    assert apart.sum() >= 8
    for f in torch.nonzero(apart).flatten().tolist():
        for k, centroid in enumerate(_colour_centroids(clip.frames[f], 2)):
            assert centroid is not None
            assert np.allclose(centroid, clip.tracks[k, f].tolist(), atol=1.0), (motion, f, k)


@pytest.mark.parametrize("motion", MOTIONS)
def test_shapes_stay_inside_and_move_at_speed(motion):
    clip = moving_shapes(40, 48, 64, num_shapes=3, motion=motion, speed=2.0, seed=2)
    x, y = clip.tracks[..., 0], clip.tracks[..., 1]
    radius = 4  # min(48, 64) // 10
    assert x.min() - radius >= 0 and x.max() + radius <= 63 and y.min() - radius >= 0 and y.max() + radius <= 47
    steps = (clip.tracks[:, 1:] - clip.tracks[:, :-1]).norm(dim=-1)
    if motion == "static":
        assert steps.max() == 0
    else:
        # bounces and zigzag turns shorten a few steps; most are exactly `speed` (circles: a chord, slightly less)
        assert steps.max() <= 2.0 + 1e-4
        assert steps.median() == pytest.approx(2.0, abs=0.05)


def test_deterministic_and_seeded():
    a, b = moving_shapes(seed=4), moving_shapes(seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.tracks, b.tracks)
    assert not torch.equal(a.tracks, moving_shapes(seed=5).tracks)
    # one stream per shape and one for the background: adding a shape moves nothing else
    assert torch.equal(moving_shapes(seed=4, num_shapes=3).tracks[:2], a.tracks)
    empty = moving_shapes(seed=4, num_shapes=0)
    assert tuple(empty.tracks.shape) == (0, 17, 2)
    assert empty.frames.float().std() > 10  # textured, not flat, so trackers find features
    assert moving_shapes(3, num_shapes=0, background="flat").frames.unique().tolist() == [128]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown motion"):
        moving_shapes(motion="spiral")
    with pytest.raises(ConfigError, match="16x16"):
        moving_shapes(height=8)
    with pytest.raises(ConfigError, match="background"):
        moving_shapes(background="stripes")


def test_reverse():
    clip = moving_shapes(9, motion="circular")
    back = reverse(clip)
    assert back.motion == "reversed-circular"
    assert torch.equal(back.tracks, clip.tracks.flip(1))
    assert torch.equal(back.tracks[:, 0], clip.tracks[:, -1])
    assert torch.equal(back.frames[0], clip.frames[-1])
    again = reverse(back)
    assert again.motion == "circular" and torch.equal(again.frames, clip.frames)


@pytest.mark.parametrize("motion", ["linear", "circular", "zigzag"])
def test_lucas_kanade_follows_shapes(motion):
    """OpenCV's pyramidal LK, chained over 16 frames from the true start points, stays within 2.5 px (1.8 seen)."""
    cv2 = pytest.importorskip("cv2")
    clip = moving_shapes(17, 64, 64, motion=motion)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.frames.numpy()]
    points = clip.tracks[:, 0].numpy().reshape(-1, 1, 2).astype(np.float32)
    for f in range(1, len(gray)):
        points, status, _ = cv2.calcOpticalFlowPyrLK(gray[f - 1], gray[f], points, None, winSize=(15, 15), maxLevel=2)
        assert status.all()
        assert np.abs(points[:, 0] - clip.tracks[:, f].numpy()).max() < 2.5, (motion, f)


def test_shipped_sample_clip_matches_its_recipe(tmp_path):
    shipped = REPO / "data" / "clips" / "moving-shapes.mp4"
    assert shipped.stat().st_size < 100_000
    frames, fps = read_video(shipped)
    assert tuple(frames.shape) == (25, 64, 64, 3) and fps == SAMPLE_FPS
    regenerated, _ = read_video(write_sample_clip(tmp_path / "again.mp4"))
    assert (frames.float() - regenerated.float()).abs().mean() < 2  # identical with the same x264 build
    rendered = moving_shapes(**SAMPLE_CLIP).frames
    assert (frames.float() - rendered.float()).abs().mean() < 10


def test_prompts_use_the_tiny_vocabulary():
    vocabulary = set((REPO / "effivmt" / "backbone" / "assets" / "words.txt").read_text().split())
    prompts = [line for line in (REPO / "data" / "prompts.txt").read_text().splitlines() if line.strip()]
    assert len(prompts) >= 4
    for prompt in prompts:
        assert set(prompt.split()) <= vocabulary, prompt
