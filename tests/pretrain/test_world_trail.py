"""``effivmt pretrain --trail true``: every stage that draws clips draws them with comet tails, and a run folder
keeps the world it was started in."""

from __future__ import annotations

import json

import torch
from helpers import fake_pretrain_cache

from effivmt import cli
from effivmt.backbone.micro import MICRO_FRAMES, MICRO_SIZE
from effivmt.data.world import render, sample_scene
from effivmt.pretrain import run as pretrain
from effivmt.pretrain.vae import WorldWindows


def _clips(seeds, trail: bool) -> torch.Tensor:
    video = torch.stack(
        [render(sample_scene(s), MICRO_FRAMES, MICRO_SIZE, MICRO_SIZE, trail=trail).frames for s in seeds]
    )
    return video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def test_the_clip_caches_draw_the_world_the_run_records(tmp_path):
    pretrain.record_world(tmp_path, True)  # a new folder takes any world
    fake_pretrain_cache(tmp_path)  # clip seeds 0..3: lines and standing still
    pretrain.record_world(tmp_path, True)  # and keeps it when called again
    assert json.loads((tmp_path / "world.json").read_text()) == {"trail": True}
    seen = pretrain.rendered_clip_cache(tmp_path, "video", lambda video: {"video": video})["video"]
    assert torch.equal(seen, _clips(range(4), trail=True))
    assert not torch.equal(seen, _clips(range(4), trail=False))


def test_the_vae_windows_draw_tails_when_asked():
    tailed = next(iter(WorldWindows(MICRO_FRAMES, MICRO_SIZE, MICRO_FRAMES, batch_size=4, trail=True)))
    plain = next(iter(WorldWindows(MICRO_FRAMES, MICRO_SIZE, MICRO_FRAMES, batch_size=4)))
    assert torch.equal(tailed, _clips(range(10_000_000, 10_000_004), trail=True))
    assert not torch.equal(tailed, plain)


def test_a_run_folder_keeps_its_world(tmp_path, capsys):
    (tmp_path / "vae").mkdir()  # a run started before world.json existed: drawn without tails
    assert cli.main(["pretrain", "--out", str(tmp_path), "--trail", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effivmt: error: ") and "trail=False" in err and "\n" not in err, err
    assert not (tmp_path / "world.json").exists()
    pretrain.record_world(tmp_path, False)  # the world it was made in goes on
    assert json.loads((tmp_path / "world.json").read_text()) == {"trail": False}
