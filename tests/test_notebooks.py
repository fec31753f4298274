"""The committed notebooks are the ones notebooks/make_notebooks.py writes.

nbval re-runs each notebook and compares its outputs with the stored ones; this checks
the cells themselves, so a cell changed in make_notebooks.py but not regenerated fails
here, and so does a notebook file the generator does not know.
"""

import importlib.util
from pathlib import Path

import nbformat
import pytest

FOLDER = Path(__file__).parent.parent / "notebooks"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", FOLDER / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_notebooks = _generator()


def _cells(notebook):
    return [(cell.id, cell.cell_type, cell.source) for cell in notebook.cells]


def test_every_notebook_file_is_generated():
    assert sorted(path.name for path in FOLDER.glob("*.ipynb")) == sorted(make_notebooks.NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(make_notebooks.NOTEBOOKS))
def test_committed_cells_are_the_generated_ones_and_ran(name):
    committed = nbformat.read(FOLDER / name, as_version=4)
    generated = make_notebooks.build(name, make_notebooks.NOTEBOOKS[name])
    assert _cells(committed) == _cells(generated)
    assert all(cell.execution_count for cell in committed.cells if cell.cell_type == "code")
