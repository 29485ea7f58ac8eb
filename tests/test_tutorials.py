"""The tutorials: each notebook matches its jupytext source and runs end to end in fast mode.

``tutorials/NN_name.py`` (jupytext percent format) is the source; ``NN_name.ipynb`` is its
paired notebook, committed with outputs stripped, whose cells are checked to be the
source's. The source's code cells run in order in one fresh namespace, in this process,
with ``MFDIFF_TUTORIAL_FAST=1`` and matplotlib's non-interactive backend: as
``python tutorials/NN_name.py`` runs them (the README's way), so every cell, plots
included, must run without error. (Until 2026-12-07 they ran in a Jupyter kernel,
which paid 7-8 s a notebook to start and import the stack; the notebooks are plain
Python, with no magics or display hooks, so the kernel tested nothing more.)
"""

import warnings
from pathlib import Path

import jupytext
import nbformat
import pytest

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
# the slow checks, which CI runs too. Fast mode is dominated by XLA compilation: they
# compile as the default suite does (``cheap``, tests/conftest.py), which saves 15-20%
# and, without the fusion emitters, 20% more
_SLOW = [pytest.mark.slow, pytest.mark.cheap]
_RUNS = [p if p.stem.startswith("01_") else pytest.param(p, marks=_SLOW) for p in TUTORIALS]


@pytest.mark.parametrize("path", _RUNS, ids=lambda p: p.stem)
def test_tutorial_runs_in_fast_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MFDIFF_TUTORIAL_FAST", "1")
    monkeypatch.chdir(tmp_path)  # files a tutorial writes land here
    _run_cells(path)


def test_a_failing_cell_fails_the_run_and_is_named(tmp_path, monkeypatch):
    """The runner above fails on a failing cell, naming the file and the cell, and runs
    the cells in one namespace (the second cell sees the first's names)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "99_broken.py"
    path.write_text("# %%\nx = 1\n\n# %% [markdown]\n# text\n\n# %%\nassert x == 2, 'x is 1'\n")
    with pytest.raises(AssertionError, match="99_broken.py: code cell 1 failed") as info:
        _run_cells(path)
    assert "x is 1" in str(info.value.__cause__)
    path.write_text("# %%\nx = 1\n\n# %%\nassert x == 1\n")
    _run_cells(path)


def _run_cells(path):
    """Runs the code cells of the jupytext source ``path`` in order in one fresh
    namespace, as ``python path`` would; a failing cell raises an ``AssertionError``
    naming the file and the cell's index (among the code cells), chained to the error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": "__main__", "__file__": str(path)}
    cells = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
    try:
        # a tutorial's warnings are printed, as a script's, not errors (the suite's filter)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # as the suite
            warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive")
            for i, source in enumerate(cells):
                try:
                    exec(compile(source, f"{path.name}, code cell {i}", "exec"), namespace)
                except Exception as err:
                    head = "\n".join(source.splitlines()[:3])
                    msg = f"{path.name}: code cell {i} failed:\n{head}\n..."
                    raise AssertionError(msg) from err
    finally:
        plt.close("all")
