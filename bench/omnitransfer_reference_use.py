"""Does a trained OmniTransfer read its reference? The flow loss with a row's own reference against another's.

For each of the first ``--rows`` rows of one task in a pairs manifest (``python -m effivmt.omnitransfer.pairs``),
the stage-1 training loss (:meth:`OmniTransferModule.compute_loss`: the DiT, its UMT5 prompt, the file's task
settings and ``--object-weight``) is averaged over ``--draws`` fixed noise draws twice: with the row's own
reference, and with the next row's reference (same task, another path / camera / look). A model that uses what
its reference carries has a lower loss with its own one; a model that ignores the reference has none: the
difference ``other - own`` is the loss the reference is worth, with a bootstrap 95% interval over rows.

It needs no generation, so it separates "the reference is not read" from "the reader or the sampler fails",
and a manifest whose reference is the target itself (``--oracle``) asks whether the branch can carry
anything at all::

    python bench/omnitransfer_reference_use.py --manifest runs/omnitransfer-pairs/train.jsonl --task motion \\
        --variant stage1=runs/omnitransfer-micro/stage1/omnitransfer.safetensors --variant untrained
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, bootstrap, log, setup  # noqa: E402


def rows_of(manifest: Path, task: str, count: int, oracle: bool) -> list[dict]:
    """The first ``count`` items of ``task``, at the clip size of the pairs build (its ``pairs.json``); ``oracle``:
    each item's reference replaced by its own target clip."""
    from effivmt.omnitransfer.data import PairedVideoDataModule

    frames, height, width = json.loads((manifest.parent / "pairs.json").read_text())["size"]
    data = PairedVideoDataModule(manifest, frames, height, width, None, num_workers=0, shuffle=False, tasks=[task])
    dataset = data.train_dataloader().dataset
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if oracle:
        for item in items:
            item["references"] = [item["target"]]
    return items


def measure(weights: Path | None, items: list[dict], draws: int, object_weight: float) -> dict:
    """Per-row mean loss with the own and with the next row's reference."""
    from effivmt.omnitransfer.checkpoint import read_metadata
    from effivmt.omnitransfer.data import collate_pairs
    from effivmt.omnitransfer.module import OmniTransferModule
    from effivmt.omnitransfer.tasks import TaskConfig

    meta = read_metadata(weights) if weights is not None else {}
    tasks = TaskConfig(**meta["tasks"]) if "tasks" in meta else TaskConfig(num_queries=4)
    module = OmniTransferModule(stage=1, init_from=weights, tasks=tasks, object_weight=object_weight)
    module.configure_model()
    module.model.eval()
    own, other = [], []
    for j, item in enumerate(items):
        batch = collate_pairs([item])
        swapped = collate_pairs([item])
        swapped["references"] = collate_pairs([items[(j + 1) % len(items)]])["references"]
        for losses, b in ((own, batch), (other, swapped)):
            with torch.no_grad():
                draw = [float(module.compute_loss(b, torch.Generator().manual_seed(k))) for k in range(draws)]
            losses.append(sum(draw) / draws)
    own_a, other_a = np.array(own), np.array(other)
    return {
        "bias": tasks.bias,
        "flags": tasks.flags,
        "own": float(own_a.mean()),
        "other": float(other_a.mean()),
        "other_minus_own": bootstrap(list(other_a - own_a)),
        "rows_lower_with_own": int((other_a > own_a).sum()),
        "rows": len(own),
        "per_row": {"own": own, "other": other},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--manifest", type=Path, required=True, help="a pairs manifest (train.jsonl, heldout.jsonl)")
    parser.add_argument("--task", default="motion", help="rows of this task (a single-reference task)")
    parser.add_argument("--variant", action="append", required=True, help="NAME=WEIGHTS, or 'untrained'")
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--draws", type=int, default=6, help="fixed noise draws per row and reference")
    parser.add_argument("--object-weight", type=float, default=1.0, help="1: the plain flow loss")
    parser.add_argument("--oracle", action="store_true", help="each row's reference is its own target clip")
    args = parser.parse_args()
    info = setup(args)
    items = rows_of(args.manifest, args.task, args.rows, args.oracle)
    if len(items) < 2:
        parser.error(f"{args.manifest} has {len(items)} {args.task!r} row(s); at least 2 are needed")
    out = {"bench": "omnitransfer_reference_use", **info, **{k: str(v) for k, v in vars(args).items()}}
    out["variants"] = {}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        weights = Path(path) if path else None
        if name != "untrained" and weights is None:
            parser.error(f"--variant {spec!r}: give NAME=WEIGHTS or 'untrained'")
        result = measure(weights, items, args.draws, args.object_weight)
        diff = result["other_minus_own"]
        log(
            f"{name}: own {result['own']:.4f}, other {result['other']:.4f}, other - own {diff[0]:+.4f} "
            f"[{diff[1]:+.4f}, {diff[2]:+.4f}], {result['rows_lower_with_own']}/{result['rows']} rows lower with own"
        )
        out["variants"][name] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main()
