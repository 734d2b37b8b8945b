"""``effivmt run RECIPE --manifest clips.jsonl --out ROOT [--shard i/n]``: many clips, skips, recorded failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers import SAMPLE_CLIP, write_heads_recipe

from effivmt import cli
from effivmt.vmt.many_clips import is_finished, parse_shard, read_manifest

CLIP = SAMPLE_CLIP


@pytest.fixture
def recipe(tmp_path) -> Path:
    """Heads only: a row takes a second or two."""
    return write_heads_recipe(tmp_path / "recipe.yaml")


def write_manifest(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def failures(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "failures.jsonl").read_text().splitlines()]


def test_manifest_runs_each_row_skips_finished_ones_and_records_failures(tmp_path, recipe, capsys, caplog):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "shapes.mp4").write_bytes(CLIP.read_bytes())
    manifest = write_manifest(
        tmp_path / "clips.jsonl",
        [
            {"clip": "clips/shapes.mp4", "id": "strict", "clip_prompt": "shapes", "overrides": {"heads.alpha": 2.0}},
            {"clip": "clips/missing.mp4", "prompt": "a cat"},
            {"clip": str(CLIP), "overrides": {"heads": {"timesteps": [400]}}},
        ],
    )
    root = tmp_path / "root"
    argv = ["run", str(recipe), "--manifest", str(manifest), "--out", str(root)]
    caplog.set_level(logging.INFO, logger="effivmt")
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"effivmt: error: 1 of 3 manifest rows failed (missing) (reasons in {root / 'failures.jsonl'})"
    )

    strict = json.loads((root / "strict" / "heads.json").read_text())
    assert strict["alpha"] == 2.0  # the row's dotted override
    assert json.loads((root / "moving-shapes" / "heads.json").read_text())["timesteps"] == [400]  # nested override
    assert "clip_prompt: shapes" in json.loads((root / "strict" / "run.json").read_text())["config"]
    assert not (root / "missing").exists()
    [failure] = failures(root)
    assert failure["id"] == "missing" and failure["index"] == 1 and failure["type"] == "VideoError"
    assert failure["error"].startswith(f"clip not found: {tmp_path / 'clips' / 'missing.mp4'}")

    stamp = (root / "strict" / "run.json").stat().st_mtime_ns
    caplog.clear()
    assert cli.main(argv) == 2  # the missing clip still fails; the other two are not run again
    assert caplog.text.count("finished earlier, skipped") == 2
    assert (root / "strict" / "run.json").stat().st_mtime_ns == stamp
    assert len(failures(root)) == 2


def test_shards_split_rows_and_bad_rows_fail_alone(tmp_path, recipe, capsys):
    """Rows that fail before any model is loaded, so every shard's choice is visible in failures.jsonl quickly."""
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            {"clip": "a.mp4"},  # 0: missing clip
            "{not json",  # 1: malformed line
            {"clip": "c.mp4", "overrides": {"lora": {"rnak": 3}}},  # 2: unknown override key
            {"clip": "d.mp4", "promt": "typo"},  # 3: unknown row field
            {"clip": "a.mp4", "overrides": {"lora.rank": 0}},  # 4: out of range; repeated id a -> a-4
        ],
    )
    root = tmp_path / "root"
    for shard in ("0/2", "1/2"):
        assert cli.main(["run", str(recipe), "--manifest", str(manifest), "--out", str(root), "--shard", shard]) == 2
    capsys.readouterr()
    got = {f["index"]: (f["id"], f["shard"], f["error"]) for f in failures(root)}
    assert got == {
        0: (
            "a",
            "0/2",
            f"clip not found: {tmp_path / 'a.mp4'} (check the path (relative paths start at the current folder))",
        ),
        2: ("c", "0/2", "unknown key 'lora.rnak' (did you mean 'lora.rank'?)"),
        4: ("a-4", "0/2", "lora.rank must be > 0, got 0 (a typical rank is 16 to 128)"),
        1: ("row1", "1/2", "line 2 is not JSON (Expecting property name enclosed in double quotes)"),
        3: ("d", "1/2", "line 4: unknown field 'promt' (did you mean 'prompt'?)"),
    }


@pytest.mark.parametrize("bad", ["2/2", "1-2", "x"])
def test_bad_shard_is_one_line(tmp_path, recipe, capsys, bad):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"clip": "a.mp4"}])
    argv = ["run", str(recipe), "--manifest", str(manifest), "--out", str(tmp_path / "r"), "--shard", bad]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"effivmt: error: --shard must be i/n with 0 <= i < n, got {bad!r} "
        "(e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
    )


def test_parse_shard_and_finished_rule(tmp_path):
    assert parse_shard(None) == (0, 1) and parse_shard("3/8") == (3, 8)
    run = tmp_path / "run"
    run.mkdir()
    assert not is_finished(run, ["heads"])
    stages = {"heads": {"status": "done"}, "spatial": {"status": "done"}, "temporal": {"status": "failed"}}
    (run / "run.json").write_text(json.dumps({"stages": stages}))
    assert is_finished(run, ["heads", "spatial"]) and is_finished(run, ["heads", "export"])
    assert not is_finished(run, ["heads", "spatial", "temporal"])


def test_ids_are_unique_over_the_whole_manifest(tmp_path):
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"clip": "x/a.mp4"}, {"clip": "y/a.mp4"}, {"clip": "b.mp4", "id": "my run/1"}]
    )
    assert [r.id for r in read_manifest(manifest)] == ["a", "a-1", "my_run_1"]
