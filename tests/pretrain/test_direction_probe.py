"""bench/micro_direction_probe.py: straight-line clips only, with or without a comet tail, scored by word use."""

import json

import numpy as np
import pytest
from helpers import load_bench

from effivmt.data.world import COLORS, DIRECTIONS, sample_scene


def test_the_trail_lies_behind_the_object_and_only_with_trail():
    probe = load_bench("micro_direction_probe")
    scene = sample_scene(11, motion="linear")
    plain, trail = probe.render_clip(scene).numpy(), probe.render_clip(scene, trail=True).numpy()
    from effivmt.data.world import render

    path = render(scene).tracks[0].numpy()
    back = -np.asarray(DIRECTIONS[scene.direction])
    x, y = np.round(path[16] + back * 11).astype(int)  # past the object's rim (8 px), inside the tail (14 px)
    background = np.asarray(COLORS[scene.background])
    assert np.abs(plain[16, y, x].astype(int) - background).max() <= 1
    assert np.abs(trail[16, y, x].astype(int) - background).max() > 20
    ahead = np.round(path[16] - back * 11).astype(int)  # in front of the object: no tail
    assert np.abs(trail[16, ahead[1], ahead[0]].astype(int) - background).max() <= 1
    assert np.array_equal(plain[16, int(path[16, 1]), int(path[16, 0])], trail[16, int(path[16, 1]), int(path[16, 0])])


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
