"""A run or a generation whose recipe leaves the video shape empty uses the model's own (issue 11: a user's clip
"of any size or fps" is brought to the micro size). Before, every model got Wan 2.1's 81 x 480 x 832 at 16 fps,
so `effivmt run --clip X --prompt Y` on the micro default ran its 64 x 64 DiT on 480p frames."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import SAMPLE_CLIP

from effivmt import cli
from effivmt.backbone.micro import micro_path
from effivmt.backbone.wan import TINY_VIDEO, WAN21_VIDEO, NativeVideo, native_video
from effivmt.vmt.plan import ModelArgs, RunPlan, VideoArgs

MICRO_VIDEO = NativeVideo(33, 64, 64, 8.0)


def test_native_video_of_each_model(tmp_path):
    assert native_video("tiny") == TINY_VIDEO
    assert native_video(None) == TINY_VIDEO  # the suite's default (EFFIVMT_DEFAULT_MODEL=tiny)
    assert native_video("micro") == MICRO_VIDEO
    copy = tmp_path / "my-micro"  # recognised by its transformer config, wherever it lies
    shutil.copytree(micro_path(), copy)
    assert native_video(copy) == MICRO_VIDEO
    config = json.loads((copy / "transformer" / "config.json").read_text())
    (copy / "transformer" / "config.json").write_text(json.dumps({**config, "num_layers": 30, "text_dim": 4096}))
    assert native_video(copy) == WAN21_VIDEO
    assert native_video(tmp_path / "missing") == WAN21_VIDEO  # check_model_path refuses it with its own message


def test_empty_video_fields_take_the_model_native_shape_and_given_ones_stay():
    plan = RunPlan.from_arguments(clip=SAMPLE_CLIP, model=ModelArgs(path="micro"))
    video = plan.video
    assert (video.num_frames, video.height, video.width, video.fps) == (33, 64, 64, 8.0)
    given = VideoArgs(num_frames=17, height=32, width=48, fps=None)
    plan = RunPlan.from_arguments(clip=SAMPLE_CLIP, model=ModelArgs(path="micro"), video=given)
    assert (plan.video.num_frames, plan.video.height, plan.video.width, plan.video.fps) == (17, 32, 48, None)


def test_run_without_a_recipe_reads_the_clip_at_the_micro_shape(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--clip", str(SAMPLE_CLIP), "--prompt", "a red ball", "--model.path", "micro"]
    argv += ["--stages", "[heads]", "--heads.timesteps", "[500]", "--out", str(out)]
    assert cli.main(argv) == 0
    clip = json.loads((out / "run.json").read_text())["stages"]["clip"]
    assert clip["size"] == [64, 64] and clip["fps"] == 8.0, clip


@pytest.mark.parametrize("fps", ["native", None, 12.0])
def test_video_fps_accepts_native_empty_or_a_rate(fps):
    assert VideoArgs(fps=fps).fps == fps
