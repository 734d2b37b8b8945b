"""Export trained head-group adapters to the formats users load (DESIGN.md, "Facts from the public record").

Exported adapters are ordinary LoRAs: the zeros outside each head group are baked in, so tools that know nothing
of heads load them. Formats come from one registry (:data:`effivmt.lora.formats.registry.FORMATS`). Output is a
folder; what lands in it:

========== ============================== =================================
format     one file per adapter           ``merge=True``
========== ============================== =================================
diffusers  ``OUT/<name>.safetensors``     ``OUT/pytorch_lora_weights.safetensors``
comfy      ``OUT/<name>.safetensors``     ``OUT/merged.safetensors``
peft       ``OUT/<name>/`` (peft folder)  ``OUT/merged/``
========== ============================== =================================

An ``out`` ending in ``.safetensors`` (diffusers/comfy, one output) names the file itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from effivmt.errors import ConfigError, EffivmtError
from effivmt.io import atomic_dir, atomic_path
from effivmt.lora.config import DEFAULT_SCALES
from effivmt.lora.formats import Format, LoraWeights, merge_weights
from effivmt.lora.formats.registry import LoraFormat, get_format

AdapterInput = LoraWeights | tuple[Mapping[str, torch.Tensor], int, float]


def _as_weights(value: AdapterInput) -> LoraWeights:
    if isinstance(value, LoraWeights):
        return value
    state_dict, rank, alpha = value
    weights = LoraWeights.uniform(state_dict, alpha)
    ranks = {weights.rank(m) for m in weights.modules()}
    if ranks != {rank}:
        raise ConfigError(f"adapter tensors have rank(s) {sorted(ranks)}, but rank {rank} was given")
    return weights


def read_run_adapters(run_dir: Path, names: list[str]) -> tuple[dict[str, LoraWeights], dict[str, Any]]:
    """Adapters ``run_dir/adapters/<name>/`` (peft folders) and the run's metadata (model, labels, recipe)."""
    from effivmt.lora.formats.peft import read_peft

    run_dir = Path(run_dir)
    if not (run_dir / "adapters").is_dir():
        raise EffivmtError(f"{run_dir} has no adapters/ folder", "give the --out folder of a finished `effivmt run`")
    adapters = {}
    for name in names:
        folder = run_dir / "adapters" / name
        if not folder.is_dir():
            present = sorted(p.name for p in (run_dir / "adapters").iterdir() if p.is_dir())
            raise ConfigError(f"{run_dir} has no adapter {name!r}", f"adapters there: {', '.join(present) or 'none'}")
        adapters[name] = read_peft(folder)[0]
    meta: dict[str, Any] = {"run_dir": str(run_dir.resolve())}
    if (run_dir / "heads.json").is_file():
        heads = json.loads((run_dir / "heads.json").read_text())
        meta["head_labels"] = heads.get("labels")
        meta["head_alpha"] = heads.get("alpha")
    if (run_dir / "run.json").is_file():
        run = json.loads((run_dir / "run.json").read_text())
        recipe = run.get("config", run)
        meta["recipe"] = recipe
        model = recipe.get("model") if isinstance(recipe, dict) else None
        meta["base_model"] = (model.get("path") if isinstance(model, dict) else model) or "tiny (embedded)"
    return adapters, meta


def _write(weights: LoraWeights, fmt: LoraFormat, target: Path, metadata: dict[str, Any]) -> Path:
    """One adapter in ``fmt`` at ``target``, atomically (a temporary folder or file renamed when complete)."""
    with (atomic_dir if fmt.folder else atomic_path)(target) as tmp:
        fmt.write(weights, tmp, metadata)
    return target


def export_lora(
    adapters: Mapping[str, AdapterInput] | str | Path,
    fmt: Format = "diffusers",
    scales: Mapping[str, float] | None = None,
    merge: bool = False,
    out: str | Path | None = None,
    metadata: Mapping[str, Any] | None = None,
    names: list[str] | None = None,
) -> list[Path]:
    """Write adapters as ordinary LoRAs in ``fmt``; returns the paths written (files, or folders for peft).

    Args:
        adapters: ``{name: LoraWeights | (state_dict, rank, alpha)}``, or a run folder holding
            ``adapters/<name>/`` peft folders (plus ``heads.json`` and ``run.json`` for metadata).
        fmt: a registered layout: ``"diffusers"``, ``"comfy"`` or ``"peft"``.
        scales: per-adapter scale folded into lora_B (default 1 each).
        merge: write one LoRA of rank sum(r): A stacked on rows, B on columns, each ``scale * alpha / r`` folded
            into B, alpha = rank. It adds exactly the sum of the adapters' updates.
        out: output folder (default ``<run>/export/<fmt>``; required for in-memory adapters), or a
            ``.safetensors`` file when exactly one file is written.
        metadata: extra header entries (``base_model``, ``head_labels``, ``recipe``...).
        names: which adapters to export (default: all given).

    Raises:
        ConfigError: unknown format or adapter, or a scale for an adapter not exported.
    """
    import effivmt

    layout = get_format(fmt)
    meta: dict[str, Any] = {}
    if isinstance(adapters, str | Path):
        run_dir = Path(adapters)
        weights, meta = read_run_adapters(run_dir, names or ["spatial", "temporal"])
        out = Path(out) if out is not None else run_dir / "export" / fmt
    else:
        chosen = names or list(adapters)
        missing = [n for n in chosen if n not in adapters]
        if missing:
            raise ConfigError(f"no adapter named {missing[0]!r} to export", f"adapters: {', '.join(adapters)}")
        weights = {n: _as_weights(adapters[n]) for n in chosen}
        if out is None:
            raise ConfigError("export_lora needs an output folder (out) for in-memory adapters")
        out = Path(out)
    if not weights:
        raise ConfigError("no adapters to export")
    scales = dict(scales or {})
    stray = [n for n in scales if n not in weights]
    if stray:
        raise ConfigError(f"a scale was given for {stray[0]!r}, which is not exported")
    meta.update(metadata or {})
    meta.update(version=effivmt.__version__, format=fmt)

    if merge:
        parts = [w.scaled(scales.get(n, 1.0)) for n, w in weights.items()]
        outputs = {layout.merged_name: (merge_weights(parts), {"adapters": list(weights), "merged": True})}
    else:
        outputs = {n: (w.scaled(scales.get(n, 1.0)), {"adapters": [n], "merged": False}) for n, w in weights.items()}

    single_file = out.suffix == ".safetensors"
    if single_file and (layout.folder or len(outputs) != 1):
        raise ConfigError(
            f"--out {out} names one file, but this export writes {len(outputs)} {fmt} output(s)",
            "give a folder, or --merge for one file",
        )
    written = []
    for name, (lora, extra) in outputs.items():
        first = lora.modules()[0]
        file_meta = {
            **meta,
            **extra,
            "scales": {n: scales.get(n, 1.0) for n in extra["adapters"]},
            "rank": lora.rank(first),
            "alpha": lora.alphas[first],
        }
        target = out if single_file else layout.target(out, name)
        written.append(_write(lora, layout, target, file_meta))
    return written


def recorded_scales(run_dir: Path) -> dict[str, float]:
    """The adapter scales a run generated with (``run.json``'s ``adapter_scales``), else :data:`DEFAULT_SCALES`."""
    try:
        recorded = json.loads((Path(run_dir) / "run.json").read_text()).get("adapter_scales") or {}
    except (OSError, json.JSONDecodeError):
        recorded = {}
    return {**DEFAULT_SCALES, **{k: float(v) for k, v in recorded.items()}}


def export(
    run_dir: Path,
    format: str = "diffusers",
    adapters: str = "spatial,temporal",
    scale_spatial: float | None = None,
    scale_temporal: float | None = None,
    merge: bool = False,
    out: Path | None = None,
) -> Path:
    """Export a run's head-group LoRAs for diffusers, ComfyUI or peft.

    Args:
        run_dir: folder of a finished ``effivmt run`` (holds ``adapters/spatial`` and ``adapters/temporal``).
        format: diffusers (``transformer.*`` keys, alpha in the header), comfy (original Wan keys with ``.alpha``)
            or peft (adapter_config.json + adapter_model.safetensors).
        adapters: comma-separated adapters to export.
        scale_spatial: strength of the spatial (appearance) adapter, folded into its weights. Default: with
            ``--merge`` the scale the run generated with (``run.json``, 0 unless the recipe changed it), so the
            merged file renders what the run rendered; without, 1 (the adapter as trained).
        scale_temporal: strength of the temporal (motion) adapter, the same way (run default 1).
        merge: write one LoRA whose update is the sum of the adapters' (rank r_spatial + r_temporal).
        out: output folder (default ``RUN_DIR/export/FORMAT``) or, for one file, a ``.safetensors`` path.

    Returns:
        The output folder (or file).
    """
    get_format(format)
    defaults = recorded_scales(run_dir) if merge else {"spatial": 1.0, "temporal": 1.0}
    scale_spatial = defaults["spatial"] if scale_spatial is None else scale_spatial
    scale_temporal = defaults["temporal"] if scale_temporal is None else scale_temporal
    names = [n.strip() for n in adapters.split(",") if n.strip()]
    if not names:
        raise ConfigError("--adapters is empty", "e.g. --adapters spatial,temporal")
    scales = {n: s for n, s in (("spatial", scale_spatial), ("temporal", scale_temporal)) if n in names}
    out = Path(out) if out is not None else Path(run_dir) / "export" / format
    export_lora(Path(run_dir), format, scales=scales, merge=merge, out=out, names=names)
    return out
