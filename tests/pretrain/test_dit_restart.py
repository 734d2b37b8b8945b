"""``effivmt pretrain --dit_restart_steps``: a warm restart starts from the first DiT stage's EMA weights, and the
exported folder follows the latest DiT stage."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from helpers import fake_pretrain_cache, vae_stages_done

from effivmt.backbone.micro import build_micro_components
from effivmt.errors import ConfigError
from effivmt.pretrain import dit
from effivmt.pretrain import run as pretrain


def test_restart_starts_from_the_first_stage_and_the_export_follows_it(tmp_path, monkeypatch):
    fake_pretrain_cache(tmp_path)
    pretrain.train_dit(tmp_path, 2, 2, 1e-3, 0, 1000)
    first = WanTransformer3DModel.from_pretrained(str(tmp_path / "dit" / "model" / "transformer"))
    seen = {}

    class Spy(dit.TextToVideoPretrainModule):
        def __init__(self, transformer, *args, **kwargs):
            seen["start"] = {k: v.clone() for k, v in transformer.state_dict().items()}
            super().__init__(transformer, *args, **kwargs)

    monkeypatch.setattr(dit, "TextToVideoPretrainModule", Spy)
    # another seed: a restart that ignored ``init`` would start from other random weights
    pretrain.train_dit(tmp_path, 2, 2, 1e-3, 1, 1000, "dit-restart", "dit")
    start, want = seen["start"], first.state_dict()
    assert all(torch.equal(start[k], want[k]) for k in want)
    assert json.loads((tmp_path / "dit-restart" / "done.json").read_text())["init"] == "dit"

    vae_stages_done(tmp_path, monkeypatch)
    pretrain.pretrain_micro(tmp_path, dit_steps=2, dit_batch_size=2, dit_restart_steps=2, i2v_steps=0)
    assert json.loads((tmp_path / "export.json").read_text()) == {"dit": "dit-restart", "vae": "vae-clips"}
    exported = (tmp_path / "micro-wan-t2v" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (
        exported
        == (tmp_path / "dit-restart" / "model" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    )


def test_chained_restarts_each_start_from_the_one_before(tmp_path, monkeypatch):
    fake_pretrain_cache(tmp_path)
    vae_stages_done(tmp_path, monkeypatch)
    pretrain.pretrain_micro(tmp_path, dit_steps=2, dit_batch_size=2, dit_restart_steps=2, dit_restarts=2, i2v_steps=0)
    inits = {n: json.loads((tmp_path / n / "done.json").read_text())["init"] for n in pretrain.restart_stages(2)}
    assert inits == {"dit-restart": "dit", "dit-restart-2": "dit-restart"}
    assert json.loads((tmp_path / "export.json").read_text())["dit"] == "dit-restart-2"
    assert set(json.loads((tmp_path / "pretrain.json").read_text())["stages"]) >= {"dit-restart", "dit-restart-2"}


def test_a_finished_run_takes_one_more_cycle_of_its_own_length_and_shift(tmp_path, monkeypatch):
    fake_pretrain_cache(tmp_path)
    vae_stages_done(tmp_path, monkeypatch)
    pretrain.pretrain_micro(tmp_path, dit_steps=2, dit_batch_size=2, dit_restart_steps=2, dit_restarts=2, i2v_steps=0)
    before = {n: (tmp_path / n / "done.json").read_text() for n in ("dit", "dit-restart", "dit-restart-2")}
    shifts = []

    class Spy(dit.TextToVideoPretrainModule):
        def __init__(self, *args, **kwargs):
            shifts.append(kwargs["shift"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dit, "TextToVideoPretrainModule", Spy)
    sizes = dict(dit_steps=2, dit_batch_size=2, i2v_steps=0)
    pretrain.pretrain_micro(tmp_path, **sizes, dit_restart_steps=[2, 2, 3], dit_shift=2.0)
    assert shifts == [2.0]  # only the new cycle trained
    assert {n: (tmp_path / n / "done.json").read_text() for n in before} == before
    third = json.loads((tmp_path / "dit-restart-3" / "done.json").read_text())
    assert (third["steps"], third["init"], third["shift"]) == (3, "dit-restart-2", 2.0)
    assert json.loads((tmp_path / "export.json").read_text())["dit"] == "dit-restart-3"


def test_a_cycle_without_steps_is_refused():
    with pytest.raises(ConfigError, match="dit_restart_steps"):
        pretrain.restart_cycles([4000, 0], 1)
    assert pretrain.restart_cycles(0, 3) == []
    assert pretrain.restart_cycles(5, 2) == [5, 5]


def test_packed_folder_keeps_no_local_paths_and_loads_back(tmp_path):
    vae = build_micro_components(0)["vae"]
    vae.save_pretrained(str(tmp_path / "src" / "vae"))
    config = tmp_path / "src" / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_name_or_path": "/work/run/vae-decoder/model"}))
    index = {
        "_class_name": "WanPipeline",
        "_name_or_path": "/work/runs/mix-12000",
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (tmp_path / "src" / "model_index.json").write_text(json.dumps(index))
    pretrain.pack_folder(tmp_path / "src", tmp_path / "packed")
    packed = json.loads((tmp_path / "packed" / "vae" / "config.json").read_text())
    assert "_name_or_path" not in packed and packed["z_dim"] == 16
    packed_index = json.loads((tmp_path / "packed" / "model_index.json").read_text())
    assert "_name_or_path" not in packed_index and packed_index["vae"] == ["diffusers", "AutoencoderKLWan"]
    from diffusers import AutoencoderKLWan

    back = AutoencoderKLWan.from_pretrained(str(tmp_path / "packed" / "vae"))
    want = vae.state_dict()
    assert all(torch.equal(v, want[k].to(torch.bfloat16).float()) for k, v in back.state_dict().items())


def test_a_resumed_stage_reports_the_time_of_every_call(tmp_path):
    """``wall_s`` once counted only the call that finished a stage; the clock now travels in the checkpoint."""
    fake_pretrain_cache(tmp_path)
    pretrain.train_dit(tmp_path, 2, 2, 1e-3, 0, 1000)  # the first call: 2 steps, checkpointed as last.ckpt
    last = tmp_path / "dit" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "StageClock" in k]
    state["seconds"] = 1000.0  # as if the first call had trained for 1000 s before it was interrupted
    torch.save(ckpt, last)
    (tmp_path / "dit" / "done.json").unlink()  # the stage as unfinished: the next call resumes from last.ckpt
    pretrain.train_dit(tmp_path, 2, 2, 1e-3, 0, 1000)
    assert 1000.0 <= json.loads((tmp_path / "dit" / "done.json").read_text())["wall_s"] < 1100.0
