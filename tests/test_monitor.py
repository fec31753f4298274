import datetime as dt
import json
import re
import uuid

import pytest
import sqlite_utils
from conftest import SMALL_NOW, SMALL_T0, make_original_db

import agentmetrics
from agentmetrics.errors import AlreadyFinished, DuplicateSession, InvalidValue, UnknownSession
from agentmetrics.monitor import Monitor
from agentmetrics.reports import system_health

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SQLITE_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start=T0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, **kwargs):
        self.now += dt.timedelta(**kwargs)


def row(db, table, key, value):
    return next(db.query(f"SELECT * FROM {table} WHERE {key} = ?", [value]))


def test_lifecycle_writes_original_formats(monitor):
    orch_id = monitor.start_orchestration(
        "s1", "Build and deploy", total_tasks=5, git_commit_hash="abc123",
        plan_file_path="plan.md", progress_file_path="progress.md",
    )  # fmt: skip
    exec_id = monitor.start_agent_execution(
        "a1", "backend-agent", orchestration_id=orch_id, task_id="T1", task_number=1,
        session_log_path="log.txt",
    )  # fmt: skip
    monitor.complete_agent_execution(
        "a1", "completed", files_created=3, files_modified=5, retry_count=1, self_healed=True,
        summary_report_path="summary.md",
    )  # fmt: skip
    monitor.complete_orchestration("s1", "completed", completed_tasks=5, failed_tasks=0)
    assert uuid.UUID(orch_id).version == 4 and uuid.UUID(exec_id).version == 4
    orch = row(monitor.db, "orchestrations", "session_id", "s1")
    execution = row(monitor.db, "agent_executions", "agent_session_id", "a1")
    assert orch["id"] == orch_id and orch["status"] == "completed"
    assert (orch["total_tasks"], orch["completed_tasks"], orch["failed_tasks"]) == (5, 5, 0)
    assert orch["git_commit_hash"] == "abc123" and orch["plan_file_path"] == "plan.md"
    for value in (orch["started_at"], orch["completed_at"], execution["completed_at"]):
        assert ISO.match(value), value
    assert SQLITE_DATETIME.match(orch["created_at"])
    assert execution["orchestration_id"] == orch_id
    assert execution["self_healed"] == 1 and execution["retry_count"] == 1
    assert (execution["files_created"], execution["files_modified"]) == (3, 5)
    assert execution["task_id"] == "T1" and execution["summary_report_path"] == "summary.md"


def test_duration_is_computed_from_stored_started_at(db):
    clock = Clock()
    monitor = Monitor(db, clock=clock)
    monitor.start_orchestration("s1")
    monitor.start_agent_execution("a1", "agent")
    clock.advance(seconds=1, milliseconds=250)
    monitor.complete_agent_execution("a1", "completed")
    clock.advance(minutes=3, seconds=5)
    monitor.complete_orchestration("s1", "partial")
    execution = row(db, "agent_executions", "agent_session_id", "a1")
    assert execution["started_at"] == "2026-03-01T12:00:00.000Z"
    assert execution["completed_at"] == "2026-03-01T12:00:01.250Z"
    assert execution["duration_ms"] == 1250
    orch = row(db, "orchestrations", "session_id", "s1")
    assert orch["duration_ms"] == 1250 + 185_000
    assert orch["created_at"] == "2026-03-01 12:00:00"


def test_duration_uses_the_database_clock_by_default(monitor):
    monitor.start_agent_execution("a1", "agent")
    started = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2)).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    )[:-3] + "Z"
    # Another process (or the original tool) may have written started_at: only the stored
    # value counts, not a clock kept by the caller.
    monitor.db.execute(
        "UPDATE agent_executions SET started_at = ? WHERE agent_session_id = 'a1'", [started]
    )
    monitor.complete_agent_execution("a1", "completed")
    duration = row(monitor.db, "agent_executions", "agent_session_id", "a1")["duration_ms"]
    assert 2000 <= duration < 3000


def test_values_are_stored_as_given(monitor):
    monitor.start_orchestration("s1", task_description="", total_tasks=0)
    monitor.start_agent_execution("a1", "agent", task_number=0, task_id="")
    monitor.complete_agent_execution("a1", "failed", error_message="", files_created=0)
    orch = row(monitor.db, "orchestrations", "session_id", "s1")
    execution = row(monitor.db, "agent_executions", "agent_session_id", "a1")
    assert orch["task_description"] == ""
    assert execution["task_number"] == 0 and execution["task_id"] == ""
    assert execution["error_message"] == ""


def test_execution_without_orchestration(monitor):
    monitor.start_agent_execution("a1", "solo")
    monitor.complete_agent_execution("a1", "completed")
    execution = row(monitor.db, "agent_executions", "agent_session_id", "a1")
    assert execution["orchestration_id"] is None and execution["status"] == "completed"


def snapshot(db):
    return [
        list(db.query(f"SELECT * FROM {table} ORDER BY id"))
        for table in ("orchestrations", "agent_executions")
    ]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m.complete_orchestration("nope", "completed"), UnknownSession, "not found"),
        (lambda m: m.complete_agent_execution("nope", "failed"), UnknownSession, "not found"),
        (lambda m: m.update_orchestration_tasks("nope", 1), UnknownSession, "nope"),
        (lambda m: m.complete_orchestration("s1", "running"), InvalidValue, "Invalid status"),
        (lambda m: m.complete_orchestration("s1", "done"), InvalidValue, "completed, failed"),
        (lambda m: m.complete_agent_execution("a1", "in_progress"), InvalidValue, "status"),
        (lambda m: m.complete_agent_execution("a1", "ok"), InvalidValue, "status"),
        (lambda m: m.start_orchestration("s1"), DuplicateSession, "already exists"),
        (lambda m: m.start_agent_execution("a1", "x"), DuplicateSession, "already exists"),
        (lambda m: m.start_orchestration("s2", total_tasks=-1), InvalidValue, "negative"),
        (lambda m: m.update_orchestration_tasks("s1", failed_tasks=-2), InvalidValue, "negative"),
        (
            lambda m: m.complete_agent_execution("a1", "completed", files_created=-1),
            InvalidValue,
            "negative",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "completed", retry_count=1.5),
            InvalidValue,
            "whole number",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "completed", cost_usd=-0.1),
            InvalidValue,
            "cost_usd",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "completed", cost_usd=float("inf")),
            InvalidValue,
            "finite",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "completed", cost_usd=float("nan")),
            InvalidValue,
            "finite",
        ),
        (lambda m: m.start_agent_execution("a2", "x", task_number="1"), InvalidValue, "whole"),
        (lambda m: m.start_agent_execution("a2", ""), InvalidValue, "agent_name"),
        (lambda m: m.start_orchestration(""), InvalidValue, "session_id"),
        (
            lambda m: m.start_agent_execution("a2", "x", orchestration_id="missing"),
            UnknownSession,
            "No orchestration with id 'missing'",
        ),
        # SQLite integers stop at 2**63 - 1
        (lambda m: m.start_orchestration("s2", total_tasks=2**63), InvalidValue, "too large"),
        (lambda m: m.start_agent_execution("a2", "x", task_number=2**63), InvalidValue, "large"),
        (lambda m: m.start_agent_execution("a2", "x", task_number=-(2**63)), InvalidValue, "la"),
        (lambda m: m.update_orchestration_tasks("s1", 2**64), InvalidValue, "too large"),
        (
            lambda m: m.complete_agent_execution("a1", "completed", input_tokens=2**63),
            InvalidValue,
            "input_tokens is too large",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "completed", cost_usd=10**400),
            InvalidValue,
            "cost_usd",
        ),
        # text values must be text
        (
            lambda m: m.start_orchestration("s2", task_description={"goal": "x"}),
            InvalidValue,
            "task_description must be a string",
        ),
        (lambda m: m.start_orchestration("s2", git_commit_hash=123), InvalidValue, "git_commit"),
        (lambda m: m.start_agent_execution("a2", "x", task_id=["T1"]), InvalidValue, "task_id"),
        (
            lambda m: m.start_agent_execution("a2", "x", orchestration_id=1.5),
            InvalidValue,
            "orchestration_id",
        ),
        (
            lambda m: m.complete_agent_execution("a1", "failed", error_message=["boom"]),
            InvalidValue,
            "error_message must be a string",
        ),
        (lambda m: m.complete_agent_execution("a1", "failed", model={}), InvalidValue, "model"),
        (lambda m: m.complete_orchestration({"s": 1}, "completed"), InvalidValue, "session_id"),
        (lambda m: m.complete_orchestration("s1", ["completed"]), InvalidValue, "status"),
        (
            lambda m: m.complete_agent_execution("a1", "completed", self_healed="no"),
            InvalidValue,
            "self_healed",
        ),
        # lone surrogates cannot be encoded for SQLite
        (lambda m: m.start_orchestration("s\ud800"), InvalidValue, "surrogate"),
        (
            lambda m: m.start_orchestration("s2", task_description="bad \udcff"),
            InvalidValue,
            "task_description is not valid text",
        ),
        (lambda m: m.start_agent_execution("a2", "x\ud800"), InvalidValue, "agent_name"),
        (
            lambda m: m.complete_agent_execution("a1", "failed", error_message="\udc80"),
            InvalidValue,
            "error_message is not valid text",
        ),
        (
            lambda m: m.complete_orchestration("s1", "failed", error_message="\ud800"),
            InvalidValue,
            "error_message",
        ),
    ],
)
def test_bad_input_raises_clear_error_and_changes_nothing(monitor, call, error, message):
    monitor.start_orchestration("s1")
    monitor.start_agent_execution("a1", "agent")
    before = snapshot(monitor.db)
    with pytest.raises(error, match=message):
        call(monitor)
    assert snapshot(monitor.db) == before
    assert issubclass(error, agentmetrics.AgentMetricsError)


def test_completing_twice_is_refused_and_keeps_the_first_result(monitor):
    monitor.start_orchestration("s1")
    monitor.start_agent_execution("a1", "agent")
    monitor.complete_agent_execution("a1", "failed", error_message="first")
    monitor.complete_orchestration("s1", "failed")
    before = snapshot(monitor.db)
    with pytest.raises(AlreadyFinished, match="already failed"):
        monitor.complete_agent_execution("a1", "completed")
    with pytest.raises(AlreadyFinished, match="already failed"):
        monitor.complete_orchestration("s1", "completed")
    assert snapshot(monitor.db) == before


def test_context_managers_complete_and_follow_task_counts(db):
    clock = Clock()
    monitor = Monitor(db, clock=clock)
    with monitor.orchestration("s1", "demo") as orch:
        for n in range(3):
            with orch.agent("worker", task_number=n) as run:
                clock.advance(seconds=2)
                run.files_created = n
        with pytest.raises(KeyError), orch.agent("flaky", agent_session_id="bad"):
            clock.advance(seconds=1)
            raise KeyError("missing input")
    orchestration = row(db, "orchestrations", "session_id", "s1")
    assert orchestration["status"] == "completed"
    assert orchestration["duration_ms"] == 7000
    assert (orchestration["total_tasks"], orchestration["completed_tasks"]) == (4, 3)
    assert orchestration["failed_tasks"] == 1
    failed = row(db, "agent_executions", "agent_session_id", "bad")
    assert failed["status"] == "failed"
    assert failed["error_message"] == "KeyError: 'missing input'"
    assert failed["duration_ms"] == 1000
    workers = db.query(
        "SELECT files_created FROM agent_executions WHERE agent_name = ? ORDER BY task_number",
        ["worker"],
    )
    created = [r["files_created"] for r in workers]
    assert created == [0, 1, 2]


def test_exception_in_orchestration_marks_it_failed_and_reraises(monitor):
    with (
        pytest.raises(RuntimeError, match="deploy broke"),
        monitor.orchestration("s1") as orch,
        orch.agent("deployer"),
    ):
        raise RuntimeError("deploy broke")
    assert row(monitor.db, "orchestrations", "session_id", "s1")["status"] == "failed"
    execution = next(monitor.db.query("SELECT * FROM agent_executions"))
    assert execution["error_message"] == "RuntimeError: deploy broke"


def test_explicit_counts_stop_following_executions(monitor):
    with monitor.orchestration("s1", total_tasks=10) as orch:
        orch.update_tasks(completed_tasks=7, failed_tasks=1)
        with orch.agent("worker"):
            pass
        orch.complete("partial")
    orchestration = row(monitor.db, "orchestrations", "session_id", "s1")
    assert orchestration["status"] == "partial"
    assert (orchestration["total_tasks"], orchestration["completed_tasks"]) == (10, 7)
    assert orchestration["failed_tasks"] == 1


def test_agent_run_without_orchestration_and_explicit_fail(monitor):
    with monitor.agent("solo", "s-1") as run:
        run.model, run.input_tokens, run.output_tokens, run.cost_usd = "m", 10, 20, 0.5
    with monitor.agent("solo", "s-2") as run:
        run.fail("gave up")
    first = row(monitor.db, "agent_executions", "agent_session_id", "s-1")
    second = row(monitor.db, "agent_executions", "agent_session_id", "s-2")
    assert (first["status"], first["model"], first["input_tokens"]) == ("completed", "m", 10)
    assert (first["output_tokens"], first["cost_usd"]) == (20, 0.5)
    assert (second["status"], second["error_message"]) == ("failed", "gave up")


def test_get_monitor_uses_env_path(tmp_path, monkeypatch):
    path = tmp_path / "env.db"
    monkeypatch.setenv("AGENTMETRICS_DB", str(path))
    monitor = agentmetrics.get_monitor()
    assert agentmetrics.get_monitor() is monitor
    monitor.start_orchestration("from-env")
    assert path.exists()
    monkeypatch.delenv("AGENTMETRICS_DB")
    assert agentmetrics.get_monitor() is not monitor
    assert (tmp_path / "monitoring.db").exists()  # cwd is tmp_path


@pytest.mark.parametrize(
    "moment, message",
    [
        ("2026-03-01T12:00:00Z", "aware datetime"),
        (None, "aware datetime"),
        (1767225600, "aware datetime"),
        (dt.datetime(2026, 3, 1, 12, 0), "aware datetime"),  # naive: local or UTC?
        (dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))), "cannot be stored"),
    ],
)
def test_a_clock_that_returns_no_usable_time_is_refused(db, moment, message):
    monitor = Monitor(db, clock=lambda: moment)
    with pytest.raises(InvalidValue, match=message):
        monitor.start_orchestration("s1")
    with pytest.raises(InvalidValue, match=message):
        monitor.agent("coder")
    assert snapshot(db) == [[], []]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"db": 42}, "db must be a path"),
        ({"clock": "now"}, "clock must be a function"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": float("nan")}, "busy_timeout"),
    ],
)
def test_bad_monitor_arguments_are_refused(db_path, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        Monitor(**{"db": db_path, **kwargs})
    assert not db_path.exists()


def test_years_before_1000_are_padded(db):
    clock = Clock(dt.datetime(999, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc))
    Monitor(db, clock=clock).start_orchestration("s1")
    orch = row(db, "orchestrations", "session_id", "s1")
    assert (orch["started_at"], orch["created_at"]) == (
        "0999-05-06T07:08:09.000Z",
        "0999-05-06 07:08:09",
    )


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("bad byte \udcff in name"), "ValueError: bad byte \\udcff in name"),
        (Unprintable(), "Unprintable"),
    ],
)
def test_the_failure_is_recorded_whatever_the_exception_holds(monitor, error, expected):
    with (
        pytest.raises(type(error)) as raised,
        monitor.orchestration("s1") as orch,
        orch.agent("coder", "a1"),
    ):
        raise error
    assert raised.value is error
    assert row(monitor.db, "agent_executions", "agent_session_id", "a1")["error_message"] == (
        expected
    )
    orch = row(monitor.db, "orchestrations", "session_id", "s1")
    assert orch["status"] == "failed"
    assert json.loads(orch["metadata_json"]) == {"error_message": expected}


def test_orchestration_failure_message_is_kept_in_its_metadata(monitor):
    with monitor.orchestration("s1") as orch:
        orch.fail("3 of 5 agents failed")
    monitor.start_orchestration("s2")
    monitor.db.execute(
        "UPDATE orchestrations SET metadata_json = '{\"owner\": \"ci\"}' WHERE session_id = 's2'"
    )
    monitor.complete_orchestration("s2", "failed", error_message="timeout")
    monitor.start_orchestration("s3")
    monitor.complete_orchestration("s3", "completed")
    metadata = {
        r["session_id"]: r["metadata_json"]
        for r in monitor.db.query("SELECT session_id, metadata_json FROM orchestrations")
    }
    assert json.loads(metadata["s1"]) == {"error_message": "3 of 5 agents failed"}
    assert json.loads(metadata["s2"]) == {"owner": "ci", "error_message": "timeout"}
    assert metadata["s3"] is None


def test_a_bad_attribute_does_not_hide_the_blocks_own_exception(monitor, caplog):
    error = RuntimeError("the real problem")
    with pytest.raises(RuntimeError) as raised, monitor.agent("coder", "a1") as run:
        run.files_created = "three"
        raise error
    assert raised.value is error
    assert "files_created must be a whole number" in caplog.text
    with pytest.raises(InvalidValue, match="files_created"), monitor.agent("coder", "a2") as run:
        run.files_created = "three"


def test_unknown_execution_fields_are_refused(monitor):
    with monitor.agent("coder", "a1") as run:
        with pytest.raises(InvalidValue, match="Unknown execution field"):
            run.complete(colour="red")
        before = snapshot(monitor.db)
        assert row(monitor.db, "agent_executions", "agent_session_id", "a1")["status"] == (
            "in_progress"
        )
    assert snapshot(monitor.db) != before  # the block still completes it


SAMPLE_FIELDS = {
    "files_created": 3,
    "files_modified": 4,
    "retry_count": 2,
    "self_healed": 1,
    "error_message": "flaky",
    "summary_report_path": "r.md",
    "model": "m-1",
    "input_tokens": 10,
    "output_tokens": 20,
    "cost_usd": 0.25,
}


def test_one_list_of_execution_fields(monitor, db):
    """EXECUTION_FIELDS drives the SQL, the keywords and the AgentRun attributes: each
    one set as an attribute, or passed as a keyword, is stored in its column."""
    from agentmetrics.monitor import EXECUTION_FIELDS

    assert set(EXECUTION_FIELDS) == set(SAMPLE_FIELDS)
    with monitor.orchestration("o", "t") as o, o.agent("coder", "by-attribute") as run:
        for name, value in SAMPLE_FIELDS.items():
            setattr(run, name, value)
    monitor.start_agent_execution("by-keyword", "coder")
    monitor.complete_agent_execution("by-keyword", "completed", **SAMPLE_FIELDS)
    columns = ", ".join(SAMPLE_FIELDS)
    for session in ("by-attribute", "by-keyword"):
        row = db.execute(
            f"SELECT {columns} FROM agent_executions WHERE agent_session_id = ?", [session]
        ).fetchone()
        assert dict(zip(SAMPLE_FIELDS, row, strict=True)) == SAMPLE_FIELDS
    monitor.start_agent_execution("typo", "coder")
    with pytest.raises(InvalidValue, match="Unknown execution field.*: file_created"):
        monitor.complete_agent_execution("typo", "completed", file_created=1)


# -- a plain sqlite_utils.Database ---------------------------------------------------------


@pytest.mark.parametrize("original", [False, True])
def test_monitor_on_a_plain_sqlite_utils_database(db_path, original):
    if original:  # the original's schema: no model/cost columns yet
        make_original_db(db_path)
    db = sqlite_utils.Database(db_path)
    monitor = agentmetrics.Monitor(db, clock=Clock(SMALL_T0))
    monitor.start_agent_execution("a", "coder")
    monitor.clock.now = SMALL_T0 + dt.timedelta(seconds=2)
    monitor.complete_agent_execution("a", "completed", model="m", cost_usd=0.5)
    row = system_health(db, now=SMALL_NOW).iloc[0]
    assert (row["completed"], row["avg_duration_ms"]) == (1, 2000)
    db.close()
