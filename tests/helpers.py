"""Helpers shared by tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from pathlib import Path

import yaml

SAMPLE_CLIP = Path(__file__).resolve().parents[1] / "data" / "clips" / "moving-shapes.mp4"

#: head labels of the tiny model used by the stage tests: 2 spatial + 2 temporal heads per layer.
LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "spatial", "temporal", "spatial"]]


def trainer(tmp_path, steps, **overrides):
    import lightning as L

    settings = dict(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_epochs=-1,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**settings, **overrides})


def effective_weights(transformer):
    """base weight + every active adapter's delta, for every adapted attn1 projection."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and ".attn1." in name:
            weight = module.get_base_layer().weight.detach().clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight = weight + module.get_delta_weight(adapter).detach()
            out[name] = weight
    return out


def write_heads_recipe(path: Path, **top_level) -> Path:
    """A tiny ``run`` recipe that only classifies heads (32x32, 9 frames): quick enough for a row per test."""
    recipe = {
        "clip_prompt": "a red ball",
        "stages": ["heads"],
        "video": {"num_frames": 9, "height": 32, "width": 32, "fps": None},
        "heads": {"alpha": 1.0, "timesteps": [500], "chunk_size": 64},
        "temporal": {"sampler": {"class_path": "effivmt.data.samplers.UniformStride", "init_args": {"num_frames": 5}}},
        "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False},
        **top_level,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def fake_pretrain_cache(out) -> None:
    """Stand-ins for the VAE stages: an untrained micro VAE and 4 random clip latents with their statistics."""
    import torch
    from safetensors.torch import save_file

    from effivmt.backbone.micro import build_micro_components

    vae = build_micro_components(0)["vae"]
    vae.save_pretrained(str(out / "vae-clips" / "model"))
    raw = torch.randn(4, 16, 9, 8, 8)
    stats = {"raw": raw, "mean": raw.mean(dim=(0, 2, 3, 4)), "std": raw.std(dim=(0, 2, 3, 4)), "seeds": torch.arange(4)}
    (out / "cache").mkdir()
    save_file(stats, str(out / "cache" / "latents.safetensors"))


def vae_stages_done(out, monkeypatch) -> None:
    """The VAE stages as finished: ``pretrain_micro`` goes straight to the DiT stages on a fake cache."""
    from effivmt.pretrain import run as pretrain

    for stage in ("train_vae", "train_vae_clips", "cache_latents", "train_vae_decoder"):
        monkeypatch.setattr(pretrain, stage, lambda *a: None)
    for name in ("vae", "vae-clips", "cache"):
        pretrain._mark(out, name)


def load_bench(name: str):
    """A script of ``bench/`` as a module (the scripts are not a package; they import their ``common``)."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "bench"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
