import copy

import pytest

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
