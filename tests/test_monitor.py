import asyncio
import contextvars
import datetime as dt
import json
import re
import sys
import threading
import uuid

import pytest
import sqlite_utils
from conftest import SMALL_NOW, SMALL_T0, make_original_db

import agentmetrics
from agentmetrics.errors import AlreadyFinished, DuplicateSession, InvalidValue, UnknownSession
from agentmetrics.monitor import Monitor
from agentmetrics.reports import failed_orchestrations, system_health

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
        (
            lambda m: m.complete_orchestration("s1", "running"),
            InvalidValue,
            "status must be one of",
        ),
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
        # SQLite integers hold -2**63 to 2**63 - 1
        (lambda m: m.start_orchestration("s2", total_tasks=2**63), InvalidValue, "too large"),
        (lambda m: m.start_agent_execution("a2", "x", task_number=2**63), InvalidValue, "large"),
        (
            lambda m: m.start_agent_execution("a2", "x", task_number=-(2**63) - 1),
            InvalidValue,
            "task_number must be at least -9223372036854775808",
        ),
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
    assert orchestration["status"] == "partial"  # 3 tasks completed, 1 failed (caught)
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


def test_a_bad_value_raises_at_assignment_and_the_run_ends_failed(monitor):
    # It used to raise only at the end of the block, leaving the execution in_progress.
    with (
        pytest.raises(InvalidValue, match="files_created must be a whole number") as raised,
        monitor.orchestration("s1") as orch,
        orch.agent("coder", "a1") as run,
    ):
        run.files_created = "three"
        pytest.fail("the assignment must raise")
    assert run.files_created is None  # the bad value was not kept
    execution = row(monitor.db, "agent_executions", "agent_session_id", "a1")
    assert (execution["status"], execution["files_created"]) == ("failed", 0)
    assert execution["error_message"] == f"InvalidValue: {raised.value}"
    orchestration = row(monitor.db, "orchestrations", "session_id", "s1")
    assert orchestration["status"] == "failed"
    assert (orchestration["total_tasks"], orchestration["failed_tasks"]) == (1, 1)


def test_a_mistake_found_at_the_end_of_a_block_ends_the_run_then_raises(db):
    # A clock that gives no usable time once, at the end of the block.
    moments = iter([T0, "not a time", T0 + dt.timedelta(seconds=1)])
    monitor = Monitor(db, clock=lambda: next(moments))
    with pytest.raises(InvalidValue, match="aware datetime"), monitor.agent("coder", "a1"):
        pass
    execution = row(db, "agent_executions", "agent_session_id", "a1")
    assert (execution["status"], execution["duration_ms"]) == ("failed", 1000)
    assert execution["error_message"].startswith("InvalidValue: clock must return")


def test_the_blocks_own_exception_comes_through_when_its_failure_cannot_be_recorded(
    monitor, caplog
):
    error = RuntimeError("the real problem")
    with pytest.raises(RuntimeError) as raised, monitor.agent("coder", "a1"):
        monitor.complete_agent_execution("a1", "completed")  # ended behind the block's back
        raise error
    assert raised.value is error
    assert "could not record the failure: Agent session 'a1' is already completed" in caplog.text


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


# -- one run, seen whole: tasks and attempts, nesting, the status rule ----------------------


def executions(db, *columns):
    names = ", ".join(columns)
    return [tuple(r) for r in db.execute(f"SELECT {names} FROM agent_executions ORDER BY rowid")]


def test_a_run_with_a_handled_failure_and_a_retry_is_seen_whole(db):
    """The new user's run: planner, coder (fails once, then succeeds), reviewer (fails,
    the failure caught inside the orchestration block)."""
    clock = Clock()
    monitor = Monitor(db, clock=clock)
    with monitor.orchestration(task_description="feature", total_tasks=3) as orch:
        with orch.agent("planner", task_number=1):
            clock.advance(seconds=1)
        with orch.agent("coder", "coder-1", task_number=2) as run:
            clock.advance(seconds=2)
            run.files_created, run.model = 5, "m-1"
            run.retry("tests failed")
            assert (run.attempt, run.agent_session_id) == (2, "coder-1#2")
            assert run.files_created is None and run.model is None  # the new attempt's own
            clock.advance(seconds=3)
            run.files_created = 2
        with orch.agent("reviewer", task_number=3) as run:
            try:
                raise TimeoutError("review timed out")
            except TimeoutError as e:
                run.fail(str(e))
    first_id = row(db, "agent_executions", "agent_session_id", "coder-1")["id"]
    assert executions(
        db, "agent_name", "status", "attempt", "first_attempt_id", "retry_count",
        "error_message", "files_created", "model", "duration_ms",
    ) == [  # a first attempt's attempt stays NULL, as on every older row: it is 1
        ("planner", "completed", None, None, 0, None, 0, None, 1000),
        ("coder", "failed", None, None, 0, "tests failed", 5, "m-1", 2000),
        ("coder", "completed", 2, first_id, 1, None, 2, None, 3000),
        ("reviewer", "failed", None, None, 0, "review timed out", 0, None, 0),
    ]  # fmt: skip
    second = row(db, "agent_executions", "agent_session_id", "coder-1#2")
    assert (second["task_number"], second["started_at"]) == (2, "2026-03-01T12:00:03.000Z")
    # Three tasks: planner and coder completed, reviewer failed (caught, so no exception).
    orchestration = next(db.query("SELECT * FROM orchestrations"))
    assert (orchestration["total_tasks"], orchestration["completed_tasks"]) == (3, 2)
    assert (orchestration["failed_tasks"], orchestration["status"]) == (1, "partial")
    listed = failed_orchestrations(db, include_partial=True)
    assert list(listed["session_id"]) == [orchestration["session_id"]]
    assert listed["task_completion_rate"].iloc[0] == pytest.approx(200 / 3)


def test_attempts_with_the_original_style_calls(monitor, db):
    orch_id = monitor.start_orchestration("s1", total_tasks=1)
    monitor.start_agent_execution("a", "coder", orchestration_id=orch_id, task_id="T1")
    second = monitor.retry_agent_execution("a", "lint failed", retry_count=2, files_created=1)
    assert second == "a#2"
    # A name of one's own; the default counts up a #n suffix.
    assert monitor.retry_agent_execution(second, "timeout", "a-third") == "a-third"
    assert monitor.retry_agent_execution("a-third", "oom") == "a-third#2"
    monitor.complete_agent_execution("a-third#2", "completed", retry_count=1, self_healed=True)
    first_id = row(db, "agent_executions", "agent_session_id", "a")["id"]
    assert executions(
        db, "agent_session_id", "status", "attempt", "first_attempt_id", "retry_count",
        "error_message", "files_created", "task_id", "orchestration_id",
    ) == [
        ("a", "failed", None, None, 2, "lint failed", 1, "T1", orch_id),
        ("a#2", "failed", 2, first_id, 0, "timeout", 0, "T1", orch_id),
        ("a-third", "failed", 3, first_id, 0, "oom", 0, "T1", orch_id),
        # Its own in-run retry plus the three attempts before it.
        ("a-third#2", "completed", 4, first_id, 4, None, 0, "T1", orch_id),
    ]  # fmt: skip
    # sum(retry_count) over the task: 2 + 0 + 0 + 4, the in-run retries 2 + 1 and 3 retries.
    assert sum(r[0] for r in executions(db, "retry_count")) == 6


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m.retry_agent_execution("nope", "x"), UnknownSession, "'nope' not found"),
        (lambda m: m.retry_agent_execution("done", "x"), AlreadyFinished, "already completed"),
        (lambda m: m.retry_agent_execution("a1", "x", "done"), DuplicateSession, "'done'"),
        (lambda m: m.retry_agent_execution("a1", ""), InvalidValue, "reason"),
        (lambda m: m.retry_agent_execution("a1", "x", error_message="y"), InvalidValue, "reason"),
        (lambda m: m.retry_agent_execution("a1", "x", retry_count=-1), InvalidValue, "negative"),
        (lambda m: m.retry_agent_execution("a1", "x", colour=1), InvalidValue, "colour"),
    ],
)
def test_a_retry_that_cannot_be_made_changes_nothing(monitor, call, error, message):
    monitor.start_agent_execution("a1", "coder")
    monitor.start_agent_execution("done", "coder")
    monitor.complete_agent_execution("done", "completed")
    before = snapshot(monitor.db)
    with pytest.raises(error, match=message):
        call(monitor)
    assert snapshot(monitor.db) == before


def test_a_retry_after_the_run_ended_is_refused(monitor):
    with monitor.agent("coder", "a1") as run:
        run.fail("gave up")
        with pytest.raises(AlreadyFinished, match="already failed"):
            run.retry("again")
    assert (run.attempt, run.agent_session_id) == (1, "a1")


def test_a_failed_last_attempt_fails_its_task(monitor, db):
    with (
        pytest.raises(RuntimeError),
        monitor.orchestration("s1") as orch,
        orch.agent("coder", "c") as run,
    ):
        run.retry("flaky")
        run.retry("flaky again")
        raise RuntimeError("still broken")
    assert executions(db, "status", "attempt", "retry_count", "error_message") == [
        ("failed", None, 0, "flaky"),
        ("failed", 2, 0, "flaky again"),
        ("failed", 3, 2, "RuntimeError: still broken"),
    ]
    orchestration = row(db, "orchestrations", "session_id", "s1")
    assert (orchestration["total_tasks"], orchestration["failed_tasks"]) == (1, 1)
    assert orchestration["status"] == "failed"  # an exception escaped


@pytest.mark.parametrize(
    "outcomes, status",
    [
        ([], "completed"),
        (["completed", "completed"], "completed"),
        (["failed", "failed"], "failed"),
        (["completed", "failed"], "partial"),
        (["completed", "in_progress"], "partial"),  # a task still running did not complete
        (["failed", "in_progress"], "partial"),
    ],
)
def test_the_end_of_an_orchestration_block_follows_the_status_rule(monitor, outcomes, status):
    with monitor.orchestration("s1") as orch:
        for outcome in outcomes:
            run = orch.agent("worker")
            if outcome != "in_progress":
                run.complete(outcome)
    orchestration = row(monitor.db, "orchestrations", "session_id", "s1")
    assert orchestration["status"] == status
    assert orchestration["total_tasks"] == len(outcomes)
    assert orchestration["completed_tasks"] == outcomes.count("completed")
    assert orchestration["failed_tasks"] == outcomes.count("failed")


def test_planned_tasks_that_never_ran_did_not_complete(monitor):
    with monitor.orchestration("s1", total_tasks=3) as orch, orch.agent("worker"):
        pass
    orchestration = row(monitor.db, "orchestrations", "session_id", "s1")
    assert (orchestration["status"], orchestration["total_tasks"]) == ("partial", 3)
    assert (orchestration["completed_tasks"], orchestration["failed_tasks"]) == (1, 0)


def test_explicit_counts_decide_the_status_when_none_is_given(monitor):
    with monitor.orchestration("s1", total_tasks=4) as orch:
        orch.update_tasks(completed_tasks=4, failed_tasks=0)
        with orch.agent("worker") as run:
            run.fail("ignored by the counts set")
    with monitor.orchestration("s2", total_tasks=4) as orch:
        orch.complete(completed_tasks=0, failed_tasks=4)
    statuses = dict(monitor.db.execute("SELECT session_id, status FROM orchestrations"))
    assert statuses == {"s1": "completed", "s2": "failed"}


def test_a_retried_task_counts_once_as_it_runs(monitor):
    with monitor.orchestration("s1") as orch, orch.agent("coder") as run:
        run.retry("flaky")
        run.complete()
        # Followed as executions end, before the orchestration does.
        counts = row(monitor.db, "orchestrations", "session_id", "s1")
        assert (counts["total_tasks"], counts["completed_tasks"]) == (1, 1)
        assert counts["failed_tasks"] == 0


# -- nesting -----------------------------------------------------------------------------


def parents(db):
    return dict(db.execute("SELECT agent_name, parent_execution_id FROM agent_executions"))


def test_an_agent_block_inside_another_records_its_parent(monitor, db):
    with monitor.orchestration("s1") as orch, orch.agent("lead") as lead:
        with orch.agent("helper") as helper, monitor.agent("grandchild"):
            pass
        lead.retry("first plan rejected")
        with orch.agent("after-retry"):
            pass
    with monitor.agent("next"):  # after the block: no parent
        pass
    first_lead = row(db, "agent_executions", "agent_session_id", f"{lead.agent_session_id[:-2]}")
    assert parents(db) == {
        "lead": None,
        "helper": first_lead["id"],
        "grandchild": helper.id,
        "after-retry": lead.id,  # the attempt running when it started
        "next": None,
    }


def test_an_explicit_parent_wins(monitor, db):
    with (
        monitor.agent("a") as a,
        monitor.agent("b") as b,
        monitor.agent("by-run", parent=a),
        monitor.agent("by-id", parent=b.id),
    ):
        pass
    found = parents(db)
    assert (found["by-run"], found["by-id"]) == (a.id, b.id)
    with pytest.raises(InvalidValue, match="parent must be an AgentRun or an execution id"):
        monitor.agent("bad", parent=42)


def test_children_in_asyncio_tasks_record_their_parent(monitor, db):
    async def child(name):
        await asyncio.sleep(0)
        with monitor.agent(name):
            await asyncio.sleep(0)

    async def lead():
        with monitor.agent("lead") as run:
            await asyncio.gather(child("c1"), child("c2"), child("c3"))
        return run.id

    lead_id = asyncio.run(lead())
    assert parents(db) == {"lead": None, "c1": lead_id, "c2": lead_id, "c3": lead_id}


def test_a_thread_inherits_the_parent_only_from_a_copied_context(monitor, db):
    def child(name):
        with monitor.agent(name):
            pass

    with monitor.agent("lead") as run:
        context = contextvars.copy_context()
        copied = threading.Thread(target=context.run, args=(child, "copied"))
        unrelated = threading.Thread(target=child, args=("unrelated",))
        for thread in (copied, unrelated):
            thread.start()
            thread.join()
    # Python 3.14 can make every new thread inherit the context (free-threaded builds do).
    inherited = run.id if getattr(sys.flags, "thread_inherit_context", False) else None
    assert parents(db) == {"lead": None, "copied": run.id, "unrelated": inherited}


# -- attributes that cannot record the wrong thing silently ------------------------------


@pytest.mark.parametrize(
    "name, message",
    [
        ("self_heald", "'self_heald' to set (did you mean 'self_healed'?); settable: files_"),
        ("retries", "no attribute 'retries' to set; settable: files_created, files_modified"),
        ("file_created", "did you mean 'files_created'?"),
        ("id", "AgentRun.id cannot be set"),
        ("retry", "AgentRun.retry cannot be set"),
    ],
)
def test_an_unknown_or_read_only_attribute_is_refused_at_assignment(monitor, name, message):
    with monitor.agent("coder", "a1") as run, pytest.raises(AttributeError) as raised:
        setattr(run, name, True)
    assert message in str(raised.value)
    assert row(monitor.db, "agent_executions", "agent_session_id", "a1")["status"] == "completed"


def test_orchestration_attributes_are_strict_too(monitor):
    with monitor.orchestration("s1") as orch:
        with pytest.raises(AttributeError, match="Orchestration has no attribute 'status'"):
            orch.status = "failed"
        with pytest.raises(AttributeError, match="Orchestration.session_id cannot be set"):
            orch.session_id = "other"
    assert row(monitor.db, "orchestrations", "session_id", "s1")["status"] == "completed"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("files_created", "three", "files_created must be a whole number"),
        ("self_healed", "yes", "self_healed must be True or False"),
        ("cost_usd", -1, "cost_usd must be a finite number"),
        ("model", 3, "model must be a string"),
    ],
)
def test_a_bad_value_is_refused_at_assignment(monitor, name, value, message):
    run = monitor.agent("coder")
    with pytest.raises(InvalidValue, match=message):
        setattr(run, name, value)
    assert getattr(run, name) is None


def test_session_ids_are_generated_so_a_block_runs_twice(monitor, db):
    for _ in range(2):
        with monitor.orchestration() as orch, orch.agent("coder") as run:
            run.retry("again")
    assert db.execute("SELECT count(DISTINCT session_id) FROM orchestrations").fetchone() == (2,)
    sessions = [r[0] for r in executions(db, "agent_session_id")]
    assert len(set(sessions)) == 4 and sessions[1] == sessions[0] + "#2"
