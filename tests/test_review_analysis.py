"""Review of the analysis area: demo, trends, charts, stale runs, regressions, rules.

Each test pins a defect found by using the package as a user would.
"""

import datetime as dt

import pytest
from click.testing import CliRunner

from agentmetrics import reports
from agentmetrics.cli import cli
from agentmetrics.demo import build_demo
from agentmetrics.reports.regressions import regressions
from agentmetrics.reports.stale import stale_cutoff

NOW = "2026-03-10T12:00:00Z"
# 1,000,000 days: a valid duration that reaches back before the year 1.
HUGE = "1000000d"


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def no_traceback(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, OverflowError)


# -- huge spans clamp to the start of time instead of an OverflowError ----------------


def test_huge_spans_clamp(db):
    assert stale_cutoff(HUGE, NOW) == "0001-01-01T00:00:00.000Z"
    assert regressions(db, recent=HUGE, now=NOW).empty
    assert regressions(db, baseline=HUGE, now=NOW).empty
    days = reports.trends(db, since=HUGE, until="0001-01-03", now=NOW)
    assert [str(day.date()) for day in days["period"]] == ["0001-01-01", "0001-01-02"]


@pytest.mark.parametrize(
    "args",
    [
        ["reap", "--older-than", HUGE, "--dry-run"],
        ["regressions", "--recent", HUGE],
        ["regressions", "--baseline", HUGE],
        ["health", "--stale-after", HUGE],
    ],
)
def test_cli_huge_spans(db, db_path, args):
    no_traceback(invoke("--db", db_path, *args), 0)


def test_check_huge_window(db, db_path, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "a"\nmetric = "failed_executions"\nalert = 0\nwindow = "1000000d"\n'
        '[[rules]]\nname = "b"\nmetric = "stale_running"\nalert = 0\nolder_than = "1000000d"\n'
    )
    result = invoke("--db", db_path, "check", "--rules", rules)
    no_traceback(result, 0)
    assert result.output.count(" ok ") == 2


def test_demo_days_before_year_one(tmp_path):
    with pytest.raises(ValueError, match="before the year 1"):
        build_demo(tmp_path / "a.db", days=800_000, now="2026-01-01")
    result = invoke("demo", "--db", tmp_path / "b.db", "--days", "1e9")
    no_traceback(result, 1)
    assert "Error: days must not reach back before the year 1" in result.output
    assert not (tmp_path / "b.db").exists()


def test_demo_days_ok_near_year_one(tmp_path):
    built = build_demo(tmp_path / "a.db", days=1, orchestrations=2, now="0001-01-02T12:00:00Z")
    assert built["orchestrations"] == 2
    assert dt.datetime.fromisoformat(built["now"][:-1]).year == 1
