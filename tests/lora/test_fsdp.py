"""Head confinement under FSDP (issue 12, item 4), on the CPU with a one-process gloo group.

FSDP with ``use_orig_params=True`` (Lightning's default) runs the forward on views of the flat parameter, so the
gradient hooks on the LoRA factors never fire: out-of-group entries got gradients and moved. The stage modules now
also mask the gradients before each optimizer step and re-zero the entries after it.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from effivmt.lora import HeadGroupLoraConfig, add_head_group_adapter, zero_outside_groups

LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "spatial", "temporal", "spatial"]]


@pytest.fixture
def gloo(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _out_of_group(transformer) -> float:
    worst = 0.0
    for module in transformer.modules():
        mask = getattr(module, "effivmt_mask", None)
        if mask is not None:
            worst = max(worst, module.weight.detach().masked_select(~mask).abs().max().item())
    return worst


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fsdp_training_keeps_out_of_group_entries_at_zero(tiny_t2v, gloo):
    """Three AdamW steps through FSDP (use_orig_params, one unit per Wan block), with the temporal stage's own
    ``on_before_optimizer_step``: every out-of-group entry is exactly 0 straight after ``optimizer.step()`` (the
    masked gradients leave AdamW's moments at 0), and in-group entries did train."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from effivmt.vmt.temporal import TemporalLoRAModule

    transformer = copy.deepcopy(tiny_t2v.transformer)
    cfg = HeadGroupLoraConfig(rank=2, alpha=2, init="random")
    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", cfg)
    factors = [m for m in transformer.modules() if getattr(m, "effivmt_mask", None) is not None]
    before = [m.weight.detach().clone() for m in factors]
    module = TemporalLoRAModule(transformer, active_adapters=["temporal"])
    module.log = lambda *args, **kwargs: None  # no trainer here: the hook's logging has nowhere to go
    wrapped = FSDP(
        transformer,
        use_orig_params=True,
        auto_wrap_policy=ModuleWrapPolicy({WanTransformerBlock}),
        device_id=torch.device("cpu"),
    )
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    for _ in range(3):
        wrapped(x, torch.tensor([500]), text, return_dict=False)[0].square().mean().backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        optimizer.zero_grad()
        assert _out_of_group(transformer) == 0.0
        zero_outside_groups(transformer)  # what the module's optimizer_step does next: a no-op here
    assert any(not torch.equal(b, m.weight.detach()) for b, m in zip(before, factors))  # in-group entries trained
