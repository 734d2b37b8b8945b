import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_omnitransfer.py"


def test_bench_runs_on_the_tiny_preset(capsys):
    """The benchmark prints one JSON line; cached and recomputed reference K/V give the same target output."""
    import json

    spec = importlib.util.spec_from_file_location("bench_omnitransfer", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--preset", "tiny", "--steps", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert set(report["ms_per_step"]) == {"joint_full", "decoupled_recompute", "decoupled_cached"}
    assert report["cached_vs_recompute_max_abs_diff"] == 0.0
    assert report["target_tokens"] == report["reference_tokens"] == 12
