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

The random tiny model (:mod:`effivmt.backbone.tiny`) stays for fast unit tests.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

MICRO_FRAMES = 33
MICRO_SIZE = 64
MICRO_FPS = 8.0
MICRO_FOLDER = "micro-wan-t2v"

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
    return Path(str(resources.files("effivmt").joinpath("assets", MICRO_FOLDER)))


def micro_available() -> bool:
    return (micro_path() / "model_index.json").is_file()


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
