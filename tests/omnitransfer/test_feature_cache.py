"""Training caches the frozen encoders' features (issue 13, item 5): the same loss, without UMT5/CLIP resident."""

import gc
import weakref

import pytest
import torch
from helpers import trainer

from effivmt.errors import EffivmtError
from effivmt.omnitransfer.encoders import FeatureCache
from effivmt.omnitransfer.module import OmniTransferModule
from effivmt.omnitransfer.tasks import TaskConfig


def _batch(video, items=(0, 1)):
    rows = [
        (video(1), video(3), "a red car drives", ("motion",), ""),
        (video(2), video(4), "a dog runs", ("style",), "an oil painting"),
    ]
    rows = [rows[i] for i in items]
    return {
        "references": [torch.cat([r[0] for r in rows])],
        "target": torch.cat([r[1] for r in rows]),
        "prompt": [r[2] for r in rows],
        "tasks": [r[3] for r in rows],
        "reference_prompt": [r[4] for r in rows],
    }


def _module(stage, cache_features=True):
    module = OmniTransferModule(
        stage=stage, tasks=TaskConfig(num_queries=2), lora_rank=2, lora_alpha=2, cache_features=cache_features
    )
    torch.manual_seed(0)  # peft draws the stage-3 LoRA A factors from the global generator
    module.configure_model()
    return module


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_cached_features_give_the_same_loss_and_gradients(stage, video):
    """Features cached row by row (batches of one), then served to a batch of two: loss and gradients equal the
    live encoders' exactly. UMT5 and CLIP are freed; the MLLM too in stage 1, not in 2-3 (they train through it)."""
    results = []
    for cached in (False, True):
        module = _module(stage, cached)
        if cached:
            module.cache_encoder_features([_batch(video, [0]), _batch(video, [1])])
            wan = module.pipe.wan
            assert wan.text_encoder.encoder is None and wan.image_encoder.encoder is None
            assert len(wan.image_encoder.entries) == 4  # two targets' and two references' first frames
            mllm = [n for n, _ in module.named_parameters() if n.startswith("model.aligner.mllm.")]
            assert bool(mllm) == (stage != 1)
        loss = module.compute_loss(_batch(video), torch.Generator().manual_seed(0))
        loss.backward()
        grads = {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (live, live_grads), (cached, cached_grads) = results
    torch.testing.assert_close(cached, live, rtol=0, atol=0)
    assert cached_grads.keys() == live_grads.keys()
    for name, grad in live_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_resident_parameter_bytes_drop_by_the_encoders(video):
    module = _module(1)
    before = module.resident_parameter_bytes()
    module.cache_encoder_features([_batch(video)])
    after = module.resident_parameter_bytes()
    assert set(before) - set(after) == {"text_encoder", "image_encoder", "mllm"}
    freed = sum(before[k] for k in ("text_encoder", "image_encoder", "mllm"))
    assert sum(after.values()) == sum(before.values()) - freed


def test_an_input_not_cached_raises_once_the_encoder_is_gone(video):
    module = _module(2)
    module.cache_encoder_features([_batch(video, [0])])
    with pytest.raises(EffivmtError, match="1 input.s. of the image_encoder are not among the 2 cached"):
        module.compute_loss(_batch(video, [1]), torch.Generator().manual_seed(0))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's CPU/worker notices
def test_setup_frees_the_encoders_before_the_first_step(synthetic_manifest, tmp_path):
    """Through Lightning: after ``setup`` UMT5, CLIP and (stage 1) Qwen2.5-VL are garbage, not just unreferenced
    by the module, and the step that follows trains on the cached features."""
    import lightning as L

    from effivmt.omnitransfer.data import PairedVideoDataModule

    module = OmniTransferModule(stage=1, tasks=TaskConfig(num_queries=2), lora_rank=2, lora_alpha=2)
    module.configure_model()
    wan = module.pipe.wan
    encoders = [weakref.ref(m) for m in (wan.text_encoder, wan.image_encoder, module.model.aligner.mllm)]
    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            gc.collect()
            seen["alive"] = [r() is not None for r in encoders]
            seen["bytes"] = pl_module.resident_parameter_bytes()
            seen["names"] = [n for n, _ in pl_module.named_parameters()]

    datamodule = PairedVideoDataModule(synthetic_manifest, 9, 32, 32, None, batch_size=1, num_workers=0)
    fit = trainer(tmp_path, 1, callbacks=[Probe()])
    fit.fit(module, datamodule=datamodule)
    assert seen["alive"] == [False, False, False]
    assert set(seen["bytes"]) == {"transformer", "vae", "queries+connector"}
    assert not any(".mllm." in n for n in seen["names"])
    # 5 rows, one per task: 5 prompts + 5 task templates (the reference texts); 5 target + 5 reference first frames
    assert len(wan.text_encoder.entries) == 10 and len(wan.image_encoder.entries) == 10
    assert isinstance(wan.text_encoder, FeatureCache) and fit.global_step == 1


@pytest.mark.parametrize("features", [True, False])
def test_cached_latents_give_the_same_loss_without_running_the_vae(features, video):
    """``cache_latents``: each row's target, first-frame condition and reference are encoded once; the step that
    follows gives the live loss exactly and never calls the VAE (alone or beside the feature cache)."""
    live = _module(1, cache_features=False).compute_loss(_batch(video), torch.Generator().manual_seed(0))
    module = _module(1, cache_features=features)
    module.cache_latents = True
    module.cache_encoder_features([_batch(video, [0]), _batch(video, [1])])
    cache = module.pipe.latent_cache
    assert cache.name == "vae" and len(cache.entries) == 6  # 2 rows x (target, condition, reference)
    assert (module.pipe.wan.text_encoder.__class__ is FeatureCache) == features

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE ran although every clip is cached")

    module.pipe.wan.vae.encode = no_vae
    cached = module.compute_loss(_batch(video), torch.Generator().manual_seed(0))
    torch.testing.assert_close(cached, live.detach(), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="the VAE ran"):  # an unseen clip is still encoded live
        module.pipe.encode_latents(video(5))


def test_latents_kept_on_disk_serve_the_next_stage_and_never_another_model(video, tmp_path):
    """The latent file one stage writes serves the next without the VAE, equal to the live latents; a file is read
    only by the backbone that wrote it."""
    from effivmt.omnitransfer.encoders import FeatureCache

    file = tmp_path / "cache" / "vae-latents.safetensors"
    first = _module(1)
    first.cache_latents, first.latent_cache_file = True, file
    first.cache_encoder_features([_batch(video, [0])])
    assert file.is_file()

    second = _module(2)
    second.cache_latents, second.latent_cache_file = True, file
    live = second.pipe.encode_latents(video(3))  # the target of row 0, before the VAE is taken away

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE ran although the latents were on disk")

    second.pipe.wan.vae.encode = no_vae
    second.cache_encoder_features([_batch(video, [0])])
    assert len(second.pipe.latent_cache.entries) == 3  # target, first-frame condition, reference
    torch.testing.assert_close(second.pipe.encode_latents(video(3)), live, rtol=0, atol=0)
    cache = FeatureCache(None, "vae")
    assert cache.load(file, "another-model@0123") == 0 and cache.load(file, "tiny") == 3
