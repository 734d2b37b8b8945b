"""Stage after stage of ``micro_direction_probe``, each warm from the last and scored by ``micro_prompts``; resumable.

Teaching the micro DiT its direction words takes tens of thousands of steps (docs/micro-wan.md, "Teaching the
direction words"), more than one sitting of a 2-core machine. So the work is cut into stages: stage ``k`` trains
``--model <stage k-1> --steps S --seed K`` and is kept in ``--out`` as ``stage-<total steps>/`` (the model),
``stage-<total steps>.json`` (the probe's word-use line) and ``prompts-<total steps>.json`` (``micro_prompts``). A
stage whose files are there is not run again; one recorded from other inputs (start, steps, seed or probe options)
is refused, never reused. ``--pack DEST`` then writes the last stage's model with bf16 weights (what the package
ships; ``effivmt.pretrain.run.pack_folder``) and the chain's record as ``DEST/chain.json``: small enough to commit,
it is where the next sitting starts (``--start DEST``: the record goes on from it, steps and stages).

One JSON line on stdout: per stage its steps, seed, training time, the direction-swap loss increase at noise 0.8
and the ``micro_prompts`` rates::

    python bench/micro_direction_chain.py --start micro --stages 6000:1 6000:2 6000:3 --out runs/mix \\
        --pack bench/checkpoints/micro-t2v-tail-mix -- --trail --motions pretrain --p-image 0.1 --p-appearance 0.1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def parse_stage(text: str) -> tuple[int, int]:
    """``"6000:1"`` -> ``(6000, 1)``: a stage's steps and its seed (which draws its 800 training clips)."""
    try:
        steps, seed = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"stage {text!r} is not STEPS:SEED, e.g. 6000:1") from None
    if steps <= 0:
        raise argparse.ArgumentTypeError(f"stage {text!r} has no steps")
    return steps, seed


def run_to_file(cmd: list[str], out: Path, log: Path) -> None:
    """Run ``cmd``; its stdout's last line becomes ``out`` (written under a temporary name, then renamed)."""
    from effivmt.io import write_text_atomic

    with log.open("w") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{Path(cmd[1]).name} failed (exit {done.returncode}); its log: {log}")
    write_text_atomic(out, done.stdout.strip().splitlines()[-1] + "\n")


def chain(args: argparse.Namespace) -> dict:
    from effivmt.io import write_json_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    before = Path(args.start) / "chain.json"  # a packed chain: its record goes on
    history = json.loads(before.read_text()) if before.is_file() else {"start": str(args.start), "stages": []}
    model, rows = str(args.start), list(history["stages"])
    total = rows[-1]["total_steps"] if rows else 0
    for steps, seed in args.stages:
        total += steps
        folder = args.out / f"stage-{total}"
        probe_json = args.out / f"stage-{total}.json"
        made_from = {"model": model, "steps": steps, "seed": seed, "probe_args": args.probe_args}
        record = args.out / f"stage-{total}.inputs.json"
        if record.is_file():
            if json.loads(record.read_text()) != made_from:
                sys.exit(
                    f"{folder} was made from {record.read_text().strip()}, not {json.dumps(made_from)}: "
                    "pick another --out or remove that stage"
                )
        elif folder.exists() or probe_json.exists():
            sys.exit(
                f"{folder} has no record of what it was made from ({record.name}): remove it or pick another --out"
            )
        write_json_atomic(record, made_from)
        if not (folder / "model_index.json").is_file() or not probe_json.is_file():
            cmd = [sys.executable, str(BENCH / "micro_direction_probe.py"), "--model", model, "--steps", str(steps)]
            cmd += ["--seed", str(seed), "--out", str(folder), *args.probe_args]
            run_to_file(cmd, probe_json, args.out / f"stage-{total}.log")
        prompts_json = args.out / f"prompts-{total}.json"
        if not prompts_json.is_file():
            cmd = [sys.executable, str(BENCH / "micro_prompts.py"), "--model", str(folder)]
            run_to_file(cmd, prompts_json, args.out / f"prompts-{total}.log")
        probe, prompts = json.loads(probe_json.read_text()), json.loads(prompts_json.read_text())
        increase = probe["sigmas"].get("0.8", {}).get("direction", {})
        rows.append(
            {
                **made_from,
                "total_steps": total,
                "train_s": probe["train_s"],
                "direction_increase_0.8": increase,
                "micro_prompts": prompts["rates"],
            }
        )
        print(f"stage {total}: {prompts['rates']}", file=sys.stderr, flush=True)
        model = str(folder)
    result = {"bench": "micro_direction_chain", "start": history["start"], "stages": rows}
    if args.pack is not None:
        from effivmt.pretrain.run import pack_folder

        write_json_atomic(Path(model) / "chain.json", result)  # packed with the weights, in one rename
        pack_folder(Path(model), args.pack)
    return result


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    probe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", default="micro", help="'micro' or a WanPipeline folder (a packed chain)")
    parser.add_argument("--stages", type=parse_stage, nargs="+", required=True, help="STEPS:SEED per stage")
    parser.add_argument("--out", type=Path, required=True, help="stage folders and JSONs (resumes from them)")
    parser.add_argument("--pack", type=Path, default=None, help="write the last stage here in bf16, with chain.json")
    args = parser.parse_args(argv)
    args.probe_args = probe_args
    result = chain(args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
