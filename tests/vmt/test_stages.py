"""Functional tests of the two LoRA stages on the tiny model and a synthetic clip with known motion."""

import pytest
import torch
from helpers import LABELS, effective_weights, trainer

from effivmt.attention import install_processors
from effivmt.data.cache import ClipDataModule
from effivmt.data.samplers import AllFrames, RandomStride, RandomWindow, UniformStride, latent_frames
from effivmt.errors import ConfigError
from effivmt.lora import HeadGroupLoraConfig, add_head_group_adapter, set_adapter_scales
from effivmt.training.flow import add_noise, denoising_loss, velocity_target
from effivmt.vmt.spatial import SpatialLoRAModule
from effivmt.vmt.temporal import TemporalLoRAModule, step_frames, temporal_positions

HEAD_DIM = 12


def _rows(labels_of_layer, group):
    return torch.cat([torch.full((HEAD_DIM,), label == group) for label in labels_of_layer])


def _assert_group_untouched(before, after, frozen_group):
    """q/k/v rows and to_out.0 columns of every ``frozen_group`` head: bit-identical effective weights."""
    for name, w_before in before.items():
        layer = int(name.split(".")[1])
        mask = _rows(LABELS[layer], frozen_group)
        w_after = after[name]
        if name.endswith("to_out.0"):
            assert torch.equal(w_before[:, mask], w_after[:, mask]), name
            assert not torch.equal(w_before[:, ~mask], w_after[:, ~mask]), f"{name}: trained heads did not move"
        else:
            assert torch.equal(w_before[mask], w_after[mask]), name
            assert not torch.equal(w_before[~mask], w_after[~mask]), f"{name}: trained heads did not move"


def _fixed_eval_loss(transformer, cache, seed=123, draws=6):
    """Denoising loss over every latent frame of the clip, on a fixed set of (noise, level) draws."""
    x0 = cache.video_latents
    g = torch.Generator().manual_seed(seed)
    losses = []
    with torch.no_grad():
        for s in torch.linspace(0.3, 0.9, draws):
            noise = torch.randn(x0.shape, generator=g)
            xt = add_noise(x0, noise, s[None])
            pred = transformer(xt, (s * 1000)[None], cache.prompt_embeds, return_dict=False)[0]
            losses.append(denoising_loss(pred, velocity_target(x0, noise)).item())
    return sum(losses) / len(losses)


def _optimizer(params):
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=0.1)


def test_spatial_then_temporal_stage_confinement_and_learning(components, synthetic_cache, tmp_path):
    transformer = components.transformer
    install_processors(transformer)
    cfg = HeadGroupLoraConfig(rank=4, alpha=4)
    add_head_group_adapter(transformer, "spatial", LABELS, "spatial", cfg)

    before = effective_weights(transformer)
    module = SpatialLoRAModule(transformer, optimizer=_optimizer, active_adapters=["spatial"])
    trainer(tmp_path, 8).fit(module, datamodule=ClipDataModule(synthetic_cache, 8))
    _assert_group_untouched(before, effective_weights(transformer), "temporal")

    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", cfg)
    set_adapter_scales(transformer, {"spatial": 1.0, "temporal": 1.0})
    spatial_state = {k: v.clone() for k, v in transformer.state_dict().items() if ".spatial." in k}
    before = effective_weights(transformer)
    loss_before = _fixed_eval_loss(transformer, synthetic_cache)
    module = TemporalLoRAModule(
        transformer,
        sampler=UniformStride(9),
        motion_weight=0.5,
        optimizer=_optimizer,
        active_adapters=["spatial", "temporal"],
    )
    trainer(tmp_path, 40).fit(module, datamodule=ClipDataModule(synthetic_cache, 40))
    after = effective_weights(transformer)
    _assert_group_untouched(before, after, "spatial")
    assert all(torch.equal(v, transformer.state_dict()[k]) for k, v in spatial_state.items()), "spatial LoRA moved"
    loss_after = _fixed_eval_loss(transformer, synthetic_cache)
    assert loss_after < 0.97 * loss_before, (loss_before, loss_after)


def test_temporal_step_uses_adaptive_positions(components, synthetic_cache, monkeypatch):
    """The positions the rope sees are the DESIGN.md formula over the sampled frames, shifted by the step's phase.

    One shift for all frames leaves rotary attention unchanged (it depends on position differences only).
    """
    transformer = components.transformer
    install_processors(transformer)
    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", HeadGroupLoraConfig(rank=2, alpha=2))
    seen = []
    original = type(transformer.rope).forward

    def spy(self, hidden_states):
        seen.append(None if self.positions is None else self.positions.clone())
        return original(self, hidden_states)

    monkeypatch.setattr(type(transformer.rope), "forward", spy)
    module = TemporalLoRAModule(transformer, sampler=UniformStride(9), active_adapters=["temporal"])
    module.training_step({k: v for k, v in vars(synthetic_cache).items()}, 0)
    total = synthetic_cache.video_latents.shape[2]  # 5 latent frames, 3 sampled
    frames = seen[-1].view(3, 4, 4, 3)[:, 0, 0, 0]
    expected = torch.tensor([total / 2 + total / 3 * (i - 1.5) for i in range(3)], dtype=torch.float64)
    phase = frames - expected
    torch.testing.assert_close(phase, phase[:1].expand(3))
    assert 0 <= float(phase[0]) <= total / 3 - 1
    assert transformer.rope.positions is None


@pytest.mark.parametrize(("total", "video_frames"), [(21, 17), (21, 9), (5, 9), (13, 17), (21, 81)])
def test_adaptive_positions_follow_the_frames_drawn(total, video_frames):
    """Issue 12 item 8: every frame drawn lies within half a frame of its RoPE position, at every step.

    Before, UniformStride jittered and clamped its frames ({2, 7, 12, 17, 20}) while the positions stayed
    {0, 4.2, 8.4, 12.6, 16.8}. Now both come from one draw; the spacing stays F / F_samp (adaptive RoPE).
    """
    sampler = UniformStride(video_frames)
    for step in range(50):
        indices, positions = step_frames(sampler, total, "adaptive", torch.Generator().manual_seed(step))
        assert indices.numel() == positions.numel() == latent_frames(video_frames)
        assert (indices.double() - positions).abs().max() <= 0.5 + 1e-9, (step, indices, positions)
        assert indices.min() >= 0 and indices.max() < total
        if indices.numel() > 1:
            torch.testing.assert_close(positions.diff(), torch.full_like(positions.diff(), total / indices.numel()))


@pytest.mark.parametrize("sampler", [RandomWindow(9), RandomStride(9)])
def test_adaptive_positions_refuse_samplers_they_do_not_fit(sampler, components):
    """Contiguous or randomly strided frames would be told they lie F / F_samp apart: refused up front."""
    with pytest.raises(ConfigError, match="position_mode=adaptive assumes frames spread evenly"):
        TemporalLoRAModule(components.transformer, sampler=sampler, position_mode="adaptive")
    indices, positions = step_frames(sampler, 5, "sampled", torch.Generator().manual_seed(0))
    assert torch.equal(indices.double(), positions)  # the ablation's other mode: the true indices


def test_full_frame_positions_are_integers():
    idx = AllFrames().sample(5, torch.Generator())
    assert torch.equal(temporal_positions(idx, 5, "adaptive"), torch.arange(5, dtype=torch.float64))
    assert torch.equal(
        temporal_positions(torch.tensor([1, 3]), 5, "sampled"), torch.tensor([1.0, 3.0], dtype=torch.float64)
    )
    assert torch.equal(
        temporal_positions(torch.tensor([1, 3]), 5, "contiguous"), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )


def test_checkpoint_state_holds_only_the_trained_adapter(components):
    transformer = components.transformer
    cfg = HeadGroupLoraConfig(rank=2, alpha=2)
    add_head_group_adapter(transformer, "spatial", LABELS, "spatial", cfg)
    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", cfg)
    module = TemporalLoRAModule(transformer, active_adapters=["spatial", "temporal"])
    keys = list(module.state_dict())
    assert keys and all(".temporal." in k and "lora_" in k for k in keys)


def test_adapter_only_state_dict_holds_under_a_wrapper(components):
    transformer = components.transformer
    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", HeadGroupLoraConfig(rank=2, alpha=2))
    wrapper = torch.nn.Module()
    wrapper.inner = TemporalLoRAModule(transformer, active_adapters=["temporal"])
    keys = list(wrapper.state_dict())
    assert keys and all(k.startswith("inner.") and ".temporal." in k and "lora_" in k for k in keys)


def test_accumulated_micro_batches_draw_their_own_samples(components, synthetic_cache, tmp_path, monkeypatch):
    """Issue 12 item 5: with accumulate_grad_batches=3 each micro-batch draws its own frames, noise level and noise.

    Before, the step generator was seeded by the optimizer step only, so the 3 micro-batches of a step repeated
    one sample. 2 steps x 3 micro-batches must give 6 different noise levels.
    """
    import effivmt.vmt.lora_module as base

    transformer = components.transformer
    install_processors(transformer)
    add_head_group_adapter(transformer, "temporal", LABELS, "temporal", HeadGroupLoraConfig(rank=2, alpha=2))
    sigmas, real = [], base.sample_sigmas
    monkeypatch.setattr(base, "sample_sigmas", lambda *a, **k: sigmas.append(real(*a, **k)) or sigmas[-1])
    module = TemporalLoRAModule(transformer, sampler=UniformStride(9), active_adapters=["temporal"])
    fit = trainer(tmp_path, 2, accumulate_grad_batches=3)
    fit.fit(module, datamodule=ClipDataModule(synthetic_cache, 6))
    drawn = [float(s) for s in sigmas]
    assert len(drawn) == 6 and len(set(drawn)) == 6, drawn
