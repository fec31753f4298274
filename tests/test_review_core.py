"""Review of the core: store, tracking API, core reports, exchange, cleanup and their CLI.

Each test reproduces a defect found in review; expected values are worked out by hand.
"""

import datetime as dt
import sqlite3

import pytest
from click.testing import CliRunner

import agentmetrics
from agentmetrics.cleanup import cleanup
from agentmetrics.cli import cli
from agentmetrics.reports import (
    agent_stats,
    failed_orchestrations,
    list_orchestrations,
)

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.timezone.utc)
NOW = T0 + dt.timedelta(hours=1)
HUGE = "99999999999999999999"  # more than SQLite's largest integer


def invoke(*args, exit_code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    return result


class Clock:
    def __init__(self, moment):
        self.now = moment

    def __call__(self):
        return self.now


@pytest.fixture
def small(db_path):
    """Orchestration s (failed): coder a1 completed in 1 s, coder a2 still running."""
    clock = Clock(T0)
    m = agentmetrics.Monitor(db_path, clock=clock)
    m.start_orchestration("s", "task", total_tasks=2)
    orchestration_id = m.db.execute("SELECT id FROM orchestrations").fetchone()[0]
    m.start_agent_execution("a1", "coder", orchestration_id=orchestration_id)
    clock.now = T0 + dt.timedelta(seconds=1)
    m.complete_agent_execution("a1", "completed")
    clock.now = T0 + dt.timedelta(seconds=2)
    m.start_agent_execution("a2", "coder", orchestration_id=orchestration_id)
    clock.now = T0 + dt.timedelta(seconds=3)
    m.complete_orchestration("s", "failed")
    m.close()
    return db_path


# -- limits beyond SQLite's integers ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list", "-n", HUGE, "--csv"],
        ["failures", HUGE, "--csv"],
        ["agent", "coder", "--list", "-n", HUGE, "--csv"],
    ],
)
def test_huge_limits_mean_everything(small, args):
    output = invoke("--db", small, *args).output
    assert len(output.splitlines()) - 1 == (2 if args[0] == "agent" else 1)


def test_huge_limit_in_the_library(small):
    assert list(list_orchestrations(small, limit=10**30)["session_id"]) == ["s"]
    assert list(failed_orchestrations(small, limit=10**30)["session_id"]) == ["s"]
    assert list(agent_stats(small, "coder", limit=10**30)["agent_session_id"]) == ["a2", "a1"]


# -- cleanup with a retention longer than the calendar ---------------------------------------


def test_cleanup_huge_days_deletes_nothing(small):
    result = invoke("--db", small, "cleanup", "1e300", "--dry-run").output
    assert result.startswith("Would delete 0 orchestrations with 0 executions")
    assert cleanup(small, 1e300, now=NOW).orchestrations == 0
    with sqlite3.connect(small) as raw:
        assert raw.execute("SELECT count(*) FROM agent_executions").fetchone()[0] == 2
