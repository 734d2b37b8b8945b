"""``run.json``: the resolved recipe, library versions, and per-stage status, wall time and peak memory.

Both methods keep one per run folder. Only global rank 0 writes it: with ``strategy: ddp`` Lightning starts
ranks > 0 by re-running the command, and under SLURM every rank runs it from the start; one writer keeps the file
consistent, and the other ranks keep their copy in memory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from effivmt.io import write_json_atomic
from effivmt.training.strategies import is_global_zero


def plain_json(value: Any) -> Any:
    """A JSON-friendly picture of arguments: dataclasses as dicts, optimizers and samplers as ``class_path``."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: plain_json(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, functools.partial):  # jsonargparse's OptimizerCallable: partial(wrapper, cls, **init_args)
        target = value.args[0] if value.args and isinstance(value.args[0], type) else value.func
        return {"class_path": _qualname(target), "init_args": plain_json(dict(value.keywords))}
    if callable(value) and hasattr(value, "__qualname__"):
        return _qualname(value)
    return {"class_path": _qualname(type(value)), "init_args": plain_json(dict(getattr(value, "__dict__", {})))}


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("effivmt", "torch", "diffusers", "peft", "lightning", "transformers", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def peak_memory_mb() -> dict[str, float]:
    """Process RSS high-water mark, and the CUDA allocator's peak since the last reset when on a GPU."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss_kb / (1024 if sys.platform != "darwin" else 1024**2), 1)}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


class RunRecord:
    """Reads and updates ``run.json`` in a run folder; every update is an atomic rewrite (by rank 0 only)."""

    def __init__(self, out: Path, config: Any = None) -> None:
        self.path = Path(out) / "run.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("stages", {})
        if config is not None:
            self.data["config"] = config
        self.data["versions"] = versions()
        self.data["command"] = " ".join(sys.argv)
        self.save()

    def save(self) -> None:
        if is_global_zero():
            write_json_atomic(self.path, self.data)

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished in this folder (status ``done``)."""
        return self.data["stages"].get(stage, {}).get("status") == "done"

    def record(self, stage: str, **fields: Any) -> None:
        """Merge ``fields`` into ``stages.<stage>`` and save."""
        self.data["stages"].setdefault(stage, {}).update(fields)
        self.save()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and record its wall time, peak memory and status (``failed`` if it raises)."""
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        self.record(name, status="running")
        try:
            yield
        except KeyboardInterrupt:
            self.record(name, status="interrupted", wall_s=round(time.perf_counter() - start, 2), **peak_memory_mb())
            raise
        except BaseException:
            self.record(name, status="failed", wall_s=round(time.perf_counter() - start, 2), **peak_memory_mb())
            raise
        self.record(name, status="done", wall_s=round(time.perf_counter() - start, 2), **peak_memory_mb())


__all__ = ["RunRecord", "peak_memory_mb", "plain_json", "versions"]
