"""The packaged micro Wan T2V and I2V: stock diffusers folders, the default models, small together, and they follow
their prompts (the I2V: its first frame)."""

import json

import numpy as np
import pytest
import torch

from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE, micro_i2v_path, micro_path
from effivmt.backbone.wan import load_wan
from effivmt.metrics.world import read_clip

MAX_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def micro_pipe():
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(str(micro_path()))


def test_micro_folder_is_a_stock_wan_pipeline(micro_pipe):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    index = json.loads((micro_path() / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert isinstance(micro_pipe.transformer, WanTransformer3DModel)
    assert isinstance(micro_pipe.vae, AutoencoderKLWan) and isinstance(micro_pipe.text_encoder, UMT5EncoderModel)
    vae = micro_pipe.vae.config
    assert (vae.z_dim, vae.scale_factor_spatial, vae.scale_factor_temporal) == (16, 8, 4)
    assert micro_pipe.transformer.dtype == torch.float32  # bf16 on disk, float32 once loaded


@pytest.fixture(scope="module")
def micro_i2v_pipe():
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline.from_pretrained(str(micro_i2v_path()))


def test_packaged_models_are_small_together():
    """Every packaged model (micro T2V, micro I2V, tiny Qwen2.5-VL, micro OmniTransfer weights): 16 MiB at most."""
    assets = micro_path().parent
    assert {micro_path(), micro_i2v_path()} <= set(assets.iterdir())
    size = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    assert size <= MAX_BYTES, f"the packaged models are {size / 2**20:.1f} MiB"


def test_micro_i2v_folder_is_a_stock_wan_i2v_pipeline(micro_i2v_pipe):
    from transformers import CLIPVisionModel

    index = json.loads((micro_i2v_path() / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    config = micro_i2v_pipe.transformer.config
    assert (config.in_channels, config.image_dim, config.added_kv_proj_dim) == (36, 32, 144)
    assert isinstance(micro_i2v_pipe.image_encoder, CLIPVisionModel)


def test_model_path_null_means_the_micro_model(monkeypatch):
    monkeypatch.delenv("EFFIVMT_DEFAULT_MODEL", raising=False)
    components = load_wan(None)
    assert components.source == str(micro_path())
    assert components.transformer.config.num_layers == 6
    assert load_wan("tiny").source == "tiny"
    i2v = load_wan(None, variant="i2v")
    assert (i2v.variant, i2v.source, i2v.transformer.config.in_channels) == ("i2v", str(micro_i2v_path()), 36)


@pytest.mark.parametrize(
    "prompt, color, background",
    [
        ("a red square on a white background", "red", "white"),
        ("a yellow circle on a blue background", "yellow", "blue"),
    ],
)
def test_short_generation_follows_its_prompts_colours(micro_pipe, prompt, color, background):
    """The shipped (undertrained, 38,000-step) weights follow both colours: of the 20 prompts of
    bench/micro_prompts.py, the background in 20 and the object's colour in 19. Not the shape (5) or the direction
    of motion (2): the DiT ignores those words (bench/micro_word_use.py), so they are not asserted."""
    torch.manual_seed(0)
    video = micro_pipe(
        prompt,
        num_frames=MICRO_FRAMES,  # the setting bench/micro_prompts.py measures (at 9 frames, 12 steps the
        height=MICRO_SIZE,  # object's colour was wrong for both prompts)
        width=MICRO_SIZE,
        num_inference_steps=30,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    reading = read_clip((np.clip(video, 0, 1) * 255).round().astype(np.uint8))
    assert reading.majority("background") == background
    assert reading.majority("color") == color


@pytest.mark.parametrize("seed", [7000, 7003])
def test_short_i2v_generation_keeps_its_first_frame(micro_i2v_pipe, seed):
    """From a first frame of a scene it never saw (pretraining used seeds 0-2,999), the I2V keeps the object's colour
    and the background in most frames, and starts the object where the frame has it."""
    from PIL import Image

    from effivmt.data.world import caption, render, sample_scene

    scene = sample_scene(seed, motion="linear")
    given = render(scene, MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE)
    video = micro_i2v_pipe(
        image=Image.fromarray(given.frames[0].numpy()),
        prompt=caption(scene),
        num_frames=MICRO_FRAMES,
        height=MICRO_SIZE,
        width=MICRO_SIZE,
        num_inference_steps=20,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    reading = read_clip((np.clip(video, 0, 1) * 255).round().astype(np.uint8))
    assert reading.majority("background") == scene.background
    assert reading.majority("color") == scene.objects[0].color
    assert np.hypot(*(reading.path[0] - given.tracks[0, 0].numpy())) < 4.0
