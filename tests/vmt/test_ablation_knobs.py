"""The knobs MicroMotionBench's ablations turn: no head split, a timestep range, the score normalisation."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effivmt import cli
from effivmt.errors import ConfigError
from effivmt.vmt.heads import HeadScores, normalized
from effivmt.vmt.plan import LoraStageArgs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_resume import tiny_recipe  # noqa: E402


def test_timestep_range_keeps_every_draw_inside_it(components):
    from effivmt.vmt.spatial import SpatialLoRAModule

    module = SpatialLoRAModule(components.transformer, active_adapters=[], timestep_range=(600.0, 1000.0))
    g = torch.Generator().manual_seed(0)
    ts = torch.cat([module.noisy_pair(torch.zeros(8, 16, 1, 4, 4), g)[1] for _ in range(20)])
    assert ts.min() >= 600 and ts.max() <= 1000 and ts.std() > 50  # inside, and still spread
    unrestricted = SpatialLoRAModule(components.transformer, active_adapters=[])
    assert unrestricted.noisy_pair(torch.zeros(64, 16, 1, 4, 4), g)[1].min() < 600


def test_timestep_range_is_validated():
    with pytest.raises(ConfigError, match="timestep_range"):
        LoraStageArgs(timestep_range=(900.0, 100.0))


def test_raw_normalization_compares_masses():
    spatial = torch.tensor([[2.0, 1.0]])  # uniform-normalised, grid 3 x 2 x 2: shares 4/12 and 2/12
    temporal = torch.tensor([[1.0, 3.0]])
    s_raw, t_raw = normalized(spatial, temporal, (3, 2, 2), "raw")
    assert torch.allclose(s_raw, spatial * 4 / 12) and torch.allclose(t_raw, temporal * 2 / 12)
    scores = HeadScores(spatial, temporal, [["spatial", "spatial"]], grid=(3, 2, 2), normalization="raw")
    # head 0: raw 0.667 vs 0.167 -> spatial; head 1: 0.333 vs 0.5 -> temporal under the paper rule (alpha 1.25)
    assert scores.relabel(alpha=1.25).labels == [["spatial", "temporal"]]
    assert HeadScores.from_json(scores.to_json()).normalization == "raw"


def _trained_heads(out: Path, stage: str) -> set[tuple[int, int]]:
    """(block, head) pairs whose rows of the stage's ``attn1.to_q`` lora_B are not all zero."""
    trained = set()
    for key, b in load_file(str(out / "adapters" / stage / "adapter_model.safetensors")).items():
        if ".attn1.to_q.lora_B" in key:
            block, head_dim = int(key.split("blocks.")[1].split(".")[0]), b.shape[0] // 4
            trained |= {(block, h) for h in range(4) if b[h * head_dim : (h + 1) * head_dim].abs().sum() > 0}
    return trained


@pytest.mark.parametrize("split", [True, False])
def test_without_the_split_every_head_trains_in_both_stages(tmp_path, split):
    recipe = tiny_recipe(tmp_path, spatial_steps=3, temporal_steps=2, every=10)
    out = tmp_path / "run"
    args = ["run", str(recipe), "--out", str(out), "--heads.split", str(split).lower()]
    assert cli.main(args) == 0
    labels = json.loads((out / "heads.json").read_text())["labels"]
    every = {(b, h) for b in range(len(labels)) for h in range(4)}
    spatial_heads = {(b, h) for b, row in enumerate(labels) for h, label in enumerate(row) if label == "spatial"}
    if split:
        assert _trained_heads(out, "spatial") == spatial_heads
        assert _trained_heads(out, "temporal") == every - spatial_heads
    else:
        assert _trained_heads(out, "spatial") == every == _trained_heads(out, "temporal")


def test_motion_bench_can_train_on_the_empty_prompt_and_never_reuses_caption_runs(tmp_path):
    """``--clip-prompt empty``: the same references and targets, only the training prompt differs, and a run
    folder finished with the caption is not taken for one trained on the empty prompt (its key differs)."""
    from helpers import load_bench

    bench = load_bench("micro_motion_bench")
    captioned, empty = bench.references(3), bench.references(3, clip_prompt="empty")
    assert [r["clip_prompt"] for r in empty] == ["", "", ""]
    assert all(r["clip_prompt"].startswith("a ") for r in captioned)
    assert [r["prompt"] for r in empty] == [r["prompt"] for r in captioned]
    assert [r["target"] for r in empty] == [r["target"] for r in captioned]
    key = lambda ref: bench._digest("full", [], ref["clip_prompt"], ref["prompt"], [], "clip")  # noqa: E731
    assert key(empty[0]) != key(captioned[0])
