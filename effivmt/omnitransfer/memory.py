"""What OmniTransfer keeps in memory: activations saved for the backward pass, and the reference K/V cache.

:func:`saved_activation_bytes` measures, on any device, the bytes autograd keeps for the backward pass of a
function (parameters excluded, each tensor counted once). ``docs/omnitransfer-memory.md`` measures it on small
CPU shapes and extrapolates to Wan 2.1 I2V 14B at 81x480x832; :func:`kv_cache_bytes` is the cache's closed form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def saved_activation_bytes(fn: Callable[[], Any], params: Iterable[nn.Parameter] = ()) -> tuple[Any, int]:
    """Run ``fn`` and count the bytes of the tensors autograd saves for backward (``params`` not counted).

    Storage is counted once however often it is saved (``x`` saved by two matmuls is one tensor). Inside a
    non-reentrant activation-checkpointed region checkpointing's own hooks win, so what it recomputes instead of
    saving is, correctly, not counted.

    Returns:
        ``(fn(), bytes)``.
    """
    skip = {p.data_ptr() for p in params}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta" and t.data_ptr() not in skip:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def kv_cache_bytes(layers: int, tokens: int, dim: int, element_size: int = 2, batch: int = 1) -> int:
    """Bytes of one reference's K/V record: ``2 (K, V) * layers * batch * tokens * dim * element_size``.

    Wan 2.1 I2V 14B (40 layers, dim 5,120), 81x480x832 (21 x 30 x 52 = 32,760 tokens), bf16: 26.8 GB.
    """
    return 2 * layers * batch * tokens * dim * element_size


def measure_layer(
    heads: int, head_dim: int, ffn_dim: int, latent: tuple[int, int, int], checkpoint: bool, layers: int = 1
) -> dict:
    """Saved bytes of one training forward (one reference recorded, the target predicted) of a 1-layer random Wan
    I2V transformer in float32 on the CPU: ``reference`` (the record pass) and ``target`` (the denoising pass).

    The K/V record itself is not counted as a saved activation unless autograd saves it; it is reported apart.
    """
    from diffusers import WanTransformer3DModel

    from effivmt.backbone.tiny import TINY_I2V
    from effivmt.omnitransfer.model import OmniTransferModel
    from effivmt.omnitransfer.reference import reference_input

    dim = heads * head_dim
    config = {**TINY_I2V, "num_attention_heads": heads, "attention_head_dim": head_dim, "num_layers": layers}
    config.update(ffn_dim=ffn_dim, text_dim=64, image_dim=32, added_kv_proj_dim=dim, rope_max_seq_len=1024)
    torch.manual_seed(0)
    model = OmniTransferModel(WanTransformer3DModel(**config))
    if checkpoint:
        model.transformer.enable_gradient_checkpointing()
    f, h, w = latent
    target = torch.randn(1, 36, f, h, w)
    ref = reference_input(torch.randn(1, 16, f, h, w), "motion")
    ctx, img = torch.randn(1, 512, 64), torch.randn(1, 16, 32)
    params = list(model.parameters())
    grid = model.grid(target)
    record, ref_bytes = saved_activation_bytes(
        lambda: model.encode_references([ref], ["motion"], [ctx], [img], grid), params
    )
    _, tgt_bytes = saved_activation_bytes(lambda: model(target, torch.tensor([500.0]), ctx, img, record), params)
    tokens = f * (h // 2) * (w // 2)
    return {"tokens": tokens, "dim": dim, "reference": ref_bytes, "target": tgt_bytes, "kv": record.nbytes()}
