"""Storage failures never reach the tracked code: writes are kept and applied later."""

import datetime as dt
import fcntl
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import fill

from agentmetrics import Monitor
from agentmetrics.errors import AgentMetricsError, DatabaseError, ReadOnlyDatabase, StorageError
from agentmetrics.store import pending

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, **kwargs):
        self.now += dt.timedelta(**kwargs)


class WriteLock:
    """Another connection holding the write lock (longer than any busy timeout here)."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None)

    def acquire(self):
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def rows(path, sql, params=()):
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def iso_now():
    moment = dt.datetime.now(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def unlock(path):
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    os.chmod(path, 0o755 if path.is_dir() else 0o644)


def track_lifecycle(monitor, clock=None):
    """Four writes: an orchestration and one failed execution, 1.25 s apart (on a clock)."""
    orch_id = monitor.start_orchestration("s1", "build", total_tasks=1)
    monitor.start_agent_execution("a1", "coder", orchestration_id=orch_id, task_number=1)
    if clock:
        clock.advance(seconds=1, milliseconds=250)
    monitor.complete_agent_execution("a1", "failed", error_message="boom", files_created=2)
    if clock:
        clock.advance(seconds=1)
    monitor.complete_orchestration("s1", "failed", completed_tasks=0, failed_tasks=1)
    return orch_id


def assert_lifecycle_stored(path, orch_id, timed=True):
    orch = rows(path, "SELECT * FROM orchestrations WHERE session_id = 's1'")[0]
    execution = rows(path, "SELECT * FROM agent_executions WHERE agent_session_id = 'a1'")[0]
    assert (orch["id"], orch["status"], orch["failed_tasks"]) == (orch_id, "failed", 1)
    assert (execution["orchestration_id"], execution["status"]) == (orch_id, "failed")
    assert (execution["error_message"], execution["files_created"]) == ("boom", 2)
    if timed:
        assert execution["started_at"] == "2026-03-01T12:00:00.000Z"
        assert execution["completed_at"] == "2026-03-01T12:00:01.250Z"
        assert execution["duration_ms"] == 1250
        assert (orch["created_at"], orch["duration_ms"]) == ("2026-03-01 12:00:00", 2250)


# -- locked ----------------------------------------------------------------------------


def test_locked_database_keeps_writes_with_call_time_and_applies_them_later(db_path):
    monitor = Monitor(db_path, busy_timeout=0.05)
    journal = f"{db_path}.pending.jsonl"
    with WriteLock(db_path):
        called_from = iso_now()
        orch_id = track_lifecycle(monitor)
        with monitor.orchestration("s2") as orch, orch.agent("tester", "a2"):
            pass
        called_to = iso_now()
        # 4 lifecycle writes + 2 starts, the execution's end, its recount, the end of s2
        assert monitor.pending == 9
        assert len(Path(journal).read_text().splitlines()) == 9
        time.sleep(0.01)  # SQLite's clock at replay would now be later than called_to
    assert rows(db_path, "SELECT * FROM orchestrations") == []
    # The next successful write of any Monitor on the file applies them first, in order.
    Monitor(db_path).start_orchestration("s3")
    assert_lifecycle_stored(db_path, orch_id, timed=False)
    stored = rows(db_path, "SELECT * FROM orchestrations ORDER BY session_id")
    assert [(r["session_id"], r["status"]) for r in stored] == [
        ("s1", "failed"),
        ("s2", "completed"),
        ("s3", "running"),
    ]
    assert stored[1]["completed_tasks"] == 1
    executions = rows(db_path, "SELECT * FROM agent_executions")
    for r in stored[:2] + executions:
        assert called_from <= r["started_at"] <= r["completed_at"] <= called_to
        assert r["created_at"] <= called_to.replace("T", " ")[:19]
    assert os.path.getsize(journal) == 0 and monitor.pending == 0


def test_strict_mode_raises_on_a_locked_database_and_keeps_nothing(db_path, monkeypatch):
    monitor = Monitor(db_path, busy_timeout=0.05, strict=True)
    monkeypatch.setenv("AGENTMETRICS_STRICT", "1")
    from_env = Monitor(db_path, busy_timeout=0.05)
    with WriteLock(db_path):
        for strict in (monitor, from_env):
            with pytest.raises(StorageError, match="locked"):
                strict.start_orchestration("s1")
    assert Monitor(db_path).pending == 0
    assert rows(db_path, "SELECT * FROM orchestrations") == []


@pytest.mark.parametrize("strict", [False, True])
def test_with_block_end_never_raises_for_storage_nor_hides_the_users_error(db_path, strict):
    monitor = Monitor(db_path, busy_timeout=0.05, strict=strict)
    error = KeyError("the agent's own error")
    with pytest.raises(KeyError) as raised, monitor.orchestration("s1") as orch:
        with orch.agent("coder", "a1"):
            lock = WriteLock(db_path).acquire()
        lock.release()
        with orch.agent("coder", "a2"):
            lock = WriteLock(db_path).acquire()
            raise error
    lock.release()  # both blocks ended while it was held
    # a1's end and recount, a2's start (strict mode tries it, and it applies those two;
    # otherwise it follows them to the journal), a2's end and recount, the end of s1
    assert monitor.pending == (3 if strict else 6)
    assert monitor.flush() == 0
    assert raised.value is error
    assert raised.value.__context__ is None
    executions = rows(db_path, "SELECT * FROM agent_executions ORDER BY agent_session_id")
    assert [r["status"] for r in executions] == ["completed", "failed"]
    assert executions[1]["error_message"] == 'KeyError: "the agent\'s own error"'
    orch = rows(db_path, "SELECT * FROM orchestrations")[0]
    assert (orch["status"], orch["completed_tasks"], orch["failed_tasks"]) == ("failed", 1, 1)


def test_monitor_opens_later_when_the_file_is_locked_during_its_upgrade(original_db_path, caplog):
    with WriteLock(original_db_path):
        with pytest.raises(DatabaseError, match="locked"):
            Monitor(original_db_path, busy_timeout=0.05, strict=True)
        clock = Clock()
        monitor = Monitor(original_db_path, busy_timeout=0.05, clock=clock)
        orch_id = track_lifecycle(monitor, clock)
    assert "cannot write to" in caplog.text and "locked" in caplog.text
    assert monitor.flush() == 0
    assert_lifecycle_stored(original_db_path, orch_id)


def test_monitor_on_a_folder_that_does_not_exist_yet(tmp_path):
    folder = tmp_path / "later"
    clock = Clock()
    monitor = Monitor(folder / "t.db", clock=clock)
    orch_id = track_lifecycle(monitor, clock)
    assert monitor.pending == 4  # in memory: the journal's folder is missing too
    folder.mkdir()
    assert monitor.flush() == 0
    assert_lifecycle_stored(folder / "t.db", orch_id)


# -- read-only -------------------------------------------------------------------------


def test_read_only_file_keeps_writes_in_the_journal(db_path, lock_down):
    Monitor(db_path).close()
    lock_down(db_path)
    clock = Clock()
    monitor = Monitor(db_path, clock=clock)
    orch_id = track_lifecycle(monitor, clock)
    with pytest.raises(ReadOnlyDatabase):
        Monitor(db_path, strict=True).start_orchestration("s9")
    lines = [json.loads(line) for line in Path(f"{db_path}.pending.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == [
        "start_orchestration",
        "start_agent_execution",
        "complete_agent_execution",
        "complete_orchestration",
    ]
    assert lines[2]["params"]["now"] == "2026-03-01T12:00:01.250Z"
    unlock(db_path)
    Monitor(db_path).start_orchestration("s2")
    assert_lifecycle_stored(db_path, orch_id)
    assert len(rows(db_path, "SELECT * FROM orchestrations")) == 2


def test_read_only_folder_keeps_writes_in_memory_and_counts_what_it_drops(
    tmp_path, lock_down, monkeypatch, caplog
):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "t.db"
    Monitor(path).close()
    lock_down(folder)
    monkeypatch.setattr(pending, "MEMORY_LIMIT", 4)
    clock = Clock()
    monitor = Monitor(path, clock=clock)
    orch_id = track_lifecycle(monitor, clock)
    assert (monitor.pending, monitor.dropped) == (4, 0)
    monitor.start_orchestration("one-too-many")
    assert (monitor.pending, monitor.dropped) == (4, 1)
    assert "dropping" in caplog.text
    assert not os.path.exists(f"{path}.pending.jsonl")
    unlock(folder)
    assert monitor.flush() == 0
    assert_lifecycle_stored(path, orch_id)
    assert len(rows(path, "SELECT * FROM orchestrations")) == 1


# -- full disk -------------------------------------------------------------------------


def test_full_disk_keeps_writes_in_memory_and_applies_them_when_space_returns(small_disk):
    path = small_disk / "t.db"
    clock = Clock()
    monitor = Monitor(path, clock=clock)
    strict = Monitor(path, strict=True)
    monitor.start_orchestration("s0")
    filler = fill(small_disk)
    orch_id = track_lifecycle(monitor, clock)
    with pytest.raises(StorageError, match="full"):
        strict.start_orchestration("s9")
    assert monitor.pending == 4
    assert os.path.getsize(f"{path}.pending.jsonl") == 0  # no half line left behind
    filler.unlink()
    assert monitor.flush() == 0
    assert_lifecycle_stored(path, orch_id)
    sessions = rows(path, "SELECT session_id FROM orchestrations ORDER BY session_id")
    assert sessions == [{"session_id": "s0"}, {"session_id": "s1"}]
    monitor.close()
    strict.close()


# -- the journal -----------------------------------------------------------------------

REPLAYER = textwrap.dedent(
    """
    import logging, os, sys, time
    from agentmetrics import Monitor

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path, name, go = sys.argv[1:]
    monitor = Monitor(path, busy_timeout=20)  # bounded, and ample on a busy machine
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.001)
    monitor.start_orchestration(name)
    """
)


def test_two_processes_replay_the_journal_once(db_path, tmp_path):
    monitor = Monitor(db_path, busy_timeout=0.01)
    go = tmp_path / "go"
    with WriteLock(db_path):
        for n in range(300):
            monitor.start_orchestration(f"s{n}")
            monitor.complete_orchestration(f"s{n}", "completed", completed_tasks=n)
        assert monitor.pending == 600
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", REPLAYER, str(db_path), name, str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("p1", "p2")
        ]
        assert [p.stdout.readline() for p in procs] == ["ready\n"] * 2
        go.touch()
        # Both now try to replay: one holds the journal's lock and waits for the
        # database, the other waits for the journal. Both are still waiting once the
        # lock is taken.
        wait_for_journal_lock(f"{db_path}.pending.jsonl")
        assert [p.poll() for p in procs] == [None, None]
    outputs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = [
        int(line.split()[2])
        for output in outputs
        for line in output.splitlines()
        if line.startswith("agentmetrics: applied")
    ]
    assert sum(applied) == 600, outputs
    assert "skipped" not in "".join(outputs)
    stored = rows(db_path, "SELECT session_id, status, completed_tasks FROM orchestrations")
    assert len(stored) == 302
    assert sum(r["completed_tasks"] for r in stored) == sum(range(300))
    assert sum(r["status"] == "completed" for r in stored) == 300


def wait_for_journal_lock(journal, seconds=30):
    """Return once another process holds the journal's lock (fail after ``seconds``)."""
    deadline = time.monotonic() + seconds
    with open(journal, "rb") as f:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            fcntl.flock(f, fcntl.LOCK_UN)
            time.sleep(0.005)
    pytest.fail(f"nobody took the lock of {journal} in {seconds} s")


def test_replaying_twice_changes_nothing_and_a_torn_line_is_skipped(db_path, caplog):
    clock = Clock()
    monitor = Monitor(db_path, busy_timeout=0.01, clock=clock)
    with WriteLock(db_path):
        orch_id = track_lifecycle(monitor, clock)
    journal = f"{db_path}.pending.jsonl"
    lines = Path(journal).read_text()
    with open(journal, "a") as f:
        f.write('{"kind": "start_orchest')  # a process killed while writing
    monitor.flush()
    assert_lifecycle_stored(db_path, orch_id)
    before = rows(db_path, "SELECT * FROM orchestrations") + rows(
        db_path, "SELECT * FROM agent_executions"
    )
    # As if a process died after applying them and before emptying the journal.
    with open(journal, "w") as f:
        f.write(lines)
    with caplog.at_level(logging.INFO, logger="agentmetrics"):
        monitor.flush()
    after = rows(db_path, "SELECT * FROM orchestrations") + rows(
        db_path, "SELECT * FROM agent_executions"
    )
    assert after == before
    assert f"line 5 of {journal} cannot be applied" in caplog.text  # the torn line


EXITER = textwrap.dedent(
    """
    import os, sys, time
    from agentmetrics import Monitor

    path, go = sys.argv[1:]
    monitor = Monitor(path, busy_timeout=0.05)
    monitor.start_orchestration("s1")
    print("kept", flush=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.001)
    monitor.complete_orchestration("s1", "completed")  # kept too: it follows the first
    """
)


def test_a_process_applies_what_it_kept_before_it_exits(db_path, tmp_path):
    Monitor(db_path).close()
    go = tmp_path / "go"
    with WriteLock(db_path):
        proc = subprocess.Popen(
            [sys.executable, "-c", EXITER, str(db_path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "kept\n"
    go.touch()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert rows(db_path, "SELECT session_id, status FROM orchestrations") == [
        {"session_id": "s1", "status": "completed"}
    ]
    assert os.path.getsize(f"{db_path}.pending.jsonl") == 0


def test_a_replay_that_fails_midway_keeps_exactly_the_writes_not_applied(tmp_path, monkeypatch):
    monkeypatch.setattr(pending, "BATCH", 2)
    journal = pending.PendingWrites(str(tmp_path / "t.db.pending.jsonl"), {"w"})
    for n in range(5):
        journal.add("w", {"n": n})
    applied = []

    def apply(batch):
        if applied:  # the second batch: the database became unavailable again
            raise sqlite3.OperationalError("database is locked")
        applied.extend(batch)
        return {}  # none refused

    with pytest.raises(sqlite3.OperationalError):
        journal.replay(apply)
    assert [p["n"] for _, p in applied] == [0, 1]
    assert len(journal) == 3
    again = []
    assert journal.replay(lambda batch: again.extend(batch) or {}) == 3
    assert [p["n"] for _, p in again] == [2, 3, 4]
    assert len(journal) == 0 and not journal.waiting()


def test_reports_say_when_writes_wait_and_flush_applies_them(tmp_path):
    from click.testing import CliRunner

    from agentmetrics.cli import cli

    path = tmp_path / "m.db"
    Monitor(path).close()  # the schema exists; then the file is locked past the timeout
    monitor = Monitor(path, busy_timeout=0.05)
    with WriteLock(path):
        track_lifecycle(monitor)
        monitor.start_orchestration("s2", "deploy")
    assert monitor.pending == 5  # kept in the journal; this monitor writes no more

    runner = CliRunner()
    health = runner.invoke(cli, ["--db", str(path), "health", "--json"])
    assert health.exit_code == 0, health.output
    # Nothing reached the file yet: the numbers say 0 and stderr says why.
    assert json.loads(health.stdout)["orchestrations"] == 0
    assert health.stderr == (
        f"agentmetrics: 5 tracking writes wait in {path}.pending.jsonl and are not in"
        " these numbers; `agentmetrics flush` applies them\n"
    )

    flushed = runner.invoke(cli, ["--db", str(path), "flush"])
    assert flushed.exit_code == 0, flushed.output
    assert flushed.stdout == f"Applied 5 tracking writes to {path}\n"
    health = runner.invoke(cli, ["--db", str(path), "health", "--json"])
    assert json.loads(health.stdout)["orchestrations"] == 2
    assert health.stderr == ""
    again = runner.invoke(cli, ["--db", str(path), "flush"])
    assert again.stdout == f"No tracking writes wait for {path}\n"


def test_flush_reports_writes_that_still_cannot_be_applied_and_waits_once(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from agentmetrics.cli import cli

    path = tmp_path / "m.db"
    Monitor(path).close()
    monitor = Monitor(path, busy_timeout=0.05)
    monkeypatch.setitem(Monitor.__init__.__kwdefaults__, "busy_timeout", 0.05)  # flush's
    attempts = []
    ready = Monitor._ready
    with WriteLock(path):
        monitor.start_orchestration("s1", "build")
        monkeypatch.setattr(
            Monitor, "_ready", lambda self, look=False: attempts.append(1) or ready(self, look)
        )
        env = {"AGENTMETRICS_DB": str(path)}
        result = CliRunner().invoke(cli, ["flush"], env=env)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # held all along
            sqlite3.connect(path, timeout=0).execute("BEGIN IMMEDIATE")
    assert result.exit_code == 1
    assert result.stderr == f"Error: Cannot write to {path}: database is locked\n"
    assert len(attempts) == 1  # flush waited out the busy timeout; close did not again
    assert pending.count_kept(str(path)) == 1


# -- every storage failure --------------------------------------------------------------

JOURNAL_LOCKER = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "ab") as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()  # until the test closes its end
    """
)


@pytest.mark.parametrize("strict", [False, True])
def test_tracking_while_another_process_holds_the_journal_lock(db_path, strict):
    clock = Clock()
    monitor = Monitor(db_path, busy_timeout=0.05, clock=clock, strict=strict)
    with WriteLock(db_path):
        Monitor(db_path, busy_timeout=0.05).start_orchestration("s0")  # the journal holds it
    journal = f"{db_path}.pending.jsonl"
    locker = subprocess.Popen(
        [sys.executable, "-c", JOURNAL_LOCKER, journal],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout.readline() == "locked\n"
        if strict:
            with pytest.raises(StorageError, match="locked by another process"):
                monitor.start_orchestration("s1")
            orch_id = None
        else:  # its writes must go first: ours wait in memory, in order
            orch_id = track_lifecycle(monitor, clock)
            assert len(monitor._pending.memory) == 4
    finally:
        locker.communicate("", timeout=60)
    assert monitor.flush() == 0
    if orch_id:
        assert_lifecycle_stored(db_path, orch_id)
    expected = ["s0"] if strict else ["s0", "s1"]
    assert [r["session_id"] for r in rows(db_path, "SELECT * FROM orchestrations")] == expected


STORAGE_FAILURES = [
    sqlite3.OperationalError("database is locked"),
    sqlite3.OperationalError("attempt to write a readonly database"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("disk I/O error"),
    sqlite3.OperationalError("unable to open database file"),
    sqlite3.DatabaseError("database disk image is malformed"),
    DatabaseError("Folder /gone does not exist"),  # opening
    TimeoutError("m.db.pending.jsonl is locked by another process"),  # the journal's lock
    PermissionError(13, "Permission denied"),  # reading the journal
    OSError(5, "Input/output error"),
]


@pytest.mark.parametrize("failure", STORAGE_FAILURES, ids=lambda e: type(e).__name__ + str(e))
@pytest.mark.parametrize("strict", [False, True])
def test_every_storage_failure_is_kept_or_an_agentmetrics_error(
    db_path, monkeypatch, failure, strict
):
    """Default mode keeps the write; strict mode raises an AgentMetricsError."""
    clock = Clock()
    monitor = Monitor(db_path, clock=clock, strict=strict)

    def fail(self, look=False):
        raise failure

    monkeypatch.setattr(Monitor, "_ready", fail)  # opening, replaying, the journal's lock
    if strict:
        with pytest.raises(AgentMetricsError) as raised:
            monitor.start_orchestration("s1")
        assert isinstance(raised.value, DatabaseError)  # StorageError, or opening's own
        assert monitor.pending == 0
        return
    orch_id = track_lifecycle(monitor, clock)
    assert monitor.pending == 4
    monkeypatch.undo()
    assert monitor.flush() == 0
    assert_lifecycle_stored(db_path, orch_id)


def test_a_retry_and_the_status_rule_wait_with_the_writes_kept_for_later(db_path):
    monitor = Monitor(db_path, busy_timeout=0.05)
    with WriteLock(db_path):
        with monitor.orchestration("s1") as orch:
            with orch.agent("coder", "c") as run:
                run.retry("flaky")  # no read needed: the new attempt is known at once
                assert (run.attempt, run.agent_session_id) == (2, "c#2")
            with orch.agent("reviewer", "r") as review:
                review.fail("rejected")
        assert monitor.pending > 0
    assert monitor.flush() == 0
    stored = rows(
        db_path,
        "SELECT agent_session_id, status, attempt, first_attempt_id, retry_count, error_message"
        " FROM agent_executions ORDER BY rowid",
    )
    first_id = rows(db_path, "SELECT id FROM agent_executions WHERE agent_session_id = 'c'")
    assert [tuple(r.values()) for r in stored] == [
        ("c", "failed", None, None, 0, "flaky"),
        ("c#2", "completed", 2, first_id[0]["id"], 1, None),
        ("r", "failed", None, None, 0, "rejected"),
    ]
    (orch,) = rows(db_path, "SELECT * FROM orchestrations")
    assert (orch["status"], orch["total_tasks"], orch["completed_tasks"]) == ("partial", 2, 1)
    assert orch["failed_tasks"] == 1


def test_writes_kept_by_the_previous_release_are_still_applied(db_path):
    # Journal lines as the release before attempts wrote them: no parent_execution_id on
    # a start, no follow/id on the end of an orchestration.
    Monitor(db_path).close()  # the file, with its schema
    now = {"now": "2026-03-01T12:00:00.000Z", "created": "2026-03-01 12:00:00"}
    kept = [
        ("start_orchestration", {"id": "o", "session_id": "s1", "task_description": None,
         "total_tasks": 1, "git_commit_hash": None, "plan_file_path": None,
         "progress_file_path": None, **now}),
        ("start_agent_execution", {"id": "e", "orchestration_id": "o", "agent_session_id": "a",
         "agent_name": "coder", "task_id": None, "task_number": 1, "session_log_path": None,
         **now}),
        ("complete_orchestration", {"session_id": "s1", "status": "completed",
         "completed_tasks": 1, "failed_tasks": 0, "error_message": None, **now}),
    ]  # fmt: skip
    with open(f"{db_path}.pending.jsonl", "w") as journal:
        for kind, params in kept:
            journal.write(json.dumps({"kind": kind, "params": params}) + "\n")
    assert Monitor(db_path).flush() == 0
    assert rows(db_path, "SELECT status, completed_tasks FROM orchestrations") == [
        {"status": "completed", "completed_tasks": 1}
    ]
    assert rows(db_path, "SELECT id, parent_execution_id FROM agent_executions") == [
        {"id": "e", "parent_execution_id": None}
    ]
