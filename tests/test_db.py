import os
import sqlite3
import subprocess
import sys

import pytest

import agentmetrics
from agentmetrics.errors import DatabaseError, ReadOnlyDatabase
from agentmetrics.store import db as dbmodule
from agentmetrics.store.migrations import migrations, missing_indexes
from tests.conftest import make_original_db

ORIGINAL_COLUMNS = {
    "orchestrations": [
        "id", "session_id", "task_description", "status", "started_at", "completed_at",
        "duration_ms", "total_tasks", "completed_tasks", "failed_tasks", "git_commit_hash",
        "plan_file_path", "progress_file_path", "created_at",
    ],
    "agent_executions": [
        "id", "orchestration_id", "agent_session_id", "agent_name", "task_id", "task_number",
        "status", "started_at", "completed_at", "duration_ms", "retry_count", "self_healed",
        "files_created", "files_modified", "error_message", "summary_report_path",
        "session_log_path", "created_at",
    ],
}  # fmt: skip
EXTRA_COLUMNS = {
    "orchestrations": ["metadata_json"],
    "agent_executions": [
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "metadata_json",
        "parent_execution_id",
        "attempt",
        "first_attempt_id",
    ],
}


def column_info(conn, table):
    return {
        row[1]: {"type": row[2], "notnull": row[3], "default": row[4], "pk": row[5]}
        for row in conn.execute(f"PRAGMA table_info({table})")
    }


def dump(conn):
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        for table in ("orchestrations", "agent_executions")
    }


def test_new_database_has_original_columns_then_nullable_extras(db_path):
    db = agentmetrics.open_database(db_path)
    original = make_original_db(db_path.parent / "orig.db")
    conn = sqlite3.connect(original)
    for table, names in ORIGINAL_COLUMNS.items():
        ours = column_info(db.conn, table)
        theirs = column_info(conn, table)
        assert list(ours) == names + EXTRA_COLUMNS[table]
        for name in names:
            assert ours[name] == theirs[name], (table, name)
        for name in EXTRA_COLUMNS[table]:
            assert ours[name]["notnull"] == 0 and ours[name]["default"] is None


def test_new_database_has_every_report_index(db):
    indexes = {row[1] for row in db.execute("PRAGMA index_list(agent_executions)")}
    assert {
        "idx_am_exec_orchestration",
        "idx_am_exec_finished_started",
        "idx_am_exec_finished_agent",
        "idx_am_exec_running_started",
        "idx_am_exec_running_agent",
        "idx_am_exec_first_attempt",
    } <= indexes


def test_connection_pragmas(db):
    pragma = lambda name: db.conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("foreign_keys") == 1
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("busy_timeout") == dbmodule.BUSY_TIMEOUT_MS


def test_constraints_match_original(db):
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute(
            "INSERT INTO orchestrations (id, session_id, status, started_at) VALUES (?, ?, ?, ?)",
            ["a", "s", "bogus", "2026-01-01T00:00:00.000Z"],
        )
    db.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at) VALUES (?, ?, ?, ?)",
        ["a", "s", "running", "2026-01-01T00:00:00.000Z"],
    )
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute(
            "INSERT INTO orchestrations (id, session_id, status, started_at) VALUES (?, ?, ?, ?)",
            ["b", "s", "running", "2026-01-01T00:00:00.000Z"],
        )
    created = db.execute("SELECT created_at FROM orchestrations").fetchone()[0]
    assert len(created) == 19 and created[10] == " "  # datetime('now') default


def test_foreign_key_cascade_deletes_executions(monitor):
    orch = monitor.start_orchestration("s1")
    monitor.start_agent_execution("a1", "agent", orchestration_id=orch)
    monitor.start_agent_execution("a2", "agent", orchestration_id=orch)
    monitor.start_agent_execution("a3", "agent")
    monitor.db.execute("DELETE FROM orchestrations WHERE id = ?", [orch])
    remaining = [r[0] for r in monitor.db.execute("SELECT agent_session_id FROM agent_executions")]
    assert remaining == ["a3"]


def test_migrations_recorded_in_order_and_idempotent(db_path):
    db = agentmetrics.open_database(db_path)
    names = [m.name for m in migrations.applied(db)]
    assert names == [
        "m001_original_tables",
        "m002_extra_columns",
        "m004_otel_spans",
        "m005_attempts",
    ]
    db.close()
    db = agentmetrics.open_database(db_path)
    assert [m.name for m in migrations.applied(db)] == names
    assert migrations.pending(db) == []


def test_original_file_opens_without_changing_rows(tmp_path):
    orchestrations = [
        {
            "id": "o1", "session_id": "s1", "status": "completed",
            "started_at": "2026-01-01T10:00:00.000Z", "completed_at": "2026-01-01T10:00:05.250Z",
            "duration_ms": 5250, "total_tasks": 2, "completed_tasks": 2,
        },
        {"id": "o2", "session_id": "s2", "status": "running",
         "started_at": "2026-01-02T10:00:00.000Z", "task_description": ""},
    ]  # fmt: skip
    executions = [
        {"id": "e1", "orchestration_id": "o1", "agent_session_id": "a1", "agent_name": "x",
         "status": "completed", "started_at": "2026-01-01T10:00:00.100Z", "duration_ms": 900,
         "self_healed": 1, "task_number": 0},
        {"id": "e2", "agent_session_id": "a2", "agent_name": "y", "status": "failed",
         "started_at": "2026-01-01T10:00:01.000Z", "error_message": ""},
    ]  # fmt: skip
    path = make_original_db(tmp_path / "orig.db", orchestrations, executions)
    raw = sqlite3.connect(path)
    before = dump(raw)
    raw.close()
    db = agentmetrics.open_database(path)
    assert "model" in db.table("agent_executions").columns_dict
    # Existing rows keep every value; our columns read as NULL.
    after = {
        table: [row[: len(ORIGINAL_COLUMNS[table])] for row in rows]
        for table, rows in dump(db.conn).items()
    }
    assert after == before
    # The original tool can still insert with its own column list.
    db.execute(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at)"
        " VALUES ('e3', 'a3', 'z', 'in_progress', '2026-01-03T00:00:00.000Z')"
    )
    indexes = {row[1] for row in db.execute("PRAGMA index_list(agent_executions)")}
    assert "idx_agent_executions_agent_name" in indexes  # theirs kept
    # Ours are added, except where one of theirs already serves the same queries.
    assert {"idx_am_exec_finished_started", "idx_am_exec_finished_agent"} <= indexes
    assert (
        not {
            "idx_am_exec_orchestration",
            "idx_am_exec_running_started",
            "idx_am_exec_running_agent",
        }
        & indexes
    )


def test_read_only_flag_skips_migrations_and_shims_columns(tmp_path):
    path = make_original_db(
        tmp_path / "orig.db",
        executions=[{"id": "e1", "agent_session_id": "a1", "agent_name": "x",
                     "status": "completed", "started_at": "2026-01-01T10:00:00.000Z"}],
    )  # fmt: skip
    db = agentmetrics.open_database(path, read_only=True)
    row = db.execute("SELECT agent_name, model, cost_usd FROM agent_executions").fetchone()
    assert row == ("x", None, None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("DELETE FROM main.agent_executions")
    db.close()
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "_sqlite_migrations" not in tables
    assert "model" not in column_info(raw, "agent_executions")


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_unwritable_file_or_folder_opens_for_reading(tmp_path, locked, lock_down):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = make_original_db(
        folder / "orig.db",
        executions=[{"id": "e1", "agent_session_id": "a1", "agent_name": "x",
                     "status": "completed", "started_at": "2026-01-01T10:00:00.000Z"}],
    )  # fmt: skip
    lock_down(path if locked == "file" else folder)
    db = agentmetrics.open_database(path)
    assert db.execute("SELECT count(*) FROM agent_executions").fetchone()[0] == 1
    with pytest.raises(ReadOnlyDatabase, match="read-only"):
        agentmetrics.Monitor(db, strict=True).start_orchestration("new")
    db.close()
    raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    assert "model" not in column_info(raw, "agent_executions")
    raw.close()


def test_directory_is_rejected(tmp_path):
    with pytest.raises(DatabaseError, match="is a directory"):
        agentmetrics.open_database(tmp_path)


def test_non_sqlite_file_is_rejected_unchanged(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a database\n")
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        agentmetrics.open_database(path)
    assert path.read_text() == "hello, not a database\n"


def test_corrupt_database_is_rejected(tmp_path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(DatabaseError, match="not a usable SQLite database"):
        agentmetrics.open_database(path)


def test_missing_file_without_create_is_an_error_and_not_created(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(DatabaseError, match="No database found"):
        agentmetrics.open_database(path, create=False)
    assert not path.exists()


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        agentmetrics.open_database(tmp_path / "nope" / "x.db")


OPEN_SCRIPT = "import sys, agentmetrics; agentmetrics.open_database(sys.argv[1]).close()"


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = tmp_path / "race.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_SCRIPT, str(path)], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    db = agentmetrics.open_database(path)
    assert len(migrations.applied(db)) == 4
    assert missing_indexes(db) == []


def test_read_only_file_without_our_tables_is_a_clear_error(tmp_path, lock_down):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    lock_down(path)
    with pytest.raises(DatabaseError, match="has no agentmetrics tables"):
        agentmetrics.open_database(path)


# -- functions taking "a path or a Database" close what they open, and only that ---------


@pytest.fixture
def opened(monkeypatch):
    """Every Database agentmetrics opens from a path during the test."""
    seen = []
    real = dbmodule.open_database

    def tracking(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(dbmodule, "open_database", tracking)
    return seen


def is_closed(database) -> bool:
    try:
        database.conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database"
        return True
    return False


def sample_db(path):
    m = agentmetrics.Monitor(path)
    with m.orchestration("s-1", "build") as o, o.agent("coder", "a-1"):
        pass
    m.start_agent_execution("solo", "tests")
    m.close()
    return path


def export_file(path, tmp_path):
    from agentmetrics.exchange import export

    out = tmp_path / "export.json"
    with open(out, "w") as f:
        export(path, f)
    return out


@pytest.mark.parametrize(
    "call",
    [
        "iter_sessions",
        "iter_sessions_stopped_early",
        "export",
        "import_files",
        "merge_databases",
        "cleanup",
        "vacuum",
    ],
)
def test_path_functions_close_what_they_open(tmp_path, opened, call):
    from agentmetrics.exchange import import_files, iter_sessions, merge_databases
    from agentmetrics.store.cleanup import cleanup, vacuum

    path = sample_db(tmp_path / "a.db")
    other = sample_db(tmp_path / "b.db")
    dump_path = export_file(other, tmp_path)
    opened.clear()
    if call == "iter_sessions":
        assert len(list(iter_sessions(path))) == 2
    elif call == "iter_sessions_stopped_early":
        sessions = iter_sessions(path)
        next(sessions)
        sessions.close()
    elif call == "export":
        export_file(path, tmp_path)
    elif call == "import_files":
        import_files(path, [dump_path])
    elif call == "merge_databases":
        merge_databases(path, [other])
    elif call == "cleanup":
        cleanup(path, 0, dry_run=True)
    else:
        vacuum(path)
    assert opened, "the function opened no database: the test checks nothing"
    assert all(is_closed(database) for database in opened)


def test_a_given_database_is_left_open(tmp_path, opened):
    from agentmetrics.exchange import iter_sessions
    from agentmetrics.store.cleanup import cleanup

    database = dbmodule.open_database(sample_db(tmp_path / "a.db"))
    assert len(list(iter_sessions(database))) == 2
    cleanup(database, 0, dry_run=True)
    assert not is_closed(database)
    database.close()
