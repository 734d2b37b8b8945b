"""Flow agreement, the headline motion fidelity: self >= 0.95; reversed, frozen and noise at least 0.3 below.

The four conditions run on both real clips and on micro-world clips. ``fooling_copies`` builds the three
copies a metric must not be fooled by; the same check on the published SMM score fails (frozen woman-bike
scores 1.0 there), which ``test_published_smm_is_fooled_and_stays_selectable`` pins down.
"""

from __future__ import annotations

import numpy as np
import pytest

from effivmt.data import read_video
from effivmt.errors import ConfigError
from effivmt.metrics.flow_agreement import agreement, flow_agreement
from effivmt.metrics.motion_fidelity import motion_fidelity, motion_fidelity_score
from effivmt.metrics.tracking import track_grid


def fooling_copies(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Time-reversed, frozen (first frame held) and uniform-noise copies of a clip."""
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    return {"reversed": frames[::-1].copy(), "frozen": np.repeat(frames[:1], len(frames), axis=0), "noise": noise}


def assert_not_fooled(score, frames: np.ndarray) -> dict[str, float]:
    scores = {"self": score(frames, frames)} | {k: score(frames, v) for k, v in fooling_copies(frames).items()}
    assert scores["self"] >= 0.95, scores
    for name in ("reversed", "frozen", "noise"):
        assert scores[name] <= scores["self"] - 0.3, (name, scores)
    return scores


@pytest.mark.parametrize(
    ("name", "num_frames"),
    [("car-turn.mp4", None), ("woman-bike.mp4", 49)],  # car-turn: all 16 frames; woman-bike: its first 49 of 427
)
def test_real_clip_against_itself_reversed_frozen_and_noise(shared_clip, name, num_frames):
    frames, _ = read_video(shared_clip(name))
    assert_not_fooled(flow_agreement, frames[:num_frames].numpy())


@pytest.fixture(scope="module")
def world():
    return pytest.importorskip("effivmt.data.world", reason="effivmt.data.world (the micro world) is not there yet")


@pytest.mark.parametrize(("motion", "seed"), [("orbit", 0), ("zigzag", 1), ("linear", 0), ("accelerate-stop", 1)])
def test_flat_world_clip_ranks_self_and_restyled_above_fooling_copies(world, motion, seed):
    """64 x 64, 33 frames, one flat shape on a flat background: almost nothing for a tracker to hold on to."""
    scene = world.sample_scene(seed, motion=motion)
    frames = world.render(scene).frames.numpy()
    scores = assert_not_fooled(flow_agreement, frames)
    # the scene's own reversed rendering is the same as playing the frames backwards
    assert flow_agreement(frames, world.render(world.time_reversed(scene)).frames.numpy()) <= scores["self"] - 0.3
    obj = scene.objects[0]
    color = next(c for c in ("white", "yellow", "green") if c not in (obj.color, scene.background))
    background = next(c for c in ("black", "gray", "blue") if c not in (obj.color, scene.background, color))
    shape = "triangle" if obj.shape != "triangle" else "square"
    restyled = world.render(world.restyle(scene, color, shape, background)).frames.numpy()
    assert flow_agreement(frames, restyled) >= 0.8  # measured 0.81..0.96 over 16 scenes


def test_low_contrast_colours_still_carry_the_motion(world):
    """Red on blue differs by ~10 luma levels: without the contrast stretch the restyle scored ~0.55."""
    scene = world.sample_scene(3, motion="orbit")
    base = world.render(world.restyle(scene, "yellow", "circle", "black")).frames.numpy()
    low = world.render(world.restyle(scene, "red", "circle", "blue")).frames.numpy()
    assert flow_agreement(base, low) >= 0.9


def test_agreement_rule_on_hand_made_fields():
    field = np.random.default_rng(0).normal(size=(4, 8, 8, 2))
    assert agreement(field, field) == pytest.approx(1.0)
    assert agreement(field, -field) == pytest.approx(-1.0)
    assert agreement(field, np.zeros_like(field)) == pytest.approx(0.0)
    assert agreement(field, field / 2) == pytest.approx(0.8)  # half the speed: 1 - 0.25 / 1.25
    assert agreement(np.zeros_like(field), np.zeros_like(field)) == 1.0  # both stand still


def test_other_sizes_and_lengths_are_brought_together(world):
    scene = world.sample_scene(0, motion="orbit")  # an orbit's path spans the clip whatever its length
    ref = world.render(scene).frames.numpy()
    assert flow_agreement(ref, world.render(scene, height=96, width=96).frames.numpy()) >= 0.9
    assert flow_agreement(ref, world.render(scene, num_frames=17).frames.numpy()) >= 0.9
    with pytest.raises(ConfigError, match="align"):
        flow_agreement(ref, ref[:17], align="stretch")


def test_published_smm_is_fooled_and_stays_selectable(shared_clip):
    """The old headline on woman-bike: a frozen copy scores 1.0, so ``assert_not_fooled`` fails on it."""
    frames = read_video(shared_clip("woman-bike.mp4"))[0][:25].numpy()

    def smm(ref, gen):
        return motion_fidelity(track_grid(ref, grid_size=10), track_grid(gen, grid_size=10))

    with pytest.raises(AssertionError, match=r"^\('frozen'"):
        assert_not_fooled(smm, frames)


def test_variants_by_name(world):
    frames = world.render(world.sample_scene(0, motion="zigzag")).frames.numpy()
    frozen = np.repeat(frames[:1], len(frames), axis=0)
    assert motion_fidelity_score(frozen, frames) == pytest.approx(flow_agreement(frames, frozen))  # the default
    assert motion_fidelity_score(frames, frames, "smm", grid_size=16) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="smm"):
        motion_fidelity_score(frames, frames, "dtw")
