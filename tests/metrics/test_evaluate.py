"""The ``effivmt eval`` command on written synthetic clips, and motion fidelity on the real woman-bike clip."""

from __future__ import annotations

import json

import pytest

from effivmt.data import moving_shapes, read_video, reverse, write_video
from effivmt.errors import ConfigError
from effivmt.metrics.evaluate import CLIP_NOTE, evaluate
from effivmt.metrics.motion_fidelity import motion_similarity
from effivmt.metrics.tracking import track_grid

KEYS = {
    "reference",
    "generated",
    "motion_metric",
    "motion_fidelity",
    "motion_fidelity_reference",
    "text_similarity",
    "temporal_consistency",
    "reference_clip",
    "generated_clip",
    "moving_tracks",
    "settings",
    "notes",
    "seconds",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    clip = moving_shapes(17, motion="linear", num_shapes=1, seed=0)
    return write_video(folder / "ref.mp4", clip.frames, 8), write_video(folder / "rev.mp4", reverse(clip).frames, 8)


def test_evaluate_writes_every_metric_to_json(clips, tiny_clip_dir, tmp_path, capsys):
    ref, _ = clips
    out = tmp_path / "scores" / "eval.json"
    result = evaluate(ref, ref, prompt="a red disc", clip_model=tiny_clip_dir, json=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    assert set(result) == KEYS
    assert result["motion_metric"] == "flow" and result["motion_fidelity"] == pytest.approx(1.0)
    assert result["motion_fidelity_reference"] is None and result["moving_tracks"] is None
    assert -1 <= result["text_similarity"] <= 1 and -1 <= result["temporal_consistency"] <= 1
    assert result["reference_clip"] == {"frames": 17, "size": [64, 64], "fps": 8.0}
    table = capsys.readouterr().out
    assert "motion_fidelity" in table and "text_similarity" in table and str(out) in table
    assert "motion metric: flow" in table


def test_published_smm_is_selectable_by_name(clips):
    ref, rev = clips
    result = evaluate(ref, ref, motion_metric="smm", grid_size=16)
    assert result["motion_metric"] == "smm" and result["settings"]["grid_size"] == 16
    assert result["motion_fidelity"] == pytest.approx(1.0) and result["motion_fidelity_reference"] == pytest.approx(1.0)
    assert result["moving_tracks"]["total"] == 256 and result["moving_tracks"]["generated"] > 0
    assert evaluate(ref, rev, motion_metric="smm", grid_size=16)["motion_fidelity"] < 0.5
    with pytest.raises(ConfigError, match="motion_metric"):
        evaluate(ref, ref, motion_metric="dtw")


def test_evaluate_without_clip_skips_text_metrics_with_a_note(clips, capsys):
    ref, rev = clips
    result = evaluate(ref, rev, max_frames=13)
    assert result["motion_fidelity"] < 0.5
    assert result["text_similarity"] is None and result["temporal_consistency"] is None
    assert result["generated_clip"]["frames"] == 13
    assert CLIP_NOTE in result["notes"] and CLIP_NOTE in capsys.readouterr().out


def test_evaluate_argument_errors(clips):
    ref, _ = clips
    with pytest.raises(ConfigError, match="cotracker"):
        evaluate(ref, ref, motion_metric="smm", tracker="cotracker")
    with pytest.raises(ConfigError, match="max_frames"):
        evaluate(ref, ref, max_frames=1)


def test_evaluate_is_a_cli_command():
    """jsonargparse builds ``effivmt eval`` from the signature and the docstring (first line = --help summary)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(evaluate, fail_untyped=True)
    cfg = parser.parse_args(
        ["--reference", "a.mp4", "--generated", "b.mp4", "--json", "out.json", "--align", "truncate"]
    )
    assert str(cfg.json) == "out.json" and cfg.grid_size == 55 and cfg.tracker == "lk"
    assert cfg.motion_metric == "flow"
    assert parser.parse_args(["--reference", "a", "--generated", "b", "--motion_metric", "smm"]).motion_metric == "smm"
    assert evaluate.__doc__.splitlines()[0].startswith("Score a generated clip")


def test_woman_bike_against_itself_and_reversed_with_published_smm(shared_clip):
    """The real clip (25 fps, camera panning with the rider): first 49 frames, a 20 x 20 grid."""
    frames, _ = read_video(shared_clip("woman-bike.mp4"))
    frames = frames[:49].numpy()
    tracks = track_grid(frames, grid_size=20)
    reversed_tracks = track_grid(frames[::-1].copy(), grid_size=20)
    assert motion_similarity(tracks, tracks).generated() >= 0.95
    reversed_similarity = motion_similarity(tracks, reversed_tracks)
    assert reversed_similarity.generated() < 0.5 and reversed_similarity.reference() < 0.6
