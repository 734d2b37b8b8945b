"""Many clips, one recipe: ``effivmt run RECIPE --manifest clips.jsonl --out ROOT [--shard i/n]``.

The clip list ("manifest", a JSON-lines file) sits above the per-clip run: each line is one
:func:`effivmt.vmt.run.run_clip` into ``ROOT/<id>/``::

    {"clip": "clips/car.mp4", "clip_prompt": "a car turns", "prompt": "a red bus turns", "id": "car",
     "overrides": {"temporal.max_steps": 500, "lora": {"rank": 64}}}

``clip`` is required (relative paths start at the manifest's folder); ``id`` defaults to the clip's file
stem; ``overrides`` are recipe keys, dotted or nested, parsed and validated exactly like the recipe itself.
A row whose run folder says every selected stage is done is skipped, so re-running a manifest finishes what
is left. A failing row is appended to ``ROOT/failures.jsonl`` with its reason and the others go on; the command
then exits with status 2. ``--shard i/n`` keeps the rows whose 0-based index ``% n == i``: a SLURM array of
``n`` tasks, or ``n`` machines, share one manifest and one ``ROOT`` without coordination.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effivmt.errors import ConfigError, EffivmtError
from effivmt.recipe import ParsedRecipe
from effivmt.vmt.plan import RunPlan
from effivmt.vmt.run import run_clip

log = logging.getLogger("effivmt")

ROW_FIELDS = ("clip", "clip_prompt", "prompt", "id", "overrides")
FAILURES = "failures.jsonl"


@dataclass
class Row:
    """One manifest line: where it came from and what it asks for."""

    index: int
    """0-based position among the manifest's non-blank lines (what ``--shard`` splits)."""
    id: str
    """Name of the row's run folder under ROOT."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The line's JSON object (``clip`` already resolved against the manifest's folder)."""
    error: str | None = None
    """Why the line itself is unusable (not JSON, no clip, unknown field), if it is."""


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` -> ``(0, 1)``.

    Raises:
        ConfigError: anything else, e.g. ``"3/3"`` or ``"1-4"``.
    """
    if shard is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(
            f"--shard must be i/n with 0 <= i < n, got {shard!r}",
            "e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
        )
    return int(m[1]), int(m[2])


def _safe_id(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text).strip("._") or "row"


def read_manifest(path: Path) -> list[Row]:
    """Every non-blank line of ``path`` as a :class:`Row`; unusable lines carry their ``error`` instead of failing.

    Ids are made unique over the *whole* manifest (a repeated id gets ``-<index>``), so every shard names a row's
    folder the same way.
    """
    import difflib

    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise ConfigError(f"cannot read manifest {path}: {err.strerror}", "pass a JSON-lines file") from None
    rows, seen = [], set()
    for index, line in enumerate(lines):
        row = Row(index, f"row{index}")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            data, row.error = {}, f"line {index + 1} is not JSON ({err.msg})"
        if not row.error and (not isinstance(data, dict) or not data.get("clip")):
            row.error = f'line {index + 1} has no "clip"'
        unknown = [k for k in data if k not in ROW_FIELDS] if isinstance(data, dict) else []
        if not row.error and unknown:
            near = difflib.get_close_matches(unknown[0], ROW_FIELDS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"fields: {', '.join(ROW_FIELDS)}"
            row.error = f"line {index + 1}: unknown field {unknown[0]!r} ({hint})"
        if not row.error and not isinstance(data.get("overrides", {}), dict):
            row.error = f'line {index + 1}: "overrides" must be an object of recipe keys'
        if isinstance(data, dict) and data.get("clip"):
            row.id = _safe_id(str(data.get("id") or Path(str(data["clip"])).stem))
        if not row.error:
            clip = Path(data["clip"]).expanduser()
            data["clip"] = str(clip if clip.is_absolute() else (Path(path).parent / clip).absolute())
            row.fields = data
        if row.id in seen:
            row.id = f"{row.id}-{index}"
        seen.add(row.id)
        rows.append(row)
    return rows


def is_finished(folder: Path, stages: list[str]) -> bool:
    """Whether ``folder/run.json`` records every selected stage as done (``export`` may be absent: no adapters)."""
    try:
        recorded = json.loads((folder / "run.json").read_text()).get("stages", {})
    except (OSError, json.JSONDecodeError):
        return False
    status = {name: recorded.get(name, {}).get("status") for name in stages}
    return all(s == "done" or (name == "export" and s is None) for name, s in status.items())


def _record_failure(root: Path, row: Row, reason: str, kind: str, shard: str | None) -> None:
    """Append one line to ``ROOT/failures.jsonl`` (one ``write`` of one line: appends from shards do not interleave)."""
    entry = {
        "index": row.index,
        "id": row.id,
        "clip": row.fields.get("clip"),
        "error": reason,
        "type": kind,
        "shard": shard,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    root.mkdir(parents=True, exist_ok=True)
    with open(root / FAILURES, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _row_recipe(base: ParsedRecipe, row: Row, root: Path) -> ParsedRecipe:
    """The row's recipe: ``base`` + clip/prompts/out + its overrides, validated like the recipe itself."""
    values: dict[str, Any] = dict(row.fields.get("overrides") or {})
    for key in ("clip", "clip_prompt", "prompt"):
        if key in row.fields:
            values[key] = row.fields[key]
    values.update(out=str((root / row.id).absolute()), manifest=None, shard=None)
    return base.override(values)


def run_clips(manifest: Path, out: Path, recipe: ParsedRecipe, shard: str | None = None) -> Path:
    """Run every row of ``manifest`` (of this ``shard``) into ``out/<id>/``; see the module docstring.

    Args:
        manifest: the JSON-lines clip list.
        out: ROOT, the folder of the row folders and ``failures.jsonl``.
        recipe: the base recipe (the CLI's parsed arguments, or :meth:`ParsedRecipe.from_file`); each row's
            overrides are parsed on top of it, so recipe-relative paths and CLI flags carry over to every row.
        shard: ``"i/n"`` or ``None`` for all rows.

    Returns:
        ``out``.

    Raises:
        EffivmtError: after all rows ran, if any failed (the reasons are in ``out/failures.jsonl``).
    """
    index, count = parse_shard(shard)
    rows = [r for r in read_manifest(manifest) if r.index % count == index]
    done = skipped = 0
    failed: list[str] = []
    for n, row in enumerate(rows, 1):
        tag = f"manifest row {row.index} ({row.id}) [{n}/{len(rows)}]"
        try:
            if row.error:
                raise ConfigError(row.error)
            parsed = _row_recipe(recipe, row, out)
            plan = RunPlan.from_arguments(**parsed.kwargs(), config=parsed.dump())
            if is_finished(out / row.id, plan.stages):
                skipped += 1
                log.info(f"{tag}: finished earlier, skipped")
                continue
            log.info(f"{tag}: {row.fields['clip']}")
            run_clip(plan)
            done += 1
        except KeyboardInterrupt:
            raise
        except Exception as err:  # a failing row must not stop the others; its reason is recorded
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.error(f"{tag}: failed: {reason}")
            log.debug("traceback of the failure", exc_info=True)
            _record_failure(out, row, reason, type(err).__name__, shard)
            failed.append(row.id)
    log.info(
        f"manifest: {done} run, {skipped} already finished, {len(failed)} failed of {len(rows)} rows"
        + (f" (shard {index}/{count})" if count > 1 else "")
    )
    if failed:
        raise EffivmtError(
            f"{len(failed)} of {len(rows)} manifest rows failed ({', '.join(failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''})",
            f"reasons in {out / FAILURES}",
        )
    return out


__all__ = ["FAILURES", "Row", "is_finished", "parse_shard", "read_manifest", "run_clips"]
