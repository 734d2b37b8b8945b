"""The embedded default: a tiny random Wan 2.1 (T2V and I2V), built deterministically, offline.

Sizes follow diffusers' own Wan test configs (2 layers, head_dim 12, ffn 32, text_dim 32, tiny VAE
with base_dim 3), with 4 heads instead of 2 so head classification has something to split. The text
encoder is a UMT5 built from a config in code and the tokenizer a word-level ``tokenizers`` model
over ``assets/words.txt``: nothing comes from a hub.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import torch

#: WanTransformer3DModel init kwargs for the tiny T2V model.
TINY_T2V: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)

#: I2V: 16 noise + 16 condition + 4 mask channels in, CLIP image features through added K/V.
TINY_I2V: dict[str, Any] = {**TINY_T2V, "in_channels": 36, "image_dim": 16, "added_kv_proj_dim": 48}

#: AutoencoderKLWan init kwargs (diffusers' test VAE): 8x spatial, 4x temporal compression, 16 latent channels.
TINY_VAE: dict[str, Any] = dict(
    base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
)

#: UMT5 text encoder config kwargs; d_model must equal the transformer's text_dim.
TINY_T5: dict[str, Any] = dict(
    d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0
)

#: CLIP vision config kwargs for the I2V image encoder; hidden_size must equal TINY_I2V["image_dim"].
TINY_CLIP_VISION: dict[str, Any] = dict(
    hidden_size=16,
    intermediate_size=32,
    projection_dim=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


def build_tokenizer():
    """A word-level fast tokenizer over the packaged word list (T5-like: pad 0, eos 1, unk 2, eos appended)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = resources.files("effivmt.backbone").joinpath("assets/words.txt").read_text().split()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def flow_scheduler(flow_shift: float):
    """Wan 2.1's own scheduler: UniPC on flow-matching sigmas with timestep shift ``flow_shift``."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, num_train_timesteps=1000
    )


def build_tiny_components(variant: str = "t2v", seed: int = 0) -> dict[str, Any]:
    """Build every component of a tiny random Wan pipeline; the same ``seed`` gives the same weights.

    Returns:
        A dict with the keys of ``WanPipeline`` (``transformer, vae, text_encoder, tokenizer, scheduler``)
        and, for ``variant="i2v"``, ``image_encoder`` and ``image_processor`` as well.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**(TINY_I2V if variant == "i2v" else TINY_T2V))
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(**TINY_VAE)
        torch.manual_seed(seed + 2)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TINY_T5))
        components: dict[str, Any] = dict(transformer=transformer, vae=vae, text_encoder=text_encoder)
        if variant == "i2v":
            from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

            torch.manual_seed(seed + 3)
            components["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION))
            components["image_processor"] = CLIPImageProcessor(
                crop_size=TINY_CLIP_VISION["image_size"], size={"shortest_edge": TINY_CLIP_VISION["image_size"]}
            )
    components["scheduler"] = flow_scheduler(3.0)  # Wan 2.1's shift for 480p
    components["tokenizer"] = tokenizer
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return components
