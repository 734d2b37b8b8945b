import torch

from effivmt.omnitransfer.encoders import encode_text
from effivmt.omnitransfer.reference import encode_video, reference_input, target_condition, target_input
from effivmt.omnitransfer.tasks import TaskConfig


def test_reference_input_layout():
    """[z_ref (n), mask = 1 (4), flag (n)]: 2n + 4 = 36 channels, the I2V in_channels; per-item flags."""
    z = torch.randn(2, 16, 3, 4, 4)
    x = reference_input(z, ["motion", "style"])
    assert x.shape == (2, 36, 3, 4, 4)
    assert torch.equal(x[:, :16], z)
    assert torch.equal(x[:, 16:20], torch.ones(2, 4, 3, 4, 4))
    assert (x[0, 20:] == -1).all() and (x[1, 20:] == -3).all()
    assert (reference_input(z[:1], "id")[:, 20:] == -2).all()
    custom = TaskConfig(flags={**TaskConfig().flags, "id": 7.0})
    assert (reference_input(z[:1], "id", custom)[:, 20:] == 7).all()


def test_target_condition_matches_the_stock_i2v_pipeline(tiny_i2v, video):
    """[m, c] equals WanImageToVideoPipeline.prepare_latents' condition exactly (same VAE calls, same mask maths)."""
    pipe = tiny_i2v.pipeline()
    first = video(0)[:, :, 0]
    _, expected = pipe.prepare_latents(first, 1, 16, 32, 32, 9, torch.float32, "cpu", None, torch.zeros(1, 16, 3, 4, 4))
    got = target_condition(tiny_i2v.vae, first, 9)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    full = target_input(torch.zeros(1, 16, 3, 4, 4), got)
    assert full.shape[1] == tiny_i2v.transformer.config.in_channels


def test_encode_video_is_normalised_mode(tiny_i2v, video):
    vae = tiny_i2v.vae
    x = video(1)
    raw = vae.encode(x).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(encode_video(vae, x), (raw - mean) / std, rtol=1e-6, atol=1e-6)


def test_encode_text_matches_the_stock_pipeline(tiny_i2v, monkeypatch):
    """Same UMT5 features as WanImageToVideoPipeline._get_t5_prompt_embeds (ftfy cleaning stubbed: not installed)."""
    import diffusers.pipelines.wan.pipeline_wan_i2v as upstream

    monkeypatch.setattr(upstream, "prompt_clean", lambda text: " ".join(text.split()))
    pipe = tiny_i2v.pipeline()
    prompts = ["a red car drives", "a dog"]
    expected = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=512, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(encode_text(tiny_i2v.text_encoder, tiny_i2v.tokenizer, prompts), expected)
