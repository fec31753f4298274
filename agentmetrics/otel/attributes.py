"""Our own span attributes: the columns OTLP has no field for, as ``agentmetrics.*``.

One table per kind of row, column -> attribute name. The export writes a row's columns
as these attributes (:mod:`agentmetrics.otel.export`); the ingest reads them back into
the same columns (:mod:`agentmetrics.otel.ingest`), so a trace we exported imports as
the rows it came from. A span carrying ``agentmetrics.status`` is one of ours.
"""

from __future__ import annotations

from typing import Any

PREFIX = "agentmetrics."

ORCHESTRATION = {
    "id": "agentmetrics.orchestration.id",
    "status": "agentmetrics.status",
    "total_tasks": "agentmetrics.total_tasks",
    "completed_tasks": "agentmetrics.completed_tasks",
    "failed_tasks": "agentmetrics.failed_tasks",
    "git_commit_hash": "agentmetrics.git_commit_hash",
    "plan_file_path": "agentmetrics.plan_file_path",
    "progress_file_path": "agentmetrics.progress_file_path",
}
"""The ``invoke_workflow`` span's attributes, by orchestration column."""

EXECUTION = {
    "agent_session_id": "agentmetrics.agent_session_id",
    "status": "agentmetrics.status",
    "orchestration_id": "agentmetrics.orchestration.id",
    "task_id": "agentmetrics.task_id",
    "task_number": "agentmetrics.task_number",
    "attempt": "agentmetrics.attempt",
    "first_attempt_id": "agentmetrics.first_attempt_id",
    "retry_count": "agentmetrics.retry_count",
    "self_healed": "agentmetrics.self_healed",
    "files_created": "agentmetrics.files_created",
    "files_modified": "agentmetrics.files_modified",
    "cost_usd": "agentmetrics.cost_usd",
    "summary_report_path": "agentmetrics.summary_report_path",
    "session_log_path": "agentmetrics.session_log_path",
}
"""The ``invoke_agent`` span's attributes, by execution column."""

TIMES = {
    "start": "agentmetrics.start_time_unix_nano",
    "end": "agentmetrics.end_time_unix_nano",
}
"""Exact times (nanoseconds as decimal text) of a span whose time fields cannot hold
them: before 1970 or after 2262. Either kind of span may carry them."""


def carried(stored: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    """The entries of ``table`` a span carries, by key (column, or start/end).

    ``stored``: the span's ``agentmetrics.*`` attributes as the ingest keeps them, named
    without the prefix.
    """
    found = {}
    for key, attribute in table.items():
        name = attribute[len(PREFIX) :]
        if name in stored:
            found[key] = stored[name]
    return found
