"""The parts and what may import what (docs: STYLE section 12), read from the source.

Every module's imports are parsed (``ast``); imports under ``if TYPE_CHECKING:`` are
left out, those inside functions (lazy ones) are kept except where a test says.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import agentmetrics

PACKAGE = Path(agentmetrics.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test)


def imports(name: str) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for each import of module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking(child):
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:
                    # `from . import schema` imports a module; `from .db import X` a name.
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, inner))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def closure(start: str, lazy: bool = True) -> set[str]:
    """Every module ``start`` loads, itself included (ours and third-party); with
    ``lazy=False`` only through module-level imports."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(target for target, top in GRAPH.get(name, ()) if lazy or top)
    return seen


def test_the_parser_sees_the_imports():
    # Checked by hand against the files.
    assert ("agentmetrics.store.schema", True) in GRAPH["agentmetrics.monitor"]
    assert ("agentmetrics.store.db", True) in GRAPH["agentmetrics.monitor"]
    assert ("agentmetrics.otel.push", True) not in GRAPH["agentmetrics.monitor"]  # TYPE_CHECKING
    assert ("agentmetrics.reports._common", True) in GRAPH["agentmetrics.reports.trend"]
    assert ("agentmetrics.reports._rollups", True) in GRAPH["agentmetrics.reports.trend"]
    assert "matplotlib.figure" in closure("agentmetrics.plots")
    assert "agentmetrics.outputs.display" in closure("agentmetrics.monitor")  # for notebooks
    assert "agentmetrics.outputs.display" not in closure("agentmetrics.monitor", lazy=False)


def test_no_private_module_is_imported_from_outside_its_package():
    wrong = []
    for importer, targets in GRAPH.items():
        for target, _ in targets:
            parts = target.split(".")
            for i, part in enumerate(parts):
                package = ".".join(parts[:i])
                inside = importer == package or importer.startswith(package + ".")
                if part.startswith("_") and not part.startswith("__") and not inside:
                    wrong.append(f"{importer} imports {target}")
    assert wrong == []


# The live push is loaded by tracking when asked for; a notebook's rich display of a
# Monitor (agentmetrics.outputs.display, imported inside _repr_html_) is not tracking.
@pytest.mark.parametrize("part", ["agentmetrics.monitor", "agentmetrics.otel.push"])
def test_tracking_never_imports_reports_plots_or_the_cli(part):
    loaded = closure(part, lazy=False)
    forbidden = [
        name
        for name in loaded
        if name.startswith(("agentmetrics.reports", "matplotlib"))
        or name in ("agentmetrics.plots", "agentmetrics.cli", "click")
    ]
    assert forbidden == []


def test_reports_never_import_matplotlib_or_the_cli():
    for name in MODULES:
        if name.startswith("agentmetrics.reports"):
            loaded = closure(name)
            assert not any(n.startswith("matplotlib") for n in loaded), name
            assert not loaded & {"agentmetrics.cli", "agentmetrics.plots", "click"}, name


# What each part must never load (lazy imports included): STYLE section 12 and the
# packages' docstrings.
NEVER = {
    "agentmetrics.store": {
        "agentmetrics.monitor",
        "agentmetrics.maintenance",
        "agentmetrics.reports",
        "agentmetrics.exchange",
        "agentmetrics.otel",
        "agentmetrics.alerting",
        "agentmetrics.plots",
        "agentmetrics.outputs",
        "agentmetrics.demo",
        "agentmetrics.cli",
    },
    "agentmetrics.reports": {
        "agentmetrics.monitor",
        "agentmetrics.alerting",
        "agentmetrics.plots",
        "agentmetrics.outputs",
        "agentmetrics.cli",
    },
    "agentmetrics.alerting": {
        "agentmetrics.monitor",
        "agentmetrics.plots",
        "agentmetrics.outputs",
        "agentmetrics.cli",
    },
    "agentmetrics.otel": {
        "agentmetrics.exchange",
        "agentmetrics.reports",
        "agentmetrics.plots",
        "agentmetrics.cli",
    },
}


def forbidden_loads(part: str, never: set[str]) -> list[str]:
    return sorted(
        f"{name} loads {loaded}"
        for name in MODULES
        if part_of(name) == part
        for loaded in closure(name)
        if part_of(loaded) in never
    )


@pytest.mark.parametrize("part", sorted(NEVER))
def test_a_part_never_loads_the_parts_above_it(part):
    assert forbidden_loads(part, NEVER[part]) == []


def test_forbidden_loads_are_found():
    assert forbidden_loads("agentmetrics.reports", {"agentmetrics.store"}) != []
    assert "agentmetrics.outputs.display" in str(
        forbidden_loads("agentmetrics.monitor", {"agentmetrics.outputs"})
    )


@pytest.mark.parametrize(
    "package", sorted(name for name, path in MODULES.items() if path.name == "__init__.py")
)
def test_every_package_says_what_may_import_it(package):
    text = ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8")))
    assert text and "import" in text and "never" in text, package


def part_of(name: str) -> str:
    """The top-level module or package a module belongs to."""
    return ".".join(name.split(".")[:2])


# Import cycles between top-level parts (lazy imports inside functions included) still
# allowed, each with its reason: none.
KNOWN_CYCLES: list[set[str]] = []


def part_edges() -> dict[str, set[str]]:
    """Which top-level part imports which (lazily too)."""
    edges: dict[str, set[str]] = {}
    for importer, targets in GRAPH.items():
        for target, _ in targets:
            # The package itself imports nothing eagerly (`from . import DISTRIBUTION`).
            ours = target in MODULES and target != "agentmetrics"
            if ours and part_of(target) != part_of(importer):
                edges.setdefault(part_of(importer), set()).add(part_of(target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The groups of nodes that reach each other (each group one cycle or more)."""
    reach = {node: reachable(edges, node) for node in edges}
    groups = []
    for node, found in reach.items():
        group = {other for other in found if node in reach.get(other, ())}
        if group and group not in groups:
            groups.append(group)
    return groups


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_cycles_are_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(sorted, cycles(edges))) == [["a", "b", "c"], ["e"]]


def test_no_import_cycle_between_parts_but_the_known_ones():
    assert sorted(map(sorted, cycles(part_edges()))) == sorted(map(sorted, KNOWN_CYCLES))


def test_importing_tracking_loads_no_analysis():
    code = "import sys, agentmetrics.monitor\nprint('\\n'.join(sorted(sys.modules)))\n"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "agentmetrics.monitor" in loaded
    heavy = {
        name
        for name in loaded
        if name.startswith(("agentmetrics.reports", "matplotlib", "agentmetrics.exchange"))
        or name in ("agentmetrics.plots", "agentmetrics.cli", "agentmetrics.otel")
    }
    assert heavy == set()


def test_the_package_names_still_load():
    code = (
        "import agentmetrics\n"
        "from agentmetrics import AgentMetricsError, AgentRun, Monitor, Orchestration\n"
        "from agentmetrics import execution_rows, get_monitor, open_database, reports\n"
        "assert agentmetrics.reports.system_health and agentmetrics.DISTRIBUTION\n"
        "assert sorted(agentmetrics.__all__) == sorted(set(agentmetrics.__all__))\n"
        "assert all(hasattr(agentmetrics, name) for name in agentmetrics.__all__)\n"
        "try:\n    agentmetrics.no_such_name\nexcept AttributeError:\n    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr
