"""Every recipe parses against the ``run`` command; the quickstart runs end to end through the real CLI."""

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from effivmt import cli

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
EFFIVMT_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if not p.name.startswith("omnitransfer"))


@pytest.mark.parametrize("recipe", EFFIVMT_RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_validates(recipe):
    parser = cli.build_parser()
    cfg = parser.parse_args(["run", "--config", str(recipe)])
    init = parser.instantiate_classes(cfg)["run"]  # runs every dataclass __post_init__
    assert init["lora"].rank > 0
    assert init["temporal"].sampler.sample is not None


def test_paper_recipes_use_paper_settings():
    for name in ("wan2.1-t2v-1.3b.yaml", "wan2.1-t2v-14b.yaml"):
        cfg = cli.build_parser().parse_args(["run", "--config", str(RECIPES / name)])["run"]
        assert cfg.video.num_frames == 81 and (cfg.video.height, cfg.video.width) == (480, 832)
        assert cfg.lora.rank == 128 and cfg.trainer.precision.startswith("bf16")
        assert cfg.trainer.gradient_checkpointing and cfg.heads.alpha == 1.25


def test_quickstart_end_to_end_and_rerun_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # recipe paths resolve against the recipe file, not the cwd
    out = tmp_path / "run"
    args = [
        "run",
        str(RECIPES / "quickstart.yaml"),
        "--out",
        str(out),
        "--spatial.max_steps",
        "6",
        "--temporal.max_steps",
        "6",
        "--spatial.checkpoint_every",
        "3",
        "--temporal.checkpoint_every",
        "3",
        "--generate.steps",
        "3",
        "--trainer.progress_bar",
        "false",
        # the suite runs on the random tiny model (tests/conftest.py), which has no head structure: every head
        # scores ~1 on both templates and alpha 1.25 would call all of them temporal
        "--heads.alpha",
        "1.0",
        "--spatial.log_every",
        "2",
        "--temporal.log_every",
        "2",
    ]
    assert cli.main(args) == 0
    heads = json.loads((out / "heads.json").read_text())
    assert {"alpha", "layers", "heads", "labels", "scores", "clip", "timesteps"} <= heads.keys()
    assert (heads["layers"], heads["heads"]) == (2, 4)
    assert (out / "heads.png").stat().st_size > 0
    for name in ("spatial", "temporal"):
        assert (out / "adapters" / name / "adapter_model.safetensors").exists()
        assert (out / "checkpoints" / name / "last.ckpt").exists()
        assert list((out / "logs" / name).glob("events.out.tfevents.*"))
    with safe_open(str(out / "adapters" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert all(k.startswith("transformer.blocks.") for k in f.keys())
    # issue 12 item 9: ComfyUI reads the original Wan layout only ("lora key not loaded" for transformer.* keys)
    with safe_open(str(out / "adapters" / "comfyui_lora.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("diffusion_model.blocks.") for k in keys)
    assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in keys} >= {"lora_down.weight", "lora_up.weight"}
    assert any(k.endswith(".alpha") for k in keys)
    # one default: `export --merge` folds in the scales the run generated with, recorded in run.json
    assert json.loads((out / "run.json").read_text())["adapter_scales"] == {"spatial": 0.0, "temporal": 1.0}
    assert cli.main(["export", str(out), "--merge", "--out", str(tmp_path / "merged.safetensors")]) == 0
    with (
        safe_open(str(tmp_path / "merged.safetensors"), "pt") as a,
        safe_open(str(out / "adapters" / "pytorch_lora_weights.safetensors"), "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys()) and all(a.get_tensor(k).equal(b.get_tensor(k)) for k in a.keys())
    samples = list((out / "samples").glob("*.mp4"))
    assert len(samples) == 1 and samples[0].stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert "clip: " in run["config"] and run["versions"]["torch"]
    stages = run["stages"]
    for name in ("heads", "spatial", "temporal", "export", "generate"):
        assert stages[name]["status"] == "done" and stages[name]["wall_s"] >= 0 and stages[name]["peak_rss_mb"] > 0
    _assert_tensorboard(out / "logs")
    summary = capsys.readouterr().out
    assert "spatial /" in summary and "tensorboard --logdir" in summary

    assert cli.main(args) == 0
    rerun = json.loads((out / "run.json").read_text())["stages"]
    assert all(rerun[n]["wall_s"] == stages[n]["wall_s"] for n in ("heads", "spatial", "temporal", "generate"))
    assert not list(out.rglob(".*.tmp")) and not [p for p in out.rglob(".*") if p.name.startswith(".")]


def _assert_tensorboard(logs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(run):
        acc = EventAccumulator(str(logs / run), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        return acc.Tags()

    assert "heads/map" in tags("heads")["images"]
    for stage in ("spatial", "temporal"):
        t = tags(stage)
        assert {"train/loss_denoise", "train/loss", "train/grad_norm", "lr-AdamW"} <= set(t["scalars"]), t
        assert "samples/reconstruction" in t["images"]
    assert "train/loss_motion" in tags("temporal")["scalars"]
    assert "samples/generated" in tags("generate")["images"]
