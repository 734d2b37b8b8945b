"""A run folder that was moved (or copied to another disk) and then resumed must keep writing ``last.ckpt``.

Lightning's ModelCheckpoint remembers the absolute path of the last checkpoint it wrote; in a moved folder that
path differs, so it wrote ``last-v1.ckpt`` beside the old ``last.ckpt``, and the next resume read the stale
``last.ckpt`` and silently redid the steps since (seen when the micro Wan's VAE stage was resumed in a copy)."""

from __future__ import annotations

import shutil

import lightning as L
import torch

from effivmt.training.args import StageArgs, TrainerArgs
from effivmt.training.trainer import build_trainer


class _Line(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(out, steps: int, resume=None) -> None:
    stage = StageArgs(max_steps=steps, checkpoint_every=1, log_every=1)
    trainer = build_trainer(TrainerArgs(accelerator="cpu", devices=1, progress_bar=False), stage, out, "stage")
    data = torch.utils.data.DataLoader(torch.ones(64, 1), batch_size=1)
    trainer.fit(_Line(), data, ckpt_path=resume)


def test_a_moved_run_folder_keeps_writing_last_ckpt(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    _fit(first, 2)
    shutil.copytree(first, moved)
    last = moved / "checkpoints" / "stage" / "last.ckpt"
    _fit(moved, 4, resume=str(last))
    files = sorted(p.name for p in last.parent.glob("last*.ckpt"))
    assert files == ["last.ckpt"], files
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
