"""Our ``agentmetrics.*`` span attributes: one table (agentmetrics.otel.attributes) that
the export writes and the ingest reads, checked entry by entry.

The rows are written by hand with values the ingest could not derive from a span's
other fields (task counts that are not its executions', an attempt 2...), so a column
read back equal came through its attribute.
"""

import contextlib
import dataclasses
import sqlite3

import pytest

import agentmetrics
from agentmetrics.exchange import iter_sessions
from agentmetrics.otel.attributes import EXECUTION, ORCHESTRATION, TIMES
from agentmetrics.otel.export import session_spans
from agentmetrics.otel.ingest import ingest_spans
from agentmetrics.store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS

ORCHESTRATIONS = [
    {
        "id": "orch-1",
        "session_id": "s-1",
        "task_description": "build",
        "status": "partial",
        "started_at": "2026-03-01T12:00:00.000Z",
        "completed_at": "2026-03-01T12:10:00.000Z",
        "duration_ms": 600_000,
        "total_tasks": 7,
        "completed_tasks": 3,
        "failed_tasks": 2,
        "git_commit_hash": "abc123",
        "plan_file_path": "plan.md",
        "progress_file_path": "progress.md",
        "created_at": "2026-03-01 12:00:00",
    },
    {  # times OTLP's fields cannot hold: they travel as attributes
        "id": "orch-2",
        "session_id": "s-2",
        "task_description": "moon",
        "status": "completed",
        "started_at": "1969-07-20T20:17:40.000Z",
        "completed_at": "2300-01-01T00:00:00.000Z",
        "duration_ms": 10_427_974_940_000,  # 120,695 days less 20:17:40, by hand
        "total_tasks": 0,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "git_commit_hash": "def456",
        "plan_file_path": "moon.md",
        "progress_file_path": "moon-progress.md",
        "created_at": "1969-07-20 20:17:40",
    },
]
EXECUTION_ROWS = [
    {
        "id": "exec-1",
        "orchestration_id": "orch-1",
        "agent_session_id": "a-1",
        "agent_name": "coder",
        "task_id": "t-1",
        "task_number": 3,
        "status": "failed",
        "started_at": "2026-03-01T12:01:00.000Z",
        "completed_at": "2026-03-01T12:02:00.000Z",
        "duration_ms": 60_000,
        "retry_count": 0,
        "self_healed": 0,
        "files_created": 1,
        "files_modified": 2,
        "error_message": "TimeoutError: slow",
        "summary_report_path": "summary-1.md",
        "session_log_path": "log-1.jsonl",
        "created_at": "2026-03-01 12:01:00",
        "cost_usd": 0.5,
        "attempt": 1,
    },
    {
        "id": "exec-2",
        "orchestration_id": "orch-1",
        "agent_session_id": "a-2",
        "agent_name": "coder",
        "task_id": "t-1",
        "task_number": 3,
        "status": "completed",
        "started_at": "2026-03-01T12:03:00.000Z",
        "completed_at": "2026-03-01T12:05:00.000Z",
        "duration_ms": 120_000,
        "retry_count": 1,
        "self_healed": 1,
        "files_created": 4,
        "files_modified": 5,
        "summary_report_path": "summary-2.md",
        "session_log_path": "log-2.jsonl",
        "created_at": "2026-03-01 12:03:00",
        "cost_usd": 0.25,
        "attempt": 2,
        "first_attempt_id": "exec-1",
    },
]
# Columns that travel in OTLP's own fields or GenAI attributes, or are not exported:
# the span's times and the columns derived on import, then the ids, names, error
# message (the status message), model and tokens (gen_ai.*) and parent execution.
DERIVED = {"started_at", "completed_at", "duration_ms", "created_at", "metadata_json"}
STANDARD = {
    "orchestrations": DERIVED | {"session_id", "task_description"},
    "agent_executions": DERIVED
    | {"id", "agent_name", "error_message", "model", "input_tokens", "output_tokens"}
    | {"parent_execution_id"},
}


# A column OTLP carries too: an execution's status is its span's status code as well.
ALSO_IN_OTLP_FIELDS = {("agent_executions", "status")}
TIMES_COLUMNS = {"start": "started_at", "end": "completed_at"}
ENTRIES = sorted(
    {
        *[("orchestrations", c, a) for c, a in ORCHESTRATION.items()],
        *[("agent_executions", c, a) for c, a in EXECUTION.items()],
        *[("orchestrations", TIMES_COLUMNS[k], a) for k, a in TIMES.items()],
    }
)


@pytest.fixture
def spans(tmp_path):
    """The spans our export makes of the rows above."""
    path = tmp_path / "original.db"
    db = agentmetrics.open_database(path)
    with db.conn:
        for table, rows in WRITTEN.items():
            for row in rows:
                marks = ", ".join("?" * len(row))
                db.conn.execute(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", list(row.values())
                )
    found = [span for session in iter_sessions(db) for span in session_spans(*session)]
    db.close()
    return found


WRITTEN = {"orchestrations": ORCHESTRATIONS, "agent_executions": EXECUTION_ROWS}
COMPARED = {
    table: sorted({c for row in rows for c in row} - {"created_at"})
    for table, rows in WRITTEN.items()
}


def ingested(path, spans):
    """The rows ``spans`` give, by table and id, in the :data:`COMPARED` columns."""
    ingest_spans(path, spans)
    got = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for table, columns in COMPARED.items():
            cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
            got[table] = {
                row[columns.index("id")]: dict(zip(columns, row, strict=True)) for row in cursor
            }
    return got


def ours(span):
    return {key for key in span.attributes if key.startswith("agentmetrics.")}


def test_the_tables_name_every_column_otlp_has_no_field_for():
    """A column added to the store must be carried, or listed above as not needing it."""
    assert set(ORCHESTRATION) == set(ORCHESTRATION_COLUMNS) - STANDARD["orchestrations"]
    assert set(EXECUTION) == set(EXECUTION_COLUMNS) - STANDARD["agent_executions"]
    names = [*ORCHESTRATION.values(), *EXECUTION.values(), *TIMES.values()]
    assert all(name.startswith("agentmetrics.") for name in names)


def test_the_export_writes_every_entry(spans):
    by_row = {
        span.attributes.get("gen_ai.agent.id") or span.attributes["gen_ai.workflow.name"]: span
        for span in spans
    }
    assert {row: ours(span) for row, span in by_row.items()} == {
        "build": set(ORCHESTRATION.values()),
        "moon": set(ORCHESTRATION.values()) | set(TIMES.values()),
        "exec-1": set(EXECUTION.values()) - {"agentmetrics.first_attempt_id"},  # None
        "exec-2": set(EXECUTION.values()),
    }


def test_the_ingest_reads_every_entry_back(tmp_path, spans):
    expected = {
        table: {row["id"]: {c: row.get(c) for c in COMPARED[table]} for row in rows}
        for table, rows in WRITTEN.items()
    }
    assert ingested(tmp_path / "copy.db", spans) == expected


@pytest.mark.parametrize("table, column, attribute", ENTRIES, ids=lambda v: v)
def test_without_an_entry_the_ingest_reads_its_column_otherwise(
    tmp_path, spans, table, column, attribute
):
    """Each entry is what the ingest reads its column from: a span without it gives
    another value."""
    full = ingested(tmp_path / "full.db", spans)
    stripped = [
        dataclasses.replace(
            span, attributes={k: v for k, v in span.attributes.items() if k != attribute}
        )
        for span in spans
    ]
    assert attribute in {key for span in spans for key in ours(span)}
    without = ingested(tmp_path / "without.db", stripped)

    def values(rows):
        if (table, column) in ALSO_IN_OTLP_FIELDS:  # then what changes is the whole row
            return sorted(repr(sorted(row.items())) for row in rows[table].values())
        return sorted(repr(row[column]) for row in rows[table].values())

    assert values(without) != values(full)


def test_an_execution_status_is_read_from_its_attribute_before_the_span_status(tmp_path, spans):
    failed = next(span for span in spans if span.attributes.get("gen_ai.agent.id") == "exec-1")
    failed.attributes["agentmetrics.status"] = "completed"
    got = ingested(tmp_path / "copy.db", spans)
    assert got["agent_executions"]["exec-1"]["status"] == "completed"
