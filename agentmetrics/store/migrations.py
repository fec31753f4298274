"""The schema, as an ordered list of migrations (sqlite-utils ``Migrations``).

Migrations run in the order they are defined. An applied migration is never edited:
changes go in a new one. Every migration is safe on a file the original tool created,
where the tables already exist: it only adds what is missing, and never rewrites rows.
"""

from __future__ import annotations

import re

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("agentmetrics")

# The original's tables, column for column. Written as SQL because sqlite-utils'
# create() has no CHECK constraints and cannot express the datetime('now') default.
ORCHESTRATIONS_SQL = """
CREATE TABLE IF NOT EXISTS orchestrations (
  id TEXT PRIMARY KEY,
  session_id TEXT UNIQUE NOT NULL,
  task_description TEXT,
  status TEXT NOT NULL CHECK(status IN ('running', 'completed', 'failed', 'partial')),
  started_at TEXT NOT NULL,
  completed_at TEXT,
  duration_ms INTEGER,
  total_tasks INTEGER DEFAULT 0,
  completed_tasks INTEGER DEFAULT 0,
  failed_tasks INTEGER DEFAULT 0,
  git_commit_hash TEXT,
  plan_file_path TEXT,
  progress_file_path TEXT,
  created_at TEXT DEFAULT (datetime('now'))
)
"""

AGENT_EXECUTIONS_SQL = """
CREATE TABLE IF NOT EXISTS agent_executions (
  id TEXT PRIMARY KEY,
  orchestration_id TEXT,
  agent_session_id TEXT UNIQUE NOT NULL,
  agent_name TEXT NOT NULL,
  task_id TEXT,
  task_number INTEGER,
  status TEXT NOT NULL CHECK(status IN ('in_progress', 'completed', 'failed')),
  started_at TEXT NOT NULL,
  completed_at TEXT,
  duration_ms INTEGER,
  retry_count INTEGER DEFAULT 0,
  self_healed INTEGER DEFAULT 0,
  files_created INTEGER DEFAULT 0,
  files_modified INTEGER DEFAULT 0,
  error_message TEXT,
  summary_report_path TEXT,
  session_log_path TEXT,
  created_at TEXT DEFAULT (datetime('now')),
  FOREIGN KEY (orchestration_id) REFERENCES orchestrations(id) ON DELETE CASCADE
)
"""

# Nullable additions only, so the original tool can keep writing to a file we opened.
EXTRA_COLUMNS = {
    "agent_executions": {
        "model": str,
        "input_tokens": int,
        "output_tokens": int,
        "cost_usd": float,
        "metadata_json": str,
        # The execution this one ran inside (a sub-agent or handoff).
        "parent_execution_id": str,
        # Retries as attempts: the attempt number of this execution within its task
        # (NULL on rows written before attempts existed, or by the original tool: attempt 1),
        # and the id of the task's first attempt (NULL on a first attempt). A task is
        # identified by COALESCE(first_attempt_id, id).
        "attempt": int,
        "first_attempt_id": str,
    },
    "orchestrations": {"metadata_json": str},
}

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def _column_types(create_sql: str, table: str) -> dict[str, str]:
    columns = dict(re.findall(r"^  ([a-z_]+) ([A-Z]+)", create_sql, re.MULTILINE))
    return columns | {name: _SQL_TYPES[t] for name, t in EXTRA_COLUMNS[table].items()}


# Every column and its SQL type, in table order: the original's, then our additions.
COLUMN_TYPES = {
    "orchestrations": _column_types(ORCHESTRATIONS_SQL, "orchestrations"),
    "agent_executions": _column_types(AGENT_EXECUTIONS_SQL, "agent_executions"),
}
ORCHESTRATION_COLUMNS = tuple(COLUMN_TYPES["orchestrations"])
EXECUTION_COLUMNS = tuple(COLUMN_TYPES["agent_executions"])

# Indexes for the report queries. Partial indexes keep the write path cheap: a new
# execution enters only the in-progress index (and the orchestration one), and moves
# to the two finished ones when it completes; the original's statements never touch
# them. Queries must repeat `status != 'in_progress'` verbatim for SQLite to use a
# finished index. Both finished indexes cover their reports: health windows read
# (started_at, status, duration_ms); per-agent reports read the agent's rows in start
# order with every column they sum, so no report visits the table for them.
# Each index comes with the columns of a plain index that would already serve its
# queries: files of the original tool have such indexes, and a duplicate would only
# make every tracking write slower.
INDEXES = [
    (
        "CREATE INDEX IF NOT EXISTS idx_am_orch_started ON orchestrations(started_at)",
        ("started_at",),
    ),
    # The export's order (newest first, as the original's export query returns them).
    (
        "CREATE INDEX IF NOT EXISTS idx_am_orch_created ON orchestrations(created_at)",
        ("created_at",),
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_am_orch_status_started"
        " ON orchestrations(status, started_at)",
        None,
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_orchestration"
        " ON agent_executions(orchestration_id, started_at) WHERE orchestration_id IS NOT NULL",
        ("orchestration_id",),
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_finished_started"
        " ON agent_executions(started_at, status, duration_ms) WHERE status != 'in_progress'",
        None,
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_finished_agent ON agent_executions(agent_name,"
        " started_at, status, duration_ms, retry_count, self_healed, files_created,"
        " files_modified) WHERE status != 'in_progress'",
        None,
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_running_started"
        " ON agent_executions(started_at) WHERE status = 'in_progress'",
        ("status",),
    ),
    # The per-agent sums of executions in progress (agent_summary, performance_report)
    # without a table lookup per running row. Not on the original's files: tracking
    # there keeps the original's index writes (its status index serves, more slowly).
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_running_agent ON agent_executions(agent_name,"
        " started_at, retry_count, self_healed, files_created, files_modified)"
        " WHERE status = 'in_progress'",
        ("status",),
    ),
    # The later attempts of a task, from its first one (retries, task counts). Partial:
    # first attempts, nearly every row, never enter it.
    (
        "CREATE INDEX IF NOT EXISTS idx_am_exec_first_attempt"
        " ON agent_executions(first_attempt_id, attempt) WHERE first_attempt_id IS NOT NULL",
        None,
    ),
]


@migrations()
def m001_original_tables(db: Database) -> None:
    db.execute(ORCHESTRATIONS_SQL)
    db.execute(AGENT_EXECUTIONS_SQL)


@migrations()
def m002_extra_columns(db: Database) -> None:
    for table_name, columns in EXTRA_COLUMNS.items():
        table = db.table(table_name)
        for name, col_type in columns.items():
            if name not in table.columns_dict:
                table.add_column(name, col_type)


# Spans received through OpenTelemetry, kept per trace so a trace's rows can be derived
# again whenever more of its spans arrive (agentmetrics.otel.ingest). ``data`` holds what
# the mapping reads, as JSON; NULL for spans that only link others.
OTEL_SPANS_SQL = """
CREATE TABLE IF NOT EXISTS otel_spans (
  trace_id TEXT NOT NULL,
  span_id TEXT NOT NULL,
  parent_span_id TEXT,
  role TEXT,
  start_ns INTEGER NOT NULL,
  end_ns INTEGER NOT NULL,
  data TEXT,
  PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID
"""


@migrations()
def m004_otel_spans(db: Database) -> None:
    # m003 is skipped: earlier releases recorded an m003_report_indexes.
    m002_extra_columns(db)  # parent_execution_id, on files that already ran m002
    db.execute(OTEL_SPANS_SQL)


@migrations()
def m005_attempts(db: Database) -> None:
    m002_extra_columns(db)  # attempt, first_attempt_id


# The report indexes are not a migration: building them on a large existing file holds
# the write lock for seconds, so they are built implicitly only on a small file and
# otherwise by `agentmetrics upgrade` (db.upgrade). Files where an earlier release
# recorded m003_report_indexes already have them.
def missing_indexes(db: Database) -> list[tuple[str, str, str]]:
    """The report indexes ``db`` lacks, as ``(name, table, CREATE INDEX statement)``.

    An index counts as present by name, or when a plain index of the file (the
    original tool's) already serves its queries.
    """
    existing = {
        row[0] for row in db.execute("SELECT name FROM main.sqlite_master WHERE type = 'index'")
    }
    missing = []
    for sql, served_by in INDEXES:
        name, table = re.search(r"EXISTS (\w+) ON (\w+)\(", sql).groups()
        if name in existing or (served_by and _plain_index_on(db, table, served_by)):
            continue
        missing.append((name, table, sql))
    return missing


def _plain_index_on(db: Database, table: str, columns: tuple[str, ...]) -> bool:
    indexes = db.execute(
        "SELECT name FROM pragma_index_list(?, 'main') WHERE partial = 0", [table]
    ).fetchall()
    for (index,) in indexes:
        indexed = db.execute(
            "SELECT name FROM pragma_index_info(?, 'main') ORDER BY seqno", [index]
        ).fetchall()
        if tuple(row[0] for row in indexed[: len(columns)]) == columns:
            return True
    return False
