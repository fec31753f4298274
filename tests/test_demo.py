import datetime as dt
import re
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli_result, no_traceback

import agentmetrics
from agentmetrics import reports
from agentmetrics.cli import cli
from agentmetrics.demo import AGENTS, FLAKY_AGENT, MARKER_TABLE, SLOW_AGENT, build_demo
from agentmetrics.errors import AgentMetricsError

NOW = "2026-11-01T12:00:00Z"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SQLITE_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def rows(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    build_demo(path, now=NOW)
    return path


def dump(path):
    return (
        rows(path, "SELECT * FROM orchestrations ORDER BY id"),
        rows(path, "SELECT * FROM agent_executions ORDER BY id"),
    )


def test_same_seed_and_now_give_identical_data_and_reports(tmp_path, demo_path):
    again = tmp_path / "again.db"
    summary = build_demo(again, now=NOW)
    assert summary["orchestrations"] == 600
    assert dump(again) == dump(demo_path)
    for report in (reports.trends, reports.error_patterns, reports.self_healing):
        assert report(again).to_csv() == report(demo_path).to_csv()


def test_another_seed_gives_other_data(tmp_path, demo_path):
    other = tmp_path / "other.db"
    build_demo(other, now=NOW, seed=7)
    assert dump(other)[1] != dump(demo_path)[1]
    assert reports.trends(other).to_csv() != reports.trends(demo_path).to_csv()


def test_shape_of_the_data(demo_path):
    (executions,) = rows(demo_path, "SELECT count(*) FROM agent_executions")
    assert 8 * 600 < executions[0] < 12 * 600
    agents = {
        name for (name,) in rows(demo_path, "SELECT DISTINCT agent_name FROM agent_executions")
    }
    assert agents == {agent.name for agent in AGENTS} and 6 <= len(agents) <= 8
    statuses = dict(rows(demo_path, "SELECT status, count(*) FROM orchestrations GROUP BY 1"))
    assert statuses["completed"] > 0.6 * 600
    assert 1 <= statuses["running"] <= 10
    assert 1 <= statuses["partial"] < 0.2 * 600
    assert 1 <= statuses["failed"] < 0.2 * 600
    # everything inside [now - 30 days, now]
    first, last = rows(demo_path, "SELECT min(started_at), max(started_at) FROM agent_executions")[
        0
    ]
    assert first >= "2026-10-02T12:00:00.000Z" and last < "2026-11-01T12:00:00.000Z"
    # some executions run outside any orchestration
    assert (
        rows(demo_path, "SELECT count(*) FROM agent_executions WHERE orchestration_id IS NULL")[0][
            0
        ]
        > 0
    )


def test_timestamps_use_the_store_formats(demo_path):
    for started, completed, created, duration in rows(
        demo_path, "SELECT started_at, completed_at, created_at, duration_ms FROM agent_executions"
    ):
        assert ISO.match(started) and SQLITE_DATETIME.match(created)
        assert created == started[:10] + " " + started[11:19]
        if completed is not None:
            assert ISO.match(completed)
            elapsed = dt.datetime.fromisoformat(completed[:-1]) - dt.datetime.fromisoformat(
                started[:-1]
            )
            assert elapsed == dt.timedelta(milliseconds=duration)


def test_task_counts_add_up(demo_path):
    counted = rows(
        demo_path,
        """SELECT o.status, o.total_tasks, o.completed_tasks, o.failed_tasks, o.completed_at,
             count(CASE WHEN e.status = 'completed' THEN 1 END),
             count(CASE WHEN e.status = 'failed' THEN 1 END),
             count(CASE WHEN e.status = 'in_progress' THEN 1 END), count(e.id)
           FROM orchestrations o LEFT JOIN agent_executions e ON e.orchestration_id = o.id
           GROUP BY o.id""",
    )
    assert len(counted) == 600
    for status, total, done, failed, completed_at, n_done, n_failed, n_running, n in counted:
        assert (done, failed) == (n_done, n_failed)
        assert n <= total
        if status == "running":
            assert n_running == 1 and completed_at is None
        else:
            assert n_running == 0 and completed_at is not None
        if status in ("completed", "partial"):
            assert done + failed == total
        if status == "completed":
            assert failed == 0
        if status == "partial":
            assert failed > 0 and done > 0
        if status == "failed":
            assert failed > 0


def p95(path, agent, where):
    values = [
        d
        for (d,) in rows(
            path,
            "SELECT duration_ms FROM agent_executions WHERE agent_name = ? AND "
            f"status != 'in_progress' AND {where}",
            [agent],
        )
    ]
    return np.percentile(values, 95)


def test_one_agent_got_slower_in_the_last_week(demo_path):
    cut = "'2026-10-25T12:00:00.000Z'"
    for agent in AGENTS:
        ratio = p95(demo_path, agent.name, f"started_at >= {cut}") / p95(
            demo_path, agent.name, f"started_at < {cut}"
        )
        if agent.name == SLOW_AGENT:
            assert ratio > 1.8
        else:
            assert 0.75 < ratio < 1.33, agent.name


def test_flaky_agent_fails_most_with_few_patterns(demo_path):
    rates = dict(
        rows(
            demo_path,
            "SELECT agent_name, avg(status = 'failed') FROM agent_executions"
            " WHERE status != 'in_progress' GROUP BY 1",
        )
    )
    assert max(rates, key=rates.get) == FLAKY_AGENT
    assert rates[FLAKY_AGENT] > 2 * sorted(rates.values())[-2]
    messages = [
        m
        for (m,) in rows(
            demo_path,
            "SELECT error_message FROM agent_executions WHERE agent_name = ? AND status = 'failed'",
            [FLAKY_AGENT],
        )
    ]
    assert len(set(messages)) > 30  # the raw messages all differ...
    # ...but once numbers, hex ids, quoted values and paths are blanked, three remain
    folded = {re.sub(r"'[^']*'|\S+/\S+|[0-9a-f]{12}|\d+", "_", message) for message in messages}
    assert len(folded) == 3
    patterns = reports.error_patterns(demo_path, agent=FLAKY_AGENT)
    assert len(patterns) == 3 and patterns["count"].sum() == len(messages)


def test_retries_and_self_healing(demo_path):
    ((healed_ok, healed_failed, retried),) = rows(
        demo_path,
        """SELECT count(CASE WHEN self_healed AND status = 'completed' THEN 1 END),
             count(CASE WHEN self_healed AND status = 'failed' THEN 1 END),
             count(CASE WHEN retry_count > 0 THEN 1 END) FROM agent_executions""",
    )
    assert healed_ok > healed_failed > 0
    assert retried > healed_ok + healed_failed
    # failures always carry a message; in-progress runs carry no outcome
    assert rows(
        demo_path,
        "SELECT count(*) FROM agent_executions WHERE status = 'failed' AND error_message IS NULL",
    ) == [(0,)]
    assert rows(
        demo_path,
        "SELECT count(*) FROM agent_executions WHERE status = 'in_progress'"
        " AND (completed_at IS NOT NULL OR duration_ms IS NOT NULL)",
    ) == [(0,)]


def test_scales_with_orchestrations(tmp_path):
    summary = build_demo(tmp_path / "big.db", orchestrations=3000, days=60, now=NOW)
    assert summary["orchestrations"] == 3000
    assert 8 * 3000 < summary["executions"] < 12 * 3000
    assert rows(tmp_path / "big.db", "SELECT count(*) FROM orchestrations") == [(3000,)]


def test_tiny_demo(tmp_path):
    summary = build_demo(tmp_path / "tiny.db", orchestrations=1, days=0.5, now=NOW)
    assert summary["orchestrations"] == 1 and summary["executions"] >= 2


def test_default_now_is_the_current_minute(tmp_path):
    before = dt.datetime.now(dt.timezone.utc)
    summary = build_demo(tmp_path / "now.db", orchestrations=20)
    end = dt.datetime.fromisoformat(summary["now"].replace("Z", "+00:00"))
    assert before - dt.timedelta(minutes=1) <= end <= dt.datetime.now(dt.timezone.utc)
    assert end.second == 0 and end.microsecond == 0
    # so "the last 24 hours" of the real clock has data
    day_ago = (end - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert (
        rows(
            tmp_path / "now.db",
            "SELECT count(*) FROM agent_executions WHERE started_at >= ?",
            [day_ago],
        )[0][0]
        > 0
    )


def test_rebuilds_its_own_demo_but_refuses_other_data(tmp_path):
    path = tmp_path / "mixed.db"
    build_demo(path, orchestrations=30, now=NOW)
    build_demo(path, orchestrations=40, now=NOW)  # an untouched demo: rebuilt
    assert rows(path, "SELECT count(*) FROM orchestrations") == [(40,)]
    assert rows(path, f"SELECT orchestrations FROM {MARKER_TABLE}") == [(40,)]
    # someone tracked real work into it: refuse
    monitor = agentmetrics.Monitor(path)
    monitor.start_orchestration("real-session", "real work")
    monitor.close()
    with pytest.raises(AgentMetricsError, match="already holds 41 orchestrations"):
        build_demo(path, orchestrations=30, now=NOW)
    assert rows(path, "SELECT count(*) FROM orchestrations") == [(41,)]
    build_demo(path, orchestrations=30, now=NOW, replace=True)
    assert rows(path, "SELECT count(*) FROM orchestrations WHERE session_id = 'real-session'") == [
        (0,)
    ]


def test_refuses_a_real_database(db, monitor):
    monitor.start_orchestration("s1")
    with pytest.raises(AgentMetricsError, match="use --replace"):
        build_demo(db, orchestrations=10, now=NOW)
    assert db.execute("SELECT count(*) FROM orchestrations").fetchone() == (1,)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"days": 0}, "days must be a positive number"),
        ({"orchestrations": 0}, "orchestrations must be at least 1"),
        ({"orchestrations": 2.5}, "orchestrations must be a whole number"),
        ({"now": "soon"}, "not a timestamp"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_demo(tmp_path / "bad.db", **kwargs)


# -- CLI ---------------------------------------------------------------------------------


def test_cli_demo_twice_then_reports(tmp_path):
    runner = CliRunner()
    path = tmp_path / "data" / "demo.db"  # the folder is created
    args = ["demo", "--db", str(path), "--orchestrations", "50", "--now", NOW, "--seed", "3"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"Built {path}: 50 orchestrations, ")
    assert "up to 2026-11-01T12:00:00.000Z (seed 3)" in first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and second.output == first.output
    result = runner.invoke(cli, ["--db", str(path), "trends", "--csv"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 31


def test_cli_demo_uses_global_db_and_refuses_real_data(tmp_path):
    path = tmp_path / "real.db"
    monitor = agentmetrics.Monitor(path)
    monitor.start_orchestration("s1")
    monitor.close()
    runner = CliRunner()
    refused = runner.invoke(cli, ["--db", str(path), "demo", "--orchestrations", "5"])
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: The database already holds 1 orchestrations")
    assert "--replace" in refused.output and "Traceback" not in refused.output
    replaced = runner.invoke(cli, ["--db", str(path), "demo", "--orchestrations", "5", "--replace"])
    assert replaced.exit_code == 0, replaced.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--orchestrations", "0"], "'--orchestrations': 0 is not in the range 1<=x<=1000000."),
        (["--days", "-3"], "'--days': -3.0 is not in the range x>0."),
        (["--now", "tomorrow"], "not a timestamp: 'tomorrow'"),
        (["--seed", "x"], "'--seed': 'x' is not a valid whole number."),
        # An INTEGER column holds 64 bits: a bigger seed was an OverflowError traceback.
        (["--seed", str(2**63)], f"{2**63} is not in the range {-(2**63)}<=x<={2**63 - 1}."),
        (["--orchestrations", "10" * 10], "is not in the range 1<=x<=1000000."),
    ],
)
def test_cli_demo_bad_input(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["demo", "--db", str(tmp_path / "d.db"), *args])
    assert result.exit_code == (1 if "--now" in args else 2)  # a bad option value: 2
    assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "d.db").exists()


def test_ensure_demo_builds_once(tmp_path, monkeypatch):
    from agentmetrics import demo

    path = tmp_path / "nb.db"
    assert demo.ensure_demo(path, orchestrations=20) == path
    assert rows(path, f"SELECT now, seed, version FROM {MARKER_TABLE}") == [
        ("2026-11-01T12:00:00.000Z", 42, demo.DEMO_VERSION)
    ]
    calls = []
    monkeypatch.setattr(demo, "build_demo", lambda *a, **k: calls.append(k))
    demo.ensure_demo(path, orchestrations=20)  # the same build: reused
    assert calls == []
    demo.ensure_demo(path, orchestrations=20, seed=5)  # other arguments: rebuilt
    assert calls and calls[0]["seed"] == 5
    monkeypatch.setattr(demo, "DEMO_VERSION", demo.DEMO_VERSION + 1)
    calls.clear()
    demo.ensure_demo(path, orchestrations=20)  # a newer simulation: rebuilt
    assert len(calls) == 1


def test_cli_demo_defaults_to_the_configured_database(tmp_path):
    # the autouse fixture points AGENTMETRICS_DB at tmp_path / "monitoring.db"
    result = CliRunner().invoke(cli, ["demo", "--orchestrations", "10", "--now", NOW])
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "monitoring.db", "SELECT count(*) FROM orchestrations") == [(10,)]


# -- demo: days back to the year 1 ---------------------------------------------------------


def test_demo_days_before_year_one(tmp_path):
    with pytest.raises(ValueError, match="before the year 1"):
        build_demo(tmp_path / "a.db", days=800_000, now="2026-01-01")
    result = cli_result("demo", "--db", tmp_path / "b.db", "--days", "1e9")
    no_traceback(result, 1)
    assert "Error: days must not reach back before the year 1" in result.output
    assert not (tmp_path / "b.db").exists()


def test_demo_days_ok_near_year_one(tmp_path):
    built = build_demo(tmp_path / "a.db", days=1, orchestrations=2, now="0001-01-02T12:00:00Z")
    assert built["orchestrations"] == 2
    assert dt.datetime.fromisoformat(built["now"][:-1]).year == 1
