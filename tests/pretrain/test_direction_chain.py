"""bench/micro_direction_chain.py: stages warm from each other, resumable, never reusing another input's stage."""

import json

import pytest
import torch
from helpers import load_bench
from safetensors.torch import load_file, save_file


@pytest.fixture
def chain(monkeypatch):
    """The chain script with its two subprocesses replaced by a recorder that writes what they would."""
    module = load_bench("micro_direction_chain")
    calls = []

    def fake_run(cmd, out, log):
        script = cmd[1].rsplit("/", 1)[-1]
        calls.append((script, cmd[cmd.index("--model") + 1]))
        if script == "micro_direction_probe.py":
            folder = cmd[cmd.index("--out") + 1]
            (module.Path(folder) / "transformer").mkdir(parents=True)
            (module.Path(folder) / "model_index.json").write_text("{}")
            save_file({"w": torch.ones(2)}, f"{folder}/transformer/diffusion_pytorch_model.safetensors")
            line = {"train_s": 1.5, "sigmas": {"0.8": {"direction": {"increase": 0.02, "ci95": [0.01, 0.03]}}}}
        else:
            line = {"rates": {"direction": 0.75}}
        out.write_text(json.dumps(line) + "\n")

    monkeypatch.setattr(module, "run_to_file", fake_run)
    module.calls = calls
    return module


def test_each_stage_starts_from_the_last_and_a_rerun_trains_nothing(chain, tmp_path):
    argv = ["--stages", "300:1", "200:2", "--out", str(tmp_path / "runs"), "--", "--trail"]
    result = chain.main(argv)
    first = str(tmp_path / "runs" / "stage-300")
    assert chain.calls == [
        ("micro_direction_probe.py", "micro"),
        ("micro_prompts.py", first),
        ("micro_direction_probe.py", first),
        ("micro_prompts.py", str(tmp_path / "runs" / "stage-500")),
    ]
    assert [(s["total_steps"], s["seed"], s["probe_args"]) for s in result["stages"]] == [
        (300, 1, ["--trail"]),
        (500, 2, ["--trail"]),
    ]
    assert result["stages"][1]["micro_prompts"] == {"direction": 0.75}
    chain.calls.clear()
    assert chain.main(argv) == result and chain.calls == []


def test_a_stage_made_from_other_inputs_is_refused_not_reused(chain, tmp_path):
    chain.main(["--stages", "300:1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="was made from"):
        chain.main(["--stages", "300:2", "--out", str(tmp_path)])
    (tmp_path / "stage-300.inputs.json").unlink()
    with pytest.raises(SystemExit, match="no record"):
        chain.main(["--stages", "300:1", "--out", str(tmp_path)])


def test_a_packed_chain_is_bf16_and_the_next_sitting_goes_on_from_its_record(chain, tmp_path):
    pack = tmp_path / "checkpoint"
    chain.main(["--stages", "300:1", "--out", str(tmp_path / "a"), "--pack", str(pack)])
    assert load_file(str(pack / "transformer" / "diffusion_pytorch_model.safetensors"))["w"].dtype == torch.bfloat16
    result = chain.main(["--start", str(pack), "--stages", "100:2", "--out", str(tmp_path / "b"), "--pack", str(pack)])
    assert chain.calls[-2] == ("micro_direction_probe.py", str(pack))
    assert [s["total_steps"] for s in result["stages"]] == [300, 400] and result["start"] == "micro"
    assert json.loads((pack / "chain.json").read_text()) == result


def test_a_stage_is_steps_and_seed():
    module = load_bench("micro_direction_chain")
    assert module.parse_stage("6000:3") == (6000, 3)
    with pytest.raises(SystemExit):
        module.main(["--stages", "6000", "--out", "x"])


def test_a_stage_keeps_its_command_s_last_line_and_a_failure_names_its_log(tmp_path):
    module = load_bench("micro_direction_chain")
    py = module.sys.executable
    module.run_to_file([py, "-c", "print('progress'); print('{\"x\": 1}')"], tmp_path / "out.json", tmp_path / "log")
    assert json.loads((tmp_path / "out.json").read_text()) == {"x": 1}
    with pytest.raises(SystemExit, match="its log"):
        module.run_to_file([py, "-c", "raise SystemExit(3)"], tmp_path / "bad.json", tmp_path / "bad.log")
    assert not (tmp_path / "bad.json").exists()
