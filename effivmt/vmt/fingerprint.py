"""What each stage of a run depends on, so a re-run into a finished folder cannot mix inputs (issue 12, item 7).

``run.json`` keeps, per stage, the inputs that decide its result as flat ``key: value`` pairs (``inputs``). A re-run
compares them with its own plan before it writes anything:

* ``heads``, the clip cache, ``spatial`` and ``temporal`` keep files that later stages build on (``heads.json``,
  ``cache/``, ``adapters/<name>/``, ``checkpoints/<name>/last.ckpt``). If any of their inputs changed (another clip,
  rank, alpha, model, step count ...) the run is **refused** in one line naming the first key that changed, and
  ``run.json`` is left as it was: choose another ``--out``, or delete the files the message names.
* ``export`` and ``generate`` are cheap and write new files: a change simply **redoes** them.

Settings that do not change a stage's result (devices, precision, progress bar, checkpoint/log/sample periods) are
not part of its inputs, so a re-run on another machine or with more logging resumes as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from effivmt.errors import ConfigError
from effivmt.io import as_path
from effivmt.training.record import plain_json
from effivmt.vmt.plan import RunPlan

#: Stage settings that change how often we look, not what is learned.
NOT_INPUTS = {"checkpoint_every", "log_every", "sample_every"}
#: Stages whose results later stages build on: a change of inputs is refused rather than silently redone.
KEPT = ("heads", "cache", "spatial", "temporal")


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (16 hex digits), read in 4 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"rank": 4}}`` -> ``{"lora.rank": 4}`` (lists stay values)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in NOT_INPUTS:
            continue
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _model(plan: RunPlan) -> dict[str, Any]:
    """The model the plan resolves to, with a digest of its folder (``path: null`` is the default model here)."""
    from effivmt.backbone.wan import model_identity

    return {"path": model_identity(as_path(plan.model.path)), "dtype": plan.model.dtype, "seed": plan.model.seed}


def stage_inputs(plan: RunPlan, clip_digest: str) -> dict[str, dict[str, Any]]:
    """Per stage, the flat inputs that decide its result; each stage includes those of the stages it reads."""
    g = {
        name: plain_json(getattr(plan, name)) for name in ("video", "heads", "lora", "spatial", "temporal", "generate")
    }
    clip = {"clip": clip_digest, "video": g["video"], "model": _model(plan)}
    heads = {**clip, "clip_prompt": plan.clip_prompt, "heads": g["heads"]}
    cache = {**clip, "clip_prompt": plan.clip_prompt}
    spatial = {**heads, **cache, "lora": g["lora"], "spatial": g["spatial"], "seed": plan.seed}
    temporal = {**spatial, "temporal": g["temporal"]}
    scales = {"spatial": plan.generate.scale_spatial, "temporal": plan.generate.scale_temporal}
    export = {**temporal, "scales": scales}
    generate = {**temporal, "prompt": plan.prompt, "generate": g["generate"]}
    stages = {"heads": heads, "cache": cache, "spatial": spatial, "temporal": temporal}
    return {k: _flat(v) for k, v in {**stages, "export": export, "generate": generate}.items()}


def _first_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
    return None


def _kept_files(out: Path, stage: str) -> list[Path]:
    files = {
        "heads": [out / "heads.json"],
        "cache": [out / "cache"],
        "spatial": [out / "adapters" / "spatial", out / "checkpoints" / "spatial"],
        "temporal": [out / "adapters" / "temporal", out / "checkpoints" / "temporal"],
    }[stage]
    return [f for f in files if f.exists()]


def check_reuse(out: Path, recorded: dict[str, Any], inputs: dict[str, dict[str, Any]]) -> list[str]:
    """Refuse a re-run whose inputs differ from what the folder's kept stages were made with.

    Args:
        out: the run folder.
        recorded: the folder's ``run.json`` (empty for a new folder).
        inputs: :func:`stage_inputs` of this run's plan.

    Returns:
        The cheap stages (``export``, ``generate``) whose inputs changed and which must run again.

    Raises:
        ConfigError: a kept stage (heads, cache, spatial, temporal) has files made with other inputs.
    """
    before = recorded.get("inputs") or {}
    for stage in KEPT:
        files = _kept_files(out, stage)
        if not files or stage not in before:
            continue
        change = _first_change(before[stage], inputs[stage])
        if change is not None:
            names = ", ".join(str(f.relative_to(out)) for f in files)
            raise ConfigError(
                f"{out} holds a {stage} stage made with other inputs ({change})",
                f"choose another --out, or delete {names} in it to redo the {stage} stage and what follows",
            )
    return [s for s in ("export", "generate") if s in before and _first_change(before[s], inputs[s])]


__all__ = ["KEPT", "NOT_INPUTS", "check_reuse", "file_digest", "stage_inputs"]
