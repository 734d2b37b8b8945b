"""Every notebook in notebooks/ runs top to bottom on the tiny model (STYLE.md 9.5), and writes its figures.

Notebooks follow one convention: the first cell holds the parameters (tagged ``parameters``, tiny model by
default, an ``OUT_DIR`` where figures go). The test inserts one cell after it that points ``OUT_DIR`` at the
test's temporary folder, the way papermill injects parameters, so the defaults themselves are what runs.

The kernel is a kernelspec written into the temporary folder whose ``argv`` is this interpreter
(``sys.executable -m ipykernel_launcher``): it needs only ``ipykernel`` from the ``dev`` extra, not a
registered ``python3`` kernelspec, and cannot pick up another Python from ``PATH``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from PIL import Image

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 240  # the slowest cell takes ~5 s on the tiny model; generous for a loaded 2-core CI runner
KERNEL = "effivmt-test"

#: PNGs each notebook must write into OUT_DIR.
EXPECTED_FIGURES = {
    "attention_heads.ipynb": [
        "heads",
        "ideal_spatial",
        "ideal_temporal",
        "attention_spatial",
        "attention_temporal",
        "alpha_sweep",
        "noise_levels",
        "split",
    ],
}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _kernel_manager(root: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernelspec runs ipykernel in this very interpreter."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _execute(path: Path, out_dir: Path, work: Path) -> nbformat.NotebookNode:
    """Run ``path`` with ``OUT_DIR = out_dir``; raise ``CellExecutionError`` on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(f"OUT_DIR = {str(out_dir)!r}  # injected by tests/test_notebooks.py"))
    client = NotebookClient(
        nb,
        km=_kernel_manager(work),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},  # Jupyter's working directory: the notebook's folder
    )
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
    )
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, work / path.name)  # the executed copy, outputs and all, for a failing run's post-mortem
    return nb


def test_notebooks_exist():
    assert [p.name for p in _notebooks()] == sorted(EXPECTED_FIGURES)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_parameters_first(path):
    """No outputs or execution counts in git, and a first parameters cell defaulting to the tiny model."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs; clear them"
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert "MODEL_PATH = None" in first.source and "OUT_DIR = None" in first.source


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_and_saves_figures(path, tmp_path):
    out_dir = tmp_path / "figures"
    nb = _execute(path, out_dir, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    for name in EXPECTED_FIGURES.get(path.name, []):
        png = out_dir / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 0, f"{png} was not written"
    assert not list(out_dir.glob(".*"))  # no temporary files left behind by the atomic writes
    if path.name == "attention_heads.ipynb":
        with Image.open(out_dir / "heads.png") as image:
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 10  # a drawn heat map, not a blank canvas
        # Every figure the notebook displays is the PNG it saved.
        shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(shown) == len(EXPECTED_FIGURES[path.name])
