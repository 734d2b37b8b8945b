import pytest
import torch
from helpers import load_bench


def _bench():
    return load_bench("bench_omnitransfer")


def test_bench_runs_on_the_tiny_preset(capsys):
    """One JSON line: per-step and amortised ratios for one and two references; cache and recompute agree."""
    import json

    report = _bench().main(["--preset", "tiny", "--steps", "1", "--generation_steps", "10"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    for case in (report, report["two_references"]):
        assert set(case["ms_per_step"]) == {"joint_full", "decoupled_recompute", "decoupled_cached"}
        assert case["cached_vs_recompute_max_abs_diff"] == 0.0
        ms, gen = case["ms_per_step"], case["generation_ms"]
        assert abs(gen["joint_full"] - 10 * ms["joint_full"]) < 0.2
        assert abs(gen["decoupled_cached"] - (case["one_time_reference_ms"] + 10 * ms["decoupled_cached"])) < 0.2
    assert report["target_tokens"] == report["reference_tokens"] == 12
    assert report["two_references"]["references"] == 2 and report["two_references"]["tasks"] == "id+motion"
    # 2 layers x (K + V) x 12 tokens x 4 heads x 12 dims x 4 bytes per reference
    assert report["cache_bytes"] == 2 * 2 * 12 * 48 * 4 and report["two_references"]["cache_bytes"] == 2 * 9216


def test_joint_baseline_embeds_each_distinct_timestep_once(pipe, branch_inputs):
    """The time-embedding MLP sees 2B rows (t and 0 per item), not one row per token of ``[target; refs]``."""
    target, refs, _, _, ctx, img = branch_inputs(pipe.model, batch=2, tasks=("id", "motion"))
    rows = []
    embedder = pipe.model.transformer.condition_embedder.time_embedder
    handle = embedder.register_forward_pre_hook(lambda mod, args: rows.append(args[0].shape[:-1].numel()))
    try:
        with torch.no_grad():
            pipe.model.joint_forward(target, torch.tensor([500.0]), refs, ["id", "motion"], ctx, img)
    finally:
        handle.remove()
    assert rows == [4]  # old: 2 items x (12 + 12 + 12) tokens = 72


def test_heldout_bench_compares_each_variant_with_no_reference_row_by_row():
    """The headline figure is a paired difference: row by row, so a hard row counts against both variants."""
    bench = load_bench("omnitransfer_heldout")
    rows = lambda scores: [  # noqa: E731
        {"name": f"{i}", "task": task, "score": s} for i, (task, s) in enumerate(scores)
    ]
    results = {
        "no-reference": {"rows": rows([("motion", 0.5), ("motion", 0.9), ("id", 0.2)])},
        "trained": {"rows": rows([("motion", 0.6), ("motion", 1.0), ("id", 0.1)])},
    }
    bench._versus(results, "no-reference")
    versus = results["trained"]["versus"]["no-reference"]
    assert versus["motion"][0] == versus["motion"][1] == versus["motion"][2] == pytest.approx(0.1)
    assert versus["id"][0] == pytest.approx(-0.1) and versus["all"][0] == pytest.approx(1 / 30)
    assert "versus" not in results["no-reference"]
    bench._versus(results, "absent")  # a base that did not run adds nothing


def test_heldout_bench_draws_each_motion_rows_paths(tmp_path):
    """``paths.png``: one panel per motion row (other tasks have no path), the target's path in white and each
    variant's path, read from its pixels, in its own colour; a clip that follows the target draws its line where
    the target's is."""
    import numpy as np
    from PIL import Image

    from effivmt.data.world import render, sample_scene

    bench = load_bench("omnitransfer_heldout")
    clip = render(sample_scene(3, motion="orbit"), 33, 64, 64)
    frames = clip.frames.numpy()
    metas = [
        {"name": "0000-motion", "task": "motion", "meta": {"target_path": clip.tracks[0].tolist()}},
        {"name": "0001-camera", "task": "camera", "meta": {}},
    ]
    samples = {"copy": [frames, frames], "reference": [frames, frames]}
    bench._save_paths(tmp_path, samples, metas)
    image = np.asarray(Image.open(tmp_path / "paths.png").convert("RGB")).astype(int)
    assert image.shape[1] == 64 * 4  # one panel: the camera row has none
    red = (image[..., 0] > 200) & (image[..., 1] < 90) & (image[..., 2] < 90)
    white = (image > 240).all(-1)
    assert red[: 64 * 4].sum() > 100 and white[: 64 * 4].sum() > 100
    x, y = clip.tracks[0, 16].tolist()  # mid-path: the copy's line lies on (or under) the target's
    near = (slice(int(y * 4) - 6, int(y * 4) + 7), slice(int(x * 4) - 6, int(x * 4) + 7))
    assert (red[near] | white[near]).any()
