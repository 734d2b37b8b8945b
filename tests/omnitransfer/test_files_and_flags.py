"""Weights files and command-line flags of ``effivmt transfer`` (issue 13, item 7)."""

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import torch

from effivmt.errors import ConfigError
from effivmt.omnitransfer.checkpoint import read_metadata, save_weights
from effivmt.omnitransfer.tasks import TaskConfig
from effivmt.omnitransfer.transfer import merge_repeated, transfer

ROOT = Path(__file__).resolve().parents[2]


def _refs(manifest):
    return manifest.parent / "motion-reference.mp4", manifest.parent / "id-reference.mp4"


def _lightning_ckpt(path, stage, tasks):
    """A ``.ckpt`` laid out as Lightning writes the training module's (``state_dict`` + ``hyper_parameters``)."""
    from effivmt.omnitransfer.module import OmniTransferModule

    module = OmniTransferModule(stage=stage, tasks=tasks, lora_rank=2, lora_alpha=2)
    module.configure_model()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)


def test_ckpt_trained_with_two_queries_per_task_loads_into_transfer(tmp_path, synthetic_manifest):
    """The module stores only plain hyper-parameters; the queries' shape says 2 per task, so transfer builds 2."""
    ckpt = tmp_path / "last.ckpt"
    _lightning_ckpt(ckpt, 2, TaskConfig(num_queries=2))
    meta = read_metadata(ckpt)
    assert meta["tasks"]["num_queries"] == 2 and meta["stage"] == 2 and meta["lora_rank"] == 2
    motion, _ = _refs(synthetic_manifest)
    out = transfer("motion", motion, motion, "a red circle", tmp_path / "o.mp4", checkpoint=ckpt, steps=1)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["target_context"] == "mllm" and settings["checkpoint_stage"] == 2


def test_ckpt_hyper_parameters_carry_every_task_setting(tmp_path):
    """Where the module stores ``tasks`` as a plain dict, every non-default value comes back (flags, templates)."""
    tasks = TaskConfig(num_queries=3)
    tasks.flags["style"] = -5.0
    tasks.templates["id"] = "keep the shape"
    queries = torch.zeros(5, 3, 4)
    torch.save(
        {
            "state_dict": {"model.aligner.queries": queries},
            "hyper_parameters": {"stage": 3, "tasks": {"flags": tasks.flags, "templates": tasks.templates}},
        },
        tmp_path / "c.ckpt",
    )
    meta = read_metadata(tmp_path / "c.ckpt")
    again = TaskConfig(**meta["tasks"])
    assert again.flags["style"] == -5.0 and again.templates["id"] == "keep the shape" and again.num_queries == 3


def test_stage1_file_reads_the_prompt_through_umt5(tmp_path, synthetic_manifest, pipe, caplog):
    """A stage-1 file's connector is still random: transfer uses UMT5 (one log line), and refuses --use_mllm."""
    weights = save_weights(pipe.model, tmp_path / "stage1" / "omnitransfer.safetensors", {"stage": 1})
    motion, _ = _refs(synthetic_manifest)
    with caplog.at_level("INFO", logger="effivmt.omnitransfer.transfer"):
        out = transfer("motion", motion, motion, "a red circle", tmp_path / "o.mp4", checkpoint=weights, steps=1)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["target_context"] == "text" and settings["mllm"] is None and settings["checkpoint_stage"] == 1
    assert [r.message for r in caplog.records if "stage-1" in r.message] != []
    with pytest.raises(ConfigError, match="stage-1 file: its connector and task queries were never trained"):
        transfer("motion", motion, motion, "p", tmp_path / "o.mp4", checkpoint=weights, use_mllm=True, steps=1)


def test_repeated_reference_flags_all_reach_transfer():
    """``--reference A --reference B`` keeps both once the command line goes through :func:`merge_repeated`."""
    from effivmt.cli import command_parser

    argv = ["--task", "id+motion", "--reference", "a.mp4", "--reference=b.mp4", "--first_frame", "f.png"]
    argv += ["--prompt", "p", "--out", "o.mp4"]
    assert command_parser("transfer").parse_args(argv).reference == Path("b.mp4")  # jsonargparse alone
    cfg = command_parser("transfer").parse_args(merge_repeated(argv))
    assert cfg.reference == [Path("a.mp4"), Path("b.mp4")]
    assert merge_repeated(["--reference", "my clip, 1.mp4", "--reference", "b.mp4", "--x", "1"]) == [
        "--reference",
        '["my clip, 1.mp4", "b.mp4"]',
        "--x",
        "1",
    ]
    assert merge_repeated(["--reference", "a.mp4", "--steps", "2"]) == ["--reference", "a.mp4", "--steps", "2"]


def test_cli_accepts_repeated_reference_flags(monkeypatch, tmp_path):
    import effivmt.omnitransfer.transfer as module
    from effivmt import cli

    seen = {}
    real = module.transfer

    def spy(**kwargs):
        seen.update(kwargs)

    spy.__signature__ = __import__("inspect").signature(real)
    spy.__doc__ = real.__doc__
    monkeypatch.setattr(module, "transfer", spy)
    argv = ["transfer", "--task", "id+motion", "--reference", "a.mp4", "--reference", "b.mp4"]
    assert cli.main([*argv, "--first_frame", "f.png", "--prompt", "p", "--out", str(tmp_path / "o.mp4")]) == 0
    assert isinstance(seen["reference"], list) and [str(r) for r in seen["reference"]] == ["a.mp4", "b.mp4"]


def test_reference_count_hint_says_something_that_parses(tmp_path, synthetic_manifest):
    """The hint's command-line spelling, parsed by the real ``transfer`` parser, gives both references."""
    from effivmt.cli import command_parser

    motion, _ = _refs(synthetic_manifest)
    with pytest.raises(ConfigError) as err:
        transfer("id+motion", motion, motion, "p", tmp_path / "o.mp4")
    spelled = re.search(r"on the command line: (.+)$", err.value.hint).group(1)
    rest = ["--first_frame", "f.png", "--prompt", "p", "--out", "o.mp4"]
    cfg = command_parser("transfer").parse_args(["--task", "id+motion", *shlex.split(spelled), *rest])
    assert len(cfg.reference) == 2


def test_pyproject_transformers_floor_is_what_the_code_needs():
    """``.model.language_model`` needs 4.52, ``rope_parameters`` 5.0, ``mm_token_type_ids`` positions 5.3."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    from effivmt.omnitransfer.tiny_qwen import MIN_TRANSFORMERS

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(Requirement(d).specifier for d in deps if Requirement(d).name == "transformers")
    floor = next(Version(s.version) for s in spec if s.operator == ">=")
    assert floor == Version(MIN_TRANSFORMERS)


@pytest.fixture(scope="module")
def aligner():
    from effivmt.omnitransfer.alignment import MultimodalAligner
    from effivmt.omnitransfer.tiny_qwen import build_tiny_qwen

    torch.manual_seed(0)
    return MultimodalAligner(build_tiny_qwen(), text_dim=32, tasks=TaskConfig(num_queries=2)).eval()


@pytest.mark.parametrize("size", [(480, 832), (32, 32), (336, 596), (20, 2000), (7, 9)])
def test_smart_resize_matches_qwen2vl(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as upstream

    from effivmt.omnitransfer.alignment import smart_resize

    assert smart_resize(*size, 28, 28 * 28, 448 * 448) == upstream(*size, 28, 28 * 28, 448 * 448)


def test_mllm_frames_keep_their_aspect_ratio(aligner):
    """A 32x64 clip under the 16x16 budget (256 px) becomes 8x16 (2x4 patches of 4 px), not a squashed 16x16."""
    first = torch.zeros(1, 3, 32, 64)
    ref = torch.zeros(1, 3, 9, 32, 64)
    inputs = aligner.build_inputs(first, [ref], ["a red car"], [("motion",)])
    assert inputs["image_grid_thw"].tolist() == [[1, 2, 4]]
    assert inputs["video_grid_thw"].tolist() == [[2, 2, 4]]
    assert aligner.frame_size(480, 832) == (8, 16)  # budget 256 px at 8-px steps: aspect 0.5 beats 0.58's 16x16
    assert aligner.frame_size(32, 32) == (16, 16)  # a square clip still fills the budget exactly


def test_mllm_sees_the_real_frame_spacing(aligner):
    """4 of 9 frames at 16 fps are 8/3 frames apart; a temporal patch of 2 spans 2 * (8/3) / 16 = 1/3 s."""
    first = torch.rand(1, 3, 32, 32) * 2 - 1
    ref = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    inputs = aligner.build_inputs(first, [ref], ["a red car"], [("motion",)])
    torch.testing.assert_close(inputs["second_per_grid_ts"], torch.tensor([1 / 3]))
    with torch.no_grad():
        at16 = aligner(first, [ref], ["a red car"], [("motion",)])
        aligner.fps = 2.0  # the same frames 8x further apart in time: other temporal positions, other features
        try:
            at2 = aligner(first, [ref], ["a red car"], [("motion",)])
        finally:
            aligner.fps = 16.0
    assert not torch.allclose(at16, at2)
