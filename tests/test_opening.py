"""Opening files safely (issue 9): no long implicit schema step, no writes into files
that are not ours, no partial numbers from a read-only folder, no hang on a FIFO."""

import importlib.metadata  # noqa: F401 - loaded before as_user's children drop root
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlite_utils import Database

import agentmetrics
from agentmetrics import reports
from agentmetrics.cli import cli
from agentmetrics.errors import DatabaseError, ForeignDatabase, MissingIndexesWarning
from agentmetrics.store import db as dbmodule
from agentmetrics.store.migrations import INDEXES, migrations, missing_indexes
from tests.conftest import make_original_db

NOW = "2026-06-01T12:00:00.000Z"
# On an original file three of our indexes are not served by one of its own.
ORIGINAL_MISSING = {
    "idx_am_orch_status_started",
    "idx_am_exec_finished_started",
    "idx_am_exec_finished_agent",
    "idx_am_exec_first_attempt",
}


def run(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args])


def index_names(path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = "SELECT name FROM sqlite_master WHERE type='index'"
    names = {row[0] for row in conn.execute(sql + " AND tbl_name != '_sqlite_migrations'")}
    conn.close()
    return names


def original_rows():
    """12 orchestrations of 5 executions over the 6 hours before NOW."""
    orchestrations, executions = [], []
    for o in range(12):
        minute = o * 30
        status = ["completed", "failed", "partial"][o % 3] if o < 11 else "running"
        orchestrations.append(
            {"id": f"o{o}", "session_id": f"s{o}", "status": status, "total_tasks": 5,
             "started_at": f"2026-06-01T{6 + minute // 60:02d}:{minute % 60:02d}:00.000Z"}
        )  # fmt: skip
        for e in range(5):
            n = o * 5 + e
            running = o == 11 and e == 4
            at = minute + e
            executions.append(
                {"id": f"e{n}", "orchestration_id": f"o{o}", "agent_session_id": f"a{n}",
                 "agent_name": f"agent-{n % 3}",
                 "status": "in_progress" if running else ("failed" if n % 7 == 0 else "completed"),
                 "started_at": f"2026-06-01T{6 + at // 60:02d}:{at % 60:02d}:00.000Z",
                 "duration_ms": None if running else 1000 * (n % 9 + 1), "retry_count": n % 2}
            )  # fmt: skip
    return orchestrations, executions


@pytest.fixture
def large_original(tmp_path, monkeypatch):
    """An original-tool file that counts as large (the threshold is lowered to 10 rows)."""
    monkeypatch.setattr(dbmodule, "IMPLICIT_INDEX_ROWS", 10)
    orchestrations, executions = original_rows()
    return make_original_db(tmp_path / "original.db", orchestrations, executions)


def all_reports(path) -> dict[str, pd.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIndexesWarning)
        return {
            "health": reports.system_health(path, hours=24, now=NOW),
            "performance": reports.performance_report(path),
            "list": reports.list_orchestrations(path),
            "agent": reports.agent_stats(path, "agent-1"),
            "summary": reports.agent_summary(path, "agent-2"),
            "trends": reports.trends(path, freq="h", since="2026-06-01T00:00:00Z", now=NOW),
            "failures": reports.failed_orchestrations(path, include_partial=True),
            "executions": reports.executions(path, "s3"),
        }


# -- 1. no implicit long schema step ------------------------------------------------------


def test_opening_a_large_original_file_adds_columns_but_builds_no_index(large_original):
    before = index_names(large_original)
    result = run(large_original, "health")
    assert result.exit_code == 0, result.output
    assert index_names(large_original) == before
    conn = sqlite3.connect(large_original)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(agent_executions)")}
    conn.close()
    assert {"model", "cost_usd"} <= columns  # the instant step still happens
    # One hint line on stderr, saying how to speed up.
    hints = [line for line in result.stderr.splitlines() if "upgrade" in line]
    assert len(hints) == 1
    assert hints[0].startswith("agentmetrics: report indexes missing on ")
    assert "run `agentmetrics upgrade` (about 1s, writers wait)" in hints[0]
    # Tracking does not build them either.
    agentmetrics.Monitor(large_original).start_orchestration("new-session")
    assert index_names(large_original) == before


def test_upgrade_builds_the_indexes_and_reports_stay_identical(large_original):
    before = all_reports(large_original)
    assert {name for name, _, _ in missing_indexes(agentmetrics.open_database(large_original))} == (
        ORIGINAL_MISSING
    )
    result = run(large_original, "upgrade")
    assert result.exit_code == 0, result.output
    assert index_names(large_original) >= ORIGINAL_MISSING
    lines = result.stderr.splitlines()
    assert lines[0].startswith("building 4 report indexes on ")
    assert "(60 executions): about 0s in all; writers wait up to about 0s at a time" in lines[0]
    assert sum(" built in " in line for line in lines) == 4
    assert result.stdout.startswith("Built 4 report indexes and the rollups in ")
    after = all_reports(large_original)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)
    # Nothing left to do, and no more hint.
    again = run(large_original, "upgrade")
    assert again.exit_code == 0
    assert "every report index is present, nothing to do" in again.stderr
    assert "upgrade" not in run(large_original, "health").stderr


def test_upgrade_builds_one_index_per_transaction(large_original):
    db = agentmetrics.open_database(large_original)
    statements = []
    db.conn.set_trace_callback(statements.append)
    timings = dbmodule.upgrade(db, progress=None)
    assert set(timings) == ORIGINAL_MISSING | {"rollups"}
    # Up to the transaction that creates the rollups.
    table = statements.index(next(s for s in statements if "CREATE TABLE" in s))
    creating = max(i for i in range(table) if statements[i].startswith("BEGIN"))
    steps = [
        s.split(" ON ")[0]
        for s in statements[:creating]
        if s.split()[0] in ("BEGIN", "COMMIT", "CREATE")
    ]
    assert steps == [
        step
        for name in ("idx_am_orch_status_started", "idx_am_exec_finished_started",
                     "idx_am_exec_finished_agent", "idx_am_exec_first_attempt")
        for step in ("BEGIN IMMEDIATE", f"CREATE INDEX IF NOT EXISTS {name}", "COMMIT")
    ]  # fmt: skip


def test_python_api_warns_once_about_missing_indexes(large_original):
    with pytest.warns(MissingIndexesWarning, match="agentmetrics upgrade"):
        reports.list_orchestrations(large_original)
    # Writing (tracking) does not warn; a small file never lacks them.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agentmetrics.open_database(large_original).close()
        small = make_original_db(large_original.parent / "small.db")
        reports.list_orchestrations(small)


def test_a_large_file_with_indexes_but_no_rollups_warns_until_upgraded(large_original):
    # The indexes by hand (as an earlier release's upgrade left them): only rollups lack.
    agentmetrics.open_database(large_original).close()  # our columns, which they index
    with sqlite3.connect(large_original) as conn:
        for sql, _ in INDEXES:
            conn.execute(sql)
    conn.close()
    with pytest.warns(MissingIndexesWarning, match="report rollups missing.*upgrade"):
        reports.list_orchestrations(large_original)
    result = run(large_original, "health", "24")
    assert "report rollups missing" in result.stderr
    assert run(large_original, "upgrade").exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports.list_orchestrations(large_original)
    assert "missing" not in run(large_original, "health", "24").stderr


def test_a_small_original_file_gets_the_indexes_on_open(tmp_path):
    path = make_original_db(tmp_path / "small.db", *original_rows())
    run(path, "list")
    assert index_names(path) >= ORIGINAL_MISSING


def test_a_file_of_the_previous_release_opens_as_it_is(tmp_path):
    """Its m003_report_indexes record stays; its indexes count as present by name."""
    path = tmp_path / "previous.db"
    agentmetrics.open_database(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
        " VALUES ('agentmetrics', 'm003_report_indexes', '2026-01-01')"
    )
    conn.commit()
    conn.close()
    db = agentmetrics.open_database(path)
    assert [m.name for m in migrations.applied(db)][-1] == "m003_report_indexes"
    assert migrations.pending(db) == [] and missing_indexes(db) == []
    assert dbmodule.upgrade(db, progress=None) == {}


def test_upgrade_of_a_read_only_file_is_a_clear_error(large_original, lock_down):
    lock_down(large_original)
    result = run(large_original, "upgrade")
    assert result.exit_code == 1
    assert (
        result.output == f"Error: {large_original} is read-only: cannot build the report indexes\n"
    )


def test_upgrade_of_a_missing_file_creates_nothing(tmp_path):
    result = run(tmp_path / "none.db", "upgrade")
    assert result.exit_code == 1
    assert result.output == f"Error: No database found at {tmp_path / 'none.db'}\n"
    assert not (tmp_path / "none.db").exists()


# -- 2. never write where not asked --------------------------------------------------------


@pytest.fixture
def app_db(tmp_path):
    """Another application's database: its own table, rollback journal."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    return path


def folder_state(path):
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}


FOREIGN = "is not an agentmetrics database: it has no agentmetrics tables but other tables (users)"


@pytest.mark.parametrize(
    "args",
    [["list"], ["health"], ["performance"], ["failures"], ["export"], ["trends"], ["upgrade"],
     ["cleanup", "30"], ["watch", "--once"], ["import", "x.json"]],
    ids=lambda a: a[0],
)  # fmt: skip
def test_commands_refuse_a_foreign_database_and_leave_it_unchanged(app_db, args):
    (app_db.parent / "x.json").write_text("[]")
    before = folder_state(app_db)
    result = run(app_db, *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {app_db} {FOREIGN}; it is left unchanged\n"
    assert folder_state(app_db) == before  # no tables, no WAL, no -wal file


def test_tracking_refuses_a_foreign_database(app_db):
    before = folder_state(app_db)
    with pytest.raises(ForeignDatabase, match=re.escape(FOREIGN)):
        agentmetrics.Monitor(app_db)
    with pytest.raises(ForeignDatabase, match=re.escape(FOREIGN)):
        agentmetrics.Monitor(Database(app_db))
    assert folder_state(app_db) == before


def test_demo_needs_replace_for_a_foreign_database(app_db):
    before = folder_state(app_db)
    result = run(app_db, "demo", "--orchestrations", "3")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {app_db} {FOREIGN}; it is left unchanged; use --replace (replace=True)"
        " to add the demo to it\n"
    )
    assert folder_state(app_db) == before
    result = run(app_db, "demo", "--orchestrations", "3", "--replace")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(app_db)
    assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    assert conn.execute("SELECT count(*) FROM orchestrations").fetchone()[0] == 3
    conn.close()


def test_allow_foreign_adds_our_tables(app_db):
    agentmetrics.open_database(app_db, allow_foreign=True).close()
    agentmetrics.Monitor(app_db).start_orchestration("s")  # ours now
    assert run(app_db, "list").exit_code == 0


def test_an_empty_file_is_no_database_for_reads_and_fine_for_writes(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    result = run(path, "list")
    assert result.exit_code == 1
    assert result.output == f"Error: No database found at {path}: the file is empty\n"
    assert path.stat().st_size == 0 and folder_state(path) == {"empty.db": b""}
    agentmetrics.Monitor(path).start_orchestration("s1")
    assert run(path, "list").exit_code == 0


def test_an_sqlite_file_without_tables_is_fine_for_writes_not_reads(tmp_path):
    path = tmp_path / "blank.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 1").connection.close()
    before = folder_state(path)
    result = run(path, "health")
    assert result.exit_code == 1
    assert "has no agentmetrics tables: nothing has been tracked into it yet" in result.output
    assert folder_state(path) == before
    agentmetrics.Monitor(path).start_orchestration("s1")
    assert run(path, "list").exit_code == 0


# -- 3. committed rows still in the -wal of a read-only folder -----------------------------

WRITE_AND_DIE = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")
for i in range(200, 250):
    conn.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at)"
        " VALUES (?, ?, 'completed', '2026-06-01T10:00:00.000Z')", [f"o{i}", f"s{i}"])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rows_in_the_wal_of_a_read_only_folder_are_counted(tmp_path, lock_down, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "monitoring.db"
    monitor = agentmetrics.Monitor(path)
    for i in range(200):
        monitor.start_orchestration(f"s{i}")
    monitor.db.close()  # checkpointed: 200 rows in the main file
    killed = subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (folder / "monitoring.db-wal").stat().st_size > 0
    (folder / "monitoring.db-shm").unlink()
    lock_down(folder)
    # No room for a private copy: a clear error, never the 200 rows of the main file.
    unwritable = tmp_path / "unwritable"
    unwritable.mkdir()
    lock_down(unwritable)
    monkeypatch.setattr("tempfile.tempdir", str(unwritable))
    with pytest.raises(DatabaseError, match="its last commits are in monitoring.db-wal"):
        agentmetrics.open_database(path)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(private))
    db = agentmetrics.open_database(path)
    assert db.execute("SELECT count(*) FROM orchestrations").fetchone()[0] == 250
    db.close()
    assert list(private.iterdir()) == []  # the private copy is gone
    result = run(path, "list", "--limit", "1000", "--csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 251  # header + 250
    assert list(private.iterdir()) == []


# -- 4. a FIFO or other non-regular file ----------------------------------------------------


def test_a_fifo_as_database_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    for args in (["list"], ["demo"]):
        result = subprocess.run(
            [sys.executable, "-m", "agentmetrics", "--db", str(fifo), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1
        assert result.stderr == f"Error: {fifo} is not a regular file (a FIFO, socket or device)\n"
    with pytest.raises(DatabaseError, match="not a regular file"):
        agentmetrics.Monitor(fifo)


# -- 5. what a read-only open leaves behind --------------------------------------------------

OTHER_USERS = (65534, 65533)  # nobody, and a uid nobody else uses


@pytest.fixture
def shared_folder(tmp_path):
    """A folder every user may write (pytest's own folders are root's alone)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix="agentmetrics-shared-")
    os.chmod(folder, 0o777)
    yield Path(folder)
    shutil.rmtree(folder)


def as_user(uid, step):
    """Run ``step()`` as the user ``uid`` (a forked child that drops root), or as ourselves
    when we are not root: file modes then bind as they do for any user."""
    if os.geteuid() != 0:
        step()
        return
    child = os.fork()
    if child == 0:  # pragma: no cover - reported through the exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            step()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0, f"uid {uid} failed"


def modes(folder):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.iterdir())}


def track_and_check(path):
    agentmetrics.Monitor(path, strict=True).start_orchestration("s1")
    assert not os.path.exists(f"{path}.pending.jsonl")  # stored, not kept for later
    db = agentmetrics.open_database(path)  # what `import` opens
    db["orchestrations"].insert(
        {"id": "o2", "session_id": "s2", "status": "running", "started_at": NOW}
    )
    db.close()


def test_a_file_made_writable_again_is_written_despite_read_only_leftovers(shared_folder):
    """The issue: `chmod 444 m.db; agentmetrics --db m.db list; chmod 644 m.db`."""
    path = shared_folder / "m.db"
    user = OTHER_USERS[0]
    as_user(user, lambda: (agentmetrics.Monitor(path).close(), os.chmod(path, 0o444)))
    as_user(user, lambda: agentmetrics.open_database(path, create=False).close())  # `list`
    assert modes(shared_folder) == {"m.db": 0o444, "m.db-shm": 0o444, "m.db-wal": 0o444}
    as_user(user, lambda: os.chmod(path, 0o644))
    as_user(user, lambda: track_and_check(path))
    assert sqlite3.connect(path).execute("SELECT count(*) FROM orchestrations").fetchone() == (2,)


def test_another_users_read_only_leftovers_do_not_keep_the_file_read_only(shared_folder):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as two users")
    path = shared_folder / "m.db"
    owner, reader = OTHER_USERS
    as_user(owner, lambda: agentmetrics.Monitor(path).close())
    as_user(reader, lambda: agentmetrics.open_database(path, create=False).close())
    assert {p.name: p.stat().st_uid for p in shared_folder.iterdir()} == {
        "m.db": owner,
        "m.db-shm": reader,
        "m.db-wal": reader,
    }
    as_user(owner, lambda: track_and_check(path))
    assert sqlite3.connect(path).execute("SELECT count(*) FROM orchestrations").fetchone() == (2,)
