"""Paired reference/target clips for OmniTransfer training: a JSONL manifest, a Dataset, a LightningDataModule.

Manifest rows (one JSON object a line; paths relative to the manifest's folder)::

    {"reference": "ref.mp4", "target": "tgt.mp4", "prompt": "a dancer ...", "task": "motion"}
    {"reference": ["face.mp4", "dance.mp4"], "target": "t.mp4", "prompt": "...", "task": "id+motion"}
    {"reference": "r.mp4", "target": "t.mp4", "prompt": "...", "task": "style", "reference_prompt": "an oil painting"}

``task`` names one task per reference (``+``-joined); ``reference_prompt`` (optional) is the reference branch's
own text, otherwise the task template. :func:`make_synthetic_pairs` writes a tiny set of moving-shape pairs
(one per task) for tests and the CPU recipe; ``python -m effivmt.omnitransfer.data DIR`` regenerates it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from effivmt.errors import ConfigError
from effivmt.io import write_text_atomic
from effivmt.omnitransfer.tasks import parse_tasks


def read_manifest(path: str | Path, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a manifest with absolute paths, ``reference`` as a list and ``task`` as a tuple.

    Args:
        path: the JSONL manifest.
        tasks: keep only rows of these tasks (``"motion"``, ``"id+motion"``...; a row's task must match one
            exactly); ``None`` keeps every row.

    Raises:
        ConfigError: a missing file, malformed JSON, a missing field, a task/reference count mismatch, or no row
            (of ``tasks``).
    """
    path = Path(path)
    wanted = None if tasks is None else {parse_tasks(t) for t in tasks}
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist", "write a JSONL file or use make_synthetic_pairs()")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
        missing = [k for k in ("reference", "target", "prompt", "task") if k not in row]
        if missing:
            hint = "each row needs reference, target, prompt, task"
            raise ConfigError(f"{path}:{lineno}: missing {', '.join(missing)}", hint)
        refs = row["reference"] if isinstance(row["reference"], list) else [row["reference"]]
        tasks_of_row = parse_tasks(row["task"])
        if len(tasks_of_row) != len(refs):
            raise ConfigError(
                f"{path}:{lineno}: {len(tasks_of_row)} task(s) for {len(refs)} reference(s)",
                "give one reference video per task",
            )
        if wanted is not None and tasks_of_row not in wanted:
            continue
        rows.append(
            {
                "reference": [path.parent / r for r in refs],
                "target": path.parent / row["target"],
                "prompt": row["prompt"],
                "task": tasks_of_row,
                "reference_prompt": row.get("reference_prompt", ""),
            }
        )
    if not rows and wanted is not None:
        raise ConfigError(f"manifest {path} has no rows of tasks {list(tasks)}", "check the task names or the manifest")
    if not rows:
        raise ConfigError(f"manifest {path} has no rows")
    return rows


class PairedVideoDataset(Dataset):
    """Loads each row's reference(s) and target as float ``(3, F, H, W)`` in ``[-1, 1]`` at one size."""

    def __init__(
        self,
        manifest: str | Path,
        num_frames: int,
        height: int,
        width: int,
        fps: float | None = None,
        tasks: Sequence[str] | None = None,
    ) -> None:
        self.rows = read_manifest(manifest, tasks)
        self.clip_args = dict(num_frames=num_frames, height=height, width=width, fps=fps, frame_mode="uniform")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from effivmt.data.video import load_clip

        row = self.rows[index]
        return {
            "references": [load_clip(r, **self.clip_args)[0] for r in row["reference"]],
            "target": load_clip(row["target"], **self.clip_args)[0],
            "prompt": row["prompt"],
            "tasks": row["task"],
            "reference_prompt": row["reference_prompt"],
        }


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items: ``references`` becomes a list over slots of ``(B, 3, F, H, W)``; strings stay lists."""
    slots = {len(it["references"]) for it in items}
    if len(slots) != 1:
        raise ConfigError("a batch mixes rows with different numbers of references", "use batch_size 1 for such rows")
    return {
        "references": [torch.stack([it["references"][s] for it in items]) for s in range(slots.pop())],
        "target": torch.stack([it["target"] for it in items]),
        "prompt": [it["prompt"] for it in items],
        "tasks": [it["tasks"] for it in items],
        "reference_prompt": [it["reference_prompt"] for it in items],
    }


class PairedVideoDataModule(L.LightningDataModule):
    """Serves paired batches from a manifest; every clip is resized to ``height x width`` and ``num_frames``.

    Args:
        manifest: JSONL manifest (see the module docstring).
        num_frames: frames per clip (``1 + 4k``; 81 in the paper's Wan 2.1 setting).
        height: clip height (multiple of 16).
        width: clip width (multiple of 16).
        fps: resample clips to this rate first (``None``: keep).
        batch_size: pairs per step (the paper uses 16 over its GPUs).
        num_workers: DataLoader workers.
        shuffle: shuffle rows every epoch.
        tasks: serve only the rows of these tasks (:func:`read_manifest`); ``None``: every row.
    """

    def __init__(
        self,
        manifest: Path,
        num_frames: int = 81,
        height: int = 480,
        width: int = 832,
        fps: float | None = 16.0,
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        tasks: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.manifest, self.clip = Path(manifest), (num_frames, height, width, fps)
        self.tasks = None if tasks is None else list(tasks)
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle
        self.dataset: PairedVideoDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = PairedVideoDataset(self.manifest, *self.clip, tasks=self.tasks)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
        )


#: (task, reference kwargs, target kwargs, prompt) of the synthetic pairs; trajectories depend only on the seed,
#: so a "flat" and a "gradient" render of one seed move identically, and one seed with two motions looks alike.
_SYNTHETIC = (
    (
        "motion",
        dict(motion="circular", background="gradient"),
        dict(motion="circular", background="flat"),
        "a red circle moves in a circle",
    ),
    (
        "camera",
        dict(motion="linear", background="gradient"),
        dict(motion="linear", background="flat"),
        "the camera moves along a line",
    ),
    (
        "effect",
        dict(motion="zigzag", background="flat"),
        dict(motion="zigzag", background="gradient"),
        "a green square moves up and down",
    ),
    ("id", dict(motion="static"), dict(motion="linear"), "the red circle moves across the scene"),
    (
        "style",
        dict(motion="linear", background="gradient"),
        dict(motion="circular", background="gradient"),
        "a circle moves in a circle in the same style",
    ),
)


def make_synthetic_pairs(
    folder: str | Path, num_frames: int = 9, height: int = 32, width: int = 32, seed: int = 0
) -> Path:
    """Write one moving-shapes pair per task plus ``manifest.jsonl`` into ``folder``; return the manifest path."""
    from effivmt.data.synthetic import moving_shapes
    from effivmt.data.video import write_video

    folder = Path(folder)
    lines = []
    for k, (task, ref_kw, tgt_kw, prompt) in enumerate(_SYNTHETIC):
        common = dict(num_frames=num_frames, height=height, width=width, seed=seed + k, speed=2.0)
        write_video(folder / f"{task}-reference.mp4", moving_shapes(**common, **ref_kw).frames, fps=8.0)
        write_video(folder / f"{task}-target.mp4", moving_shapes(**common, **tgt_kw).frames, fps=8.0)
        lines.append(
            json.dumps(
                {"reference": f"{task}-reference.mp4", "target": f"{task}-target.mp4", "prompt": prompt, "task": task}
            )
        )
    return write_text_atomic(folder / "manifest.jsonl", "\n".join(lines) + "\n")


if __name__ == "__main__":  # pragma: no cover - regenerates data/omnitransfer
    print(make_synthetic_pairs(sys.argv[1] if len(sys.argv) > 1 else "data/omnitransfer"))
