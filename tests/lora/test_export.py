import copy
import json
import logging
import warnings

import pytest
import torch
from safetensors import safe_open

from effivmt.errors import ConfigError
from effivmt.lora import (
    HeadGroups,
    LoraWeights,
    adapter_weights,
    export,
    export_lora,
    load_lora,
    read_lora,
    save_peft_adapter,
    set_adapter_scales,
)

SCALES = {"spatial": 0.5, "temporal": 1.7}


def stock_output(tiny_t2v, files, inputs):
    """Transformer output after stock ``WanPipeline.load_lora_weights`` of each file (one adapter each, scale 1).

    Returns the output and every diffusers log record / Python warning that mentions keys (missing, unexpected,
    "No LoRA keys", peft's config/state-dict "inconsistency"): a dropped or stray key would show there.
    """
    from diffusers import WanPipeline

    parts = {**tiny_t2v.as_dict(), "transformer": copy.deepcopy(tiny_t2v.transformer)}
    pipe = WanPipeline(**parts)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = []
            for i, f in enumerate(files):
                pipe.load_lora_weights(str(f), adapter_name=f"a{i}")
                names.append(f"a{i}")
            pipe.set_adapters(names, [1.0] * len(names))
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    words = ("unexpected", "missing", "no lora keys", "inconsisten", "target modules")
    noisy = [m for m in messages if any(w in m.lower() for w in words)]
    return pipe.transformer(**inputs)[0], noisy


def own_output(adapted, inputs, scales):
    t = copy.deepcopy(adapted)
    set_adapter_scales(t, scales)
    return t(**inputs)[0]


def both(adapted):
    return {n: adapter_weights(adapted, n) for n in ("spatial", "temporal")}


@pytest.mark.parametrize("fmt", ["diffusers", "comfy"])
@pytest.mark.parametrize("scales", [{"spatial": 1.0, "temporal": 1.0}, SCALES], ids=["scale1", "scaled"])
def test_stock_diffusers_reproduces_our_output(tiny_t2v, adapted, inputs, tmp_path, fmt, scales):
    """Exported files loaded by stock diffusers (comfy: through diffusers' own converter) give our output.

    atol 1e-5: the same sums in another order (scale folded into B, alpha/rank folded by the converter) in fp32
    on outputs of magnitude ~1; the adapters move the output by far more (checked below).
    """
    files = export_lora(both(adapted), fmt, scales=scales, out=tmp_path)
    assert [f.name for f in files] == ["spatial.safetensors", "temporal.safetensors"]
    theirs, noisy = stock_output(tiny_t2v, files, inputs)
    ours = own_output(adapted, inputs, scales)
    assert noisy == []
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    base = tiny_t2v.transformer(**inputs)[0]
    assert (ours - base).abs().max() > 1e-2


@pytest.mark.parametrize("fmt", ["diffusers", "comfy"])
def test_merged_file_equals_both_adapters(tiny_t2v, adapted, inputs, tmp_path, fmt):
    files = export_lora(both(adapted), fmt, scales=SCALES, merge=True, out=tmp_path)
    assert [f.name for f in files] == [("pytorch_lora_weights" if fmt == "diffusers" else "merged") + ".safetensors"]
    theirs, noisy = stock_output(tiny_t2v, files, inputs)
    assert noisy == []
    torch.testing.assert_close(theirs, own_output(adapted, inputs, SCALES), rtol=0, atol=1e-5)
    merged, _, meta = read_lora(files[0])
    assert merged.rank("blocks.0.attn1.to_q") == 4 + 2 and meta["merged"] is True
    parts = both(adapted)
    for m in merged.modules():
        expected = sum(SCALES[n] * parts[n].delta(m) for n in parts)
        # scales are folded into fp32 lora_B: one fp32 rounding per entry, hence 1e-6 rather than float64 exact
        torch.testing.assert_close(merged.delta(m), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["diffusers", "comfy", "peft"])
@pytest.mark.parametrize("scales", [None, SCALES], ids=["scale1", "scaled"])
def test_exported_adapters_are_zero_outside_their_group(adapted, tmp_path, fmt, scales):
    export_lora(both(adapted), fmt, scales=scales, out=tmp_path)
    groups = HeadGroups(adapted._effivmt_head_groups["spatial"]["labels"], 12)
    for name, other in (("spatial", "temporal"), ("temporal", "spatial")):
        weights, _, meta = read_lora(tmp_path / (name if fmt == "peft" else f"{name}.safetensors"))
        assert meta["adapters"] == [name]
        for m in weights.modules():
            outside = groups.row_mask(int(m.split(".")[1]), other)
            if m.endswith("to_out.0"):
                assert torch.all(weights.A(m)[:, outside] == 0) and torch.any(weights.A(m)[:, ~outside] != 0), m
            else:
                assert torch.all(weights.B(m)[outside] == 0) and torch.any(weights.B(m)[~outside] != 0), m


def tensors(path):
    files = [path / "adapter_model.safetensors"] if path.is_dir() else [path]
    with safe_open(str(files[0]), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("fmt", ["diffusers", "comfy", "peft"])
def test_round_trip_export_load_export_is_identical(tiny_t2v, adapted, tmp_path, fmt):
    (first,) = export_lora(both(adapted), fmt, out=tmp_path / "one", names=["spatial"])
    t = copy.deepcopy(tiny_t2v.transformer)
    load_lora(t, first, adapter_name="spatial")
    (second,) = export_lora({"spatial": adapter_weights(t, "spatial")}, fmt, out=tmp_path / "two")
    (a, meta_a), (b, _) = tensors(first), tensors(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if fmt == "diffusers":
        header = json.loads(meta_a["lora_adapter_metadata"])
        assert (header["transformer.r"], header["transformer.lora_alpha"]) == (4, 8)


def test_peft_folder_loads_with_peft_itself(tiny_t2v, adapted, inputs, tmp_path):
    from peft import PeftModel

    (folder,) = export_lora(both(adapted), "peft", out=tmp_path, names=["temporal"])
    model = PeftModel.from_pretrained(copy.deepcopy(tiny_t2v.transformer), str(folder))
    torch.testing.assert_close(model(**inputs)[0], own_output(adapted, inputs, {"temporal": 1.0}), rtol=0, atol=1e-6)


def test_in_memory_tuple_input_and_single_file_out(adapted, tmp_path):
    sd = {k: v for k, v in adapter_weights(adapted, "spatial").state_dict.items()}
    (path,) = export_lora({"spatial": (sd, 4, 8.0)}, "comfy", out=tmp_path / "my_lora.safetensors")
    weights, fmt, _ = read_lora(path)
    assert fmt == "comfy" and weights.alphas["blocks.0.attn1.to_q"] == 8.0
    with pytest.raises(ConfigError, match="names one file"):
        export_lora(both(adapted), "diffusers", out=tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="rank"):
        export_lora({"spatial": (sd, 16, 16.0)}, "diffusers", out=tmp_path)


def test_export_command_on_a_run_folder(adapted, tmp_path):
    run = tmp_path / "run"
    for name in ("spatial", "temporal"):
        save_peft_adapter(adapted, name, run / "adapters" / name)
    labels = adapted._effivmt_head_groups["spatial"]["labels"]
    (run / "heads.json").write_text(json.dumps({"alpha": 1.25, "labels": labels}))
    (run / "run.json").write_text(json.dumps({"config": {"model": {"path": "/models/Wan-T2V"}, "lora": {"rank": 4}}}))
    out = export(run, format="comfy", scale_temporal=2.0, merge=True)
    assert out == run / "export" / "comfy"
    weights, fmt, meta = read_lora(out / "merged.safetensors")
    assert fmt == "comfy"
    assert meta["base_model"] == "/models/Wan-T2V" and meta["head_labels"] == labels
    # --merge without --scale_spatial: the scale the run generates with (0: no run.json record, the default)
    assert meta["scales"] == {"spatial": 0.0, "temporal": 2.0} and meta["recipe"]["lora"] == {"rank": 4}
    assert meta["format"] == "comfy" and "version" in meta
    parts = both(adapted)
    m = "blocks.1.attn1.to_v"
    torch.testing.assert_close(weights.delta(m), 2 * parts["temporal"].delta(m))
    with pytest.raises(ConfigError, match="no adapter 'motion'"):
        export(run, adapters="motion")


def test_merge_pads_modules_one_adapter_lacks():
    a = LoraWeights.uniform({"m.lora_A.weight": torch.ones(2, 3), "m.lora_B.weight": torch.ones(4, 2)}, 4.0)
    b = LoraWeights.uniform({"n.lora_A.weight": torch.ones(1, 3), "n.lora_B.weight": torch.ones(4, 1)}, None)
    from effivmt.lora import merge_weights

    merged = merge_weights([a, b])
    assert merged.rank("m") == merged.rank("n") == 3
    torch.testing.assert_close(merged.delta("m"), a.delta("m"))
    torch.testing.assert_close(merged.delta("n"), b.delta("n"))


def _run_folder(adapted, tmp_path, **run_json):
    run = tmp_path / "run"
    for name in ("spatial", "temporal"):
        save_peft_adapter(adapted, name, run / "adapters" / name)
    (run / "run.json").write_text(json.dumps({"config": {}, **run_json}))
    return run


@pytest.mark.parametrize("recorded", [None, {"spatial": 0.5, "temporal": 0.75}])
def test_bare_merge_flag_works_and_defaults_to_the_run_scales(adapted, tmp_path, recorded, capsys):
    """Issue 12 item 9: `effivmt export RUN --merge` as the README writes it (no value after --merge) exits 0, and the
    merged file folds in the scales the run generated with (run.json `adapter_scales`; without: spatial 0, temporal 1),
    not 1 and 1."""
    from effivmt import cli

    run = _run_folder(adapted, tmp_path, **({"adapter_scales": recorded} if recorded else {}))
    out = tmp_path / "merged.safetensors"
    assert cli.main(["export", str(run), "--merge", "--out", str(out)]) == 0, capsys.readouterr().err
    weights, fmt, meta = read_lora(out)
    scales = recorded or {"spatial": 0.0, "temporal": 1.0}
    assert fmt == "diffusers" and meta["scales"] == scales
    parts = both(adapted)
    m = "blocks.0.attn1.to_q"
    want = scales["spatial"] * parts["spatial"].delta(m) + scales["temporal"] * parts["temporal"].delta(m)
    torch.testing.assert_close(weights.delta(m), want)
    # the one-file hint names the flag as the CLI takes it
    assert cli.main(["export", str(run), "--out", str(tmp_path / "two.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--merge for one file" in err
    assert cli.main(["export", str(run), "--merge", "--format", "comfy", "--out", str(tmp_path / "c.safetensors")]) == 0


def test_unknown_format_is_one_registry_error(adapted, tmp_path):
    from effivmt.lora import FORMATS

    with pytest.raises(ConfigError, match="unknown LoRA format 'comfyui'") as err:
        export_lora(both(adapted), "comfyui", out=tmp_path)
    assert "did you mean 'comfy'?" in str(err.value)
    assert list(FORMATS) == ["comfy", "peft", "diffusers"]
