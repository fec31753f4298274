"""Edge cases of the core: store, tracking API, core reports, exchange, cleanup, CLI.

Each test reproduces a defect found in review; expected values are worked out by hand.
"""

import datetime as dt
import shutil
import sqlite3

import pandas as pd
import pytest
import sqlite_utils
from click.testing import CliRunner
from conftest import make_original_db

import agentmetrics
from agentmetrics.cleanup import cleanup
from agentmetrics.cli import cli
from agentmetrics.reports import (
    agent_stats,
    agent_summary,
    failed_orchestrations,
    list_orchestrations,
    orchestration_summary,
    performance_report,
    system_health,
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


# -- a report while a writer writes ---------------------------------------------------------


def _finish_a2(path):
    """What another process does: a2 completes 4 s after it started."""
    writer = agentmetrics.Monitor(path, clock=lambda: T0 + dt.timedelta(seconds=6))
    writer.complete_agent_execution("a2", "completed")
    writer.close()


REPORTS = {
    "system_health": lambda db: system_health(db, hours=24, now=NOW),
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


@pytest.mark.parametrize("name", REPORTS)
def test_reports_see_one_snapshot_while_a_writer_commits(small, tmp_path, name):
    report = REPORTS[name]
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


# -- a plain sqlite_utils.Database --------------------------------------------------------


@pytest.mark.parametrize("original", [False, True])
def test_monitor_on_a_plain_sqlite_utils_database(db_path, original):
    if original:  # the original's schema: no model/cost columns yet
        make_original_db(db_path)
    db = sqlite_utils.Database(db_path)
    monitor = agentmetrics.Monitor(db, clock=Clock(T0))
    monitor.start_agent_execution("a", "coder")
    monitor.clock.now = T0 + dt.timedelta(seconds=2)
    monitor.complete_agent_execution("a", "completed", model="m", cost_usd=0.5)
    row = system_health(db, now=NOW).iloc[0]
    assert (row["completed"], row["avg_duration_ms"]) == (1, 2000)
    db.close()


# -- importing what the original's documented recipe writes ---------------------------------

# `npm run monitor export > all-data.json` (MONITORING.md): npm's banner, then the
# original's rows as better-sqlite3 returns them (snake_case, self_healed 0/1).
NPM_BANNER = "\n> orchestrator@1.0.0 monitor\n> tsx src/monitoring/cli.ts export\n\n"
ORIGINAL_EXPORT = """[
  {
    "id": "0b8f6c1e-8a8e-4d5c-9a43-3f0e2f1d7a10",
    "session_id": "s-orig",
    "task_description": "Build and deploy",
    "status": "completed",
    "started_at": "2026-11-01T10:00:00.000Z",
    "completed_at": "2026-11-01T10:05:00.000Z",
    "duration_ms": 300000,
    "total_tasks": 1,
    "completed_tasks": 1,
    "failed_tasks": 0,
    "git_commit_hash": null,
    "plan_file_path": null,
    "progress_file_path": null,
    "created_at": "2026-11-01 10:00:00",
    "executions": [
      {
        "id": "5d1c2b7a-9f3e-4e21-8c4b-2a6d0e9f8b31",
        "orchestration_id": "0b8f6c1e-8a8e-4d5c-9a43-3f0e2f1d7a10",
        "agent_session_id": "a-orig",
        "agent_name": "backend-agent",
        "task_id": null,
        "task_number": 1,
        "status": "completed",
        "started_at": "2026-11-01T10:00:01.000Z",
        "completed_at": "2026-11-01T10:01:01.000Z",
        "duration_ms": 60000,
        "retry_count": 1,
        "self_healed": 1,
        "files_created": 3,
        "files_modified": 5,
        "error_message": null,
        "summary_report_path": null,
        "session_log_path": null,
        "created_at": "2026-11-01 10:00:01"
      }
    ]
  }
]
"""


@pytest.mark.parametrize(
    ("bom", "banner"), [("", NPM_BANNER), ("\ufeff", ""), ("\ufeff", NPM_BANNER)]
)
def test_import_the_originals_export_as_redirected_by_npm(tmp_path, db_path, bom, banner):
    path = tmp_path / "all-data.json"
    path.write_text(bom + banner + ORIGINAL_EXPORT, encoding="utf-8")
    output = invoke("--db", db_path, "import", path).output
    assert output == (
        "Orchestrations: 1 inserted, 0 updated, 0 skipped\n"
        "Executions: 1 inserted, 0 updated, 0 skipped\n"
    )
    with sqlite3.connect(db_path) as raw:
        row = raw.execute(
            "SELECT e.self_healed, e.retry_count, e.files_modified, e.created_at, o.session_id"
            " FROM agent_executions e JOIN orchestrations o ON o.id = e.orchestration_id"
        ).fetchone()
    assert row == (1, 1, 5, "2026-11-01 10:00:01", "s-orig")


def test_import_jsonl_after_npm_banner_and_error_line_numbers(tmp_path, db_path):
    good = tmp_path / "all.jsonl"
    line = (
        '{"type": "execution", "agent_session_id": "a", "agent_name": "x",'
        ' "status": "completed", "started_at": "2026-11-01T10:00:00.000Z"}\n'
    )
    good.write_text(NPM_BANNER + line, encoding="utf-8")
    assert "Executions: 1 inserted" in invoke("--db", db_path, "import", good).output
    bad = tmp_path / "bad.json"
    bad.write_text(NPM_BANNER + "[\n{,\n]\n", encoding="utf-8")
    result = invoke("--db", db_path, "import", bad, exit_code=1)
    # The banner is four lines, so the "{," of the JSON is line 6 of the file.
    assert result.output.strip().endswith("at line 6)")
