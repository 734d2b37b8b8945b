"""The micro world: deterministic scenes, a caption grammar that round-trips, disjoint motion families,
and pixel readings that recover exactly what was drawn."""

import numpy as np
import pytest
import torch

from effivmt.data.world import (
    COLORS,
    DIRECTIONS,
    HELD_OUT_MOTIONS,
    PRETRAIN_MOTIONS,
    SHAPES,
    caption,
    parse_caption,
    render,
    restyle,
    sample_scene,
    time_reversed,
)
from effivmt.errors import ConfigError
from effivmt.metrics.world import appearance_accuracy, path_similarity, read_clip, temporal_consistency


def test_vocabulary_is_the_issue_minimum():
    assert set(SHAPES) == {"circle", "square", "triangle"}
    assert {"red", "green", "blue", "yellow", "white", "black", "gray"} <= set(COLORS)
    assert len(DIRECTIONS) == 8


def test_scenes_are_deterministic_from_the_seed():
    a, b = render(sample_scene(5)), render(sample_scene(5))
    assert torch.equal(a.frames, b.frames) and a.scene == b.scene
    assert not torch.equal(a.frames, render(sample_scene(6)).frames)


@pytest.mark.parametrize(
    "text",
    [
        "a red circle moving left on a black background",
        "a red circle moving left quickly on a black background",
        "a blue square on a white background",
        "a gray triangle moving down and right slowly on a yellow background",
        "a green circle standing still on a gray background",
    ],
)
def test_captions_parse(text):
    parsed = parse_caption(text)
    assert parsed.color in COLORS and parsed.shape in SHAPES and parsed.background in COLORS


def test_caption_round_trip_and_appearance_only():
    for seed in range(40):
        scene = sample_scene(seed)
        parsed = parse_caption(caption(scene))
        assert (parsed.color, parsed.shape, parsed.background) == (
            scene.objects[0].color,
            scene.objects[0].shape,
            scene.background,
        )
        assert parsed.motion == scene.motion and parsed.direction == scene.direction
        assert parse_caption(caption(scene, with_motion=False)).motion is None


def test_not_a_caption_names_the_grammar():
    with pytest.raises(ConfigError, match="not a caption of the micro world"):
        parse_caption("a purple hexagon dancing")


def test_motion_families_are_disjoint_and_held_out_never_captioned():
    assert not set(PRETRAIN_MOTIONS) & set(HELD_OUT_MOTIONS)
    assert {sample_scene(s).motion for s in range(200)} <= set(PRETRAIN_MOTIONS)
    assert {sample_scene(s, "held-out").motion for s in range(200)} == set(HELD_OUT_MOTIONS)
    for motion in HELD_OUT_MOTIONS:
        assert parse_caption(caption(sample_scene(1, motion=motion))).motion is None


@pytest.mark.parametrize("motion", PRETRAIN_MOTIONS + HELD_OUT_MOTIONS)
def test_shapes_stay_inside_the_frame_and_readings_are_exact(motion):
    scene = sample_scene(3, motion=motion)
    clip = render(scene)
    assert clip.frames.shape == (33, 64, 64, 3)
    assert (clip.tracks >= 8).all() and (clip.tracks <= 55).all()
    if motion == "two-objects":
        return  # two objects: the single-object readings do not apply
    reading = read_clip(clip.frames)
    obj = scene.objects[0]
    assert appearance_accuracy(reading, obj.color, obj.shape, scene.background)["mean"] == 1.0
    assert temporal_consistency(reading) > 0.95
    assert np.abs(reading.path - clip.tracks[0].numpy()).max() < 1.0


def test_straight_lines_go_where_the_caption_says():
    for seed in range(30):
        scene = sample_scene(seed, motion="linear")
        track = render(scene).tracks[0].numpy()
        d = track[-1] - track[0]
        ux, uy = DIRECTIONS[scene.direction]
        assert d[0] * ux + d[1] * uy > 0.95 * np.hypot(*d)


def _off_background(frames: np.ndarray, f: int, point, background: str) -> int:
    x, y = np.round(point).astype(int)
    return int(np.abs(frames[f, y, x].astype(int) - np.asarray(COLORS[background])).max())


def test_the_trail_lies_behind_the_object_and_only_with_trail():
    scene = sample_scene(11, motion="linear")
    plain, trail = render(scene).frames.numpy(), render(scene, trail=True).frames.numpy()
    path = render(scene).tracks[0].numpy()
    back = -np.asarray(DIRECTIONS[scene.direction])
    behind, ahead = path[16] + back * 11, path[16] - back * 11  # past the object's rim (8 px), inside the tail (14 px)
    assert _off_background(plain, 16, behind, scene.background) <= 1
    assert _off_background(trail, 16, behind, scene.background) > 20
    assert _off_background(trail, 16, ahead, scene.background) <= 1
    centre = np.round(path[16]).astype(int)
    assert np.array_equal(plain[16, centre[1], centre[0]], trail[16, centre[1], centre[0]])  # the object covers it


def test_the_trail_follows_a_curved_path_and_reverses_with_it():
    """Behind means against the local direction of motion: on an orbit the tail trails along the tangent, and the
    time-reversed clip, moving the other way, has it on the other side."""
    scene = sample_scene(5, family="held-out", motion="orbit")
    path = render(scene).tracks[0].numpy()
    tangent = (path[17] - path[15]) / np.linalg.norm(path[17] - path[15])
    forward = render(scene, trail=True).frames.numpy()
    backward = render(time_reversed(scene), trail=True).frames.numpy()  # frame 16 of 33 is the same position
    assert _off_background(forward, 16, path[16] - tangent * 11, scene.background) > 20
    assert _off_background(forward, 16, path[16] + tangent * 11, scene.background) <= 1
    assert _off_background(backward, 16, path[16] + tangent * 11, scene.background) > 20


def test_an_object_standing_still_has_no_trail():
    scene = sample_scene(3, motion="still")
    assert np.array_equal(render(scene).frames.numpy(), render(scene, trail=True).frames.numpy())


def test_path_similarity_ranks_restyled_over_reversed_and_frozen():
    scene = sample_scene(4, motion="orbit")
    ref = read_clip(render(scene).frames).path
    restyled = read_clip(render(restyle(scene, "white", "triangle", "black")).frames).path
    reversed_ = read_clip(render(time_reversed(scene)).frames).path
    frozen = np.repeat(ref[:1], len(ref), axis=0)
    assert path_similarity(ref, ref) == 1.0
    assert path_similarity(restyled, ref) > 0.95
    assert path_similarity(reversed_, ref) < 0.7 and path_similarity(frozen, ref) < 0.7
