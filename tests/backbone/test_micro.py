"""The packaged micro Wan: a stock diffusers folder, the default model, small, and it follows its prompts."""

import json

import numpy as np
import pytest
import torch

from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE, micro_path
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


def test_micro_folder_is_small():
    size = sum(f.stat().st_size for f in micro_path().rglob("*") if f.is_file())
    assert size <= MAX_BYTES, f"micro Wan folder is {size / 2**20:.1f} MiB"


def test_model_path_null_means_the_micro_model(monkeypatch):
    monkeypatch.delenv("EFFIVMT_DEFAULT_MODEL", raising=False)
    components = load_wan(None)
    assert components.source == str(micro_path())
    assert components.transformer.config.num_layers == 6
    assert load_wan("tiny").source == "tiny"


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
