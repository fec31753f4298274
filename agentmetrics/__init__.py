"""Track multi-agent AI orchestrations in SQLite and analyse them with pandas."""

from .db import open_database
from .errors import AgentMetricsError
from .monitor import AgentRun, Monitor, Orchestration, get_monitor
from .reports import execution_rows

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
