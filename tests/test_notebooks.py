"""The committed notebooks are the ones notebooks/make_notebooks.py writes.

nbval re-runs each notebook and compares its outputs with the stored ones; this checks
the cells themselves, so a cell changed in make_notebooks.py but not regenerated fails
here, and so does a notebook file the generator does not know.
"""

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import pyproject

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


def _requirements(project: dict, extra: str | None = None) -> set[str]:
    """The distribution names an install of the project (with ``extra``) asks for: the
    base dependencies and the extra's, the project's own extras among them expanded."""
    own = project["name"]
    wanted = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    names = set()
    for requirement in wanted:
        name, _, rest = re.match(r"([\w.-]+)(\[(\w+)\])?", requirement).groups()
        if name == own:
            names |= _requirements(project, rest)
        else:
            names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _imports() -> set[str]:
    """Every module the notebooks' code cells import (IPython magics aside)."""
    modules = set()
    for name in make_notebooks.NOTEBOOKS:
        for cell in nbformat.read(FOLDER / name, as_version=4).cells:
            if cell.cell_type == "code":
                lines = [line for line in cell.source.splitlines() if not line.startswith("%")]
                for node in ast.walk(ast.parse("\n".join(lines))):
                    if isinstance(node, ast.Import):
                        modules |= {alias.name for alias in node.names}
                    elif isinstance(node, ast.ImportFrom):
                        modules.add(node.module)
    return modules


def test_notebooks_extra_installs_what_the_notebooks_import_and_not_the_test_extra():
    project = pyproject()["project"]
    extra = _requirements(project, "notebooks")
    assert {"jupyterlab", "ipykernel"} <= extra
    assert not extra & {"pytest", "nbval", "ruff", "scipy", "datasette", "langgraph"}
    assert extra - {"jupyterlab"} <= _requirements(project, "test")  # nbval runs them
    for module in _imports():
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top == "agentmetrics":
            continue
        origin = Path(importlib.util.find_spec(module).origin).resolve()
        providers = {  # of a namespace package like opentelemetry, the one with the file
            re.sub(r"[-_.]+", "-", name).lower()
            for name in importlib.metadata.packages_distributions()[top]
            if any(
                Path(file.locate()).resolve() == origin
                for file in importlib.metadata.distribution(name).files
            )
        }
        assert providers & extra, f"{module} comes from {providers}, not in the extra"
