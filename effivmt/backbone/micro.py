"""The micro Wan: Wan 2.1's own classes at a size pretrained on 2 CPU cores, shipped in the package.

The micro model is what ``model.path: null`` loads: a ``WanPipeline`` folder (transformer, VAE, UMT5,
tokenizer, scheduler) pretrained by ``effivmt pretrain`` on the micro world (``effivmt.data.world``).
Its sizes are chosen so that a whole EffiVMT run takes minutes on a CPU while the model still has a
head structure to split and a motion vocabulary to extend:

* clips of :data:`MICRO_FRAMES` = 33 frames at :data:`MICRO_SIZE` = 64x64 pixels, 8 fps -> 9 latent
  frames of 8x8 (the sparse sampler keeps 3 of 9, the paper's 5 of 21 ratio or sparser);
* a 6-block DiT with 6 heads of 24 dims (RoPE: 8 time, 8 height, 8 width dims per head);
* a Wan VAE with base width 16 (8x space, 4x time, 16 latent channels, like Wan 2.1's);
* a 2-layer UMT5 (d_model 64) over the project's word-level tokenizer.

Beside it, a micro **I2V** (``micro-wan-i2v``, a ``WanImageToVideoPipeline`` folder) with the same VAE, UMT5
and tokenizer: the T2V DiT widened to Wan 2.1 I2V's 36 input channels (noise 16, mask 4, first-frame latent 16)
with CLIP-vision features of the first frame through added K/V (:func:`i2v_from_t2v`), then trained on the
same cached clips (``effivmt pretrain``'s ``i2v`` stage).

The random tiny model (:mod:`effivmt.backbone.tiny`) stays for fast unit tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effivmt.io import package_asset

MICRO_FRAMES = 33
MICRO_SIZE = 64
MICRO_FPS = 8.0
MICRO_FOLDER = "micro-wan-t2v"
MICRO_I2V_FOLDER = "micro-wan-i2v"

#: WanTransformer3DModel init kwargs of the micro T2V DiT.
MICRO_T2V: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=6,
    attention_head_dim=24,
    in_channels=16,
    out_channels=16,
    text_dim=64,
    freq_dim=64,
    ffn_dim=384,
    num_layers=6,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=64,
)

#: The I2V DiT: Wan 2.1 I2V's 36 input channels ([noise, mask, condition], as ``WanImageToVideoPipeline`` stacks
#: them) and image features through added K/V of the DiT's width (Wan 2.1 I2V 14B: 1280 -> 5120).
MICRO_I2V: dict[str, Any] = {**MICRO_T2V, "in_channels": 36, "image_dim": 32, "added_kv_proj_dim": 144}

#: The I2V's image encoder: a CLIP vision tower at the clip's own 64 x 64 (16 patches of 16 + the class token).
#: It stays as initialised (frozen, seeded): a fixed random feature map of the first frame, which the DiT's
#: added K/V learn to read. ``hidden_size`` equals ``MICRO_I2V["image_dim"]``.
MICRO_CLIP_VISION: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=64,
    patch_size=16,
)

#: AutoencoderKLWan init kwargs: Wan 2.1's layout (8x space, 4x time, z 16) at base width 16.
MICRO_VAE: dict[str, Any] = dict(
    base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True]
)

#: UMT5 config kwargs; d_model equals the DiT's text_dim.
MICRO_T5: dict[str, Any] = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=16, dropout_rate=0.0
)

#: Scheduler shift at inference: 64x64 frames need less than Wan's 3.0 for 480p.
MICRO_FLOW_SHIFT = 2.0


def micro_path() -> Path:
    """The packaged micro Wan folder (``effivmt/assets/micro-wan-t2v``)."""
    return package_asset(MICRO_FOLDER)


def micro_i2v_path() -> Path:
    """The packaged micro Wan I2V folder (``effivmt/assets/micro-wan-i2v``)."""
    return package_asset(MICRO_I2V_FOLDER)


def build_micro_image_encoder(seed: int = 0) -> tuple[Any, Any]:
    """``(CLIPVisionModel, CLIPImageProcessor)`` of the micro I2V (Wan 2.1 I2V's classes); same seed, same weights."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        encoder = CLIPVisionModel(CLIPVisionConfig(**MICRO_CLIP_VISION)).eval()
    size = MICRO_CLIP_VISION["image_size"]
    return encoder, CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})


def i2v_from_t2v(t2v, seed: int = 0):
    """A ``WanTransformer3DModel`` I2V that computes exactly what the T2V ``t2v`` does, whatever its condition.

    Every T2V weight is copied; the patch embedding's 20 new input channels (mask and first-frame latent) start
    at zero, and so does each block's ``add_v_proj``, so the image branch of the cross-attention adds nothing
    until training moves it. The image embedder and ``add_k_proj`` keep their seeded initialisation.
    """
    from diffusers import WanTransformer3DModel

    config = {k: v for k, v in t2v.config.items() if not k.startswith("_")}
    width = config["num_attention_heads"] * config["attention_head_dim"]
    config.update(in_channels=36, image_dim=MICRO_I2V["image_dim"], added_kv_proj_dim=width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        i2v = WanTransformer3DModel(**config)
    state = i2v.state_dict()  # views of i2v's own tensors: writing into them sets the weights
    with torch.no_grad():
        for name, value in t2v.state_dict().items():
            if name == "patch_embedding.weight":
                state[name].zero_()
                state[name][:, : value.shape[1]] = value
            else:
                state[name].copy_(value)
        for block in i2v.blocks:
            block.attn2.add_v_proj.weight.zero_()
            block.attn2.add_v_proj.bias.zero_()
    return i2v if t2v.dtype == i2v.dtype else i2v.to(t2v.dtype)


def build_micro_components(seed: int = 0) -> dict[str, Any]:
    """Freshly initialised micro components (what pretraining starts from); same ``seed``, same weights."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from effivmt.backbone.tiny import build_tokenizer, flow_scheduler

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**MICRO_T2V)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(**MICRO_VAE)
        torch.manual_seed(seed + 2)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **MICRO_T5))
    scheduler = flow_scheduler(MICRO_FLOW_SHIFT)
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
