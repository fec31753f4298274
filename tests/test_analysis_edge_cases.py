"""Edge cases of the analysis: demo, trends, charts, stale runs, regressions, rules.

Each test pins a defect found by using the package as a user would.
"""

import datetime as dt
import json
import math
import sqlite3
import warnings

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_original_db
from sqlite_utils import Database

from agentmetrics import open_database, plots, reports
from agentmetrics.cli import cli
from agentmetrics.demo import build_demo
from agentmetrics.maintenance import reap
from agentmetrics.reports.regression import regressions
from agentmetrics.reports.stale import stale_cutoff
from agentmetrics.stats import fisher_exact

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


pandas_3_only = pytest.mark.skipif(
    int(pd.__version__.split(".")[0]) < 3,
    reason="pandas 2 cannot hold timestamps before 1677 (trends says so in a clear error)",
)


@pandas_3_only
def test_huge_spans_clamp(db):
    assert stale_cutoff(HUGE, NOW) == "0001-01-01T00:00:00.000Z"
    assert regressions(db, recent=HUGE, now=NOW).empty
    assert regressions(db, baseline=HUGE, now=NOW).empty
    days = reports.trends(db, since=HUGE, until="0001-01-03", now=NOW)
    assert [str(day.date()) for day in days["period"]] == ["0001-01-01", "0001-01-02"]


@pytest.mark.parametrize(
    "args",
    [
        ["reap", "--stale-after", HUGE, "--dry-run"],
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
        '[[rules]]\nname = "b"\nmetric = "stale_running"\nalert = 0\nstale_after = "1000000d"\n'
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


# -- the success-rate test on rare failures -------------------------------------------


def add_runs(db, agent, start, count, failed=0):
    """``count`` finished executions a minute apart from ``start``; the first ``failed`` fail."""
    begin = dt.datetime.fromisoformat(start)
    offset = db["agent_executions"].count
    db["agent_executions"].insert_all(
        {
            "id": f"e{offset + i}",
            "agent_session_id": f"s{offset + i}",
            "agent_name": agent,
            "status": "failed" if i < failed else "completed",
            "started_at": (begin + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "duration_ms": 1000,
        }
        for i in range(count)
    )


def test_one_failure_after_a_flawless_baseline_is_noise(db):
    # Baseline: 1000 completed runs; recent: 1 failure in 20 (95%, exactly the 5-point
    # threshold). Given 1 failure among 1020 runs, the chance it falls among the 20
    # recent ones is 20/1020 = 0.0196: not significant at 0.01. The z-test's normal
    # approximation claimed p < 1e-11 and paged.
    add_runs(db, "a", "2026-03-01T00:00:00", 1000)
    add_runs(db, "a", "2026-03-09T00:00:00", 20, failed=1)
    row = regressions(db, metric="success_rate", now=NOW).iloc[0]
    assert (row["baseline_n"], row["recent_n"], row["change"]) == (1000, 20, -5.0)
    assert row["p_value"] == pytest.approx(20 / 1020)
    assert not row["regressed"]
    assert row["reason"].startswith("not significant")


def test_several_failures_after_a_flawless_baseline_regress(db):
    # 4 failures in 20 recent runs: P(all 4 of 4 failures among the 20 recent of 1020)
    # = C(20, 4) / C(1020, 4).
    add_runs(db, "a", "2026-03-01T00:00:00", 1000)
    add_runs(db, "a", "2026-03-09T00:00:00", 20, failed=4)
    row = regressions(db, metric="success_rate", now=NOW).iloc[0]
    assert row["p_value"] == pytest.approx(math.comb(20, 4) / math.comb(1020, 4))
    assert row["regressed"]


def test_identical_perfect_windows_are_not_judged_regressed(db):
    add_runs(db, "a", "2026-03-01T00:00:00", 50)
    add_runs(db, "a", "2026-03-09T00:00:00", 50)
    row = regressions(db, metric="success_rate", now=NOW).iloc[0]
    assert row["change"] == 0 and not row["regressed"]


def test_all_failed_windows(db):
    # Everything failed in both windows: no drop, nothing to flag.
    add_runs(db, "a", "2026-03-01T00:00:00", 40, failed=40)
    add_runs(db, "a", "2026-03-09T00:00:00", 40, failed=40)
    row = regressions(db, metric="success_rate", now=NOW).iloc[0]
    assert (row["baseline_value"], row["recent_value"]) == (0, 0)
    assert not row["regressed"]


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_fisher_exact_matches_a_direct_sum(alternative):
    # Direct hypergeometric sums with math.comb, over a grid of small tables.
    for s1, n1, s2, n2 in [(3, 10, 9, 12), (0, 5, 5, 5), (7, 7, 0, 9), (19, 20, 1000, 1000)]:
        total, successes = n1 + n2, s1 + s2

        def pmf(x, n1=n1, total=total, successes=successes):
            return (
                math.comb(successes, x)
                * math.comb(total - successes, n1 - x)
                / math.comb(total, n1)
            )

        support = range(max(0, n1 - (total - successes)), min(successes, n1) + 1)
        if alternative == "less":
            expected = sum(pmf(x) for x in support if x <= s1)
        elif alternative == "greater":
            expected = sum(pmf(x) for x in support if x >= s1)
        else:
            expected = sum(pmf(x) for x in support if pmf(x) <= pmf(s1) * (1 + 1e-7))
        got = fisher_exact(s1, n1, s2, n2, alternative).p_value
        assert got == pytest.approx(min(1.0, expected), rel=1e-9)


def test_fisher_exact_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for s1, n1, s2, n2 in [(3, 10, 9, 12), (0, 5, 5, 5), (12, 40, 30, 41), (1, 1, 0, 1)]:
        table = [[s1, n1 - s1], [s2, n2 - s2]]
        for alternative in ("less", "greater", "two-sided"):
            expected = scipy_stats.fisher_exact(table, alternative=alternative)
            got = fisher_exact(s1, n1, s2, n2, alternative)
            assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)
            assert got.statistic == pytest.approx(expected.statistic, nan_ok=True)


def test_fisher_exact_edges():
    assert all(math.isnan(v) for v in fisher_exact(0, 0, 3, 5))
    with pytest.raises(ValueError, match="between 0 and n"):
        fisher_exact(6, 5, 1, 5)
    with pytest.raises(ValueError, match="Unknown alternative"):
        fisher_exact(1, 5, 1, 5, "bigger")


# -- rules: thresholds TOML accepts but no rule can use -------------------------------


def check_with(db_path, tmp_path, text, *args):
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    return invoke("--db", db_path, "check", "--rules", rules, *args)


RULE = '[[rules]]\nname = "r"\nmetric = "{metric}"\n{extra}\n'


@pytest.mark.parametrize(
    "metric,extra,message",
    [
        # TOML has nan and inf; a nan threshold never compared true: a silent dead rule.
        ("success_rate", "warn = nan", "line 4: rule 1 ('r'): warn: must be a number, got nan"),
        ("p95_duration_ms", "alert = inf", "alert: not a duration: inf"),
        ("failed_executions", "alert = -inf", "alert: must be a number, got -inf"),
        ("regressions", "alert = 0\nthreshold = nan", "threshold: must be a number, got nan"),
        ("regressions", "alert = 0\nalpha = nan", "alpha: must be a number, got nan"),
        ("[1, 2]", "alert = 0", "metric: unknown metric"),
    ],
)
def test_check_rejects_unusable_values(db, db_path, tmp_path, metric, extra, message):
    text = RULE.format(metric=metric, extra=extra)
    if metric.startswith("["):
        text = text.replace('"[1, 2]"', "[1, 2]")
    result = check_with(db_path, tmp_path, text)
    no_traceback(result, 2)
    assert message in result.output


def test_regressions_rejects_nan_threshold(db):
    with pytest.raises(ValueError, match="threshold must be a finite number, got nan"):
        regressions(db, threshold=float("nan"))


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/hook"])
def test_check_notify_malformed_url(db, db_path, tmp_path, url):
    result = check_with(
        db_path,
        tmp_path,
        RULE.format(metric="failed_executions", extra="alert = 0"),
        "--notify",
        url,
    )
    no_traceback(result, 2)
    assert "Invalid value for '--notify': not a valid URL" in result.output


# -- reap on files in the original tool's schema -----------------------------------------

ORIGINAL_RUNS = {
    "orchestrations": [
        {
            "id": "o1",
            "session_id": "s1",
            "status": "running",
            "started_at": "2026-03-01T10:00:00.000Z",
        }
    ],
    "executions": [
        {
            "id": "e1",
            "orchestration_id": "o1",
            "agent_session_id": "a1",
            "agent_name": "x",
            "status": "in_progress",
            "started_at": "2026-03-01T10:05:00.000Z",
        },
        {
            "id": "e2",
            "orchestration_id": "o1",
            "agent_session_id": "a2",
            "agent_name": "x",
            "status": "completed",
            "started_at": "2026-03-01T10:01:00.000Z",
            "completed_at": "2026-03-01T10:03:00.000Z",
            "duration_ms": 120000,
        },
    ],
}


def statuses(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT id, status FROM orchestrations UNION ALL"
            " SELECT id, status FROM agent_executions ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_reap_plain_database_of_an_original_file(tmp_path):
    # The original schema has no metadata_json, where an orchestration's message goes:
    # a plain sqlite_utils.Database (never opened by agentmetrics) used to fail with
    # "no such column: metadata_json".
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    db = Database(path)
    reaped = reap(db, now=NOW)
    assert sorted(reaped["id"]) == ["e1", "o1"]
    assert statuses(path) == [("e1", "failed"), ("e2", "completed"), ("o1", "failed")]
    (metadata,) = db.execute("SELECT metadata_json FROM orchestrations").fetchone()
    assert json.loads(metadata)["error_message"].startswith(
        "abandoned: no activity since 2026-03-01T10:05:00.000Z"
    )
    db.close()


def test_reap_read_only_original_file(tmp_path, lock_down):
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    lock_down(path)
    dry = invoke("--db", path, "reap", "--now", NOW, "--dry-run")
    no_traceback(dry, 0)
    assert "Would reap 1 orchestrations and 1 executions" in dry.output
    result = invoke("--db", path, "reap", "--now", NOW)
    no_traceback(result, 1)
    assert result.output.strip() == (
        "Error: Cannot reap 2 stale runs: the database is read-only"
        " (--dry-run lists them without writing)"
    )
    assert statuses(path) == [("e1", "in_progress"), ("e2", "completed"), ("o1", "running")]
    # Nothing stale: nothing to write, so a read-only file is fine.
    quiet = invoke("--db", path, "reap", "--now", "2026-03-01T12:00:00Z", "--stale-after", "6h")
    no_traceback(quiet, 0)
    assert "Reaped 0 orchestrations and 0 executions" in quiet.output


def test_reap_read_only_migrated_file(tmp_path, lock_down):
    path = make_original_db(tmp_path / "original.db", **ORIGINAL_RUNS)
    open_database(path).close()  # migrated: metadata_json exists
    lock_down(path)
    result = invoke("--db", path, "reap", "--now", NOW)
    no_traceback(result, 1)
    assert "Error: Cannot reap 2 stale runs: the database is read-only" in result.output
    assert statuses(path) == [("e1", "in_progress"), ("e2", "completed"), ("o1", "running")]


# -- charts on empty, single-period and zero-duration data ---------------------------


@pytest.fixture
def one_hour(db):
    add_runs(db, "a", "2026-03-01T10:00:00", 3, failed=1)
    return db


def test_single_hourly_period_bar_is_an_hour_wide(one_hour):
    # A lone period used to get a bar 0.8 days wide, whatever the frequency.
    df = reports.trends(one_hour, freq="h")
    assert len(df) == 1
    fig = plots.plot_trends(df)
    bars = fig.axes[0].patches
    assert bars and all(bar.get_width() == pytest.approx(0.8 / 24) for bar in bars)
    weekly = plots.plot_trends(reports.trends(one_hour, freq="W"))
    assert weekly.axes[0].patches[0].get_width() == pytest.approx(0.8 * 7)


def test_single_period_without_freq(one_hour):
    # A frame built by hand (no attrs): a period not at midnight is an hour.
    df = reports.trends(one_hour, freq="h")
    df.attrs.clear()
    assert plots.plot_trends(df).axes[0].patches[0].get_width() == pytest.approx(0.8 / 24)


def draw(fig, path):
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_by_agent_charts_warn_nothing(db, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found to put in legend"
        draw(plots.plot_trends(reports.trends(db, by_agent=True)), tmp_path / "t.png")
        draw(plots.plot_durations(reports.trends(db, by_agent=True)), tmp_path / "d.png")


def test_distribution_of_zero_durations(tmp_path):
    df = pd.DataFrame({"agent_name": ["a", "a", "b"], "duration_ms": [0, 0, 0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Data has no positive values ... log-scaled"
        fig = plots.plot_duration_distribution(df)
        draw(fig, tmp_path / "z.png")
    assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == ["a", "b"]


def test_cli_plot_into_a_missing_folder(one_hour, db_path, tmp_path):
    target = tmp_path / "no" / "such" / "chart.png"
    result = invoke("--db", db_path, "plot", "trends", "-o", target)
    no_traceback(result, 1)
    assert result.output.strip() == f"Error: Cannot write {target}: No such file or directory"


# -- trends: window ends and sizes -------------------------------------------------------


def days_of(df):
    return [str(period.date()) for period in df["period"]]


def test_trends_since_runs_up_to_now(db):
    # Data on 03-01 only; "the last 5 days" as of 03-04 shows the quiet days up to
    # today as rows, at both ends, instead of stopping at the last execution.
    add_runs(db, "a", "2026-03-01T10:00:00", 3, failed=1)
    df = reports.trends(db, since="5d", now="2026-03-04T12:00:00Z")
    assert days_of(df) == [
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
    ]
    assert list(df["executions"]) == [0, 0, 3, 0, 0, 0]
    hourly = reports.trends(db, freq="h", since="2026-03-01T09:00:00Z", now="2026-03-01T12:30:00Z")
    assert [p.hour for p in hourly["period"]] == [9, 10, 11, 12]
    assert list(hourly["executions"]) == [0, 3, 0, 0]
    # Without since nor until: the data's own range, whatever now is.
    assert days_of(reports.trends(db, now="2026-03-04T12:00:00Z")) == ["2026-03-01"]


def test_trends_quiet_window_is_rows_of_zero(db):
    add_runs(db, "a", "2026-01-01T10:00:00", 2)
    df = reports.trends(db, since="3d", now="2026-03-04T12:00:00Z")
    assert days_of(df) == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert df["executions"].eq(0).all() and df["success_rate"].isna().all()


def test_since_after_until_is_an_error(db):
    for report in (reports.trends, reports.error_patterns, reports.self_healing):
        with pytest.raises(ValueError, match=r"since \(2026-03-05T00:00:00.000Z\) is after until"):
            report(db, since="2026-03-05", until="2026-03-01")
    result = invoke(
        "--db",
        db.conn.execute("PRAGMA database_list").fetchone()[2],
        "trends",
        "--since",
        "3d",
        "--until",
        "5d",
        "--now",
        NOW,
    )
    no_traceback(result, 1)
    assert "Error: since (2026-03-07T12:00:00.000Z) is after until (2026-03-05T12:00:00.000Z)" in (
        result.output
    )


@pandas_3_only
def test_too_many_periods_is_an_error(db, db_path):
    # 200 years in hours: 1.75 million rows (and a chart that never finished drawing).
    with pytest.raises(ValueError, match=r"1,753,\d{3} periods of 'h'.* at most 100,000"):
        reports.trends(db, freq="h", since="1826-03-10", now=NOW)
    # Mondays from 1826-03-06 to 2026-03-09: 73,052 days / 7 + 1.
    assert len(reports.trends(db, freq="W", since="1826-03-10", now=NOW)) == 10437
    result = invoke("--db", db_path, "plot", "trends", "-o", "x.png", "--since", "1600-01-01")
    no_traceback(result, 1)
    assert "periods of 'D'" in result.output and "use a later since" in result.output
