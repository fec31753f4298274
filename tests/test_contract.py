"""The report contract (``agentmetrics.reports``' docstring, rendered in docs/reports.md),
checked for every public report: signature, window edges, spans, columns and dtypes.

The expected columns and dtypes below are written out by hand from the documented
table, not read from the code.
"""

import datetime as dt
import inspect
import itertools

import pandas as pd
import pytest

from agentmetrics import reports
from agentmetrics.errors import InvalidValue

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
SINCE = NOW - dt.timedelta(days=3)
UNTIL = NOW - dt.timedelta(days=1)
MS = dt.timedelta(milliseconds=1)
RATES = {"default_hourly_rate": 3.6}  # 0.001 USD per second

TIME = "datetime64[us, UTC]"
COUNTS = [(c, "int64") for c in ("executions", "finished", "completed", "failed", "in_progress")]
SUMS = [
    (c, "int64") for c in ("retries", "self_healed_executions", "files_created", "files_modified")
]
ORCHESTRATION_ROW = [
    ("id", "object"),
    ("session_id", "object"),
    ("task_description", "object"),
    ("status", "object"),
    ("started_at", TIME),
    ("completed_at", TIME),
    ("duration_ms", "float64"),
    ("total_tasks", "int64"),
    ("completed_tasks", "int64"),
    ("failed_tasks", "int64"),
    ("git_commit_hash", "object"),
    ("plan_file_path", "object"),
    ("progress_file_path", "object"),
    ("created_at", TIME),
    ("metadata_json", "object"),
]
EXECUTION_ROW = [
    ("id", "object"),
    ("orchestration_id", "object"),
    ("agent_session_id", "object"),
    ("agent_name", "object"),
    ("task_id", "object"),
    ("task_number", "float64"),
    ("status", "object"),
    ("started_at", TIME),
    ("completed_at", TIME),
    ("duration_ms", "float64"),
    ("retry_count", "int64"),
    ("self_healed", "bool"),
    ("files_created", "int64"),
    ("files_modified", "int64"),
    ("error_message", "object"),
    ("summary_report_path", "object"),
    ("session_log_path", "object"),
    ("created_at", TIME),
    ("model", "object"),
    ("input_tokens", "float64"),
    ("output_tokens", "float64"),
    ("cost_usd", "float64"),
    ("metadata_json", "object"),
    ("parent_execution_id", "object"),
    ("attempt", "int64"),
    ("first_attempt_id", "object"),
]
PERFORMANCE = [
    ("agent_name", "object"),
    *COUNTS,
    ("success_rate", "float64"),
    *[(f"{s}_duration_ms", "float64") for s in ("avg", "min", "max", "p50", "p95", "p99")],
    *SUMS,
]
COLUMNS = {
    "system_health": [
        ("orchestrations", "int64"),
        ("completed_orchestrations", "int64"),
        ("failed_orchestrations", "int64"),
        ("partial_orchestrations", "int64"),
        ("running_orchestrations", "int64"),
        *COUNTS,
        ("success_rate", "float64"),
        ("avg_duration_ms", "float64"),
        ("p50_duration_ms", "float64"),
        ("p95_duration_ms", "float64"),
        ("stale_running", "int64"),
    ],
    "performance_report": PERFORMANCE,
    "agent_summary": PERFORMANCE,
    "trends": [
        ("period", TIME),
        *COUNTS,
        ("success_rate", "float64"),
        ("p50_duration_ms", "float64"),
        ("p95_duration_ms", "float64"),
        ("retries", "int64"),
        ("self_healed_executions", "int64"),
        ("tasks", "int64"),
        ("first_attempt_success_rate", "float64"),
        ("retry_rate", "float64"),
    ],
    "retries": [
        ("agent_name", "object"),
        ("tasks", "int64"),
        ("attempts", "int64"),
        ("attempts_per_task", "float64"),
        ("max_attempts", "int64"),
        ("first_attempt_success_rate", "float64"),
        ("eventual_success_rate", "float64"),
        ("retry_rate", "float64"),
        ("retried_tasks", "int64"),
        ("rescued_tasks", "int64"),
        ("self_healed_tasks", "int64"),
        ("failed_attempts", "int64"),
        ("failed_duration_ms", "float64"),
        ("failed_cost_usd", "float64"),
        ("top_reasons", "object"),
    ],
    "self_healing": [
        ("agent_name", "object"),
        *COUNTS,
        ("self_healed_executions", "int64"),
        ("self_healed_rate", "float64"),
        ("rescued", "int64"),
        ("rescue_rate", "float64"),
    ],
    "error_patterns": [
        ("pattern", "object"),
        ("count", "int64"),
        ("agents", "object"),
        ("agent_count", "int64"),
        ("first_seen", TIME),
        ("last_seen", TIME),
        ("example", "object"),
    ],
    "durations": [
        ("agent_name", "object"),
        ("started_at", TIME),
        ("status", "object"),
        ("duration_ms", "float64"),
    ],
    "costs": [
        ("agent_name", "object"),
        ("finished", "int64"),
        ("total_duration_ms", "float64"),
        ("time_priced", "int64"),
        ("token_priced", "int64"),
        ("recorded_priced", "int64"),
        ("time_cost_usd", "float64"),
        ("token_cost_usd", "float64"),
        ("recorded_cost_usd", "float64"),
        ("cost_usd", "float64"),
        ("method", "object"),
    ],
    "regressions": [
        ("agent_name", "object"),
        ("metric", "object"),
        ("baseline_value", "float64"),
        ("recent_value", "float64"),
        ("change", "float64"),
        ("baseline_n", "int64"),
        ("recent_n", "int64"),
        ("p_value", "float64"),
        ("p_adjusted", "float64"),
        ("regressed", "bool"),
        ("reason", "object"),
    ],
    "stale_runs": [
        ("kind", "object"),
        ("id", "object"),
        ("session_id", "object"),
        ("agent_name", "object"),
        ("started_at", TIME),
        ("last_seen_at", TIME),
        ("age_ms", "float64"),
    ],
    "list_orchestrations": ORCHESTRATION_ROW,
    "failed_orchestrations": [*ORCHESTRATION_ROW, ("task_completion_rate", "float64")],
    "orchestration_summary": [
        *ORCHESTRATION_ROW,
        *COUNTS,
        ("success_rate", "float64"),
        *[(f"{s}_duration_ms", "float64") for s in ("avg", "min", "max", "p50", "p95", "p99")],
        *SUMS,
    ],
    "timeline": [
        ("kind", "object"),
        ("id", "object"),
        ("parent_execution_id", "object"),
        ("depth", "int64"),
        ("lane", "int64"),
        ("agent_name", "object"),
        ("name", "object"),
        ("task_id", "object"),
        ("task_number", "float64"),
        ("attempt", "int64"),
        ("first_attempt_id", "object"),
        ("status", "object"),
        ("started_at", TIME),
        ("completed_at", TIME),
        ("start_offset_ms", "float64"),
        ("end_offset_ms", "float64"),
        ("duration_ms", "float64"),
        ("model", "object"),
        ("input_tokens", "float64"),
        ("output_tokens", "float64"),
        ("cost_usd", "float64"),
        ("error_message", "object"),
    ],
    "agent_stats": EXECUTION_ROW,
    "executions": EXECUTION_ROW,
    "execution_rows": EXECUTION_ROW,
}
# The positional subject of a report about one agent or one orchestration.
SUBJECT = {
    "agent_summary": "agent",
    "agent_stats": "agent",
    "orchestration_summary": "session_id",
    "executions": "session_id",
    "timeline": "session_id",
}
# Reports over a [since, until) window, and the executions each counts in it.
WINDOWED = {
    "system_health": lambda df: df["executions"].sum(),
    "performance_report": lambda df: df["executions"].sum(),
    "agent_summary": lambda df: df["executions"].sum(),
    "trends": lambda df: df["executions"].sum(),
    "self_healing": lambda df: df.loc[df["agent_name"] == "a", "executions"].sum(),
    "error_patterns": lambda df: df["count"].sum(),
    "durations": len,
    "costs": lambda df: df["finished"].sum(),
    "retries": lambda df: df["attempts"].sum(),
    "execution_rows": len,
}
FILTERED_BY_AGENT = {*WINDOWED, "regressions"} - {"system_health", "agent_summary"}
TAKES_NOW = {*WINDOWED, "regressions", "stale_runs"}
# Reports that read through the rollups, with ``exact=True`` for the scan.
ROLLED_UP = {
    "system_health",
    "performance_report",
    "agent_summary",
    "trends",
    "costs",
    "regressions",
    "retries",
}


def call(name, db, **kwargs):
    """Call a report the way the contract says, with what it needs to run."""
    function = getattr(reports, name)
    args = {"agent": ["a"], "session_id": ["s"]}.get(SUBJECT.get(name), [])
    if name == "costs":
        kwargs.setdefault("rates", RATES)
    return function(db, *args, **kwargs)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_ids = itertools.count()


def add_execution(db, started, status="failed", duration_ms=1000, agent="a"):
    number = next(_ids)
    db.conn.execute(
        "INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name,"
        " status, started_at, duration_ms, error_message) VALUES (?, 'o', ?, ?, ?, ?, ?, ?)",
        [
            f"e{number}",
            f"x{number}",
            agent,
            status,
            iso(started),
            None if status == "in_progress" else duration_ms,
            "boom" if status == "failed" else None,
        ],
    )
    db.conn.commit()


@pytest.fixture
def session(db):
    """One orchestration, session ``s``, so the per-session reports have a subject."""
    db.conn.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at, total_tasks,"
        " completed_tasks, failed_tasks) VALUES ('o', 's', 'running', ?, 0, 0, 0)",
        [iso(NOW - dt.timedelta(days=30))],
    )
    db.conn.commit()
    return db


@pytest.fixture
def edges(session):
    """Four failed executions of agent ``a``: 1 ms before ``SINCE`` (out), at ``SINCE``
    (in), 1 ms before ``UNTIL`` (in) and at ``UNTIL`` (out)."""
    for started, duration in ((SINCE - MS, 5), (SINCE, 1000), (UNTIL - MS, 2000), (UNTIL, 7)):
        add_execution(session, started, duration_ms=duration)
    return session


def test_every_report_is_in_the_contract():
    assert sorted(reports.__all__) == sorted(COLUMNS)


def test_self_healed_is_the_row_flag_only():
    """One name, one meaning: the count of self-healed executions has its own name."""
    kinds = {
        dtype for columns in COLUMNS.values() for name, dtype in columns if name == "self_healed"
    }
    assert kinds == {"bool"}
    counts = [
        name for name, columns in COLUMNS.items() if ("self_healed_executions", "int64") in columns
    ]
    assert sorted(counts) == [
        "agent_summary",
        "orchestration_summary",
        "performance_report",
        "self_healing",
        "trends",
    ]


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_signature(name):
    parameters = list(inspect.signature(getattr(reports, name)).parameters.values())
    positional = [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY]
    assert positional == ["db", *([SUBJECT[name]] if name in SUBJECT else [])]
    keywords = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert "agent_name" not in keywords and "older_than" not in keywords
    if name in WINDOWED:
        assert {"since", "until", "now"} <= keywords
    assert ("agent" in keywords) == (name in FILTERED_BY_AGENT)
    assert ("now" in keywords) == (name in TAKES_NOW)
    assert ("exact" in keywords) == (name in ROLLED_UP)


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_includes_since_and_excludes_until(edges, name):
    frame = call(name, edges, since=SINCE, until=UNTIL, now=NOW)
    assert WINDOWED[name](frame) == 2


def test_window_rows_by_hand(edges):
    expected = pd.DataFrame(
        {
            "agent_name": pd.Series(["a", "a"], dtype=object),
            "started_at": pd.to_datetime([SINCE, UNTIL - MS], utc=True).as_unit("us"),
            "status": pd.Series(["failed", "failed"], dtype=object),
            "duration_ms": [1000.0, 2000.0],
        }
    )
    found = reports.durations(edges, since=SINCE, until=UNTIL)
    pd.testing.assert_frame_equal(found, expected)
    # Costs of the same two: 3 s at 0.001 USD/s.
    costs = reports.costs(edges, rates=RATES, since=iso(SINCE), until=iso(UNTIL))
    assert (costs["finished"].tolist(), costs["cost_usd"].tolist()) == ([2], [pytest.approx(0.003)])


def test_health_hours_is_the_window_back_from_now(edges):
    # [NOW - 72 h, NOW): SINCE is in; a run starting at NOW is not.
    add_execution(edges, NOW)
    health = reports.system_health(edges, hours=72, now=NOW).iloc[0]
    assert health["executions"] == 3  # SINCE, UNTIL - 1 ms, UNTIL; not SINCE - 1 ms, NOW
    # The default 24 h before UNTIL + 1 ms: UNTIL - 1 ms and UNTIL.
    assert reports.system_health(edges, now=UNTIL + MS).iloc[0]["executions"] == 2
    with pytest.raises(InvalidValue, match="not both"):
        reports.system_health(edges, hours=24, since=SINCE)


def test_health_orchestrations_share_the_window(session):
    for moment, session_id in ((SINCE - MS, "before"), (SINCE, "first"), (UNTIL, "end")):
        session.conn.execute(
            "INSERT INTO orchestrations (id, session_id, status, started_at, total_tasks,"
            " completed_tasks, failed_tasks) VALUES (?, ?, 'completed', ?, 0, 0, 0)",
            [session_id, session_id, iso(moment)],
        )
    session.conn.commit()
    health = reports.system_health(session, since=SINCE, until=UNTIL).iloc[0]
    assert (health["orchestrations"], health["completed_orchestrations"]) == (1, 1)


def test_regression_windows_are_half_open(session):
    # recent [NOW - 1d, NOW), baseline [NOW - 4d, NOW - 1d)
    recent_start, baseline_start = NOW - dt.timedelta(days=1), NOW - dt.timedelta(days=4)
    for moment in (baseline_start - MS, baseline_start, recent_start - MS):
        add_execution(session, moment, "completed")
    for moment in (recent_start, NOW - MS, NOW):
        add_execution(session, moment, "completed")
    found = reports.regressions(
        session, recent="1d", baseline="3d", now=NOW, metric="success_rate", min_samples=1
    )
    assert found[["baseline_n", "recent_n"]].values.tolist() == [[2, 2]]


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_spans_equal_the_timestamps_they_stand_for(edges, name):
    by_span = call(name, edges, since="3d", until="1d", now=NOW)
    by_time = call(name, edges, since=iso(SINCE), until=UNTIL, now=NOW)
    pd.testing.assert_frame_equal(by_span, by_time)
    assert WINDOWED[name](by_span) == 2


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_since_after_until_is_an_error(edges, name):
    with pytest.raises(InvalidValue, match="is after until"):
        call(name, edges, since=UNTIL, until=SINCE, now=NOW)


def empty_window(name, db):
    """The report over a window holding nothing (the subject reports need a subject)."""
    if name in WINDOWED:
        return call(name, db, since=NOW, until=NOW, now=NOW)
    if name in ("regressions", "stale_runs"):
        return call(name, db, now=NOW)
    return call(name, db)


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_empty_columns_and_dtypes(session, name):
    if name in ("agent_summary", "agent_stats"):
        add_execution(session, SINCE)  # the agent must exist
    frame = empty_window(name, session)
    assert list(frame.dtypes.astype(str).items()) == COLUMNS[name]


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_columns_and_dtypes_with_rows(edges, name):
    add_execution(edges, NOW - dt.timedelta(days=2), "completed")
    add_execution(edges, NOW - dt.timedelta(days=2), "in_progress")
    edges.conn.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at, completed_at,"
        " duration_ms, total_tasks, completed_tasks, failed_tasks)"
        " VALUES ('f', 'f', 'failed', ?, ?, 60000, 2, 1, 1)",
        [iso(SINCE), iso(SINCE + dt.timedelta(minutes=1))],
    )
    edges.conn.commit()
    frame = call(name, edges, **({"now": NOW} if name in TAKES_NOW else {}))
    assert len(frame) > 0
    assert list(frame.dtypes.astype(str).items()) == COLUMNS[name]


@pytest.mark.parametrize("by", ["day", "orchestration"])
def test_costs_keys(edges, by):
    keys = {
        "day": [("day", TIME)],
        "orchestration": [
            (c, "object") for c in ("orchestration_id", "session_id", "task_description")
        ],
    }
    frame = reports.costs(edges, rates=RATES, by=by)
    assert list(frame.dtypes.astype(str).items()) == keys[by] + COLUMNS["costs"][1:]


def test_executions_means_every_started_run_everywhere(edges):
    # 4 failed + 1 completed + 1 in progress, all agent "a", all in orchestration "o".
    add_execution(edges, NOW - dt.timedelta(days=2), "completed")
    add_execution(edges, NOW - dt.timedelta(days=2), "in_progress")
    counts = [6, 5, 1, 4, 1]  # executions, finished, completed, failed, in_progress
    names = [c for c, _ in COUNTS]
    frames = [
        reports.system_health(edges, since=NOW - dt.timedelta(days=30), now=NOW),
        reports.performance_report(edges),
        reports.agent_summary(edges, "a"),
        reports.self_healing(edges, total=False),
        reports.orchestration_summary(edges, "s"),
    ]
    for frame in frames:
        assert frame[names].values.tolist() == [counts]
    assert reports.trends(edges)[names].sum().tolist() == counts
    assert reports.costs(edges, rates=RATES)["finished"].tolist() == [5]


def test_stale_after_is_the_one_name(session):
    add_execution(session, NOW - dt.timedelta(hours=7), "in_progress")
    # The execution, and its orchestration silent since that execution started.
    assert len(reports.stale_runs(session, stale_after="6h", now=NOW)) == 2
    assert len(reports.stale_runs(session, stale_after="8h", now=NOW)) == 0
    health = reports.system_health(session, now=NOW, stale_after="6h").iloc[0]
    assert health["stale_running"] == 2


def frame_of(name, row):
    """A one-row frame with the documented columns and dtypes of report ``name``."""
    return pd.DataFrame([row]).astype(dict(COLUMNS[name]))[[c for c, _ in COLUMNS[name]]]


def test_performance_report_whole_frame(edges):
    add_execution(edges, NOW - dt.timedelta(days=2), "completed", duration_ms=4000)
    add_execution(edges, NOW - dt.timedelta(days=2), "in_progress")
    # Finished durations 5, 7, 1000, 2000, 4000 ms: p95 at rank 3.8, p99 at 3.96.
    expected = frame_of(
        "performance_report",
        {
            "agent_name": "a",
            "executions": 6,
            "finished": 5,
            "completed": 1,
            "failed": 4,
            "in_progress": 1,
            "success_rate": 20.0,
            "avg_duration_ms": 7012 / 5,
            "min_duration_ms": 5,
            "max_duration_ms": 4000,
            "p50_duration_ms": 1000,
            "p95_duration_ms": 2000 + 0.8 * 2000,
            "p99_duration_ms": 2000 + 0.96 * 2000,
            "retries": 0,
            "self_healed_executions": 0,
            "files_created": 0,
            "files_modified": 0,
        },
    )
    pd.testing.assert_frame_equal(reports.performance_report(edges), expected)
    pd.testing.assert_frame_equal(reports.agent_summary(edges, "a"), expected)


def test_system_health_whole_frame(edges):
    # [SINCE, UNTIL): the failed 1000 ms and 2000 ms runs. Orchestration "o" started
    # long before, is still running and silent since UNTIL: one stale run.
    expected = frame_of(
        "system_health",
        {
            "orchestrations": 0,
            "completed_orchestrations": 0,
            "failed_orchestrations": 0,
            "partial_orchestrations": 0,
            "running_orchestrations": 0,
            "executions": 2,
            "finished": 2,
            "completed": 0,
            "failed": 2,
            "in_progress": 0,
            "success_rate": 0.0,
            "avg_duration_ms": 1500,
            "p50_duration_ms": 1500,
            "p95_duration_ms": 1000 + 0.95 * 1000,
            "stale_running": 1,
        },
    )
    found = reports.system_health(edges, since=SINCE, until=UNTIL, now=NOW)
    pd.testing.assert_frame_equal(found, expected)
