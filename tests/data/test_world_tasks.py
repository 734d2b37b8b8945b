"""The task extensions of the micro world: deterministic, disjoint families, exact ground truth."""

import numpy as np
import pytest
import torch

from effivmt.data.world import COLORS, SHAPES, restyle, sample_scene, shape_coverage
from effivmt.data.world_tasks import (
    HELD_OUT_CAMERAS,
    HELD_OUT_EFFECTS,
    HELD_OUT_PATTERNS,
    HELD_OUT_STYLES,
    PATTERNS,
    TRAIN_CAMERAS,
    TRAIN_EFFECTS,
    TRAIN_PATTERNS,
    TRAIN_STYLES,
    Camera,
    TaskScene,
    effect_curves,
    legible,
    pattern_color,
    pattern_coverage,
    render_task,
    tile_shades,
)
from effivmt.errors import ConfigError
from effivmt.metrics.world import read_frame

STILL = restyle(sample_scene(3, motion="still"), "red", "triangle", "white")


def test_families_are_disjoint_and_large_enough():
    assert not {c.name for c in TRAIN_CAMERAS} & {c.name for c in HELD_OUT_CAMERAS}
    for train, held_out in ((TRAIN_EFFECTS, HELD_OUT_EFFECTS), (TRAIN_PATTERNS, HELD_OUT_PATTERNS)):
        assert not set(train) & set(held_out) and len(train) >= 3 and len(held_out) >= 3
    assert not set(TRAIN_STYLES) & set(HELD_OUT_STYLES)
    assert len(TRAIN_EFFECTS + HELD_OUT_EFFECTS) >= 4


def test_render_is_deterministic_at_the_worlds_size():
    ts = TaskScene(STILL, Camera("zoom", "out"), texture=5, effect="pulse", pattern="ring")
    a, b = render_task(ts), render_task(ts)
    assert a.frames.shape == (33, 64, 64, 3) and a.frames.dtype == torch.uint8
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, render_task(TaskScene(STILL, Camera("zoom", "out"), texture=6)).frames)


@pytest.mark.parametrize("camera", [Camera("pan", "left", "quickly"), Camera("pan", "up and right", "slowly")])
def test_a_still_object_moves_against_the_pan(camera):
    clip = render_task(TaskScene(STILL, camera, texture=1))
    np.testing.assert_allclose(clip.tracks[0] - clip.tracks[0, :1], -clip.camera[:, :2], atol=1e-4)
    assert clip.camera[:, 2].tolist() == [1.0] * 33


def test_zoom_and_circle_tracks():
    zoom = Camera("zoom", "in").track(33)
    assert zoom[0, 2] == 1.0 and zoom[-1, 2] == pytest.approx(1.5) and np.all(np.diff(zoom[:, 2]) > 0)
    circle = Camera("circle").track(33)
    assert np.allclose(circle[0, :2], 0) and np.allclose(circle[-1, :2], 0, atol=1e-9)
    assert np.linalg.norm(circle[:, :2], axis=1).max() == pytest.approx(10, abs=0.1)  # the circle's diameter


def test_tiles_read_back_as_the_background_colour():
    for background in ("black", "white", "yellow"):
        shades = tile_shades(background)
        assert shades[1, 0] - shades[0, 0] == 28
        scene = restyle(STILL, "blue" if background != "blue" else "red", "circle", background)
        frame = render_task(TaskScene(scene, Camera("pan", "right", "slowly"), texture=2)).frames[10].numpy()
        reading = read_frame(frame)
        assert reading.background == background and reading.color == scene.objects[0].color


@pytest.mark.parametrize("effect", ["grow", "split", "pulse"])
def test_effects_keep_the_object_inside_the_frame(effect):
    frames = render_task(TaskScene(sample_scene(2), effect=effect)).frames.numpy().astype(int)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    assert (border == frames[0, 0, 0]).all()


def test_effect_curves():
    grow, fade, flash = (effect_curves(e, 33) for e in ("grow", "fade", "flash"))
    assert grow["size"][0] == 1 and grow["size"][-1] == pytest.approx(1.8)
    assert fade["alpha"][0] == 1 and fade["alpha"][-1] == 0
    assert int((np.diff(flash["alpha"]) < 0).sum()) == 3 and flash["alpha"][-1] == 1


@pytest.mark.parametrize("pattern", PATTERNS)
def test_marks_fit_inside_every_shape(pattern):
    yy, xx = np.mgrid[-12:13, -12:13].astype(float)
    for shape in SHAPES:
        mark = pattern_coverage(pattern, xx, yy, 8.0)
        assert mark.sum() > 8 and (mark * (1 - shape_coverage(shape, xx, yy, 8.0))).sum() < 0.5


def test_mark_and_stroke_colours_are_legible():
    assert all(legible(pattern_color(c), c) for c in COLORS)
    assert not legible("red", "blue") and legible("yellow", "black")


@pytest.mark.parametrize("field", ["effect", "pattern", "style"])
def test_unknown_names_are_config_errors(field):
    with pytest.raises(ConfigError):
        render_task(TaskScene(STILL, **{field: "sparkle"}), num_frames=5)
