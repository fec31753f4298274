"""The column rules (agentmetrics.store.schema): what tracking stores, export then import and
merge store again, unchanged; what tracking refuses, import refuses with the same words."""

import datetime as dt
import io
import itertools
import json
import sqlite3

import pytest

import agentmetrics
from agentmetrics.errors import InvalidExport, InvalidValue
from agentmetrics.exchange import export, import_files, merge_databases
from agentmetrics.otel.ingest import ingest_files
from agentmetrics.store.migrations import COLUMN_TYPES
from agentmetrics.store.schema import COLUMNS, MAX_INTEGER, MIN_INTEGER

# Written out rather than taken from the module: 64-bit signed integers.
assert (MIN_INTEGER, MAX_INTEGER) == (-9223372036854775808, 9223372036854775807)

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NAMES = [
    "plain",
    "naïve café",
    "🤖🚀 agents",
    "مرحبا بالعالم",  # right to left
    'line\nbreak\ttab "quoted" \\ back',
    "\x00nul and \x7f",
    "long " + "x" * 100_000,
]
TEXTS = ["", *NAMES]  # the nullable text columns take "" too
WHOLE = [MIN_INTEGER, -1, 0, 1, MAX_INTEGER]
COUNTS = [0, 1, MAX_INTEGER]
COSTS = [0.0, 5e-324, 1e-300, 0.1 + 0.2, 123456789.123, 1.7976931348623157e308, 3]
FLAGS = [True, False]
STATUSES = ["completed", "failed", "partial", None]  # None: left running


def ticking():
    moments = (T0 + i * dt.timedelta(milliseconds=1234) for i in range(10_000))
    return lambda: next(moments)


def track(db) -> None:
    """One orchestration and execution per awkward value, cycling every list together."""
    m = agentmetrics.Monitor(db, clock=ticking())
    lists = (TEXTS, NAMES, WHOLE, COUNTS, COSTS, FLAGS, STATUSES)
    rounds = max(map(len, lists))
    for i, (text, name, whole, count, cost, flag, status) in enumerate(
        zip(*(itertools.islice(itertools.cycle(values), rounds) for values in lists), strict=True)
    ):
        session = f"s{i} {name}"
        orchestration = m.start_orchestration(session, text, count, text, text, text)
        parent = m.start_agent_execution(f"boss{i} {name}", name, orchestration, text, whole, text)
        first = m.start_agent_execution(
            f"a{i} {name}", name, orchestration, text, whole, text, parent_execution_id=parent
        )
        second = m.retry_agent_execution(f"a{i} {name}", text or "reason", f"b{i} {name}")
        m.complete_agent_execution(
            second,
            "failed" if i % 2 else "completed",
            files_created=count,
            files_modified=count,
            retry_count=count,  # plus the attempt before it: at most MAX_INTEGER
            self_healed=flag,
            error_message=text,
            summary_report_path=text,
            model=text,
            input_tokens=count,
            output_tokens=count,
            cost_usd=cost,
        )
        assert first != second
        m.complete_agent_execution(f"boss{i} {name}", "completed", cost_usd=cost)
        if status is not None:
            m.complete_orchestration(session, status, count, count, text or None)
    m.close()


def rows(db) -> dict[str, list[tuple]]:
    """Every row of both tables, with each value's SQLite type, in a stable order."""
    out = {}
    for table in ("orchestrations", "agent_executions"):
        columns = ", ".join(f"{c}, typeof({c})" for c in COLUMN_TYPES[table])
        out[table] = db.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    path = tmp_path_factory.mktemp("tracked") / "tracked.db"
    track(agentmetrics.open_database(path))
    # Tracking writes no execution metadata, OpenTelemetry ingestion does: JSON text.
    db = agentmetrics.open_database(path)
    db.execute("UPDATE agent_executions SET metadata_json = json_object('name', agent_name)")
    db.close()
    return path


def test_the_rules_cover_every_column_with_its_type():
    sql_types = {"text": "TEXT", "status": "TEXT", "timestamp": "TEXT", "real": "REAL"}
    for table, rules in COLUMNS.items():
        assert list(rules) == list(COLUMN_TYPES[table])
        assert {c: sql_types.get(r.kind, "INTEGER") for c, r in rules.items()} == COLUMN_TYPES[
            table
        ]


def test_tracking_stored_the_awkward_values(tracked):
    """The round trip below covers every column: each holds a value in some row."""
    for table, columns in COLUMN_TYPES.items():
        for column in columns:
            sql = f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"
            assert db_values(tracked, sql) != [(0,)], column
    numbers = {r[0] for r in db_values(tracked, "SELECT task_number FROM agent_executions")}
    assert set(WHOLE) <= numbers
    texts = {r[0] for r in db_values(tracked, "SELECT task_description FROM orchestrations")}
    assert set(TEXTS) <= texts
    costs = {r[0] for r in db_values(tracked, "SELECT cost_usd FROM agent_executions")}
    assert {float(c) for c in COSTS} <= costs
    retries = {r[0] for r in db_values(tracked, "SELECT retry_count FROM agent_executions")}
    assert retries == {0, 1, 2, MAX_INTEGER}  # 0 + 1 and 1 + 1 attempt before, MAX capped
    attempts = {r[0] for r in db_values(tracked, "SELECT attempt FROM agent_executions")}
    assert attempts == {None, 2}


def db_values(path, sql):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["json", "jsonl", "session", "merge"])
def test_export_then_import_or_merge_stores_the_same_rows(tracked, tmp_path, how):
    source = agentmetrics.open_database(tracked, create=False)
    expected = rows(source)
    target = tmp_path / "target.db"
    if how == "merge":
        merge_databases(target, [tracked])
    else:
        files = []
        sessions = [r[0] for r in source.execute("SELECT session_id FROM orchestrations")]
        for session in sessions if how == "session" else [None]:
            out = io.StringIO()
            export(source, out, "jsonl" if how == "jsonl" else "json", session_id=session)
            files.append(tmp_path / f"export{len(files)}.json")
            files[-1].write_text(out.getvalue(), encoding="utf-8")
        import_files(target, files)
    source.close()
    db = agentmetrics.open_database(target)
    assert rows(db) == expected
    db.close()


def test_otlp_ingestion_keeps_what_tracking_stored(tmp_path):
    # Ingestion used to drop a negative task number: its rules are the store's now.
    db = agentmetrics.open_database(tmp_path / "a.db")
    m = agentmetrics.Monitor(db, clock=ticking())
    m.start_agent_execution("neg", "x", task_number=-1)
    m.complete_agent_execution("neg", "completed", cost_usd=3, input_tokens=MAX_INTEGER)
    m.start_agent_execution("big", "x", task_number=MIN_INTEGER)
    m.complete_agent_execution("big", "completed")
    out = io.StringIO()
    export(db, out, "otlp")
    (tmp_path / "spans.json").write_text(out.getvalue(), encoding="utf-8")
    target = agentmetrics.open_database(tmp_path / "b.db")
    ingest_files(target, [tmp_path / "spans.json"])
    sql = "SELECT agent_session_id, task_number, cost_usd, input_tokens FROM agent_executions"
    assert dict((r[0], r[1:]) for r in target.execute(sql + " ORDER BY 1")) == {
        "big": (MIN_INTEGER, None, None),
        "neg": (-1, 3.0, MAX_INTEGER),
    }


# (table, column, a value tracking refuses, the message, the tracking call refusing it)
REFUSED = [
    ("orchestrations", "session_id", "", "session_id must be a non-empty string", None),
    ("orchestrations", "session_id", "s\ud800", "session_id is not valid text", None),
    ("orchestrations", "task_description", 5, "task_description must be a string", None),
    ("orchestrations", "total_tasks", -1, "total_tasks must not be negative", None),
    ("orchestrations", "total_tasks", 2**63, "total_tasks is too large to store", None),
    ("orchestrations", "completed_tasks", 1.5, "completed_tasks must be a whole number", None),
    ("orchestrations", "failed_tasks", True, "failed_tasks must be a whole number", None),
    ("orchestrations", "status", "done", "status must be one of running, completed", None),
    ("orchestrations", "started_at", "yesterday", "started_at is not a timestamp", None),
    ("orchestrations", "started_at", None, "started_at is missing", None),
    ("orchestrations", "completed_at", "0999-01-01", "completed_at is before the year", None),
    ("orchestrations", "created_at", "soon", "created_at is not a timestamp", None),
    ("orchestrations", "duration_ms", 2**63, "duration_ms is too large to store", None),
    ("agent_executions", "agent_name", "", "agent_name must be a non-empty string", None),
    ("agent_executions", "task_number", 2**63, "task_number is too large to store", None),
    ("agent_executions", "task_number", -(2**63) - 1, "task_number must be at least", None),
    ("agent_executions", "task_number", "1", "task_number must be a whole number", None),
    ("agent_executions", "status", "running", "status must be one of in_progress", None),
    ("agent_executions", "retry_count", -2, "retry_count must not be negative", "complete"),
    ("agent_executions", "files_created", "3", "files_created must be a whole", "complete"),
    ("agent_executions", "self_healed", 2, "self_healed must be True or False", "complete"),
    ("agent_executions", "input_tokens", 2**64, "input_tokens is too large to", "complete"),
    ("agent_executions", "cost_usd", -0.5, "cost_usd must be a finite number >= 0", "complete"),
    ("agent_executions", "cost_usd", float("nan"), "cost_usd must be a finite number", "complete"),
    ("agent_executions", "cost_usd", 10**400, "cost_usd must be a finite number", "complete"),
    ("agent_executions", "model", ["m"], "model must be a string", "complete"),
    ("agent_executions", "error_message", "\udc80", "error_message is not valid text", "complete"),
    ("agent_executions", "attempt", 0, "attempt must be at least 1", None),
    ("agent_executions", "parent_execution_id", 7, "parent_execution_id must be a str", None),
]
GOOD = {
    "orchestrations": {"session_id": "s", "status": "running", "started_at": "2024-03-01"},
    "agent_executions": {
        "agent_session_id": "a",
        "agent_name": "x",
        "status": "completed",
        "started_at": "2024-03-01",
    },
}


@pytest.mark.parametrize(
    ("table", "column", "value", "message", "call"),
    REFUSED,
    ids=[f"{column}={value!r:.12}" for _, column, value, _, _ in REFUSED],
)
def test_what_tracking_refuses_import_refuses(tmp_path, table, column, value, message, call):
    m = agentmetrics.Monitor(tmp_path / "t.db")
    m.start_agent_execution("a", "x")
    tracking = {
        "complete": lambda: m.complete_agent_execution("a", "completed", **{column: value}),
        None: lambda: None,
    }
    if call:
        with pytest.raises(InvalidValue, match=message):
            tracking[call]()
    m.close()
    kind = "orchestration" if table == "orchestrations" else "execution"
    line = json.dumps({"type": kind, **GOOD[table], column: value})
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InvalidExport, match=message) as raised:
        import_files(tmp_path / "new.db", [path])
    assert str(raised.value).startswith(f"{path}: line 1: {kind} ")
    assert not (tmp_path / "new.db").exists()


def test_a_merge_names_a_bad_row_once(tmp_path):
    source = tmp_path / "other.db"
    db = agentmetrics.open_database(source)
    agentmetrics.Monitor(db).start_agent_execution("a-1", "x")
    db.execute("UPDATE agent_executions SET task_number = 1.5")  # not by tracking
    db.close()
    with pytest.raises(InvalidExport) as raised:
        merge_databases(tmp_path / "target.db", [source])
    assert str(raised.value) == (
        f"{source}: execution 'a-1': task_number must be a whole number, got 1.5"
    )
