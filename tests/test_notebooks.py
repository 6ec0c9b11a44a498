"""Execute every notebook headlessly (nbclient) in short mode: the `parameters` cell is followed by
an injected cell setting SHORT = True, as papermill would. No JavaScript runs here, so the
notebooks assert on the kernel side (engine state, widget values, chart specs)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[1-6]_*.ipynb"))
EXPECTED = ["01_quickstart", "02_transparent_swapping", "03_adaptive_controller", "04_paper_at_scale",
            "05_tune_and_export", "06_what_if"]


def inject_parameters(nb, **values):
    """Insert a cell after the parameters-tagged cell overriding its values (papermill's convention)."""
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    assert idx is not None, "the notebook has no cell tagged 'parameters'"
    src = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(idx + 1, cell)
    return nb


def test_all_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_short(path, tmp_path):
    nb = inject_parameters(nbformat.read(path, as_version=4), SHORT=True, DURATION_S=30)
    work = tmp_path / "nb"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path          # the kernel imports this checkout's pie_lab and widgets
    try:
        client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
