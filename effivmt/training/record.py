"""``run.json``: resolved config, library versions, and per-stage wall time and peak memory."""

from __future__ import annotations

import contextlib
import contextvars
import platform
import resource
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from effivmt.io import write_json_atomic

#: The resolved recipe (YAML text) of the running command, set by the CLI; ``None`` when called from Python.
RESOLVED_CONFIG: contextvars.ContextVar[str | None] = contextvars.ContextVar("effivmt_resolved_config", default=None)


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


class RunManifest:
    """Reads and updates ``run.json`` in a run folder; every update is an atomic rewrite."""

    def __init__(self, out: Path, config: Any = None) -> None:
        self.path = Path(out) / "run.json"
        import json

        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("stages", {})
        if config is not None:
            self.data["config"] = config
        self.data["versions"] = versions()
        self.data["command"] = " ".join(sys.argv)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage, {}).get("status") == "done"

    def record(self, stage: str, **fields: Any) -> None:
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
        except BaseException:
            self.record(name, status="failed", wall_s=round(time.perf_counter() - start, 2), **peak_memory_mb())
            raise
        self.record(name, status="done", wall_s=round(time.perf_counter() - start, 2), **peak_memory_mb())
