import json

import pytest

from effivmt.errors import ConfigError, VideoError
from effivmt.omnitransfer.transfer import transfer


def test_transfer_writes_video_and_settings(tmp_path, synthetic_manifest, caplog):
    from effivmt.data.video import read_video, write_image

    folder = synthetic_manifest.parent
    first = read_video(folder / "id-target.mp4")[0][0]
    write_image(tmp_path / "first.png", first)
    out = transfer(
        task="id+motion",
        reference=[folder / "id-reference.mp4", folder / "motion-reference.mp4"],
        first_frame=tmp_path / "first.png",
        prompt="a red circle",
        out=tmp_path / "o" / "out.mp4",
        steps=2,
        guidance=3.0,
    )
    assert read_video(out)[0].shape == (9, 32, 32, 3)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["task"] == "id+motion" and settings["model"] == "tiny" and settings["cache_reference"] is True
    # never silent noise: without trained weights the user is told so, in one line
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "untrained" in r.getMessage()]
    assert len(warnings) == 1 and "--checkpoint" in warnings[0].getMessage()


def test_transfer_help_line_and_errors(tmp_path, synthetic_manifest):
    assert transfer.__doc__.splitlines()[0].startswith("Transfer a reference video's motion")
    ref = synthetic_manifest.parent / "motion-reference.mp4"
    with pytest.raises(ConfigError, match="one reference per task"):
        transfer("id+motion", ref, ref, "p", tmp_path / "o.mp4")
    with pytest.raises(ConfigError, match="--out must end in"):
        transfer("motion", ref, ref, "p", tmp_path / "o.gif")
    with pytest.raises(ConfigError, match="unknown task"):
        transfer("pose", ref, ref, "p", tmp_path / "o.mp4")
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        transfer("motion", ref, ref, "p", tmp_path / "o.mp4", num_frames=8)
    with pytest.raises(VideoError, match="does not exist"):
        transfer("motion", ref, tmp_path / "missing.png", "p", tmp_path / "o.mp4", steps=1)


def test_default_weights_are_the_packaged_ones_only_for_the_models_they_were_trained_on(tmp_path, monkeypatch):
    from pathlib import Path

    from effivmt.omnitransfer import checkpoint
    from effivmt.omnitransfer.transfer import resolve_checkpoint

    packaged = tmp_path / "omnitransfer.safetensors"
    monkeypatch.setattr(checkpoint, "micro_weights_path", lambda: packaged)
    assert resolve_checkpoint(None, Path("micro")) is None  # not installed: none (and transfer warns)
    packaged.write_bytes(b"")
    assert resolve_checkpoint(None, Path("micro")) == packaged
    assert resolve_checkpoint(None, Path("tiny")) is None  # the tests' default backbone, too
    assert resolve_checkpoint(None, Path("micro"), mllm=tmp_path / "qwen") is None
    assert resolve_checkpoint(Path("untrained"), Path("micro")) is None
    assert resolve_checkpoint(tmp_path / "mine.ckpt", Path("micro")) == tmp_path / "mine.ckpt"


def test_the_command_uses_installed_weights_by_default_unless_told_untrained(
    tmp_path, synthetic_manifest, caplog, monkeypatch
):
    """With weights installed where `effivmt omnitransfer --install true` puts them (here: a stage-3 file of the
    micro models, untrained, in a temporary folder), `effivmt transfer` on the micro models loads them without
    being told; `--checkpoint untrained` and an empty install fall back to no weights, with the warning."""
    from effivmt import cli
    from effivmt.omnitransfer import checkpoint
    from effivmt.omnitransfer.pipeline import OmniTransferPipeline

    installed = tmp_path / "assets" / "omnitransfer.safetensors"
    monkeypatch.setattr(checkpoint, "micro_weights_path", lambda: installed)
    ref = synthetic_manifest.parent / "motion-reference.mp4"
    common = ["--model", "micro", "--task", "motion", "--reference", str(ref), "--first_frame", str(ref)]
    common += ["--prompt", "a red circle on a black background", "--steps", "2"]

    def run(name, *extra):
        out = tmp_path / f"{name}.mp4"
        caplog.clear()
        assert cli.main(["transfer", *common, *extra, "--out", str(out)]) == 0
        warned = [r for r in caplog.records if r.levelname == "WARNING" and "no trained weights" in r.getMessage()]
        return json.loads(out.with_suffix(".json").read_text()), len(warned)

    settings, warned = run("none")  # nothing installed
    assert settings["checkpoint"] is None and warned == 1
    pipe = OmniTransferPipeline.load("micro", num_reference_frames=4)
    checkpoint.save_weights(pipe.model, installed, {"stage": 2, "num_reference_frames": 4})
    settings, warned = run("installed")
    assert settings["checkpoint"] == str(installed) and settings["checkpoint_stage"] == 2 and warned == 0
    settings, warned = run("untrained", "--checkpoint", "untrained")
    assert settings["checkpoint"] is None and warned == 1


def test_install_writes_a_bf16_copy_with_the_same_settings(tmp_path):
    import torch

    from effivmt.omnitransfer.checkpoint import install_weights, read_weights, save_weights
    from effivmt.omnitransfer.pipeline import OmniTransferPipeline
    from effivmt.omnitransfer.train import OmniModelArgs, PairedDataArgs, train

    pipe = OmniTransferPipeline.load("tiny")
    source = save_weights(pipe.model, tmp_path / "stage3.safetensors", {"stage": 3, "tasks": {"num_queries": 8}})
    copy = install_weights(source, tmp_path / "assets" / "omnitransfer.safetensors")
    (want, want_meta), (got, got_meta) = read_weights(source), read_weights(copy)
    assert got_meta == want_meta and got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].dtype == torch.bfloat16 and torch.equal(got[key], value.to(torch.bfloat16))
    # only the packaged models' weights are packaged: refused before anything runs
    with pytest.raises(ConfigError, match="install: true packages weights"):
        train(tmp_path / "run", PairedDataArgs(tmp_path / "m.jsonl"), OmniModelArgs(path="tiny"), install=True)
    assert not (tmp_path / "run").exists()
