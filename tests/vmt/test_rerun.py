"""Re-running into a run folder (issue 12, item 7): other inputs are refused in one line, a busy folder is locked."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest
import yaml
from helpers import SAMPLE_CLIP

from effivmt import cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished heads + spatial run (3 steps, rank 2) and its recipe."""
    root = tmp_path_factory.mktemp("rerun")
    recipe = {
        "clip": str(SAMPLE_CLIP),
        "clip_prompt": "a red ball",
        "video": {"num_frames": 9, "height": 32, "width": 32, "fps": None},
        "heads": {"alpha": 1.0, "timesteps": [500], "chunk_size": 64},
        "lora": {"rank": 2, "alpha": 2},
        "spatial": {"max_steps": 3, "checkpoint_every": 3, "log_every": 1},
        "temporal": {"sampler": {"class_path": "effivmt.data.samplers.UniformStride", "init_args": {"num_frames": 5}}},
        "stages": ["heads", "spatial"],
        "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = root / "run"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    return path, out


def _refused(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effivmt: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("flags", "change"),
    [
        (["--lora.rank", "4"], "lora.rank: 2 -> 4"),
        (["--lora.alpha", "8"], "lora.alpha: 2.0 -> 8.0"),
        (["--model.seed", "3"], "model.seed: 0 -> 3"),
        (["--clip", "OTHER"], "clip: "),
    ],
    ids=["rank", "alpha", "model", "clip"],
)
def test_rerun_with_other_inputs_is_refused_and_run_json_kept(finished, tmp_path, capsys, flags, change):
    """Before, such a re-run retrained nothing, exited 0 and rewrote run.json to claim the new inputs."""
    recipe, out = finished
    if "OTHER" in flags:
        other = tmp_path / "other.mp4"
        shutil.copy(SAMPLE_CLIP, other)
        with open(other, "ab") as f:
            f.write(b"\0")  # same frames, other bytes: another file as far as the run can tell
        flags = ["--clip", str(other)]
    before = (out / "run.json").read_text()
    err = _refused(capsys, ["run", str(recipe), "--out", str(out), *flags])
    assert f"holds a heads stage made with other inputs ({change}" in err or f"({change}" in err, err
    assert "choose another --out" in err
    assert (out / "run.json").read_text() == before


def test_rerun_with_the_same_inputs_or_other_logging_reuses_everything(finished, capsys):
    recipe, out = finished
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert (
        cli.main(["run", str(recipe), "--out", str(out), "--spatial.log_every", "2", "--trainer.progress_bar", "true"])
        == 0
    )
    again = json.loads((out / "run.json").read_text())["stages"]
    assert again["spatial"]["wall_s"] == stages["spatial"]["wall_s"]  # not retrained


def test_a_folder_in_use_is_refused(finished, capsys):
    """Two runs into one folder at once: the second stops at once instead of writing beside the first."""
    recipe, out = finished
    with open(out / "run.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("4242\n")
        held.flush()
        err = _refused(capsys, ["run", str(recipe), "--out", str(out)])
        fcntl.flock(held, fcntl.LOCK_UN)
    assert "is in use by another effivmt run" in err
    assert cli.main(["run", str(recipe), "--out", str(out)]) == 0  # free again
