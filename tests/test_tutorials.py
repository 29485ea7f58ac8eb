"""The tutorials: each notebook matches its jupytext source and runs end to end in fast mode.

``tutorials/NN_name.py`` (jupytext percent format) is the source; ``NN_name.ipynb`` is its
paired notebook, committed with outputs stripped. Execution goes through a real Jupyter
kernel (``python3``, i.e. this interpreter with ipykernel) with ``MFDIFF_TUTORIAL_FAST=1``,
so every cell, plots included, must run without error.
"""

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_tutorials_found():
    assert len(TUTORIALS) >= 3, f"expected the tutorials in {ROOT / 'tutorials'}"
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in TUTORIALS}, (
        "every tutorials/NN_name.py needs its NN_name.ipynb and vice versa: "
        "run `jupytext --to ipynb --update tutorials/NN_name.py`"
    )


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_notebook_matches_source(path):
    source = jupytext.read(path)
    notebook = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    assert _cells(notebook) == _cells(source), (
        f"{path.with_suffix('.ipynb').name} differs from {path.name}: "
        f"run `jupytext --to ipynb --update tutorials/{path.name}`"
    )
    with_outputs = [
        i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.get("outputs")
    ]
    assert not with_outputs, f"strip the outputs of cells {with_outputs} of the .ipynb"


# the quickstart in the default run; the others (3-4 minutes together on 2 cores) with
# the slow checks, which CI runs too. Fast mode is dominated by XLA compilation: the
# kernels compile as the default suite does (``cheap``: tests/conftest.py sets the
# environment they inherit), which saves 15-20% and, without the fusion emitters, 20% more
_SLOW = [pytest.mark.slow, pytest.mark.cheap]
_RUNS = [p if p.stem.startswith("01_") else pytest.param(p, marks=_SLOW) for p in TUTORIALS]


@pytest.mark.parametrize("path", _RUNS, ids=lambda p: p.stem)
def test_tutorial_runs_in_fast_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MFDIFF_TUTORIAL_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # the kernel imports the package from this checkout, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
