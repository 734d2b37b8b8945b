"""Atomic writes: a file appears complete or not at all, with the mode a plain ``open`` would give it."""

import os
import stat

import pytest
import torch

from effivmt.io import atomic_path, write_text_atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("writer", ["text", "safetensors"])
def test_atomic_files_get_the_umask_mode_whatever_the_writer(tmp_path, writer):
    """safetensors' ``save_file`` replaces the temporary file with a 0600 one; the result must still be readable by
    the group and others as ``umask`` allows (a packaged weights file or an exported adapter shared with others)."""
    path = tmp_path / f"out.{writer}"
    if writer == "text":
        write_text_atomic(path, "x")
    else:
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_block_leaves_nothing(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
