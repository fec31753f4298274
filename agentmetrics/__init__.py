"""Track multi-agent AI orchestrations in SQLite and analyse them with pandas.

The names below load lazily, on first use: ``import agentmetrics.monitor`` (the tracking
hot path) loads the store and tracking only, never the reports, plots or command line.

The parts, from the ground up (each package's docstring says what it may import and
what must never import it): the errors and small leaves (``timestamps``, ``window``,
``formatting``, ``stats``, ``atomic``); ``store``; tracking (``monitor``); ``reports``;
``exchange`` and ``otel``; ``maintenance`` (reaping stale runs), ``alerting``, ``plots``
and ``outputs``; the command line (``cli``). ``demo`` writes a sample database.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import AgentMetricsError
    from .monitor import AgentRun, Monitor, Orchestration, get_monitor
    from .reports import execution_rows
    from .store.db import open_database

# The name on the package index (its `agentmetrics` is an unrelated project).
DISTRIBUTION = "agentmetrics-sqlite"

__all__ = [
    "DISTRIBUTION",
    "AgentMetricsError",
    "AgentRun",
    "Monitor",
    "Orchestration",
    "execution_rows",
    "get_monitor",
    "open_database",
]

# Where each name of __all__ lives.
_HOMES = {
    "AgentMetricsError": "errors",
    "AgentRun": "monitor",
    "Monitor": "monitor",
    "Orchestration": "monitor",
    "execution_rows": "reports",
    "get_monitor": "monitor",
    "open_database": "store.db",
}


def __getattr__(name: str) -> Any:
    # A name of __all__, or a submodule (``agentmetrics.reports`` after ``import agentmetrics``).
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_HOMES.get(name, name)}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(module, name) if name in _HOMES else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    prefix = __name__ + "."
    loaded = [n for n, v in globals().items() if getattr(v, "__name__", "").startswith(prefix)]
    return sorted({*__all__, *loaded})
