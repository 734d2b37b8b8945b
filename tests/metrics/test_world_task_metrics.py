"""Pixel readers of the task properties recover what world_tasks drew, held-out families included, and
report its absence on clips without it."""

import numpy as np
import pytest

from effivmt.data.video import read_video, write_video
from effivmt.data.world import restyle, sample_scene
from effivmt.data.world_tasks import EFFECTS, PATTERNS, STYLES, Camera, TaskScene, render_task
from effivmt.metrics.world_tasks import (
    camera_agreement,
    identity_agreement,
    read_camera,
    read_effect,
    read_identity,
    read_style,
    style_agreement,
)

STILL = restyle(sample_scene(3, motion="still"), "red", "triangle", "white")


@pytest.mark.parametrize(
    "camera",
    [
        Camera("pan", "right", "quickly"),  # train
        Camera("pan", "down and left", "slowly"),  # held out
        Camera("zoom", "in"),
        Camera("zoom", "out"),
        Camera("circle"),
    ],
    ids=lambda c: c.name,
)
def test_camera_is_read_from_the_background(camera):
    clip = render_task(TaskScene(STILL, camera, texture=4))
    reading = read_camera(clip.frames)
    truth = clip.camera[reading.frames]
    assert reading.textured
    assert np.abs(reading.offset - truth[:, :2]).max() < 1.5  # of up to 38 px
    assert np.abs(reading.zoom - truth[:, 2]).max() < 0.05
    assert camera_agreement(reading, clip.camera) > 0.8
    other = render_task(TaskScene(restyle(sample_scene(9, motion="still"), "blue", "circle", "yellow"), camera, 7))
    assert camera_agreement(read_camera(other.frames), reading) > 0.8  # same camera, another scene


def test_a_static_or_flat_clip_has_no_camera_motion():
    pan = Camera("pan", "left", "quickly").track(33)
    static = read_camera(render_task(TaskScene(STILL, texture=4)).frames)
    assert static.textured and np.abs(static.offset).max() < 0.5 and camera_agreement(static, pan) < 0.1
    assert camera_agreement(static, np.tile([0.0, 0.0, 1.0], (33, 1))) > 0.9
    flat = read_camera(render_task(TaskScene(STILL, Camera("pan", "left", "quickly"))).frames)
    assert not flat.textured and camera_agreement(flat, pan) == 0.0


@pytest.mark.parametrize("effect", EFFECTS + (None,))
@pytest.mark.parametrize("seed", [1, 4])
def test_effect_is_named(effect, seed):
    clip = render_task(TaskScene(sample_scene(seed), effect=effect))
    assert read_effect(clip.frames) == (effect or "none")


@pytest.mark.parametrize("pattern", PATTERNS + (None,))
def test_identity_is_read(pattern):
    scene = restyle(sample_scene(5), "green", "square", "black")
    reading = read_identity(render_task(TaskScene(scene, pattern=pattern)).frames)
    assert identity_agreement(reading, "green", "square", pattern or "none")["mean"] == 1.0
    other = "ring" if pattern != "ring" else "dot"
    assert identity_agreement(reading, "green", "square", other)["pattern"] == 0.0


@pytest.mark.parametrize("style", STYLES + (None,))
def test_style_is_read(style):
    scene = restyle(sample_scene(6), "blue", "triangle", "yellow")
    reading = read_style(render_task(TaskScene(scene, style=style)).frames)
    assert style_agreement(reading, style or "filled") == 1.0
    assert reading.majority("shape") == "triangle"


def test_readers_survive_h264(tmp_path):
    scene = restyle(sample_scene(7), "black", "circle", "white")
    cases = {
        "camera": TaskScene(STILL, Camera("pan", "up", "quickly"), texture=3),
        "effect": TaskScene(scene, effect="recolor"),
        "id": TaskScene(scene, pattern="x"),
        "style": TaskScene(scene, style="stripes"),  # thin black strokes on white: the median colour is gray
    }
    frames = {
        k: read_video(write_video(tmp_path / f"{k}.mp4", render_task(ts).frames, fps=8.0))[0] for k, ts in cases.items()
    }
    assert camera_agreement(read_camera(frames["camera"]), Camera("pan", "up", "quickly").track(33)) > 0.8
    assert read_effect(frames["effect"]) == "recolor"
    assert identity_agreement(read_identity(frames["id"]), "black", "circle", "x")["mean"] == 1.0
    assert style_agreement(read_style(frames["style"]), "stripes") == 1.0


def test_a_faint_blob_reads_as_no_look_instead_of_failing():
    """A generated object fading out: pixels far enough from the background to count, none half-way to the nearest
    palette colour. The readers return "no shape, no mark" for the frame (they used to raise on a NaN centre)."""
    from effivmt.metrics.world_tasks import read_identity, read_style

    frame = np.zeros((64, 64, 3), np.uint8)
    frame[20:28, 20:28] = 58  # 100 from black, nearest colour gray, 222 from black
    for reading in (read_identity(frame[None]), read_style(frame[None])):
        (look,) = reading.frames
        assert look.background == "black" and look.shape is None and look.mark is None
