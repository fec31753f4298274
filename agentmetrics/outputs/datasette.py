"""Datasette metadata for a monitoring database: ``agentmetrics datasette-metadata``.

``datasette monitoring.db -m metadata.json`` then hides the internal tables, lists
both tables newest first, describes every column (with units) and offers canned
queries. Every canned query takes its window as the ``:hours`` parameter: Datasette
shows it as a form field and binds it, nothing is pasted into the SQL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..demo import MARKER_TABLE
from ..store.migrations import COLUMN_TYPES
from ..store.rollups import TABLES as ROLLUP_TABLES

# otel_spans: the spans behind OpenTelemetry rows, kept for deriving them again.
HIDDEN_TABLES = ("_sqlite_migrations", MARKER_TABLE, "otel_spans", *ROLLUP_TABLES)

_SHARED = {
    "id": "Unique id (a UUID).",
    "status": "Status when last written.",
    "started_at": "Start, UTC (ISO 8601).",
    "completed_at": "End, UTC (ISO 8601); empty while running.",
    "duration_ms": "completed_at - started_at.",
    "created_at": "When the row was written, UTC (SQLite datetime).",
    "metadata_json": "Extra fields as a JSON object (agentmetrics only).",
}
COLUMN_DESCRIPTIONS = {
    "orchestrations": {
        **_SHARED,
        "session_id": "The orchestration's session id (unique).",
        "task_description": "What the orchestration does.",
        "status": "running, completed, failed or partial.",
        "total_tasks": "Tasks planned.",
        "completed_tasks": "Tasks completed.",
        "failed_tasks": "Tasks failed.",
        "git_commit_hash": "Git commit the run worked on.",
        "plan_file_path": "Path of the plan file.",
        "progress_file_path": "Path of the progress file.",
    },
    "agent_executions": {
        **_SHARED,
        "orchestration_id": "The orchestration's id; empty for a standalone execution.",
        "agent_session_id": "The execution's session id (unique).",
        "agent_name": "The agent that ran.",
        "task_id": "Task id in the plan.",
        "task_number": "Task number in the plan.",
        "status": "in_progress, completed or failed.",
        "retry_count": "Retries before the final status.",
        "self_healed": "1 if the agent recovered from an error by itself, else 0.",
        "files_created": "Files created.",
        "files_modified": "Files modified.",
        "error_message": "The error, for a failed execution.",
        "summary_report_path": "Path of the summary report.",
        "session_log_path": "Path of the session log.",
        "model": "Model name (agentmetrics only).",
        "input_tokens": "Input tokens (agentmetrics only).",
        "output_tokens": "Output tokens (agentmetrics only).",
        "cost_usd": "Recorded cost in US dollars (agentmetrics only).",
        "parent_execution_id": "The execution this one ran inside (agentmetrics only).",
        "attempt": "Attempt number within its task, from 1 (agentmetrics only).",
        "first_attempt_id": "The first attempt of this execution's task (agentmetrics only).",
    },
}
TABLE_DESCRIPTIONS = {
    "orchestrations": "Multi-agent runs, newest first.",
    "agent_executions": "Agent executions, inside an orchestration or standalone, newest first.",
}

# Timestamps are stored as YYYY-MM-DDTHH:MM:SS.sssZ, so text comparison is time order.
# An empty :hours (the form's first view) means 24.
_SINCE = (
    "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || coalesce(nullif(:hours, ''), 24) || ' hours')"
)
CANNED_QUERIES = {
    "health": {
        "title": "Health of the last hours",
        "description": "Executions started in the last :hours hours (default 24).",
        "sql": f"""SELECT
  count(*) AS executions,
  coalesce(sum(status = 'completed'), 0) AS completed,
  coalesce(sum(status = 'failed'), 0) AS failed,
  coalesce(sum(status = 'in_progress'), 0) AS in_progress,
  round(100.0 * sum(status = 'completed') / nullif(sum(status != 'in_progress'), 0), 1)
    AS success_rate_percent,
  round(avg(CASE WHEN status != 'in_progress' THEN duration_ms END) / 1000.0, 1)
    AS avg_duration_s,
  coalesce(sum(self_healed), 0) AS self_healed_executions
FROM agent_executions
WHERE started_at >= {_SINCE}""",
    },
    "failures": {
        "title": "Recent failures",
        "description": "Failed executions started in the last :hours hours (default 24),"
        " newest first.",
        "sql": f"""SELECT e.started_at, e.agent_name, e.error_message, e.retry_count,
  o.session_id AS orchestration, e.agent_session_id
FROM agent_executions e LEFT JOIN orchestrations o ON o.id = e.orchestration_id
WHERE e.status = 'failed' AND e.started_at >= {_SINCE}
ORDER BY e.started_at DESC
LIMIT 1000""",
    },
    "slowest_agents": {
        "title": "Slowest agents",
        "description": "Agents by average duration of the executions finished in the"
        " last :hours hours (default 24).",
        "sql": f"""SELECT agent_name,
  count(*) AS executions,
  round(avg(duration_ms) / 1000.0, 1) AS avg_duration_s,
  round(max(duration_ms) / 1000.0, 1) AS max_duration_s
FROM agent_executions
WHERE status != 'in_progress' AND duration_ms IS NOT NULL AND started_at >= {_SINCE}
GROUP BY agent_name
ORDER BY avg(duration_ms) DESC""",
    },
}


def database_name(path: str | os.PathLike[str]) -> str:
    """The name Datasette gives the file: its name without the extension."""
    return Path(path).stem


def datasette_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Datasette metadata (``-m``) for the database file at ``path``."""
    tables: dict[str, Any] = {name: {"hidden": True} for name in HIDDEN_TABLES}
    for table, descriptions in COLUMN_DESCRIPTIONS.items():
        tables[table] = {
            "description": TABLE_DESCRIPTIONS[table],
            "sort_desc": "started_at",
            "columns": {c: descriptions[c] for c in COLUMN_TYPES[table] if c in descriptions},
            "units": {"duration_ms": "ms"},
        }
    return {
        "title": "agentmetrics",
        "description": "Multi-agent orchestrations and agent executions.",
        "databases": {
            database_name(path): {
                "tables": tables,
                "queries": {
                    name: {**query, "params": ["hours"]} for name, query in CANNED_QUERIES.items()
                },
            }
        },
    }
