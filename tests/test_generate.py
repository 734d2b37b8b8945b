import copy

import pytest
import torch

from effivmt import cli
from effivmt.data.video import read_video
from effivmt.lora import HeadGroupLoraConfig, adapter_weights, add_head_group_adapter, export_lora
from effivmt.vmt.generate import sample_name

LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "spatial", "temporal", "spatial"]]


@pytest.fixture(scope="module")
def lora_files(tiny_t2v, tmp_path_factory):
    transformer = copy.deepcopy(tiny_t2v.transformer)
    add_head_group_adapter(
        transformer, "temporal", LABELS, "temporal", HeadGroupLoraConfig(rank=2, alpha=2, init="random")
    )
    out = tmp_path_factory.mktemp("lora")
    weights = {"temporal": adapter_weights(transformer, "temporal")}
    return {fmt: export_lora(weights, fmt, out=out / fmt)[0] for fmt in ("diffusers", "comfy", "peft")}


@pytest.mark.parametrize("fmt", ["diffusers", "comfy", "peft"])
def test_generate_loads_each_format_and_writes_mp4(lora_files, fmt, tmp_path):
    out = tmp_path / "x.mp4"
    args = [
        "generate",
        "--prompt",
        "a red ball",
        "--lora",
        str(lora_files[fmt]),
        "--out",
        str(out),
        "--num_frames",
        "5",
        "--height",
        "32",
        "--width",
        "32",
        "--options.steps",
        "2",
    ]
    assert cli.main(args) == 0
    frames, _ = read_video(out)
    assert tuple(frames.shape) == (5, 32, 32, 3)


def test_sample_names_are_file_safe():
    assert sample_name("A red car, turning LEFT!", 3) == "a-red-car-turning-left-s3.mp4"
    assert sample_name("!!!", 0) == "sample-s0.mp4"


def _generate(lora, out, *extra):
    args = ["generate", "--prompt", "a red ball", "--out", str(out), "--num_frames", "5", "--height", "32"]
    args += ["--width", "32", "--options.steps", "2", *(["--lora", str(lora)] if lora else []), *extra]
    assert cli.main(args) == 0
    return read_video(out)[0]


def test_lora_scale_is_applied(lora_files, tmp_path):
    """Issue 12 item 6: `--lora F --lora_scale s` renders at s (0, 0.25 and 1 gave byte-identical videos before).

    Scale 0 must render what the bare model renders; 0.25 and 1 must each differ from it and from each other.
    """
    lora = lora_files["diffusers"]
    bare = _generate(None, tmp_path / "bare.mp4")
    videos = {s: _generate(lora, tmp_path / f"s{s}.mp4", "--lora_scale", str(s)) for s in (0.0, 0.25, 1.0)}
    assert torch.equal(videos[0.0], bare)
    assert not torch.equal(videos[0.25], bare) and not torch.equal(videos[1.0], bare)
    assert not torch.equal(videos[0.25], videos[1.0])


@pytest.mark.parametrize("what", ["missing", "not a run"])
def test_run_dir_that_is_not_a_run_is_refused(tmp_path, capsys, what):
    """Issue 12 item 6: `generate --run_dir` on a missing or non-run folder exits 2 in one line, writes nothing."""
    run_dir = tmp_path / "nowhere" if what == "missing" else tmp_path
    out = tmp_path / "x.mp4"
    args = ["generate", "--prompt", "a", "--run_dir", str(run_dir), "--out", str(out), "--options.steps", "1"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effivmt: error: --run_dir") and len(err.splitlines()) == 1
    assert not out.exists()
