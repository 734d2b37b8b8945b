"""The micro Wan I2V: warm-started from the T2V so that it computes the same thing, trained on the cached clips with
each clip's own first frame, exported as a folder that stock diffusers loads, never made from a stale T2V."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanImageToVideoPipeline
from helpers import fake_pretrain_cache, vae_stages_done

from effivmt.backbone.encode import clip_image_features, first_frame_condition
from effivmt.backbone.micro import MICRO_I2V, build_micro_components, build_micro_image_encoder, i2v_from_t2v
from effivmt.errors import ConfigError
from effivmt.pretrain import i2v as i2v_module
from effivmt.pretrain import run as pretrain


def _inputs(frames: int = 3):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, frames, 8, 8, generator=g)
    text = torch.zeros(1, 512, 64)
    text[:, :9] = torch.randn(1, 9, 64, generator=g)
    return latents, torch.tensor([700.0]), text, g


def test_the_warm_started_i2v_computes_what_the_t2v_computes_whatever_its_condition():
    t2v = build_micro_components(0)["transformer"].eval()
    for p in t2v.parameters():  # trained-looking weights: the T2V's zero-initialised output layers would hide a bug
        p.data.add_(0.02 * torch.randn_like(p))
    i2v = i2v_from_t2v(t2v).eval()
    assert {k: i2v.config[k] for k in ("in_channels", "image_dim", "added_kv_proj_dim")} == {
        k: MICRO_I2V[k] for k in ("in_channels", "image_dim", "added_kv_proj_dim")
    }
    x, t, text, g = _inputs()
    condition, image = torch.randn(1, 20, 3, 8, 8, generator=g), torch.randn(1, 17, 32, generator=g)
    with torch.no_grad():
        want = t2v(x, t, text, return_dict=False)[0]
        got = i2v(torch.cat([x, condition], 1), t, text, encoder_hidden_states_image=image, return_dict=False)[0]
    assert want.abs().mean() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_first_frame_inputs_are_what_the_stock_i2v_pipeline_builds():
    parts = build_micro_components(0)
    vae = parts["vae"].eval()
    vae.register_to_config(latents_mean=[0.1] * 16, latents_std=[2.0] * 16)
    encoder, processor = build_micro_image_encoder(0)
    video = torch.rand(2, 3, 9, 64, 64) * 2 - 1
    condition, image = i2v_module.first_frame_inputs(vae, encoder, processor, video)
    torch.testing.assert_close(condition, first_frame_condition(vae, video[:, :, 0], 9))
    assert condition.shape == (2, 20, 3, 8, 8) and image.shape == (2, 17, 32)
    assert torch.equal(condition[:, :4, 0], torch.ones(2, 4, 8, 8)) and not condition[:, :4, 1:].any()
    pipe = WanImageToVideoPipeline(**parts, image_encoder=encoder, image_processor=processor)
    from PIL import Image

    pil = [Image.fromarray(((f.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()) for f in video[:, :, 0]]
    stock = pipe.encode_image(pil, device="cpu")
    # the pipeline resizes the PIL image, we resize the tensor; both at 64 x 64 leave it as it is (up to uint8)
    torch.testing.assert_close(image, stock.float(), rtol=0, atol=0.05)
    torch.testing.assert_close(image, clip_image_features(encoder, processor, video[:, :, 0]).float())


def test_the_stage_trains_the_dit_only_from_the_latest_t2v_and_exports_a_stock_i2v_folder(tmp_path, monkeypatch):
    fake_pretrain_cache(tmp_path)
    vae_stages_done(tmp_path, monkeypatch)
    steps, image_branch, text_grads = [], [], []

    class Spy(i2v_module.ImageToVideoPretrainModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            steps.append(float(loss.detach()))
            image_branch.append(float(self.transformer.blocks[0].attn2.add_v_proj.weight.detach().abs().sum()))
            text_grads.extend(p.grad for p in self.text_encoder.parameters() if p.grad is not None)
            return loss

    monkeypatch.setattr(i2v_module, "ImageToVideoPretrainModule", Spy)
    pretrain.pretrain_micro(tmp_path, dit_steps=2, dit_batch_size=2, i2v_steps=3)
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(steps)))
    done = json.loads((tmp_path / "i2v" / "done.json").read_text())
    assert (done["steps"], done["init"]) == (3, "dit")
    assert json.loads((tmp_path / "export-i2v.json").read_text()) == {"i2v": "dit", "vae": "vae-clips"}
    pipe = WanImageToVideoPipeline.from_pretrained(str(tmp_path / "micro-wan-i2v"))
    assert pipe.transformer.config.in_channels == 36
    t2v_text = (tmp_path / "micro-wan-t2v" / "text_encoder" / "model.safetensors").read_bytes()
    assert (tmp_path / "micro-wan-i2v" / "text_encoder" / "model.safetensors").read_bytes() == t2v_text  # frozen
    assert image_branch[0] == 0 and image_branch[-1] > 0 and not text_grads  # the image branch learns; UMT5 does not
    assert set(json.loads((tmp_path / "pretrain.json").read_text())["stages"]) >= {"dit", "i2v"}

    # the T2V moves on: the I2V made from the old one is refused, not reused
    with pytest.raises(ConfigError, match="delete .*i2v"):
        pretrain.pretrain_micro(tmp_path, dit_steps=2, dit_batch_size=2, dit_restart_steps=2, i2v_steps=3)
