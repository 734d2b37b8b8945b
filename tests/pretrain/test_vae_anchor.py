"""The VAE stages that keep a moving object in every latent frame (docs/micro-wan.md): the whole-clip stage
keeps the teacher latent as an anchor, and the decoder stage decodes each latent frame from itself alone."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from effivmt.backbone.micro import build_micro_components
from effivmt.pretrain.vae import DecoderPretrainModule, VaePretrainModule, memoryless_decoder, teacher_latents


def test_anchor_adds_the_distance_to_the_teacher_latent_after_the_teacher_phase():
    vae = build_micro_components(0)["vae"]
    clip = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    plain = VaePretrainModule(vae, teacher_steps=0)
    anchored = VaePretrainModule(vae, teacher_steps=0, teacher_weight=0.5)
    with torch.no_grad():
        z = vae.encode(clip).latent_dist.mode()
        distance = (z - teacher_latents(clip, z.shape[1])).pow(2).mean()
        gap = anchored.training_step(clip, 0) - plain.training_step(clip, 0)
    assert distance > 0
    torch.testing.assert_close(gap, 0.5 * distance)


def test_anchor_pulls_every_latent_frame_towards_the_teacher():
    vae = build_micro_components(0)["vae"]
    clip = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    module = VaePretrainModule(vae, teacher_steps=0, teacher_weight=1.0, object_weight=1.0)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    with torch.no_grad():
        target = teacher_latents(clip, 16)
        before = (vae.encode(clip).latent_dist.mode() - target).pow(2).mean(dim=(0, 1, 3, 4))
    for _ in range(8):
        opt.zero_grad()
        module.training_step(clip, 0).backward()
        opt.step()
    with torch.no_grad():
        after = (vae.encode(clip).latent_dist.mode() - target).pow(2).mean(dim=(0, 1, 3, 4))
    assert (after < before).all(), (before, after)


def test_memoryless_decoder_decodes_each_latent_frame_from_itself():
    """Stock Wan decoders carry a cache across latent frames; ours must not, and must stay a stock VAE."""
    vae = build_micro_components(0)["vae"].eval()
    z = torch.randn(1, 16, 4, 2, 2)
    other = z.clone()
    other[:, :, 1] += 1.0  # change latent frame 1 only
    with torch.no_grad():
        before = vae.decode(z).sample, vae.decode(other).sample
    # frames of latent 3 (9..12) depend on latent 1 through the stock decoder's cache
    assert not torch.allclose(before[0][:, :, 9:], before[1][:, :, 9:])
    memoryless_decoder(vae)
    with torch.no_grad():
        after = vae.decode(z).sample, vae.decode(other).sample
    torch.testing.assert_close(after[0][:, :, 5:], after[1][:, :, 5:])  # latents 2, 3 untouched by latent 1
    assert not torch.allclose(after[0][:, :, 1:5], after[1][:, :, 1:5])
    with torch.no_grad():  # what the decoder stage trains on: latent 3 decoded right after latent 0
        pair = vae.decode(z[:, :, [0, 3]]).sample
    torch.testing.assert_close(pair[:, :, 1:], after[0][:, :, 9:13])


def test_decoder_stage_trains_the_decoder_alone_and_keeps_past_taps_zero(tmp_path):
    vae = build_micro_components(0)["vae"]
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    module = DecoderPretrainModule(vae, torch.randn(3, 16, 2, 2, 2), [1, 2, 3], batch_size=1, max_steps=2)
    opt = module.configure_optimizers()["optimizer"]
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    for _ in range(2):
        opt.zero_grad()
        module.training_step(None, 0).backward()
        opt.step()
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder.items())
    vae.save_pretrained(str(tmp_path))
    reloaded = AutoencoderKLWan.from_pretrained(str(tmp_path))
    convs = [m for m in reloaded.decoder.modules() if isinstance(m, WanCausalConv3d) and m.kernel_size[0] > 1]
    assert convs and all(float(m.weight.detach()[:, :, :-1].abs().max()) == 0.0 for m in convs)
