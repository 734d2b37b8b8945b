"""``effivmt pretrain --dit_object_weight``: the DiT's flow loss weights the latent pixels the object touches."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import fake_pretrain_cache

from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE, build_micro_components
from effivmt.data.world import render, sample_scene
from effivmt.pretrain import run as pretrain
from effivmt.pretrain.dit import TextToVideoPretrainModule
from effivmt.training.flow import denoising_loss
from effivmt.training.object_mask import latent_object_mask


def _video(clip) -> torch.Tensor:
    return clip.frames.permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def test_the_mask_covers_the_object_in_every_latent_frame_and_little_else():
    clip = render(sample_scene(3, motion="linear"), MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE)
    mask = latent_object_mask(_video(clip))
    assert mask.shape == (1, 1, 9, 8, 8)
    for k in range(9):
        x, y = clip.tracks[0, 4 * k].tolist()  # latent frame k ends with video frame 4k
        assert mask[0, 0, k, int(y) // 8, int(x) // 8] == 1
    assert 0.02 < mask.mean() < 0.3  # a 16-pixel object touches 2 x 2 to 3 x 3 of the 8 x 8 latent pixels
    still = clip.frames.clone()
    still[:] = still[0, 0, 0]  # the background colour only
    assert latent_object_mask(still.permute(3, 0, 1, 2)[None].float() / 127.5 - 1).sum() == 0


def test_a_weighted_loss_is_normalised_by_its_weights():
    pred, target = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 16, 3, 4, 4)
    plain = denoising_loss(pred, target)
    assert torch.allclose(denoising_loss(pred, target, torch.full((2, 1, 3, 4, 4), 7.0)), plain)
    mask = (torch.rand(2, 1, 3, 4, 4) < 0.3).float()
    only = (pred - target).square()[mask.expand_as(pred).bool()].mean()
    assert torch.allclose(denoising_loss(pred, target, mask), only)


def _module(masks: torch.Tensor, weight: float) -> TextToVideoPretrainModule:
    parts = build_micro_components(0)
    latents = torch.randn(4, 16, 9, 8, 8, generator=torch.Generator().manual_seed(0))
    return TextToVideoPretrainModule(
        parts["transformer"], parts["text_encoder"], parts["tokenizer"], latents, [0, 1, 2, 3],
        batch_size=2, object_masks=masks, object_weight=weight,
    )  # fmt: skip


def test_the_module_weights_the_object_and_keeps_the_scale():
    masks = torch.zeros(4, 1, 9, 8, 8)
    plain = _module(None, 1.0).training_step(0, 0)
    assert torch.allclose(_module(masks, 5.0).training_step(0, 0), plain)  # no object: same loss
    masks[..., 2:4, 2:4] = 1
    assert not torch.allclose(_module(masks, 5.0).training_step(0, 0), plain)
    with pytest.raises(ValueError, match="object_masks"):
        _module(None, 5.0)


def test_train_dit_renders_the_masks_once_and_records_the_weight(tmp_path, monkeypatch):
    fake_pretrain_cache(tmp_path)  # seeds 0..3: real world scenes, so their masks can be rendered
    pretrain.train_dit(tmp_path, 2, 2, 1e-3, 0, 1000, object_weight=5.0)
    assert json.loads((tmp_path / "dit" / "done.json").read_text())["object_weight"] == 5.0
    masks = pretrain.cached_object_masks(tmp_path)
    assert masks.shape == (4, 1, 9, 8, 8) and 0 < masks.mean() < 0.3
    monkeypatch.setattr(pretrain, "world_video", None)  # stored: nothing is rendered again
    assert torch.equal(pretrain.cached_object_masks(tmp_path), masks)
