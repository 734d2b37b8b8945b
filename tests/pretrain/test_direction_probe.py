"""bench/micro_direction_probe.py: straight-line clips only, with or without a comet tail, scored by word use."""

import json

import pytest
from helpers import load_bench

from effivmt.data.world import sample_scene


def test_a_module_that_overrides_scene_captions_its_clips_from_it():
    """``TextToVideoPretrainModule.scene`` is where captions come from: the probe's straight-line subclass relies on
    it (seed 12 is not a straight line in the pretraining draw)."""
    import torch

    from effivmt.backbone.micro import build_micro_components
    from effivmt.data.world import caption, parse_caption
    from effivmt.pretrain.dit import TextToVideoPretrainModule

    class StraightLines(TextToVideoPretrainModule):
        def scene(self, i):
            return sample_scene(self.scene_seeds[i], motion="linear")

    parts = build_micro_components(0)
    args = (parts["transformer"], parts["text_encoder"], parts["tokenizer"], torch.zeros(1, 16, 9, 8, 8), [12])
    kwargs = dict(p_empty=0.0, p_appearance=0.0)
    assert sample_scene(12).motion != "linear"
    g = torch.Generator().manual_seed(0)
    assert StraightLines(*args, **kwargs).prompts_for([0], g) == [caption(sample_scene(12, motion="linear"))]
    assert parse_caption(TextToVideoPretrainModule(*args, **kwargs).prompts_for([0], g)[0]).direction is None


def test_the_probe_reports_word_use_on_one_line_and_writes_its_model(capsys, tmp_path):
    probe = load_bench("micro_direction_probe")
    argv = ["--clips", "4", "--steps", "2", "--batch-size", "2", "--eval-clips", "3", "--sigmas", "0.8"]
    result = probe.main([*argv, "--trail", "--threads", "0", "--out", str(tmp_path / "model")])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0]) == result  # progress goes to stderr
    row = result["sigmas"]["0.8"]
    assert set(row) == {"true", "direction", "color"} and row["true"] > 0
    assert result["trail"] is True and result["train_s"] > 0
    assert (tmp_path / "model" / "model_index.json").is_file()


def test_a_new_fine_patch_needs_a_new_dit():
    probe = load_bench("micro_direction_probe")
    with pytest.raises(SystemExit):
        probe.main(["--patch", "1"])


def test_the_pretraining_draw_keeps_standing_still_and_lines_only_has_lines():
    probe = load_bench("micro_direction_probe")
    seeds = range(20_000_000, 20_000_040)
    assert {probe.draw_scene(s, "lines").motion for s in seeds} == {"linear"}
    assert {probe.draw_scene(s, "pretrain").motion for s in seeds} == {"linear", "still"}
