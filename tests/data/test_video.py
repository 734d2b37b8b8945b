"""Video I/O (decord in, PyAV out), frame-count and resize maths, and ``load_clip``'s notes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from effivmt.data import (
    check_frame_count,
    fit_frame_count,
    load_clip,
    moving_shapes,
    read_video,
    resample_fps,
    resize_center_crop,
    to_uint8_frames,
    valid_frame_count,
    write_image,
    write_video,
)
from effivmt.data import video as video_module
from effivmt.errors import ConfigError, EffivmtError, VideoError

# --- reading real clips ---------------------------------------------------------------------------------------------


def test_read_car_turn(shared_clip):
    frames, fps = read_video(shared_clip("car-turn.mp4"))
    assert frames.dtype == torch.uint8
    assert tuple(frames.shape) == (16, 480, 480, 3)
    assert fps == pytest.approx(8.0)


def test_read_woman_bike(shared_clip):
    frames, fps = read_video(shared_clip("woman-bike.mp4"))
    assert tuple(frames.shape) == (427, 336, 596, 3)
    assert fps == pytest.approx(25.0)
    assert len(resample_fps(frames, fps, 16.0)) == 273  # round(427 * 16 / 25)


# --- read errors: one VideoError with a message that names the problem ----------------------------------------------


def test_missing_clip(tmp_path):
    with pytest.raises(VideoError, match="clip not found: .*nope.mp4") as err:
        read_video(tmp_path / "nope.mp4")
    assert err.value.hint


def test_zero_byte_clip(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(VideoError, match=r"empty \(0 bytes\)"):
        read_video(tmp_path / "empty.mp4")


def test_corrupt_clip(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="cannot decode .*x.mp4") as err:
        read_video(path)
    assert "corrupt" in err.value.hint
    assert "\n" not in str(err.value)


def test_truncated_clip(smooth_mp4, tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(smooth_mp4.read_bytes()[:600])
    with pytest.raises(VideoError, match="cannot decode"):
        read_video(path)


def test_folder_is_not_a_clip(tmp_path):
    with pytest.raises(VideoError, match="not a file"):
        read_video(tmp_path)


# --- frame counts ---------------------------------------------------------------------------------------------------


def test_resample_fps_picks_nearest_frames():
    t = torch.arange(10)
    assert resample_fps(t, 10, 5).tolist() == [0, 2, 4, 6, 8]
    assert resample_fps(t, 10, 10) is t
    # upsampling repeats frames and keeps the duration: 4 frames at 4 fps -> 8 frames at 8 fps
    assert resample_fps(torch.arange(4), 4, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    assert len(resample_fps(torch.arange(427), 25, 16)) == 273
    with pytest.raises(ConfigError):
        resample_fps(t, 10, 0)


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (4, 1), (5, 5), (16, 13), (17, 17), (80, 77), (81, 81)])
def test_valid_frame_count(n, expected):
    assert valid_frame_count(n) == expected


def test_check_frame_count():
    assert check_frame_count(17) == 17
    assert check_frame_count(np.int64(81)) == 81
    with pytest.raises(ConfigError, match=r"frames must be 1 \+ 4k \(e.g. 17, 49, 81\), got 16") as err:
        check_frame_count(16)
    assert "13" in err.value.hint and "17" in err.value.hint
    with pytest.raises(ConfigError):
        check_frame_count(0)


def test_fit_frame_count_modes():
    t = torch.arange(25)
    assert fit_frame_count(t, 9).tolist() == list(range(9))
    assert fit_frame_count(t, 9, "uniform").tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert fit_frame_count(t, 25, "uniform").tolist() == t.tolist()
    with pytest.raises(ConfigError, match="frame_mode"):
        fit_frame_count(t, 9, "random")


def test_fit_frame_count_too_short_names_both_counts():
    with pytest.raises(VideoError, match="16 frames but num_frames=17") as err:
        fit_frame_count(torch.zeros(16, 2, 2, 3), 17)
    assert "lower num_frames to 13" in err.value.hint and "fps" in err.value.hint


# --- resizing -------------------------------------------------------------------------------------------------------


def _square_frame(height: int, width: int, side: int) -> torch.Tensor:
    frame = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    frame[:, top : top + side, left : left + side] = 255
    return frame


def _centroid(frame: torch.Tensor) -> tuple[float, float]:
    weight = frame[..., 0].double()
    yy, xx = torch.meshgrid(torch.arange(frame.shape[0]), torch.arange(frame.shape[1]), indexing="ij")
    return float((weight * yy).sum() / weight.sum()), float((weight * xx).sum() / weight.sum())


@pytest.mark.parametrize(
    ("src", "dst"), [((100, 200), (48, 64)), ((120, 60), (64, 64)), ((40, 40), (96, 64)), ((336, 596), (320, 576))]
)
def test_resize_center_crop_keeps_centre(src, dst):
    """A centred square lands in the centre of the output: crops keep equal margins, so 0.1 px is float noise."""
    out = resize_center_crop(_square_frame(*src, side=20), *dst)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (1, *dst, 3)
    cy, cx = _centroid(out[0])
    assert cy == pytest.approx((dst[0] - 1) / 2, abs=0.1)
    assert cx == pytest.approx((dst[1] - 1) / 2, abs=0.1)


def test_resize_center_crop_pure_crop_is_exact():
    frames = torch.randint(0, 256, (2, 32, 70, 3), dtype=torch.uint8)
    assert torch.equal(resize_center_crop(frames, 32, 64), frames[:, :, 3:67])


def test_resize_center_crop_rejects_non_multiples_of_16():
    with pytest.raises(ConfigError, match="width must be a positive multiple of 16, got 330") as err:
        resize_center_crop(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), 320, 330)
    assert err.value.hint == "use 320 or 336"


# --- layouts and writing --------------------------------------------------------------------------------------------


def test_to_uint8_frames_layouts(smooth_clip):
    frames = smooth_clip.frames  # (F, H, W, 3) uint8
    video = frames.permute(3, 0, 1, 2).float() / 127.5 - 1  # (C, F, H, W) in [-1, 1]
    assert torch.equal(to_uint8_frames(frames), frames)
    assert torch.equal(to_uint8_frames(video), frames)
    assert torch.equal(to_uint8_frames(video[None].half()), frames)  # batch of 1, half precision
    assert torch.equal(to_uint8_frames(frames.numpy() / 255.0), frames)  # diffusers output_type="np"
    assert torch.equal(to_uint8_frames((frames.numpy() / 255.0)[None]), frames)
    with pytest.raises(ValueError, match="batch of 1"):
        to_uint8_frames(torch.zeros(2, 3, 5, 8, 8))
    with pytest.raises(ValueError, match="size 3"):
        to_uint8_frames(torch.zeros(5, 8, 8, 4))
    with pytest.raises(ValueError):
        to_uint8_frames(torch.zeros(8, 8, 3))


def test_write_read_round_trip(smooth_clip, smooth_mp4):
    """H.264 at CRF 18 with 4:2:0 chroma: mean error a few grey levels; 10 leaves room across x264 builds."""
    frames, fps = read_video(smooth_mp4)
    assert fps == pytest.approx(12.0)
    assert frames.shape == smooth_clip.frames.shape
    assert (frames.float() - smooth_clip.frames.float()).abs().mean() < 10


def test_write_video_odd_size_and_float_layout(tmp_path):
    clip = moving_shapes(5, 33, 47, num_shapes=1, motion="static")
    video = clip.frames.permute(3, 0, 1, 2).float() / 127.5 - 1
    path = write_video(tmp_path / "sub" / "odd.mp4", video, fps=16)
    frames, fps = read_video(path)
    assert tuple(frames.shape) == (5, 34, 48, 3) and fps == pytest.approx(16.0)
    assert (frames[:, :33, :47].float() - clip.frames.float()).abs().mean() < 10


def test_read_widths_decord_cannot_copy(tmp_path):
    """decord 0.6 opens 48-px-wide clips but fails to copy their frames out; read_video falls back to PyAV."""
    clip = moving_shapes(5, 32, 48, num_shapes=1)
    frames, fps = read_video(write_video(tmp_path / "w48.mp4", clip.frames, fps=10))
    assert tuple(frames.shape) == (5, 32, 48, 3) and fps == pytest.approx(10.0)
    assert (frames.float() - clip.frames.float()).abs().mean() < 10


def test_write_video_is_atomic(tmp_path, monkeypatch):
    """A failure mid-encode leaves neither a temp file nor a changed destination."""
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")

    def broken_encode(tmp, frames, fps):
        tmp.write_bytes(b"half a video")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(video_module, "_encode_mp4", broken_encode)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(path, torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
    assert os.listdir(tmp_path) == ["out.mp4"] and path.read_bytes() == b"old"


def test_write_image(tmp_path, smooth_clip):
    from PIL import Image

    path = write_image(tmp_path / "f.png", smooth_clip.frames[3])
    assert np.array_equal(np.asarray(Image.open(path)), smooth_clip.frames[3].numpy())
    write_image(tmp_path / "g.png", smooth_clip.frames.numpy()[0] / 255.0)
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png"]


# --- load_clip ------------------------------------------------------------------------------------------------------


def test_load_clip_woman_bike_resample_and_crop(shared_clip):
    video, info = load_clip(shared_clip("woman-bike.mp4"), num_frames=17, height=320, width=576, fps=16)
    assert video.dtype == torch.float32 and tuple(video.shape) == (3, 17, 320, 576)
    assert video.min() >= -1 and video.max() <= 1
    assert (info.src_fps, info.src_frames, info.src_size) == (25.0, 427, (336, 596))
    assert (info.fps, info.num_frames, info.size) == (16.0, 17, (320, 576))
    assert info.notes[0].startswith("resampled 25.0 -> 16.0 fps")
    assert info.notes[-1] == "resized and centre-cropped 336x596 -> 320x576"
    assert "woman-bike.mp4: 17 frames 320x576 @ 16.0 fps (resampled" in info.describe()


def test_load_clip_car_turn_defaults_and_short_clip(shared_clip):
    path = shared_clip("car-turn.mp4")
    video, info = load_clip(path, height=240)
    assert tuple(video.shape) == (3, 13, 240, 240)
    assert info.notes == ["clip has 16 frames; using 13 (1 + 4k)", "resized 480x480 -> 240x240"]
    with pytest.raises(VideoError, match="16 frames but num_frames=17"):
        load_clip(path, num_frames=17)
    video, info = load_clip(path, num_frames=17, height=64, width=64, allow_fewer=True)
    assert tuple(video.shape) == (3, 13, 64, 64)
    assert "fewer than num_frames=17; using 13" in info.notes[0]


def test_load_clip_crops_to_multiples_of_16(tmp_path):
    clip = moving_shapes(9, 40, 70, num_shapes=1)
    path = write_video(tmp_path / "c.mp4", clip.frames, fps=8)
    video, info = load_clip(path, frame_mode="uniform", num_frames=5)
    assert tuple(video.shape) == (3, 5, 32, 64)
    assert info.notes == ["sampled 5 of 9 frames uniformly", "centre-cropped 40x70 -> 32x64"]
    frames = to_uint8_frames(video)
    decoded, _ = read_video(path)
    assert torch.equal(frames, decoded[::2, 4:36, 3:67])  # pure crop: exact decoded pixels


def test_load_clip_checks_arguments_before_decoding(tmp_path):
    missing = tmp_path / "missing.mp4"  # argument errors win over the missing file: nothing is read
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        load_clip(missing, num_frames=16)
    with pytest.raises(ConfigError, match="height"):
        load_clip(missing, height=100)
    with pytest.raises(EffivmtError):
        load_clip(missing, fps=0)


# --- real clips, real sizes (issue 12, item 11) -----------------------------------------------------------------------


def test_raising_the_frame_rate_never_repeats_frames(tmp_path):
    """An 8 fps clip asked for at 16 fps stays at 8 fps (before: every frame twice, a judder the LoRA learns)."""
    from effivmt.data.synthetic import moving_shapes

    path = write_video(tmp_path / "slow.mp4", moving_shapes(17, 32, 32, speed=2.0, seed=3).frames, fps=8.0)
    video, info = load_clip(path, fps=16.0, height=32, width=32)
    assert info.fps == 8.0 and info.num_frames == 17 and video.shape[1] == 17
    assert any("kept at 8.0 fps" in note for note in info.notes), info.notes
    frames = to_uint8_frames(video)
    assert all(not torch.equal(frames[i], frames[i + 1]) for i in range(16))


LONG_CLIP_PROBE = """
import resource, sys
from pathlib import Path
import torch
from effivmt.data.video import load_clip
path = Path(sys.argv[1])
load_clip(path, num_frames=5, height=32, width=32, fps=None)  # warm up decord and the libraries
Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
video, info = load_clip(path, num_frames=17, height=64, width=64, fps=12.0, frame_mode="uniform")
assert video.shape == (3, 17, 64, 64), video.shape
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
print(int(status["VmHWM"].split()[0]) - int(status["VmRSS"].split()[0]))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_long_clip_is_read_without_decoding_it_whole(tmp_path):
    """600 frames of 240x416 (180 MB decoded) cut to 17 frames of 64x64: the peak above the final RSS stays under
    60 MB, because only the 17 frames are decoded, 8 at a time, each chunk resized as it is read. Before, the whole
    clip was decoded at its own size first (peak ~ +360 MB: the clip and its resampled copy)."""
    import subprocess
    import sys

    from effivmt.data.synthetic import moving_shapes

    clip = moving_shapes(600, 240, 416, speed=1.0, seed=0).frames
    path = write_video(tmp_path / "long.mp4", clip, fps=24.0)
    del clip
    probe = tmp_path / "probe.py"
    probe.write_text(LONG_CLIP_PROBE)
    result = subprocess.run([sys.executable, str(probe), str(path)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    peak_above_kb = int(result.stdout.strip().splitlines()[-1])
    assert peak_above_kb < 60 * 1024, f"peak {peak_above_kb / 1024:.0f} MB above the final RSS"


def test_writing_the_same_frames_twice_gives_the_same_file(tmp_path):
    """Paired training clips must not change between builds: PyAV's implicit RGB -> YUV conversion inside
    ``encode`` gave 4-8 different files in 10 encodings of the same frames (pixels up to 30 levels apart)."""
    from effivmt.data.world import render, sample_scene

    frames = render(sample_scene(5, family="held-out")).frames
    files = [write_video(tmp_path / f"{i}.mp4", frames, fps=8.0) for i in range(8)]
    assert len({f.read_bytes() for f in files}) == 1
