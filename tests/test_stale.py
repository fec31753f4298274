import datetime as dt
import json
import sqlite3

import pytest
from click.testing import CliRunner
from conftest import cli_result, make_original_db, no_traceback
from sqlite_utils import Database

from agentmetrics import open_database
from agentmetrics.cli import cli
from agentmetrics.maintenance import REAP_COLUMNS, reap
from agentmetrics.reports.stale import STALE_COLUMNS, count_stale, stale_runs

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
NOW_ISO = "2026-03-10T12:00:00.000Z"
HOUR_MS = 3_600_000


def ago(hours: float) -> str:
    moment = NOW - dt.timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def orchestration(db, id, status, started_hours_ago, **extra):
    db.table("orchestrations").insert(
        {"id": id, "session_id": f"s-{id}", "status": status, "started_at": ago(started_hours_ago)}
        | extra
    )


def execution(db, id, status, started_hours_ago, orchestration_id=None, **extra):
    db.table("agent_executions").insert(
        {
            "id": id,
            "orchestration_id": orchestration_id,
            "agent_session_id": f"s-{id}",
            "agent_name": "coder",
            "status": status,
            "started_at": ago(started_hours_ago),
        }
        | extra
    )


@pytest.fixture
def runs(db):
    """Unfinished and finished runs around the 6 hour mark, relative to NOW."""
    orchestration(db, "A", "running", 10)  # nothing since it started: stale
    orchestration(db, "B", "running", 10)  # an execution finished an hour ago: alive
    execution(db, "b1", "completed", 3, "B", completed_at=ago(1), duration_ms=2 * HOUR_MS)
    orchestration(db, "C", "running", 20)  # last heard of 6.5h ago: stale
    execution(db, "c1", "completed", 8, "C", completed_at=ago(7), duration_ms=HOUR_MS)
    execution(db, "c2", "in_progress", 6.5, "C")
    orchestration(db, "D", "completed", 30, completed_at=ago(29), duration_ms=HOUR_MS)
    orchestration(db, "E", "running", 2)
    execution(db, "s1", "in_progress", 5)  # 5h: stale only with --stale-after 4h
    execution(db, "s2", "in_progress", 7)
    execution(db, "s3", "failed", 9, completed_at=ago(8.5), duration_ms=HOUR_MS // 2)
    execution(db, "s4", "in_progress", 6)  # exactly 6h: not older than 6h
    return db


def table_rows(db, table):
    return {row["id"]: row for row in db.table(table).rows}


def test_stale_runs(runs):
    df = stale_runs(runs, now=NOW)
    assert list(df.columns) == STALE_COLUMNS
    assert list(zip(df["kind"], df["id"], strict=True)) == [
        ("orchestration", "A"),
        ("execution", "s2"),
        ("execution", "c2"),
        ("orchestration", "C"),
    ]
    assert list(df["age_ms"]) == [10 * HOUR_MS, 7 * HOUR_MS, 6.5 * HOUR_MS, 6.5 * HOUR_MS]
    assert list(df["session_id"]) == ["s-A", "s-s2", "s-c2", "s-C"]
    assert list(df["agent_name"]) == [None, "coder", "coder", None]
    c = df[df["id"] == "C"].iloc[0]
    assert c["started_at"].isoformat() == "2026-03-09T16:00:00+00:00"
    assert c["last_seen_at"].isoformat() == "2026-03-10T05:30:00+00:00"
    assert count_stale(runs, now=NOW) == 4


def test_count_stale_reads_executions_from_the_in_progress_index(runs):
    # A stale execution is counted from status and started_at alone, which the
    # partial in_progress index holds: no table lookup per running execution.
    read = set()

    def record(action, table, column, *_):
        if action == sqlite3.SQLITE_READ and table == "agent_executions":
            read.add(column)
        return sqlite3.SQLITE_OK

    runs.conn.set_authorizer(record)
    try:
        assert count_stale(runs, now=NOW) == 4
    finally:
        runs.conn.set_authorizer(None)
    # The orchestration half reads its executions by orchestration_id.
    assert read <= {"status", "started_at", "completed_at", "orchestration_id"}


def test_stale_runs_other_age(runs):
    df = stale_runs(runs, stale_after="4h", now=NOW)
    assert set(df["id"]) == {"A", "s2", "c2", "C", "s1", "s4"}
    assert count_stale(runs, stale_after="4h", now=NOW) == 6
    assert stale_runs(runs, stale_after="11h", now=NOW).empty


def test_stale_runs_empty(db):
    df = stale_runs(db, now=NOW)
    assert list(df.columns) == STALE_COLUMNS
    assert df.empty
    assert count_stale(db, now=NOW) == 0


@pytest.mark.parametrize("bad", ["soon", "0h", "-2h"])
def test_stale_runs_bad_age(db, bad):
    with pytest.raises(ValueError):
        stale_runs(db, stale_after=bad, now=NOW)


def test_reap(runs):
    before = {t: table_rows(runs, t) for t in ("orchestrations", "agent_executions")}
    df = reap(runs, now=NOW)
    assert list(df.columns) == REAP_COLUMNS
    assert set(df["id"]) == {"A", "s2", "c2", "C"}
    after = {t: table_rows(runs, t) for t in ("orchestrations", "agent_executions")}

    reaped_at = "reaped at 2026-03-10T12:00:00.000Z"
    a = after["orchestrations"]["A"]
    assert (a["status"], a["completed_at"], a["duration_ms"]) == ("failed", ago(10), 0)
    assert json.loads(a["metadata_json"]) == {
        "error_message": f"abandoned: no activity since {ago(10)}; {reaped_at}"
    }
    c = after["orchestrations"]["C"]
    # From its start (20h ago) to the last execution start (6.5h ago); c1 completed, c2
    # was abandoned: partial.
    assert (c["status"], c["completed_at"], c["duration_ms"]) == (
        "partial",
        ago(6.5),
        13.5 * HOUR_MS,
    )
    for exec_id, hours in (("s2", 7), ("c2", 6.5)):
        row = after["agent_executions"][exec_id]
        assert (row["status"], row["completed_at"], row["duration_ms"]) == ("failed", ago(hours), 0)
        assert row["error_message"] == f"abandoned: no activity since {ago(hours)}; {reaped_at}"
    # Everything else is exactly as it was.
    for table, rows in before.items():
        for row_id, row in rows.items():
            if row_id not in {"A", "C", "s2", "c2"}:
                assert after[table][row_id] == row
    # Nothing left to reap.
    assert reap(runs, now=NOW).empty


def test_reap_recounts_task_counts_from_executions(runs, db_path):
    # F planned 5 tasks: one completed, one failed, one crashed (reaped: failed).
    orchestration(runs, "F", "running", 9, total_tasks=5)
    execution(runs, "f1", "completed", 9, "F", completed_at=ago(8.5), duration_ms=HOUR_MS // 2)
    execution(runs, "f2", "failed", 8.5, "F", completed_at=ago(8), duration_ms=HOUR_MS // 2)
    execution(runs, "f3", "in_progress", 8, "F")
    assert invoke(db_path, "reap", "--now", NOW_ISO).exit_code == 0
    counts = {
        row["id"]: (row["total_tasks"], row["completed_tasks"], row["failed_tasks"])
        for row in runs.table("orchestrations").rows
    }
    # C: c1 completed, c2 reaped; A has no executions; B (alive) keeps its counts.
    assert counts == {
        "A": (0, 0, 0),
        "B": (0, 0, 0),
        "C": (2, 1, 1),
        "D": (0, 0, 0),
        "E": (0, 0, 0),
        "F": (5, 1, 2),
    }
    shown = json.loads(invoke(db_path, "show", "s-C", "--json").output)
    assert (shown["completed_tasks"], shown["failed_tasks"]) == (1, 1)


def test_reap_dry_run_writes_nothing(runs):
    before = {t: table_rows(runs, t) for t in ("orchestrations", "agent_executions")}
    df = reap(runs, now=NOW, dry_run=True)
    assert set(df["id"]) == {"A", "s2", "c2", "C"}
    assert df["error_message"].str.startswith("abandoned: no activity since ").all()
    assert {t: table_rows(runs, t) for t in before} == before


def test_reap_keeps_existing_messages(db):
    orchestration(db, "M", "running", 10, metadata_json='{"team": "x", "error_message": "oops"}')
    orchestration(db, "N", "running", 10, metadata_json="not json")
    execution(db, "e", "in_progress", 8, error_message="first")
    reap(db, now=NOW)
    rows = table_rows(db, "orchestrations")
    message = f"abandoned: no activity since {ago(10)}; reaped at {NOW_ISO}"
    assert json.loads(rows["M"]["metadata_json"]) == {
        "team": "x",
        "error_message": "oops\n" + message,
    }
    assert json.loads(rows["N"]["metadata_json"]) == {
        "error_message": message,
        "previous_metadata": "not json",
    }
    assert table_rows(db, "agent_executions")["e"]["error_message"] == (
        f"first\nabandoned: no activity since {ago(8)}; reaped at {NOW_ISO}"
    )


def test_reap_is_one_transaction(runs):
    before = {t: table_rows(runs, t) for t in ("orchestrations", "agent_executions")}
    # The last update fails: the earlier ones must be rolled back with it.
    runs.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON orchestrations WHEN NEW.id = 'C'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        reap(runs, now=NOW)
    assert {t: table_rows(runs, t) for t in before} == before
    assert not runs.conn.in_transaction


def test_reap_path_argument(runs, db_path):
    assert len(reap(str(db_path), now=NOW)) == 4


def invoke(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args])


def test_cli_reap_dry_run_then_reap(runs, db_path):
    result = invoke(db_path, "reap", "--dry-run", "--now", NOW_ISO)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Would reap 2 orchestrations and 2 executions with no sign of life for 6h"
    assert "s-A" in lines[2] and "10h 0m" in lines[2]
    assert runs.table("orchestrations").get("A")["status"] == "running"

    result = invoke(db_path, "reap", "--stale-after", "6h", "--now", NOW_ISO)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Reaped 2 orchestrations and 2 executions")
    assert runs.table("orchestrations").get("A")["status"] == "failed"

    result = invoke(db_path, "reap", "--now", NOW_ISO)
    assert result.output == "Reaped 0 orchestrations and 0 executions with no sign of life for 6h\n"


def test_cli_reap_json(runs, db_path):
    result = invoke(db_path, "reap", "--stale-after", "4h", "--json", "--now", NOW_ISO)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["id"] for r in rows} == {"A", "s2", "c2", "C", "s1", "s4"}
    assert {r["kind"] for r in rows} == {"orchestration", "execution"}


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--stale-after", "soon"],
            "Error: Invalid value for '--stale-after': not a duration: 'soon'",
        ),
        (
            ["--stale-after", "0h"],
            "Error: Invalid value for '--stale-after': must be longer than zero, got '0h'",
        ),
    ],
)
def test_cli_reap_bad_input(runs, db_path, args, message):
    result = invoke(db_path, "reap", *args)
    assert result.exit_code == 2  # a bad option value is a usage error
    assert result.output.startswith(message)
    assert "Traceback" not in result.output


def test_cli_reap_missing_database(tmp_path):
    result = invoke(tmp_path / "missing.db", "reap")
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found at")
    assert not (tmp_path / "missing.db").exists()


def test_system_health_counts_stale_runs(runs):
    from agentmetrics.reports import system_health

    # Window of 1 hour: none of the stale runs started in it, they are counted anyway.
    health = system_health(runs, hours=1, now=NOW)
    assert health.loc[0, "stale_running"] == 4
    assert health.loc[0, "orchestrations"] == 0
    assert system_health(runs, hours=1, now=NOW, stale_after="4h").loc[0, "stale_running"] == 6
    assert system_health(runs, now=NOW, stale_after="11h").loc[0, "stale_running"] == 0
    assert str(health["stale_running"].dtype) == "int64"
    with pytest.raises(ValueError, match="not a duration"):
        system_health(runs, now=NOW, stale_after="later")


# -- reap on files in the original tool's schema -------------------------------------------


ORIGINAL_RUNS = {
    "orchestrations": [
        {
            "id": "o1",
            "session_id": "s1",
            "status": "running",
            "started_at": "2026-03-01T10:00:00.000Z",
        }
    ],
    "executions": [
        {
            "id": "e1",
            "orchestration_id": "o1",
            "agent_session_id": "a1",
            "agent_name": "x",
            "status": "in_progress",
            "started_at": "2026-03-01T10:05:00.000Z",
        },
        {
            "id": "e2",
            "orchestration_id": "o1",
            "agent_session_id": "a2",
            "agent_name": "x",
            "status": "completed",
            "started_at": "2026-03-01T10:01:00.000Z",
            "completed_at": "2026-03-01T10:03:00.000Z",
            "duration_ms": 120000,
        },
    ],
}


def statuses(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT id, status FROM orchestrations UNION ALL"
            " SELECT id, status FROM agent_executions ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_reap_plain_database_of_an_original_file(tmp_path):
    # The original schema has no metadata_json, where an orchestration's message goes:
    # a plain sqlite_utils.Database (never opened by agentmetrics) used to fail with
    # "no such column: metadata_json".
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    db = Database(path)
    reaped = reap(db, now=NOW_ISO)
    assert sorted(reaped["id"]) == ["e1", "o1"]
    assert statuses(path) == [("e1", "failed"), ("e2", "completed"), ("o1", "partial")]
    (metadata,) = db.execute("SELECT metadata_json FROM orchestrations").fetchone()
    assert json.loads(metadata)["error_message"].startswith(
        "abandoned: no activity since 2026-03-01T10:05:00.000Z"
    )
    db.close()


def test_reap_read_only_original_file(tmp_path, lock_down):
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    lock_down(path)
    dry = cli_result("--db", path, "reap", "--now", NOW_ISO, "--dry-run")
    no_traceback(dry, 0)
    assert "Would reap 1 orchestrations and 1 executions" in dry.output
    result = cli_result("--db", path, "reap", "--now", NOW_ISO)
    no_traceback(result, 1)
    assert result.output.strip() == (
        "Error: Cannot reap 2 stale runs: the database is read-only"
        " (--dry-run lists them without writing)"
    )
    assert statuses(path) == [("e1", "in_progress"), ("e2", "completed"), ("o1", "running")]
    # Nothing stale: nothing to write, so a read-only file is fine.
    quiet = cli_result("--db", path, "reap", "--now", "2026-03-01T12:00:00Z", "--stale-after", "6h")
    no_traceback(quiet, 0)
    assert "Reaped 0 orchestrations and 0 executions" in quiet.output


def test_reap_read_only_migrated_file(tmp_path, lock_down):
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    open_database(path).close()  # migrated: metadata_json exists
    lock_down(path)
    result = cli_result("--db", path, "reap", "--now", NOW_ISO)
    no_traceback(result, 1)
    assert "Error: Cannot reap 2 stale runs: the database is read-only" in result.output
    assert statuses(path) == [("e1", "in_progress"), ("e2", "completed"), ("o1", "running")]
