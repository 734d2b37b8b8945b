"""The bad-input matrix of ``effivmt run``/``generate``: one clear line on stderr, exit code 2, nothing half-written.

Each row runs the real CLI in-process (``cli.main``) and checks the exact line the user sees; one row also runs
``python -m effivmt`` to check that no traceback reaches the terminal without ``--debug``. Rows that fail on
input check that ``--out`` was not even created; rows that fail while writing check that no temporary file is
left behind.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SAMPLE_CLIP, write_heads_recipe

from effivmt import cli

CLIP = SAMPLE_CLIP


@pytest.fixture
def recipe(tmp_path) -> Path:
    """Heads only: every row that gets past the input is quick."""
    return write_heads_recipe(tmp_path / "tiny.yaml", clip=str(CLIP), prompt="a cat")


def fails(capsys, argv: list[str]) -> str:
    """Run the CLI, assert exit code 2 and a single ``effivmt: error:`` line; return that line."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("effivmt: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_clip(tmp_path, recipe, capsys):
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(recipe), "--out", str(out), "--clip", str(tmp_path / "nope.mp4")])
    assert err == (
        f"effivmt: error: clip not found: {tmp_path / 'nope.mp4'} "
        "(check the path (relative paths start at the current folder))"
    )
    assert not out.exists()


def test_corrupt_clip_prints_one_line_and_no_traceback(tmp_path, recipe):
    """Through a real process: FFmpeg's and decord's own complaints (printed to fd 2) must not reach the user."""
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(CLIP.read_bytes()[:3000])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "effivmt", "run", str(recipe), "--out", str(out), "--clip", str(bad)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"effivmt: error: cannot decode {bad}: Error reading {bad}... "
        "(the file is corrupt or not a video; try playing it or re-encoding it)"
    ]
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path, recipe):
    from effivmt.errors import VideoError

    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="cannot decode"):
        cli.main(["--debug", "run", str(recipe), "--out", str(tmp_path / "out"), "--clip", str(bad)])


def test_clip_with_zero_frames(tmp_path, recipe, capsys):
    """An mp4 closed before any frame was written; the muxer then drops the empty video track altogether.

    decord refuses to open it ("cannot find video stream"); read_video then asks PyAV, which finds no video
    stream, and says "clip has no frames". One line, exit 2, nothing written.
    """
    import av

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode())  # flush: header and trailer, no frame
    assert empty.stat().st_size > 0
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(recipe), "--out", str(out), "--clip", str(empty)])
    assert str(empty) in err and "clip has no frames" in err
    assert not out.exists()


def test_clip_shorter_than_the_sparse_sample(tmp_path, recipe, capsys, shared_clip):
    """car-turn.mp4 has 16 frames: 13 (1 + 4k) are usable, fewer than a 17-frame temporal sample."""
    clip = shared_clip("car-turn.mp4")
    out = tmp_path / "out"
    err = fails(
        capsys,
        [
            "run",
            str(recipe),
            "--out",
            str(out),
            "--clip",
            str(clip),
            "--stages",
            "[heads,temporal]",
            "--video.num_frames",
            "17",
            "--temporal.sampler.init_args.num_frames",
            "17",
        ],
    )
    assert err == (
        "effivmt: error: car-turn.mp4 gives 13 frames: the sampler asks for 17 frames (5 latent) but the "
        "clip has only 4 latent (lower temporal.sampler.init_args.num_frames or use a longer clip)"
    )
    assert not out.exists()
    err = fails(
        capsys,
        [
            "run",
            str(recipe),
            "--out",
            str(out),
            "--clip",
            str(clip),
            "--video.num_frames",
            "17",
            "--video.allow_fewer",
            "false",
        ],
    )
    assert err == (
        "effivmt: error: clip has 16 frames but num_frames=17 (lower num_frames to 13 or fewer, or "
        "resample to a higher fps (or none) so that fewer frames are dropped)"
    )


def test_resolution_not_a_multiple_of_16_is_cropped_and_said(tmp_path, recipe, caplog):
    from effivmt.data.synthetic import moving_shapes
    from effivmt.data.video import write_video

    odd = write_video(tmp_path / "odd.mp4", moving_shapes(9, 40, 56).frames, fps=8)
    caplog.set_level(logging.INFO, logger="effivmt")
    assert cli.main(["run", str(recipe), "--out", str(tmp_path / "out"), "--clip", str(odd)]) == 0
    assert "clip: resized and centre-cropped 40x56 -> 32x32" in caplog.messages
    notes = json.loads((tmp_path / "out" / "run.json").read_text())["stages"]["clip"]["notes"]
    assert notes == ["resized and centre-cropped 40x56 -> 32x32"]


def test_size_not_a_multiple_of_16_is_refused_with_the_nearest(tmp_path, recipe, capsys):
    err = fails(capsys, ["run", str(recipe), "--out", str(tmp_path / "out"), "--video.height", "40"])
    assert err == "effivmt: error: video.height must be a positive multiple of 16, got 40 (use 32 or 48)"


def test_unknown_recipe_key_suggests_the_nearest(tmp_path, recipe, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text(recipe.read_text() + "lora: {rnak: 4}\n")
    out = tmp_path / "out"
    assert fails(capsys, ["run", str(bad), "--out", str(out)]) == (
        "effivmt: error: unknown key 'lora.rnak' (did you mean 'lora.rank'?)"
    )
    assert fails(capsys, ["run", str(recipe), "--out", str(out), "--spatial.max_stpes", "3"]) == (
        "effivmt: error: unknown key 'spatial.max_stpes' (did you mean 'spatial.max_steps'?)"
    )
    assert not out.exists()


def test_model_folder_that_is_not_wan(tmp_path, recipe, capsys):
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(recipe), "--out", str(out), "--model.path", str(folder)])
    assert err == (
        f"effivmt: error: {folder} holds a StableDiffusionPipeline pipeline, not a Wan 2.1 one (give a "
        "diffusers-format Wan 2.1 folder (e.g. Wan2.1-T2V-1.3B-Diffusers) or leave model.path empty)"
    )
    assert not out.exists()


def test_adapter_whose_shapes_do_not_fit(tmp_path, capsys):
    """A LoRA made for a model twice as wide as the tiny one (inner dim 96, not 4 heads x 12 = 48)."""
    from safetensors.torch import save_file

    lora = tmp_path / "wide.safetensors"
    save_file(
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 96),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(96, 4),
        },
        str(lora),
    )
    out = tmp_path / "sample.mp4"
    err = fails(
        capsys,
        [
            "generate",
            "--prompt",
            "a cat",
            "--lora",
            str(lora),
            "--out",
            str(out),
            "--num_frames",
            "5",
            "--height",
            "32",
            "--width",
            "32",
        ],
    )
    assert err.startswith("effivmt: error: adapter does not fit the model: blocks.0.attn1.to_q.lora_")
    assert "the model expects" in err
    assert not out.exists() and not list(tmp_path.glob(".sample*"))


@pytest.mark.parametrize(
    ("flag", "value", "line"),
    [
        ("--lora.rank", "0", "lora.rank must be > 0, got 0 (a typical rank is 16 to 128)"),
        ("--lora.alpha", "-1", "lora.alpha must be > 0, got -1.0 (alpha = rank gives a scale of 1)"),
        (
            "--video.num_frames",
            "10",
            "video.num_frames must be 1 + 4k (e.g. 17, 49, 81), got 10 "
            "(nearest are 9 and 13: Wan's VAE packs 4 frames per latent)",
        ),
    ],
    ids=["rank", "alpha", "frames"],
)
def test_out_of_range_values(tmp_path, recipe, capsys, flag, value, line):
    out = tmp_path / "out"
    assert fails(capsys, ["run", str(recipe), "--out", str(out), flag, value]) == f"effivmt: error: {line}"
    assert not out.exists()


def test_output_folder_under_a_file(tmp_path, recipe, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = fails(capsys, ["run", str(recipe), "--out", str(blocker / "run")])
    assert err == (
        f"effivmt: error: cannot create output folder {blocker / 'run'}: Not a directory (choose a writable --out)"
    )


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_output_folder_read_only(tmp_path, recipe, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        err = fails(capsys, ["run", str(recipe), "--out", str(locked / "run")])
    finally:
        locked.chmod(0o755)
    assert err == (
        f"effivmt: error: cannot create output folder {locked / 'run'}: Permission denied (choose a writable --out)"
    )


def test_disk_full_while_writing_leaves_no_partial_file(tmp_path, recipe, capsys, monkeypatch):
    """``os.replace`` of heads.json fails with ENOSPC: one line, no heads.json, no temporary file."""
    real = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name == "heads.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(recipe), "--out", str(out)])
    assert err == (
        f"effivmt: error: writing {out / 'heads.json'} failed: No space left on device "
        "(check free disk space and permissions)"
    )
    assert not (out / "heads.json").exists()
    assert [p.name for p in out.rglob(".*")] == []  # atomic writes leave no temporary names behind
    assert json.loads((out / "run.json").read_text())["stages"]["heads"]["status"] == "failed"


def test_disk_full_outside_our_writers_is_one_line(tmp_path, recipe, monkeypatch, capsys):
    """A library that writes directly (TensorBoard, torch) and hits ENOSPC still gives one line, exit code 2."""
    import effivmt.vmt.run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "events.out.tfevents"))

    monkeypatch.setattr(effivmt.vmt.run, "_head_scores", full)
    err = fails(capsys, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert err == (
        f"effivmt: error: No space left on device: {tmp_path / 'events.out.tfevents'} "
        "(free some disk space or choose a writable --out)"
    )


def _training_recipe(tmp_path: Path, **extra) -> Path:
    """Heads + a 4-step spatial stage at 32x32 (the stage that the next two rows break)."""
    import yaml

    recipe = yaml.safe_load(write_heads_recipe(tmp_path / "base.yaml", clip=str(CLIP)).read_text())
    recipe.update(stages=["heads", "spatial"], lora={"rank": 2, "alpha": 2})
    recipe["spatial"] = {"max_steps": 4, "checkpoint_every": 2, "log_every": 1, **extra}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_negative_learning_rate_is_refused_before_anything_is_written(tmp_path, capsys):
    """Issue 12 item 12: a bad lr fails in one line before heads.json, the cache or logs exist (was a 65-line
    traceback from torch after stage 1 had written its files)."""
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": -1e-3}}
    recipe = _training_recipe(tmp_path, optimizer=optimizer)
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(recipe), "--out", str(out)])
    assert err == (
        "effivmt: error: spatial.optimizer cannot be built: Invalid learning rate: -0.001 "
        "(fix spatial.optimizer.init_args)"
    )
    assert not out.exists()


def test_ctrl_c_exits_130_with_one_resume_hint(tmp_path, capsys, caplog, monkeypatch):
    """Issue 12 item 12: Ctrl-C in a training stage exits 130 with our hint once (was exit 1 and Lightning's notice
    twice), run.json says "interrupted", and Ctrl-C works again afterwards (Lightning leaves SIGINT ignored)."""
    import signal

    import effivmt.vmt.spatial as spatial_module

    real, calls = spatial_module.SpatialLoRAModule.training_step, []

    def second_step_interrupted(self, batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch, batch_idx)

    monkeypatch.setattr(spatial_module.SpatialLoRAModule, "training_step", second_step_interrupted)
    handler = signal.getsignal(signal.SIGINT)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        code = cli.main(["run", str(_training_recipe(tmp_path)), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 130
    hint = "effivmt: interrupted; re-run the same command to resume from the last checkpoint"
    assert captured.err.strip().splitlines().count(hint) == 1
    assert "Detected KeyboardInterrupt" not in captured.err + captured.out + caplog.text
    assert json.loads((out / "run.json").read_text())["stages"]["spatial"]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler


def test_pure_half_precision_training_is_refused(tmp_path, capsys):
    """Issue 12 item 10: bf16-true would train the adapters in bf16, where lr-1e-5 updates round away."""
    out = tmp_path / "out"
    err = fails(capsys, ["run", str(_training_recipe(tmp_path)), "--out", str(out), "--trainer.precision", "bf16-true"])
    assert "trainer.precision=bf16-true would train the adapter weights in half precision" in err
    assert "use bf16-mixed" in err and not out.exists()
