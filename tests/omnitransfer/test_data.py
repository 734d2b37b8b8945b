import json

import pytest
import torch

from effivmt.errors import ConfigError
from effivmt.omnitransfer.data import PairedVideoDataModule, collate_pairs, make_synthetic_pairs, read_manifest


def test_shipped_manifest_has_one_pair_per_task(synthetic_manifest):
    rows = read_manifest(synthetic_manifest)
    assert sorted(r["task"][0] for r in rows) == ["camera", "effect", "id", "motion", "style"]
    assert all(r["target"].is_file() and all(p.is_file() for p in r["reference"]) for r in rows)


def test_datamodule_batches(synthetic_manifest):
    dm = PairedVideoDataModule(
        synthetic_manifest, num_frames=9, height=32, width=32, fps=None, batch_size=2, shuffle=False
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].shape == (2, 3, 9, 32, 32)
    assert len(batch["references"]) == 1 and batch["references"][0].shape == (2, 3, 9, 32, 32)
    assert batch["tasks"] == [("motion",), ("camera",)]
    assert batch["target"].min() >= -1 and batch["target"].max() <= 1


def test_make_synthetic_pairs_is_deterministic(tmp_path):
    a = make_synthetic_pairs(tmp_path / "a", num_frames=5, height=16, width=16)
    b = make_synthetic_pairs(tmp_path / "b", num_frames=5, height=16, width=16)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a" / "id-reference.mp4").read_bytes() == (tmp_path / "b" / "id-reference.mp4").read_bytes()


def test_manifest_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    with pytest.raises(ConfigError, match="does not exist"):
        read_manifest(path)
    path.write_text('{"reference": "a.mp4", "target": "b.mp4", "prompt": "p"}\n')
    with pytest.raises(ConfigError, match="m.jsonl:1: missing task"):
        read_manifest(path)
    path.write_text(json.dumps({"reference": "a.mp4", "target": "b.mp4", "prompt": "p", "task": "id+motion"}))
    with pytest.raises(ConfigError, match="2 task"):
        read_manifest(path)
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_manifest(path)


def test_collate_combination_rows():
    item = {
        "references": [torch.zeros(3, 1, 16, 16), torch.ones(3, 1, 16, 16)],
        "target": torch.zeros(3, 1, 16, 16),
        "prompt": "p",
        "tasks": ("id", "motion"),
        "reference_prompt": "",
    }
    batch = collate_pairs([item, item])
    assert [r.shape[0] for r in batch["references"]] == [2, 2] and batch["references"][1].min() == 1
    with pytest.raises(ConfigError, match="different numbers of references"):
        collate_pairs([item, {**item, "references": item["references"][:1], "tasks": ("id",)}])


def test_manifest_keeps_only_the_rows_of_the_tasks_asked_for(synthetic_manifest):
    """``data.stage_tasks`` reads a manifest through this filter: a row's task must equal one of those asked for."""
    rows = read_manifest(synthetic_manifest, ["motion", "style"])
    assert [r["task"] for r in rows] == [("motion",), ("style",)]
    assert len(read_manifest(synthetic_manifest)) == 5
    with pytest.raises(ConfigError, match=r"no rows of tasks \['id\+motion'\]"):
        read_manifest(synthetic_manifest, ["id+motion"])  # id+motion is its own task, not id or motion
    dm = PairedVideoDataModule(synthetic_manifest, num_frames=9, height=32, width=32, fps=None, tasks=["camera"])
    assert [b["tasks"] for b in dm.train_dataloader()] == [[("camera",)]]
