"""Faults during training: a SIGKILL mid-stage resumes to the same adapters; a NaN stops the stage cleanly.

All runs use the tiny embedded Wan at 32x32, 9 frames, and go through the real CLI (``cli.main`` in-process,
``python -m effivmt`` for the run that gets killed).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from effivmt import cli

CLIP = Path(__file__).resolve().parents[1] / "data" / "clips" / "moving-shapes.mp4"


def tiny_recipe(tmp_path: Path, spatial_steps: int = 24, temporal_steps: int = 8, every: int = 4, **extra) -> Path:
    """A quickstart-like recipe that trains in seconds: 9 frames of 32x32, rank 4, one head timestep."""
    recipe = {
        "clip": str(CLIP),
        "clip_prompt": "a red ball and a blue box",
        "prompt": "a cat",
        "seed": 0,
        "video": {"num_frames": 9, "height": 32, "width": 32, "fps": None},
        "heads": {"alpha": 1.0, "timesteps": [500], "chunk_size": 64},
        "lora": {"rank": 4, "alpha": 4},
        "spatial": {
            "max_steps": spatial_steps,
            "checkpoint_every": every,
            "log_every": 1,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
        },
        "temporal": {
            "max_steps": temporal_steps,
            "checkpoint_every": every,
            "log_every": 1,
            "sampler": {"class_path": "effivmt.data.samplers.UniformStride", "init_args": {"num_frames": 5}},
        },
        "stages": ["heads", "spatial", "temporal"],
        "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def adapters(out: Path) -> dict[str, torch.Tensor]:
    """Every adapter tensor of a run folder, keyed ``<stage>/<tensor key>``."""
    tensors = {}
    for stage in ("spatial", "temporal"):
        for key, value in load_file(str(out / "adapters" / stage / "adapter_model.safetensors")).items():
            tensors[f"{stage}/{key}"] = value
    return tensors


def test_sigkill_mid_stage_then_rerun_gives_the_same_adapters(tmp_path, caplog):
    """Kill ``effivmt run`` once ``checkpoints/spatial/last.ckpt`` exists, re-run, compare with an uninterrupted run.

    Exact equality (``torch.equal``), not a tolerance: the per-step generator is seeded by (seed, step, rank),
    Lightning restores the optimizer state and step, and each adapter's initial values come from a seed of
    their own, so the resumed run replays the uninterrupted one bit for bit (one thread in both processes).
    """
    recipe = tiny_recipe(tmp_path)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "effivmt", "run", str(recipe), "--out", str(resumed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = resumed / "checkpoints" / "spatial" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate(timeout=30)[1].decode(errors="replace")
    assert last.exists(), f"no checkpoint before the kill; stderr:\n{stderr[-2000:]}"
    assert not (resumed / "adapters" / "spatial").exists(), "the run finished the stage before it was killed"
    assert not list(resumed.rglob(".*.tmp")) and not list(resumed.rglob(".last.ckpt.*"))

    caplog.set_level(logging.INFO, logger="effivmt")
    assert cli.main(["run", str(recipe), "--out", str(resumed)]) == 0
    assert "spatial: resuming from" in caplog.text
    assert cli.main(["run", str(recipe), "--out", str(reference)]) == 0

    got, want = adapters(resumed), adapters(reference)
    assert got.keys() == want.keys() and any(k.startswith("temporal/") for k in got)
    for key in want:
        assert torch.equal(got[key], want[key]), f"{key} differs after kill and resume"


def test_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """The 6th loss is NaN: the stage stops before its backward, so step 4's checkpoint is the last one."""
    import effivmt.vmt.spatial as spatial_module

    real, calls = spatial_module.denoising_loss, []

    def sixth_is_nan(pred, target):
        calls.append(1)
        loss = real(pred, target)
        return loss * float("nan") if len(calls) == 6 else loss

    monkeypatch.setattr(spatial_module, "denoising_loss", sixth_is_nan)
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, spatial_steps=10, every=2, stages=["heads", "spatial"])
    assert cli.main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    last = out / "checkpoints" / "spatial" / "last.ckpt"
    assert err == (
        f"effivmt: error: spatial: the loss became nan at step 6; stage stopped, the last good checkpoint "
        f"is kept: {last} (lower spatial.optimizer.init_args.lr; a re-run resumes with the checkpoint's "
        f"optimizer state, so delete {last.parent} to restart the stage with the new lr)"
    )
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (out / "adapters" / "spatial").exists()


class _InfOnSecondStep(torch.optim.SGD):
    """SGD whose second update overflows every weight to inf (what a far too large lr does, made certain)."""

    def __init__(self, params) -> None:
        super().__init__(params, lr=0.1)
        self.updates = 0

    def step(self, closure=None):
        loss = super().step(closure)
        self.updates += 1
        if self.updates == 2:
            with torch.no_grad():
                for group in self.param_groups:
                    for param in group["params"]:
                        param.fill_(float("inf"))
        return loss


def test_diverging_weights_are_caught_before_they_are_checkpointed(tmp_path):
    """The guard runs before ModelCheckpoint (Lightning calls checkpoint callbacks last): step 2 is never saved."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from effivmt.errors import EffivmtError
    from effivmt.training.strategies import FiniteGuard

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return _InfOnSecondStep(self.parameters())

    folder = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(folder, save_last=True, every_n_train_steps=1), FiniteGuard("spatial", folder)],
    )
    data = torch.utils.data.DataLoader(torch.ones(8, 2), batch_size=1)
    with pytest.raises(EffivmtError, match=r"spatial: adapter weight layer.weight became non-finite at step 2"):
        trainer.fit(Tiny(), train_dataloaders=data)
    checkpoint = torch.load(folder / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A failed rename (a full disk) leaves neither a partial ``last.ckpt`` nor a temporary file."""
    from effivmt.errors import EffivmtError
    from effivmt.training.strategies import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    assert torch.load(target)["step"] == 1

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(EffivmtError, match="No space left on device"):
        io.save_checkpoint({"step": 2, "w": torch.ones(3)}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1 and sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
