import io
import math
import random
import sqlite3

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import add_runs, cli_result, no_traceback, pandas_3_only

from agentmetrics import reports
from agentmetrics.cli import cli
from agentmetrics.demo import build_demo
from agentmetrics.reports import trend
from agentmetrics.reports.trend import (
    PATTERN_COLUMNS,
    SELF_HEALING_COLUMNS,
    TOTAL_LABEL,
    TREND_COLUMNS,
    normalize_error,
)

NOW = "2026-01-06T00:00:00Z"

# (agent, started_at, status, duration_ms, retry_count, self_healed, error_message)
ROWS = [
    ("alpha", "2026-01-01T10:00:00.000Z", "completed", 1000, 1, 1, None),
    (
        "alpha",
        "2026-01-01T15:00:00.000Z",
        "failed",
        3000,
        2,
        0,
        "Timeout after 30s in /tmp/a1/x.py",
    ),
    ("beta", "2026-01-01T23:59:59.999Z", "completed", 2000, 0, 0, None),
    # 2026-01-02 has nothing
    ("alpha", "2026-01-03T00:00:00.000Z", "completed", 4000, 0, 1, None),
    ("beta", "2026-01-03T01:00:00.000Z", "in_progress", None, 0, 0, None),
    ("beta", "2026-01-03T02:00:00.000Z", "failed", 500, 1, 1, "Timeout after 45s in /srv/b2/y.py"),
    # 2026-01-04 has nothing; 2026-01-05 is a Monday (a new week)
    ("alpha", "2026-01-05T00:00:00.000Z", "failed", 6000, 3, 1, "KeyError: 'user_17'"),
]


@pytest.fixture
def tiny(db):
    db["agent_executions"].insert_all(
        {
            "id": f"e{i}",
            "agent_session_id": f"s{i}",
            "agent_name": agent,
            "started_at": started,
            "status": status,
            "duration_ms": duration,
            "retry_count": retries,
            "self_healed": healed,
            "error_message": error,
        }
        for i, (agent, started, status, duration, retries, healed, error) in enumerate(ROWS)
    )
    return db


def day(text):
    return pd.Timestamp(text, tz="UTC")


def test_daily_trends_by_hand(tiny):
    df = reports.trends(tiny)
    assert list(df.columns) == TREND_COLUMNS
    assert list(df["period"]) == [day(f"2026-01-0{d}") for d in range(1, 6)]
    assert list(df["executions"]) == [3, 0, 3, 0, 1]
    assert list(df["completed"]) == [2, 0, 1, 0, 0]
    assert list(df["failed"]) == [1, 0, 1, 0, 1]
    assert list(df["self_healed_executions"]) == [1, 0, 2, 0, 1]
    assert list(df["retries"]) == [3, 0, 1, 0, 3]
    # Jan 1: 2 of 3 finished completed; Jan 3: 1 of 2 (the one in progress is not finished)
    assert df["success_rate"].tolist()[0] == pytest.approx(200 / 3)
    assert df["success_rate"].tolist()[2] == 50.0
    assert df["success_rate"].tolist()[4] == 0.0
    assert math.isnan(df["success_rate"][1]) and math.isnan(df["success_rate"][3])
    # Jan 1 durations 1000, 2000, 3000: p50 2000, p95 = 2000 + 0.9 * 1000
    assert df["p50_duration_ms"][0] == 2000
    assert df["p95_duration_ms"][0] == pytest.approx(2900)
    # Jan 3 durations 500, 4000: p50 2250, p95 = 500 + 0.95 * 3500
    assert df["p50_duration_ms"][2] == 2250
    assert df["p95_duration_ms"][2] == pytest.approx(3825)
    assert math.isnan(df["p95_duration_ms"][1])
    assert df["executions"].dtype == "int64" and df["success_rate"].dtype == "float64"


def test_weekly_and_hourly(tiny):
    weekly = reports.trends(tiny, freq="W")
    # 2026-01-01 is a Thursday: its week starts Monday 2025-12-29
    assert list(weekly["period"]) == [day("2025-12-29"), day("2026-01-05")]
    assert list(weekly["executions"]) == [6, 1]
    hourly = reports.trends(tiny, freq="h")
    # every hour from 2026-01-01T10 to 2026-01-05T00
    assert len(hourly) == 14 + 24 * 3 + 1
    assert hourly["executions"].sum() == len(ROWS)
    assert hourly["period"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert hourly.set_index("period").loc[day("2026-01-01T23:00"), "executions"] == 1


def test_by_agent_fills_every_period_for_every_agent(tiny):
    df = reports.trends(tiny, by_agent=True)
    assert list(df.columns) == ["period", "agent_name"] + TREND_COLUMNS[1:]
    assert len(df) == 5 * 2
    jan2 = df[df["period"] == day("2026-01-02")]
    assert list(jan2["agent_name"]) == ["alpha", "beta"]
    assert jan2["executions"].eq(0).all()
    beta = df[df["agent_name"] == "beta"].set_index("period")
    assert beta.loc[day("2026-01-03"), "executions"] == 2
    assert beta.loc[day("2026-01-03"), "p50_duration_ms"] == 500


def test_filters_and_windows(tiny):
    alpha = reports.trends(tiny, agent="alpha")
    assert alpha["executions"].sum() == 4
    window = reports.trends(tiny, since="2026-01-02", until="2026-01-04")
    # `until` is excluded, and the empty first day is still a row
    assert list(window["period"]) == [day("2026-01-02"), day("2026-01-03")]
    assert list(window["executions"]) == [0, 3]
    # a span back from `now`: 2026-01-03T12:00 onwards
    spans = reports.trends(tiny, since="2d", now="2026-01-05T12:00:00Z")
    assert list(spans["period"]) == [day("2026-01-03"), day("2026-01-04"), day("2026-01-05")]
    assert list(spans["executions"]) == [0, 0, 1]
    empty = reports.trends(tiny, since="2030-01-01", until="2030-01-03")
    assert list(empty["executions"]) == [0, 0]


def test_empty_database_keeps_columns(db):
    df = reports.trends(db)
    assert df.empty and list(df.columns) == TREND_COLUMNS
    assert list(reports.trends(db, by_agent=True).columns)[:2] == ["period", "agent_name"]
    assert list(reports.error_patterns(db).columns) == PATTERN_COLUMNS
    assert list(reports.self_healing(db).columns) == SELF_HEALING_COLUMNS


@pytest.mark.parametrize("freq", ["M", "day", "", "H"])
def test_bad_freq(tiny, freq):
    with pytest.raises(ValueError, match="use one of h, D, W"):
        reports.trends(tiny, freq=freq)


def test_bad_time(tiny):
    with pytest.raises(ValueError, match="not a time: 'yesterday'"):
        reports.trends(tiny, since="yesterday")


def test_percentiles_match_numpy_on_demo(tmp_path):
    path = tmp_path / "demo.db"
    build_demo(path, orchestrations=150, days=10, now=NOW)
    df = reports.trends(path, by_agent=True).dropna(subset=["p50_duration_ms"])
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT substr(started_at, 1, 10), agent_name, duration_ms FROM agent_executions"
        " WHERE status IN ('completed', 'failed')"
    ).fetchall()
    conn.close()
    groups = {}
    for date, agent, duration in rows:
        groups.setdefault((date, agent), []).append(duration)
    assert len(df) == len(groups)
    for row in df.itertuples():
        values = groups[(row.period.strftime("%Y-%m-%d"), row.agent_name)]
        assert row.p50_duration_ms == pytest.approx(np.percentile(values, 50))
        assert row.p95_duration_ms == pytest.approx(np.percentile(values, 95))


@pytest.mark.parametrize(
    "message,expected",
    [
        ("Timeout after 30s in /tmp/a1/x.py", "Timeout after <n>s in <path>"),
        (
            "AssertionError: 4 of 206 tests failed in tests/api/test_x.py",
            "AssertionError: <n> of <n> tests failed in <path>",
        ),
        ("Timeout waiting for sandbox 277e6acff20f", "Timeout waiting for sandbox <id>"),
        ("row 9b512d42-fb84-48df-a29d-aba12dcf33a1 missing", "row <id> missing"),
        ("bad pointer 0xDEADBEEF", "bad pointer <id>"),
        ("KeyError: 'user_17'", "KeyError: '<value>'"),
        ('No fixture "db_3" found', "No fixture '<value>' found"),
        ("`git push` exited with code 128", "'<value>' exited with code <n>"),
        ("GET https://api.example.com/v1/x?id=3 failed", "GET <url> failed"),
        ("at 2026-11-01T12:00:00.123Z: boom", "at <time>: boom"),
        ("retry 3/5 of ./run.sh and ~/bin/x", "retry <n>/<n> of <path> and <path>"),
        ("C:\\Users\\me\\a.txt locked", "<path> locked"),
        ("session_4821 took 12.5s", "session_<n> took <n>s"),
        # words and short hex stay; digits glued to letters stay
        ("sha256 mismatch in ipv4 cafe block", "sha256 mismatch in ipv4 cafe block"),
        ("  spaced   out\n message ", "spaced out message"),
        (None, "(no error message)"),
        ("", "(no error message)"),
    ],
)
def test_normalize_error(message, expected):
    assert normalize_error(message) == expected


# Pieces meeting each fold's needs or not: quotes, URLs, times, UUIDs, paths, 0x, hex.
PIECES = [
    *("Timeout", "30s", "'key-1'", '"x y"', "`cmd`", "https://a.b/c?d=1", "ftp:/x"),
    *("2026-03-01T10:00:00Z", "2026-03-01 10:00", "550e8400-e29b-41d4-a716-446655440000"),
    *("/tmp/a1/x.py", "C:\\Users\\x", "./rel", "src/app/main.py", "0xDEADBEEF", "0X1f"),
    *("deadbeef1", "abc123", "sha256", "42", "3.14", "\t", ":", "-", "/", "'", "\\"),
]


def test_normalize_error_skips_only_folds_that_cannot_match():
    # A fold is skipped on a message holding none of its needs: the same result as
    # trying every fold.
    rng = random.Random(11)
    for _ in range(3000):
        pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 6))]
        message = "".join(piece + rng.choice(["", " ", ""]) for piece in pieces)
        expected = message
        for pattern, placeholder, _ in trend._FOLDS:
            fold = trend._hex_or_keep if placeholder == "<hexid>" else placeholder
            expected = pattern.sub(fold, expected)
        assert normalize_error(message) == (expected.strip() or "(no error message)"), message


def test_error_patterns(tiny):
    df = reports.error_patterns(tiny)
    assert list(df.columns) == PATTERN_COLUMNS
    assert list(df["pattern"]) == ["Timeout after <n>s in <path>", "KeyError: '<value>'"]
    first = df.iloc[0]
    assert first["count"] == 2
    assert first["agents"] == "alpha, beta" and first["agent_count"] == 2
    assert first["first_seen"] == day("2026-01-01T15:00")
    assert first["last_seen"] == day("2026-01-03T02:00")
    assert first["example"] == "Timeout after 45s in /srv/b2/y.py"  # the latest
    assert list(reports.error_patterns(tiny, limit=1)["pattern"]) == [first["pattern"]]
    assert list(reports.error_patterns(tiny, agent="beta")["count"]) == [1]
    assert reports.error_patterns(tiny, until="2026-01-01T12:00:00Z").empty
    with pytest.raises(ValueError, match="limit must be a whole number of at least 1"):
        reports.error_patterns(tiny, limit=0)


def test_self_healing(tiny):
    df = reports.self_healing(tiny)
    assert list(df.columns) == SELF_HEALING_COLUMNS
    assert list(df["agent_name"]) == ["alpha", "beta", TOTAL_LABEL]
    rows = df.set_index("agent_name")
    # alpha: 4 finished, healed 3 (Jan 1 ok, Jan 3 ok, Jan 5 failed) -> rescued 2
    assert rows.loc["alpha", ["executions", "completed", "failed"]].tolist() == [4, 2, 2]
    assert rows.loc["alpha", ["self_healed_executions", "rescued"]].tolist() == [3, 2]
    assert rows.loc["alpha", "self_healed_rate"] == 75.0
    assert rows.loc["alpha", "rescue_rate"] == pytest.approx(200 / 3)
    # beta: 3 started, 2 finished (the one in progress has no outcome), healed 1 which failed
    assert rows.loc["beta", ["executions", "finished", "in_progress"]].tolist() == [3, 2, 1]
    assert rows.loc["beta", ["self_healed_executions", "rescued"]].tolist() == [1, 0]
    assert rows.loc["beta", "self_healed_rate"] == pytest.approx(100 / 3)
    assert rows.loc["beta", "rescue_rate"] == 0.0
    assert rows.loc[TOTAL_LABEL, ["executions", "self_healed_executions", "rescued"]].tolist() == [
        7,
        4,
        2,
    ]
    assert rows.loc[TOTAL_LABEL, "rescue_rate"] == 50.0
    no_total = reports.self_healing(tiny, total=False, agent="beta")
    assert list(no_total["agent_name"]) == ["beta"]
    none_healed = reports.self_healing(
        tiny, since="2026-01-01T23:00:00Z", agent="beta", until="2026-01-02"
    )
    assert math.isnan(none_healed["rescue_rate"].iloc[0])


def test_durations(tiny):
    df = reports.durations(tiny, agent="beta")
    assert list(df.columns) == ["agent_name", "started_at", "status", "duration_ms"]
    assert list(df["duration_ms"]) == [2000, 500]


# -- CLI ---------------------------------------------------------------------------------


def test_cli_trends(tiny, db_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(db_path), "trends", "--csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ",".join(TREND_COLUMNS)
    assert len(lines) == 1 + 5
    table = runner.invoke(cli, ["trends", "--db", str(db_path), "--agent", "beta", "--freq", "W"])
    assert table.exit_code == 0
    assert "66.7%" not in table.output and "50.0%" in table.output
    as_json = runner.invoke(cli, ["--db", str(db_path), "trends", "--json", "--by-agent"])
    assert as_json.exit_code == 0
    assert len(pd.read_json(io.StringIO(as_json.output))) == 10
    empty = runner.invoke(cli, ["--db", str(db_path), "trends", "--since", "2030-01-01"])
    assert empty.exit_code == 0 and "No agent executions" in empty.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--freq", "M"], "Error: Invalid value for '--freq': 'M' is not one of 'h', 'D', 'W'."),
        (["--since", "last week"], "Error: Invalid value for '--since': not a time: 'last week'"),
        (["--json", "--csv"], "Use just one of --json or --csv"),
    ],
)
def test_cli_trends_bad_input(tiny, db_path, args, message):
    result = CliRunner().invoke(cli, ["--db", str(db_path), "trends", *args])
    assert result.exit_code == 2  # bad option values
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_trends_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "nope.db"), "trends"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert not (tmp_path / "nope.db").exists()


def test_weeks_start_on_monday_whatever_the_day(db):
    # 2026-01-05 is a Monday: one execution a day for two weeks, then a Sunday alone
    days = [f"2026-01-{d:02d}T12:00:00.000Z" for d in range(5, 19)] + ["2026-01-25T23:59:59.999Z"]
    db["agent_executions"].insert_all(
        {
            "id": f"w{i}",
            "agent_session_id": f"w{i}",
            "agent_name": "a",
            "status": "completed",
            "started_at": started,
            "duration_ms": 10,
        }
        for i, started in enumerate(days)
    )
    weekly = reports.trends(db, freq="W")
    assert list(weekly["period"]) == [day("2026-01-05"), day("2026-01-12"), day("2026-01-19")]
    assert list(weekly["executions"]) == [7, 7, 1]


def test_error_pattern_example_is_the_latest_message(monitor):
    # Inserted newest first, so neither insertion order nor rowid picks the answer.
    for session, started, message in [
        ("x-2", "2026-01-03T00:00:00.000Z", "Timeout after 10s"),
        ("x-1", "2026-01-01T00:00:00.000Z", "Timeout after 30s"),
        ("x-3", "2026-01-02T00:00:00.000Z", "Timeout after 20s"),
    ]:
        monitor.start_agent_execution(session, "agent")
        monitor.complete_agent_execution(session, "failed", error_message=message)
        monitor.db.execute(
            "UPDATE agent_executions SET started_at = ? WHERE agent_session_id = ?",
            [started, session],
        )
    (row,) = reports.error_patterns(monitor.db).to_dict("records")
    assert row["count"] == 3 and row["example"] == "Timeout after 10s"


# -- trends: window ends and sizes ---------------------------------------------------------


MARCH_10 = "2026-03-10T12:00:00Z"


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
    result = cli_result(
        "--db",
        db.conn.execute("PRAGMA database_list").fetchone()[2],
        "trends",
        "--since",
        "3d",
        "--until",
        "5d",
        "--now",
        MARCH_10,
    )
    no_traceback(result, 1)
    assert "Error: since (2026-03-07T12:00:00.000Z) is after until (2026-03-05T12:00:00.000Z)" in (
        result.output
    )


@pandas_3_only
def test_too_many_periods_is_an_error(db, db_path):
    # 200 years in hours: 1.75 million rows (and a chart that never finished drawing).
    with pytest.raises(ValueError, match=r"1,753,\d{3} periods of 'h'.* at most 100,000"):
        reports.trends(db, freq="h", since="1826-03-10", now=MARCH_10)
    # Mondays from 1826-03-06 to 2026-03-09: 73,052 days / 7 + 1.
    assert len(reports.trends(db, freq="W", since="1826-03-10", now=MARCH_10)) == 10437
    result = cli_result("--db", db_path, "plot", "trends", "-o", "x.png", "--since", "1600-01-01")
    no_traceback(result, 1)
    assert "periods of 'D'" in result.output and "use a later since" in result.output
