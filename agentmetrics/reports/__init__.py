"""Read-only reports: functions that take a database (path or ``sqlite_utils.Database``)
and return pandas DataFrames. Time windows accept ``now=`` for reproducible results."""

from .agents import agent_stats, agent_summary, performance_report  # noqa: E402
from .cost import costs  # noqa: E402
from .health import system_health  # noqa: E402
from .orchestrations import (  # noqa: E402
    executions,
    failed_orchestrations,
    list_orchestrations,
    orchestration_summary,
)
from .regression import regressions  # noqa: E402
from .stale import stale_runs  # noqa: E402
from .trend import durations, error_patterns, self_healing, trends  # noqa: E402

__all__ = [
    "agent_stats",
    "agent_summary",
    "costs",
    "durations",
    "error_patterns",
    "executions",
    "failed_orchestrations",
    "list_orchestrations",
    "orchestration_summary",
    "performance_report",
    "regressions",
    "self_healing",
    "stale_runs",
    "system_health",
    "trends",
]
