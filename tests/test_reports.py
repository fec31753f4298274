"""Reports: health, performance, agents, orchestrations.

Expected values are worked out by hand from the rows each test writes, or computed
with plain Python/numpy over those same rows, never with the code under test.
"""

import datetime as dt
import hashlib
import math
import random
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from conftest import SMALL_NOW, SMALL_T0, make_original_db

import agentmetrics
from agentmetrics import Monitor, open_database
from agentmetrics.errors import InvalidValue, UnknownAgent, UnknownSession
from agentmetrics.reports import (
    _frames,
    agent_stats,
    agent_summary,
    executions,
    failed_orchestrations,
    list_orchestrations,
    orchestration_summary,
    performance_report,
    system_health,
)
from agentmetrics.reports._frames import counted_rows
from agentmetrics.reports.agents import PERFORMANCE_COLUMNS
from agentmetrics.reports.health import HEALTH_COLUMNS
from agentmetrics.reports.orchestrations import SUMMARY_COLUMNS

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NOW = T0 + dt.timedelta(hours=24)


def at(**delta) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Clock:
    """A settable clock for Monitor(clock=...)."""

    def __init__(self, moment: dt.datetime = T0):
        self.now = moment

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tracked(db, clock):
    return Monitor(db, clock=clock)


def run(monitor, clock, name, start, seconds, status="completed", orchestration=None, **fields):
    """Track one execution that starts at ``start`` and lasts ``seconds`` (None: running)."""
    session = f"{name}-{start.isoformat()}-{random.random()}"
    clock.now = start
    monitor.start_agent_execution(session, name, orchestration_id=orchestration)
    if seconds is not None:
        clock.now = start + dt.timedelta(seconds=seconds)
        monitor.complete_agent_execution(session, status, **fields)
    return session


def orchestrate(monitor, clock, session, start, status="completed", seconds=60, **counts):
    clock.now = start
    orchestration_id = monitor.start_orchestration(session, f"task {session}")
    if status != "running":
        clock.now = start + dt.timedelta(seconds=seconds)
        monitor.complete_orchestration(session, status, **counts)
    return orchestration_id


def insert_executions(db, rows):
    """Direct inserts: (agent, status, started_at text, duration_ms) tuples."""
    db.conn.executemany(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at,"
        " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
        [(f"id-{i}", f"s-{i}", *row) for i, row in enumerate(rows)],
    )


# -- the empty database -------------------------------------------------------------------


def test_empty_database(db):
    health = system_health(db, now=NOW)
    assert list(health.columns) == HEALTH_COLUMNS
    assert len(health) == 1
    row = health.iloc[0]
    rates = ["success_rate", "avg_duration_ms", "p50_duration_ms", "p95_duration_ms"]
    for column in HEALTH_COLUMNS:
        if column in rates:
            assert math.isnan(row[column])
        else:
            assert row[column] == 0
            assert health[column].dtype == "int64"

    performance = performance_report(db)
    assert list(performance.columns) == PERFORMANCE_COLUMNS
    assert performance.empty

    for frame in (list_orchestrations(db), failed_orchestrations(db, include_partial=True)):
        assert frame.empty
        assert "session_id" in frame.columns and "started_at" in frame.columns
    assert "task_completion_rate" in failed_orchestrations(db).columns
    with pytest.raises(UnknownAgent, match="'nobody'"):
        agent_stats(db, "nobody")
    with pytest.raises(UnknownAgent):
        agent_summary(db, "nobody")
    with pytest.raises(UnknownSession, match="'nope'"):
        orchestration_summary(db, "nope")
    with pytest.raises(UnknownSession):
        executions(db, "nope")


# -- system_health ------------------------------------------------------------------------


def test_system_health_counts_and_window_boundaries(tracked, clock, db):
    # Orchestrations: one exactly at the window's start (in), one exactly at its end,
    # now (out: `until` is excluded), one a millisecond too early and one after now.
    orchestrate(tracked, clock, "edge-start", NOW - dt.timedelta(hours=24), "completed")
    orchestrate(tracked, clock, "too-early", NOW - dt.timedelta(hours=24, milliseconds=1))
    orchestrate(tracked, clock, "failed", at(hours=5), "failed")
    orchestrate(tracked, clock, "partial", at(hours=6), "partial")
    orchestrate(tracked, clock, "running", at(hours=7), "running")
    orchestrate(tracked, clock, "edge-end", NOW, "running")
    orchestrate(tracked, clock, "future", NOW + dt.timedelta(milliseconds=1), "running")

    # Executions in the window: 3 completed (10 s, 20 s, 60 s), 1 failed (30 s),
    # 1 running; outside it: one completed, one failed and one running (at now).
    run(tracked, clock, "a", NOW - dt.timedelta(hours=24), 10)
    run(tracked, clock, "a", at(hours=1), 20)
    run(tracked, clock, "b", at(hours=2), 60)
    run(tracked, clock, "b", at(hours=3), 30, "failed", error_message="boom")
    run(tracked, clock, "a", at(hours=4), None)
    run(tracked, clock, "c", NOW, None)
    run(tracked, clock, "a", at(hours=-1), 99)
    run(tracked, clock, "b", NOW + dt.timedelta(seconds=1), 5, "failed")

    row = system_health(db, hours=24, now=NOW).iloc[0]
    assert row["orchestrations"] == 4
    assert row["completed_orchestrations"] == 1
    assert row["failed_orchestrations"] == 1
    assert row["partial_orchestrations"] == 1
    assert row["running_orchestrations"] == 1
    assert row["executions"] == 5
    assert row["finished"] == 4
    assert row["completed"] == 3
    assert row["failed"] == 1
    assert row["in_progress"] == 1
    assert row["success_rate"] == 75.0
    assert row["avg_duration_ms"] == 30_000.0  # (10 + 20 + 60 + 30) / 4 seconds
    # Sorted 10, 20, 30, 60 s: p50 halfway between 20 and 30; p95 at rank 2.85.
    assert row["p50_duration_ms"] == 25_000.0
    assert row["p95_duration_ms"] == pytest.approx(30_000 + 0.85 * 30_000)

    # A 2-hour window ending at hours=3 holds the executions started at hours 1 and 2
    # (the failed 30 s one started at hours=3, the excluded end): 20 s and 60 s.
    narrow = system_health(db, hours=2, now=at(hours=3)).iloc[0]
    assert narrow["finished"] == 2
    assert narrow["completed"] == 2
    assert narrow["success_rate"] == 100.0


def test_system_health_percentiles_match_numpy(db):
    rng = random.Random(7)
    rows = []
    for _ in range(2000):
        started = NOW - dt.timedelta(seconds=rng.uniform(0, 48 * 3600))
        status = rng.choice(["completed"] * 8 + ["failed", "in_progress"])
        duration = None if status == "in_progress" else rng.randint(1, 900_000)
        rows.append(("agent", status, iso(started), duration))
    insert_executions(db, rows)
    for hours in (1, 6.5, 24, 48):
        start = iso(NOW - dt.timedelta(hours=hours))
        finished = [r[3] for r in rows if r[1] != "in_progress" and start <= r[2] < iso(NOW)]
        row = system_health(db, hours=hours, now=NOW).iloc[0]
        assert row["finished"] == len(finished)
        assert row["avg_duration_ms"] == pytest.approx(np.mean(finished))
        assert row["p50_duration_ms"] == pytest.approx(np.percentile(finished, 50))
        assert row["p95_duration_ms"] == pytest.approx(np.percentile(finished, 95))


@pytest.mark.parametrize("hours", [0, -1, True, "24", float("nan")])
def test_system_health_rejects_bad_hours(db, hours):
    with pytest.raises(ValueError, match="hours must be a positive number"):
        system_health(db, hours=hours, now=NOW)


def test_system_health_accepts_text_now_and_path(db_path, tracked, clock):
    run(tracked, clock, "a", at(hours=1), 2)
    row = system_health(str(db_path), hours=2, now="2025-03-01T14:00:00Z").iloc[0]
    assert row["completed"] == 1
    with pytest.raises(ValueError, match="not a timestamp"):
        system_health(db_path, now="yesterday")
    with pytest.raises(ValueError, match="not a time: 'yesterday'"):
        system_health(db_path, since="yesterday")


# -- performance_report and agent_summary --------------------------------------------------


@pytest.fixture
def agents_db(tracked, clock, db):
    """Three agents; every number below is checked by hand in the tests."""
    # alpha: 4 finished (1, 2, 3, 10 s; the 10 s one failed), 1 running.
    run(tracked, clock, "alpha", at(hours=1), 1, files_created=1, files_modified=2)
    run(tracked, clock, "alpha", at(hours=2), 2, retry_count=2, self_healed=True)
    run(tracked, clock, "alpha", at(hours=3), 3, files_created=4)
    run(tracked, clock, "alpha", at(hours=4), 10, "failed", retry_count=1)
    run(tracked, clock, "alpha", at(hours=5), None)
    # beta: 2 completed (5 s, 7 s) and 2 failed (1 s, 9 s): as many executions as
    # gamma below, so the tie is broken by name.
    run(tracked, clock, "beta", at(hours=1, minutes=1), 5, files_modified=3)
    run(tracked, clock, "beta", at(hours=2, minutes=1), 7)
    run(tracked, clock, "beta", at(hours=3, minutes=1), 1, "failed")
    run(tracked, clock, "beta", at(hours=20), 9, "failed", self_healed=True)
    # gamma: 4 running, nothing finished.
    for hour in (6, 7, 8, 9):
        run(tracked, clock, "gamma", at(hours=hour), None)
    return db


def test_performance_report(agents_db):
    report = performance_report(agents_db)
    assert list(report.columns) == PERFORMANCE_COLUMNS
    assert list(report["agent_name"]) == ["alpha", "beta", "gamma"]
    alpha, beta, gamma = (row for _, row in report.iterrows())

    assert alpha["executions"] == 5
    assert (alpha["completed"], alpha["failed"]) == (3, 1)
    assert alpha["success_rate"] == 75.0
    assert alpha["avg_duration_ms"] == 4000.0
    assert (alpha["min_duration_ms"], alpha["max_duration_ms"]) == (1000.0, 10_000.0)
    # 1, 2, 3, 10 s: ranks 1.5, 2.85, 2.97 by linear interpolation.
    assert alpha["p50_duration_ms"] == 2500.0
    assert alpha["p95_duration_ms"] == pytest.approx(3000 + 0.85 * 7000)
    assert alpha["p99_duration_ms"] == pytest.approx(3000 + 0.97 * 7000)
    assert (alpha["retries"], alpha["self_healed_executions"]) == (3, 1)
    assert (alpha["files_created"], alpha["files_modified"]) == (5, 2)

    assert beta["executions"] == 4
    assert (beta["completed"], beta["failed"]) == (2, 2)
    assert beta["success_rate"] == 50.0
    assert beta["avg_duration_ms"] == 5500.0
    assert beta["p50_duration_ms"] == 6000.0  # 1, 5, 7, 9 s
    assert (beta["self_healed_executions"], beta["files_modified"]) == (1, 3)

    assert gamma["executions"] == 4
    assert (gamma["completed"], gamma["failed"]) == (0, 0)
    for column in PERFORMANCE_COLUMNS[6:13]:
        assert math.isnan(gamma[column])
    for column in PERFORMANCE_COLUMNS[1:6] + PERFORMANCE_COLUMNS[13:]:
        assert report[column].dtype == "int64"


def test_performance_report_window(agents_db):
    # [hours=2, hours=4): alpha's 2 s and 3 s (its failed 10 s one started at the
    # excluded end); beta's 7 s and failed 1 s.
    report = performance_report(agents_db, since=at(hours=2), until=iso(at(hours=4)))
    assert list(report["agent_name"]) == ["alpha", "beta"]
    alpha, beta = report.iloc[0], report.iloc[1]
    assert (alpha["executions"], alpha["completed"], alpha["failed"]) == (2, 2, 0)
    assert alpha["avg_duration_ms"] == 2500.0
    assert alpha["p50_duration_ms"] == 2500.0
    assert (beta["executions"], beta["completed"], beta["failed"]) == (2, 1, 1)
    assert beta["min_duration_ms"] == 1000.0
    # Only a lower bound: gamma's running executions at hours 6-9 and beta's 9 s one.
    late = performance_report(agents_db, since=at(hours=5, minutes=30))
    assert dict(zip(late["agent_name"], late["executions"], strict=True)) == {
        "gamma": 4,
        "beta": 1,
    }
    with pytest.raises(ValueError, match="is after until"):
        performance_report(agents_db, since=at(hours=4), until=at(hours=2))
    with pytest.raises(ValueError, match="not a time: 'last week'"):
        performance_report(agents_db, since="last week")


def test_performance_percentiles_match_numpy(db):
    rng = random.Random(3)
    rows = []
    for _ in range(3000):
        agent = rng.choice(["x", "y", "z"])
        status = rng.choice(["completed"] * 6 + ["failed", "in_progress"])
        duration = None if status == "in_progress" else int(rng.lognormvariate(10, 1))
        started = T0 + dt.timedelta(seconds=rng.uniform(0, 10 * 86400))
        rows.append((agent, status, iso(started), duration))
    insert_executions(db, rows)
    report = performance_report(db).set_index("agent_name")
    for agent in "xyz":
        mine = [r for r in rows if r[0] == agent]
        finished = [r[3] for r in mine if r[1] != "in_progress"]
        completed = sum(r[1] == "completed" for r in mine)
        assert report.loc[agent, "executions"] == len(mine)
        assert report.loc[agent, "success_rate"] == pytest.approx(completed / len(finished) * 100)
        assert report.loc[agent, "min_duration_ms"] == min(finished)
        assert report.loc[agent, "max_duration_ms"] == max(finished)
        for q in (50, 95, 99):
            assert report.loc[agent, f"p{q}_duration_ms"] == pytest.approx(
                np.percentile(finished, q)
            )
    counts = [sum(r[0] == a for r in rows) for a in report.index]
    assert counts == sorted(counts, reverse=True)


def test_agent_summary_is_the_agents_performance_row(agents_db):
    summary = agent_summary(agents_db, "alpha")
    expected = performance_report(agents_db).iloc[[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(summary, expected)
    # Nothing of beta's in this window: one row of zeros, NaN durations.
    empty = agent_summary(agents_db, "beta", since=at(hours=21)).iloc[0]
    assert (empty["agent_name"], empty["executions"], empty["completed"]) == ("beta", 0, 0)
    assert math.isnan(empty["success_rate"]) and math.isnan(empty["p50_duration_ms"])
    # An agent with only running executions is known.
    assert agent_summary(agents_db, "gamma").iloc[0]["executions"] == 4


# -- agent_stats ----------------------------------------------------------------------------


def test_agent_stats_newest_first_with_running(agents_db):
    frame = agent_stats(agents_db, "alpha")
    assert list(frame["status"]) == ["in_progress", "failed", "completed", "completed", "completed"]
    assert list(frame["started_at"]) == [pd.Timestamp(at(hours=h)) for h in (5, 4, 3, 2, 1)]
    assert (
        str(frame["started_at"].dtype).startswith("datetime64")
        and frame["started_at"].dt.tz is not None
    )
    assert pd.isna(frame["completed_at"].iloc[0]) and math.isnan(frame["duration_ms"].iloc[0])
    assert frame["completed_at"].iloc[1] == pd.Timestamp(at(hours=4, seconds=10))
    assert list(frame["duration_ms"].iloc[1:]) == [10_000.0, 3000.0, 2000.0, 1000.0]
    assert list(frame["self_healed"]) == [False, False, False, True, False]
    assert frame["self_healed"].dtype == bool
    assert frame["retry_count"].dtype == "int64"
    assert set(frame["agent_name"]) == {"alpha"}
    assert list(agent_stats(agents_db, "alpha", limit=2)["status"]) == ["in_progress", "failed"]


def test_agent_stats_has_no_row_cap(db):
    insert_executions(
        db,
        [("busy", "completed", iso(T0 + dt.timedelta(seconds=i)), i) for i in range(1500)],
    )
    frame = agent_stats(db, "busy")
    assert len(frame) == 1500
    assert list(frame["duration_ms"]) == [float(i) for i in range(1499, -1, -1)]


@pytest.mark.parametrize("limit", [0, -3, 1.5, "10", True])
def test_limits_are_validated(agents_db, limit):
    for call in (
        lambda: agent_stats(agents_db, "alpha", limit=limit),
        lambda: list_orchestrations(agents_db, limit=limit),
        lambda: failed_orchestrations(agents_db, limit=limit),
    ):
        with pytest.raises(InvalidValue, match="limit must be a whole number of at least 1"):
            call()


# -- orchestrations -------------------------------------------------------------------------


@pytest.fixture
def orchestrations_db(tracked, clock, db):
    orchestrate(tracked, clock, "s1", at(hours=1), "completed", completed_tasks=3)
    orchestrate(tracked, clock, "s2", at(hours=2), "failed", completed_tasks=1, failed_tasks=3)
    orchestrate(tracked, clock, "s3", at(hours=3), "partial", completed_tasks=2, failed_tasks=1)
    orchestrate(tracked, clock, "s4", at(hours=4), "failed")
    orchestrate(tracked, clock, "s5", at(hours=5), "running")
    tracked.update_orchestration_tasks("s2", total_tasks=4)
    tracked.update_orchestration_tasks("s3", total_tasks=3)
    return db


def test_list_orchestrations(orchestrations_db):
    frame = list_orchestrations(orchestrations_db)
    assert list(frame["session_id"]) == ["s5", "s4", "s3", "s2", "s1"]
    assert list(list_orchestrations(orchestrations_db, limit=2)["session_id"]) == ["s5", "s4"]
    assert frame["started_at"].iloc[0] == pd.Timestamp(at(hours=5))
    assert math.isnan(frame["duration_ms"].iloc[0])
    assert frame["duration_ms"].iloc[1] == 60_000.0
    assert frame["task_description"].iloc[0] == "task s5"


def test_failed_orchestrations(orchestrations_db):
    frame = failed_orchestrations(orchestrations_db)
    assert list(frame["session_id"]) == ["s4", "s2"]
    assert set(frame["status"]) == {"failed"}
    # s2: 1 of 4 tasks completed; s4 has no tasks.
    assert frame["task_completion_rate"].iloc[1] == 25.0
    assert math.isnan(frame["task_completion_rate"].iloc[0])
    both = failed_orchestrations(orchestrations_db, include_partial=True)
    assert list(both["session_id"]) == ["s4", "s3", "s2"]
    assert both["task_completion_rate"].iloc[1] == pytest.approx(200 / 3)
    assert list(
        failed_orchestrations(orchestrations_db, limit=2, include_partial=True)["session_id"]
    ) == ["s4", "s3"]


def test_orchestration_summary_and_executions(tracked, clock, db):
    oid = orchestrate(tracked, clock, "main", at(hours=1), "running")
    # Tracked out of order on purpose: executions() returns them by start time.
    run(tracked, clock, "b", at(hours=1, minutes=5), 4, "failed", orchestration=oid)
    run(tracked, clock, "a", at(hours=1, minutes=1), 2, orchestration=oid, files_created=2)
    run(tracked, clock, "c", at(hours=1, minutes=9), None, orchestration=oid)
    run(tracked, clock, "a", at(hours=1, minutes=3), 6, orchestration=oid, retry_count=1)
    run(tracked, clock, "a", at(hours=1, minutes=2), 50)  # standalone: not counted
    other = orchestrate(tracked, clock, "other", at(hours=2), "running")
    run(tracked, clock, "a", at(hours=2), 1, orchestration=other)

    row = orchestration_summary(db, "main").iloc[0]
    assert row["session_id"] == "main" and row["status"] == "running"
    assert row["executions"] == 4
    assert (row["finished"], row["completed"]) == (3, 2)
    assert (row["failed"], row["in_progress"]) == (1, 1)
    assert row["success_rate"] == pytest.approx(200 / 3)
    assert row["avg_duration_ms"] == 4000.0
    assert (row["min_duration_ms"], row["max_duration_ms"]) == (2000.0, 6000.0)
    assert row["p50_duration_ms"] == 4000.0
    assert row["p95_duration_ms"] == pytest.approx(4000 + 0.9 * 2000)
    assert (row["retries"], row["files_created"]) == (1, 2)
    assert list(orchestration_summary(db, "main").columns) == SUMMARY_COLUMNS

    frame = executions(db, "main")
    assert list(frame["agent_name"]) == ["a", "a", "b", "c"]
    assert list(frame["started_at"]) == [pd.Timestamp(at(hours=1, minutes=m)) for m in (1, 3, 5, 9)]
    assert set(frame["orchestration_id"]) == {oid}

    empty_id = orchestrate(tracked, clock, "empty", at(hours=3), "completed")
    assert executions(db, "empty").empty
    summary = orchestration_summary(db, "empty").iloc[0]
    assert summary["id"] == empty_id and summary["executions"] == 0
    assert math.isnan(summary["success_rate"]) and math.isnan(summary["avg_duration_ms"])


# -- files written by the original tool -------------------------------------------------------


def _original_rows():
    """Eight executions and four orchestrations, as the original tool stored them."""
    orchestrations = [
        {
            "id": "o1",
            "session_id": "s1",
            "status": "completed",
            "started_at": "2025-03-02T11:00:00.000Z",
        },
        {
            "id": "o2",
            "session_id": "s2",
            "status": "failed",
            "started_at": "2025-03-02T10:00:00.000Z",
        },
        {
            "id": "o3",
            "session_id": "s3",
            "status": "running",
            "started_at": "2025-03-02T09:30:00.000Z",
        },
        {
            "id": "o4",
            "session_id": "s4",
            "status": "failed",
            "started_at": "2025-02-27T09:00:00.000Z",
        },
    ]
    executions = []
    for i, (orch, agent, status, started, duration) in enumerate(
        [
            ("o1", "planner", "completed", "2025-03-02T11:00:01.000Z", 1200),
            ("o1", "coder", "completed", "2025-03-02T11:00:03.000Z", 45_000),
            ("o1", "coder", "failed", "2025-03-02T11:01:00.000Z", 15_000),
            ("o2", "coder", "failed", "2025-03-02T10:00:01.000Z", 30_000),
            ("o2", "tester", "completed", "2025-03-02T10:01:00.000Z", 8_800),
            ("o3", "tester", "in_progress", "2025-03-02T09:30:01.000Z", None),
            ("o4", "coder", "completed", "2025-02-27T09:00:01.000Z", 100_000),
            (None, "planner", "completed", "2025-03-02T08:00:00.000Z", 800),
        ]
    ):
        executions.append(
            {
                "id": f"e{i}",
                "orchestration_id": orch,
                "agent_session_id": f"a{i}",
                "agent_name": agent,
                "status": status,
                "started_at": started,
                "completed_at": None if duration is None else started,
                "duration_ms": duration,
            }
        )
    return orchestrations, executions


@pytest.mark.parametrize("as_database", [False, True])
def test_original_file_read_only(tmp_path, lock_down, as_database):
    path = make_original_db(tmp_path / "original.db", *_original_rows())
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    lock_down(path)
    reader = open_database(path) if as_database else path
    try:
        now = "2025-03-02T12:00:00.000Z"
        # Last 24 h (as the original: started_at >= cutoff): o1, o2, o3; all but e6.
        row = system_health(reader, hours=24, now=now).iloc[0]
        assert (row["orchestrations"], row["completed_orchestrations"]) == (3, 1)
        assert (row["failed_orchestrations"], row["running_orchestrations"]) == (1, 1)
        assert row["executions"] == 7
        assert (row["finished"], row["completed"]) == (6, 4)
        assert row["in_progress"] == 1
        # The original: completed / (completed + failed) * 100 and AVG(duration_ms).
        assert row["success_rate"] == pytest.approx(4 / 6 * 100)
        assert row["avg_duration_ms"] == pytest.approx(
            (1200 + 45_000 + 15_000 + 30_000 + 8_800 + 800) / 6
        )
        # 800, 1200, 8800, 15000, 30000, 45000: p50 between 8800 and 15000.
        assert row["p50_duration_ms"] == 11_900.0
        week = system_health(reader, hours=24 * 7, now=now).iloc[0]
        assert (week["orchestrations"], week["failed_orchestrations"]) == (4, 2)
        assert week["avg_duration_ms"] == pytest.approx(200_800 / 7)

        report = performance_report(reader).set_index("agent_name")
        assert list(report.index) == ["coder", "planner", "tester"]
        coder = report.loc["coder"]
        assert (coder["executions"], coder["completed"], coder["failed"]) == (4, 2, 2)
        assert coder["success_rate"] == 50.0
        assert coder["avg_duration_ms"] == 47_500.0
        assert (coder["min_duration_ms"], coder["max_duration_ms"]) == (15_000.0, 100_000.0)
        assert report.loc["planner", "avg_duration_ms"] == 1000.0
        tester = report.loc["tester"]
        assert (tester["executions"], tester["completed"], tester["success_rate"]) == (2, 1, 100.0)

        assert list(failed_orchestrations(reader)["session_id"]) == ["s2", "s4"]
        assert list(list_orchestrations(reader, limit=3)["session_id"]) == ["s1", "s2", "s3"]
        assert len(agent_stats(reader, "coder")) == 4
        assert list(executions(reader, "s1")["agent_name"]) == ["planner", "coder", "coder"]
        summary = orchestration_summary(reader, "s1").iloc[0]
        assert summary["success_rate"] == pytest.approx(200 / 3)
        assert summary["metadata_json"] is None  # our extra column, shimmed as NULL
        assert executions(reader, "s1")["model"].isna().all()
    finally:
        if as_database:
            reader.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_mixed_timestamp_formats(db):
    # started_at as the original writes it, created_at as SQLite's datetime('now'),
    # and a completed_at without milliseconds or with an offset (hand-edited imports).
    db.conn.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at, completed_at, created_at)"
        " VALUES ('o', 's', 'completed', '2025-03-01T10:00:00.250Z',"
        " '2025-03-01T12:30:00+02:00', '2025-03-01 10:00:00')"
    )
    db.conn.execute(
        "INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name,"
        " status, started_at, completed_at, duration_ms, created_at) VALUES ('e', 'o', 'a',"
        " 'x', 'completed', '2025-03-01T10:00:01.000Z', '2025-03-01T10:00:03Z', 2000,"
        " '2025-03-01 10:00:01')"
    )
    orchestration = list_orchestrations(db).iloc[0]
    assert orchestration["started_at"] == pd.Timestamp("2025-03-01 10:00:00.250", tz="UTC")
    assert orchestration["completed_at"] == pd.Timestamp("2025-03-01 10:30:00", tz="UTC")
    assert orchestration["created_at"] == pd.Timestamp("2025-03-01 10:00:00", tz="UTC")
    execution = executions(db, "s").iloc[0]
    assert execution["completed_at"] == pd.Timestamp("2025-03-01 10:00:03", tz="UTC")
    assert execution["created_at"] == pd.Timestamp("2025-03-01 10:00:01", tz="UTC")
    assert system_health(db, hours=1, now="2025-03-01T10:30:00Z").iloc[0]["completed"] == 1


def test_reports_open_a_path_without_creating_it(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(Exception, match="No database found"):
        system_health(missing)
    assert not missing.exists()


def test_reports_do_not_write(db_path, tracked, clock):
    run(tracked, clock, "a", at(hours=1), 2)
    tracked.close()
    reader = open_database(db_path, read_only=True)
    try:
        assert system_health(reader, now=NOW).iloc[0]["completed"] == 1
        assert performance_report(reader).iloc[0]["executions"] == 1
    finally:
        reader.close()


# -- limits beyond SQLite's integers, and a report while a writer writes -------------------


def test_huge_limit_in_the_library(small):
    assert list(list_orchestrations(small, limit=10**30)["session_id"]) == ["s"]
    assert list(failed_orchestrations(small, limit=10**30)["session_id"]) == ["s"]
    assert list(agent_stats(small, "coder", limit=10**30)["agent_session_id"]) == ["a2", "a1"]


def _finish_a2(path):
    """What another process does: a2 completes 4 s after it started."""
    writer = agentmetrics.Monitor(path, clock=lambda: SMALL_T0 + dt.timedelta(seconds=6))
    writer.complete_agent_execution("a2", "completed")
    writer.close()


SNAPSHOT_REPORTS = {
    "system_health": lambda db: system_health(db, hours=24, now=SMALL_NOW),
    "performance_report": performance_report,
    "agent_summary": lambda db: agent_summary(db, "coder"),
    "orchestration_summary": lambda db: orchestration_summary(db, "s"),
}


def _run_with_write_before(report, path, k):
    """Run ``report`` on ``path``; another connection commits before its k-th SELECT."""
    reader = agentmetrics.open_database(path)
    selects = 0

    def trace(sql):
        nonlocal selects
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            selects += 1
            if selects == k:
                _finish_a2(path)

    reader.conn.set_trace_callback(trace)
    try:
        return report(reader), selects
    finally:
        reader.close()


@pytest.mark.parametrize("name", SNAPSHOT_REPORTS)
def test_reports_see_one_snapshot_while_a_writer_commits(small, tmp_path, name):
    report = SNAPSHOT_REPORTS[name]
    before = report(small)
    done = tmp_path / "after.db"
    shutil.copy(small, done)
    _finish_a2(done)
    after = report(done)
    assert not _same(before, after)
    _, n = _run_with_write_before(report, shutil.copy(small, tmp_path / "count.db"), 0)
    assert n >= 2  # the race exists only between statements
    for k in range(2, n + 1):
        got, _ = _run_with_write_before(report, shutil.copy(small, tmp_path / f"{k}.db"), k)
        assert _same(got, before) or _same(got, after), f"write before SELECT {k}:\n{got.T}"


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b)
    except AssertionError:
        return False
    return True


def test_counted_rows_derives_the_counts_and_types_every_column():
    rows = [
        {"agent_name": "a", "completed": 3, "failed": 1, "in_progress": 2, "avg_duration_ms": 10.5},
        {"agent_name": "b", "in_progress": 1, "retries": 4},
    ]
    frame = counted_rows(rows, PERFORMANCE_COLUMNS)
    assert list(frame.columns) == PERFORMANCE_COLUMNS
    assert frame["agent_name"].tolist() == ["a", "b"]
    assert frame["executions"].tolist() == [6, 1]
    assert frame["finished"].tolist() == [4, 0]
    assert frame["retries"].tolist() == [0, 4]
    assert frame["success_rate"].iloc[0] == 75.0 and math.isnan(frame["success_rate"].iloc[1])
    assert frame["avg_duration_ms"].iloc[0] == 10.5 and frame["p50_duration_ms"].isna().all()
    for empty in (frame, counted_rows([], PERFORMANCE_COLUMNS)):
        assert empty["agent_name"].dtype == object
        assert empty["executions"].dtype == "int64" and empty["files_created"].dtype == "int64"
        assert empty["success_rate"].dtype == "float64"
        assert empty["max_duration_ms"].dtype == "float64"


@pytest.mark.parametrize("where", ["", " WHERE 0"])
def test_rows_frame_equals_pandas_read_sql_then_the_conventions(tmp_path, where):
    """rows_frame builds frames itself: pandas' own reader, then typed(), is the reference."""
    conn = sqlite3.connect(tmp_path / "rows.db")
    conn.execute(
        "CREATE TABLE t (id TEXT, started_at TEXT, completed_at TEXT, duration_ms,"
        " retry_count, files_created INTEGER, self_healed INTEGER, note TEXT, n, x)"
    )
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("a", "2026-11-28T09:15:02.123Z", None, None, None, None, None, None, 1, None),
            ("b", "2026-11-28 09:15:02", "2026-11-28T09:16:00Z", 57877, 2, 2, 1, "é", None, None),
            # Text where a number belongs (another tool wrote it): pandas parses it.
            (None, "2026-11-28T09:15:02+02:00", None, 1.5, "4", 0, 0, "", 3, None),
        ],
    )
    sql = "SELECT * FROM t" + where
    expected = _frames.typed(pd.read_sql_query(sql, conn))
    got = _frames.rows_frame(sqlite_utils.Database(conn), sql)
    pd.testing.assert_frame_equal(got, expected)
    assert got["note"].tolist()[1:] == ([] if where else ["é", ""])
    assert got["x"].dtype == object and got["n"].dtype == ("float64" if not where else object)
