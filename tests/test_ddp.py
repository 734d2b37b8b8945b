"""Two CPU processes (gloo) train the temporal stage through Lightning's DDP and end with the same adapter.

Lightning's ``strategy="ddp"`` starts rank 1 by re-running the script, which does not suit a pytest process,
so the training runs in a small standalone script (our real ``fit_stage``/``build_trainer``) launched with
``python script.py``; each rank writes its adapter tensors and the test compares them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    '''
    """Rank 0 is started by the test; Lightning re-runs this file as rank 1 (LOCAL_RANK=1)."""
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from effivmt.training.args import TrainerArgs
    from effivmt.vmt.plan import TemporalArgs
    from effivmt.backbone import load_wan
    from effivmt.data.cache import build_clip_cache
    from effivmt.data.samplers import UniformStride
    from effivmt.data.synthetic import moving_shapes
    from effivmt.lora import HeadGroupLoraConfig, adapter_state_dict, add_head_group_adapter
    from effivmt.vmt.temporal import TemporalLoRAModule
    from effivmt.training.strategies import global_rank
    from effivmt.data.cache import ClipDataModule
    from effivmt.training.trainer import fit_stage

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    components = load_wan(None, seed=0)
    video = moving_shapes(9, 32, 32, seed=1).frames.permute(3, 0, 1, 2).float() / 127.5 - 1
    cache = build_clip_cache(components, video, "a ball moving right")
    labels = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "spatial", "temporal", "spatial"]]
    transformer = components.transformer
    torch.manual_seed(0)
    add_head_group_adapter(transformer, "temporal", labels, "temporal", HeadGroupLoraConfig(rank=4, alpha=4))
    save_file(adapter_state_dict(transformer, "temporal"), str(out / "init.safetensors"))
    sampler = UniformStride(5)
    module = TemporalLoRAModule(transformer, sampler=sampler, active_adapters=["temporal"], seed=0,
                                optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    stage = TemporalArgs(max_steps=3, checkpoint_every=2, log_every=1, sampler=sampler)
    trainer = TrainerArgs(accelerator="cpu", devices=2, strategy="ddp", progress_bar=False)
    fit_stage("temporal", module, ClipDataModule(cache, stage.max_steps), stage, trainer, out)
    rank = global_rank()
    save_file(adapter_state_dict(transformer, "temporal"), str(out / f"rank{rank}.safetensors"))
    print(f"rank {rank} step {module.global_step} world {module.trainer.world_size}")
    '''
)


def test_two_cpu_ranks_end_with_identical_adapters(tmp_path):
    """Bitwise equality (``torch.equal``): DDP all-reduces the gradients, so both ranks apply the same update.

    Each rank draws its own frames and noise (the step generator is seeded by rank), so equal weights are not
    an accident of equal data; the weights must also have moved away from their (shared) initial values.
    """
    script = tmp_path / "ddp_temporal.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world 2" in result.stdout, result.stdout
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    init = load_file(str(tmp_path / "init.safetensors"))
    assert ranks[0].keys() == ranks[1].keys() == init.keys() and ranks[0]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    moved = [k for k in init if "lora_B" in k and not torch.equal(init[k], ranks[0][k])]
    assert moved, "training did not change the temporal adapter"
    assert (tmp_path / "checkpoints" / "temporal" / "last.ckpt").exists()  # written once, by rank 0


def test_effivmt_run_with_ddp_on_two_cpu_processes(tmp_path):
    """The whole command under ``strategy: ddp``: Lightning re-runs it as rank 1 when the spatial stage starts.

    Rank 1 skips the heads stage (rank 0 wrote heads.json); its transformer must still have the same modules and
    buffers as rank 0's, or DDP's buffer broadcast waits forever (it did, before ``run_stages`` installed the
    attention processors up front). Rank 0 alone writes run.json and the adapters.
    """
    import json

    import yaml

    clip = Path(__file__).resolve().parents[1] / "data" / "clips" / "moving-shapes.mp4"
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "clip": str(clip),
                "clip_prompt": "a red ball",
                "stages": ["heads", "spatial", "temporal"],
                "video": {"num_frames": 9, "height": 32, "width": 32, "fps": None},
                "heads": {"alpha": 1.0, "timesteps": [500], "chunk_size": 64},
                "lora": {"rank": 4, "alpha": 4},
                "spatial": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
                "temporal": {
                    "max_steps": 2,
                    "checkpoint_every": 2,
                    "log_every": 1,
                    "sampler": {"class_path": "effivmt.data.samplers.UniformStride", "init_args": {"num_frames": 5}},
                },
                "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "progress_bar": False},
            }
        )
    )
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, "-m", "effivmt", "run", str(recipe), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert all(stages[name]["status"] == "done" for name in ("heads", "spatial", "temporal"))
    for name in ("spatial", "temporal"):
        assert (out / "adapters" / name / "adapter_model.safetensors").exists()
    assert not [p.name for p in out.rglob(".*")]  # no temporary names left by concurrent writers


@pytest.mark.parametrize("name", ["ddp", "auto", "ddp_spawn"])
def test_lightning_strategy_names_pass_through(name):
    from effivmt.training.args import TrainerArgs
    from effivmt.training.strategies import build_strategy

    assert build_strategy(TrainerArgs(accelerator="cpu", devices=2, strategy=name)) == name


def test_fsdp_wraps_one_unit_per_wan_block():
    """Only the construction is checked here: Lightning runs FSDP on CUDA only, and this CI has no GPU."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from lightning.pytorch.strategies import FSDPStrategy

    from effivmt.training.args import TrainerArgs
    from effivmt.training.strategies import build_strategy

    strategy = build_strategy(TrainerArgs(accelerator="gpu", devices=1, strategy="fsdp", precision="bf16-mixed"))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {WanTransformerBlock}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"strategy": "fdsp"}, "did you mean 'fsdp'"),
        ({"strategy": "fsdp", "accelerator": "cpu"}, "needs GPUs"),
        ({"strategy": "fsdp", "accelerator": "gpu", "devices": 4}, "over 4 processes shards the adapter weights"),
        ({"strategy": "deepspeed_stage_3", "accelerator": "gpu"}, "needs DeepSpeed, which is not installed"),
    ],
    ids=["typo", "fsdp-on-cpu", "fsdp-multi-gpu", "deepspeed-missing"],
)
def test_strategies_that_cannot_work_are_refused_up_front(args, match):
    import importlib.util

    from effivmt.errors import ConfigError
    from effivmt.training.args import TrainerArgs
    from effivmt.training.strategies import build_strategy

    if "deepspeed" in args["strategy"] and importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(ConfigError, match=match):
        build_strategy(TrainerArgs(**args))
