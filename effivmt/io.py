"""Paths and atomic writes: recipe paths as `pathlib.Path`, and nothing half-written ever left under a final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonargparse.typing import path_type

from effivmt.errors import EffivmtError

#: A path that need not exist yet; given in a recipe it is relative to the recipe file, on the CLI to the cwd.
AnyPath = path_type("")


def as_path(value: str | os.PathLike | None) -> Path | None:
    """jsonargparse path (resolved against the recipe's folder) or plain str -> ``pathlib.Path``."""
    if value is None:
        return None
    if isinstance(value, Path):  # pathlib's ``absolute`` is a method, not jsonargparse's resolved string
        return value
    return Path(getattr(value, "absolute", value))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix (so writers that sniff the extension, such as PyAV,
    still work) and lives in the same folder (so ``os.replace`` is a rename, atomic on POSIX).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    except OSError as err:
        raise EffivmtError(f"cannot write to {path.parent}: {err.strerror}", "choose a writable --out folder") from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _default_mode(tmp_path, 0o666)  # after the writer: some (safetensors) replace the file with a 0600 one
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise EffivmtError(
            f"writing {path} failed: {err.strerror or err}", "check free disk space and permissions"
        ) from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _default_mode(path: Path, base: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give them the mode a plain ``open`` would (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, base & ~umask)


def package_asset(*parts: str) -> Path:
    """A path under ``effivmt/assets`` of the installed package (the micro models and their weights)."""
    from importlib import resources

    return Path(str(resources.files("effivmt").joinpath("assets", *parts)))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through :func:`atomic_path`."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    _default_mode(tmp, 0o777)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
