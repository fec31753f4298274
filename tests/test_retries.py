"""The retries report, its CLI command, the attempt columns of trends, the alert metrics
on attempts, and reading rates and HOURS.

Every expected number below is counted by hand from the rows of :data:`ROWS`.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import cli_result, no_traceback
from test_contract import COLUMNS as CONTRACT

from agentmetrics import reports
from agentmetrics.alerting import rules
from agentmetrics.errors import ConfigError, InvalidValue
from agentmetrics.formatting import parse_percent
from agentmetrics.reports._common import window
from agentmetrics.reports.retries import _REASONS

NOW = "2026-03-10T13:00:00.000Z"
RATES = {"default_hourly_rate": 3.6}  # 0.001 USD per second

# id, agent, status, started (10 March), duration ms, attempt, first attempt, error, cost,
# self_healed. Task a: failed twice, rescued by attempt 3 (which self-healed); task b:
# completed at once; task c: failed twice (its last failure not retried); task d: failed,
# retried, the retry still running. reviewer: one self-healed success, one failure.
ROWS = [
    ("a1", "coder", "failed", "10:00", 1000, None, None, "Timeout after 30s in job 123", 0.5, 0),
    ("a2", "coder", "failed", "10:05", 2000, 2, "a1", "Timeout after 45s in job 456", None, 0),
    ("a3", "coder", "completed", "10:20", 3000, 3, "a1", None, None, 1),
    ("b1", "coder", "completed", "11:00", 500, 1, None, None, None, 0),
    ("c1", "coder", "failed", "11:30", 4000, 1, None, "Rate limited: 'key-abc'", None, 0),
    ("c2", "coder", "failed", "11:40", 1000, 2, "c1", "Rate limited: 'key-def'", None, 0),
    ("d1", "coder", "failed", "12:00", 1500, 1, None, "Timeout after 10s in job 9", None, 0),
    ("d2", "coder", "in_progress", "12:10", None, 2, "d1", None, None, 0),
    ("e1", "reviewer", "completed", "10:30", 100, 1, None, None, None, 1),
    ("f1", "reviewer", "failed", "10:40", 200, 1, None, "boom", None, 0),
]
TIMEOUTS = "Timeout after <n>s in job <n>"


def at(clock: str) -> str:
    return f"2026-03-10T{clock}:00.000Z"


@pytest.fixture
def tried(db):
    db.conn.executemany(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at,"
        " duration_ms, attempt, first_attempt_id, error_message, cost_usd, self_healed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r[0], r[0], r[1], r[2], at(r[3]), *r[4:]) for r in ROWS],
    )
    db.conn.commit()
    return db


def expected_frame(rows):
    """The report's frame from hand-written rows (tuples in RETRY_COLUMNS order)."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for name in COLUMNS[1:]:
        if name in ("attempts_per_task", "failed_duration_ms", "failed_cost_usd") or name.endswith(
            "_rate"
        ):
            frame[name] = frame[name].astype("float64")
        elif name != "top_reasons":
            frame[name] = frame[name].astype("int64")
    frame["agent_name"] = frame["agent_name"].astype(object)
    reasons = frame["top_reasons"].astype(object)
    frame["top_reasons"] = reasons.where(reasons.notna(), None)
    return frame


COLUMNS = [name for name, _ in CONTRACT["retries"]]  # as the contract writes them
# coder: finished attempts a1 a2 a3 b1 c1 c2 d1 (d2 runs); tasks a b c d; first attempts
# completed: b; rescued: a (a3); second attempts finished: a2 c2; failed: a1 a2 c1 c2 d1,
# 9.5 s, a1's recorded 0.50 USD and 8.5 s at 0.001 USD/s. Retried after a failure: a1, a2,
# d1 (timeouts) and c1 (rate limit), not c2 (task c's last).
CODER = ("coder", 4, 7, 7 / 4, 3, 25.0, 50.0, 50.0, 2, 1, 1, 5, 9500.0, 0.5085,
         f"{TIMEOUTS} (3); Rate limited: '<value>' (1)")  # fmt: skip
REVIEWER = ("reviewer", 2, 2, 1.0, 1, 50.0, 50.0, 0.0, 0, 0, 1, 1, 200.0, 0.0002, None)
TOTAL = ("(all agents)", 6, 9, 9 / 6, 3, 100 / 3, 50.0, 100 / 3, 2, 1, 2, 6, 9700.0, 0.5087,
         f"{TIMEOUTS} (3); Rate limited: '<value>' (1)")  # fmt: skip


@pytest.mark.parametrize("exact", [True, False], ids=["scan", "rollups"])
def test_retries_by_hand(tried, exact):
    found = reports.retries(tried, rates=RATES, total=True, now=NOW, exact=exact)
    pd.testing.assert_frame_equal(found, expected_frame([CODER, REVIEWER, TOTAL]))


def test_retries_read_the_rollups(tried):
    reports.retries(tried, now=NOW)  # rolls the rows up
    tried.conn.execute("UPDATE am_rollups SET rescued = rescued + 100 WHERE agent_name = 'coder'")
    tried.conn.commit()
    assert reports.retries(tried, now=NOW, exact=False)["rescued_tasks"].tolist() == [101, 0]
    assert reports.retries(tried, now=NOW, exact=True)["rescued_tasks"].tolist() == [1, 0]


def test_a_window_counts_each_attempt_where_it_started(tried):
    # From 10:10: a1 and a2 are out, a3 (the rescue) in; tasks b, c, d; the reviewer's all.
    found = reports.retries(tried, since=at("10:10"), agent="coder", rates=RATES, now=NOW)
    row = found.iloc[0]
    assert (row["tasks"], row["attempts"], row["rescued_tasks"]) == (3, 5, 1)
    assert row["first_attempt_success_rate"] == pytest.approx(100 / 3)
    assert row["eventual_success_rate"] == pytest.approx(200 / 3)  # b, and a's rescue
    assert row["retry_rate"] == pytest.approx(100 / 3)  # c2
    # Ties: by pattern.
    assert row["top_reasons"] == f"Rate limited: '<value>' (1); {TIMEOUTS} (1)"
    assert row["failed_cost_usd"] == pytest.approx(0.0065)  # c1, c2, d1: 6.5 s


def test_rates_are_capped_at_the_window_tasks(tried):
    # [10:20, 11:05): a3 rescues a task first tried before; b is the only task.
    row = reports.retries(tried, since=at("10:20"), until=at("11:05"), agent="coder").iloc[0]
    assert (row["tasks"], row["rescued_tasks"]) == (1, 1)
    assert row["eventual_success_rate"] == 100.0
    # Only a rescue in the window: no task, so no rate.
    row = reports.retries(tried, since=at("10:20"), until=at("10:21"), agent="coder").iloc[0]
    assert row["tasks"] == 0 and math.isnan(row["eventual_success_rate"])
    assert math.isnan(row["attempts_per_task"])


def test_rows_of_the_original_tool_are_first_attempts(db):
    for i, status in enumerate(["completed", "failed", "completed"]):
        db.execute(
            "INSERT INTO agent_executions (id, agent_session_id, agent_name, status,"
            " started_at, duration_ms, error_message) VALUES (?, ?, 'x', ?, ?, 10, 'boom')",
            [f"r{i}", f"r{i}", status, at(f"1{i}:00")],
        )
    row = reports.retries(db).iloc[0]
    counts = row[["tasks", "attempts", "max_attempts", "retried_tasks"]].tolist()
    assert counts == [3, 3, 1, 0]
    assert (
        row["first_attempt_success_rate"] == row["eventual_success_rate"] == pytest.approx(200 / 3)
    )
    assert row["top_reasons"] is None  # failed, never retried


def test_empty_window(tried):
    found = reports.retries(tried, since=at("09:00"), until=at("09:30"), total=True)
    pd.testing.assert_frame_equal(found, expected_frame([]))


# -- trends -------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [True, False], ids=["scan", "rollups"])
def test_trends_attempt_columns_by_hand(tried, exact):
    found = reports.trends(tried, freq="h", agent="coder", now=NOW, exact=exact)
    columns = ["tasks", "first_attempt_success_rate", "retry_rate"]
    # 10h: a1 a2 a3 (task a, failed first, a2 its second attempt); 11h: b1 c1 c2 (tasks
    # b, c; b completed, c2 a second attempt); 12h: d1 (d2 runs: not counted).
    expected = pd.DataFrame(
        {
            "tasks": np.array([1, 2, 1], dtype="int64"),
            "first_attempt_success_rate": [0.0, 50.0, 0.0],
            "retry_rate": [100.0, 50.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(found[columns], expected)


# -- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric,agent,value,status",
    [
        ("first_attempt_success_rate", None, 100 / 3, "alert"),  # below 40
        ("first_attempt_success_rate", "reviewer", 50.0, "warn"),  # below 60
        ("retry_rate", None, 100 / 3, "alert"),  # above 30
        ("retry_rate", "reviewer", 0.0, "ok"),
    ],
)
def test_attempt_metrics(tried, metric, agent, value, status):
    direction = {"first_attempt_success_rate": ("60%", 40), "retry_rate": ("20", "30%")}
    warn, alert = direction[metric]
    rule = rules.make_rule(name="r", metric=metric, agent=agent, warn=warn, alert=alert)
    found = rules.evaluate(tried, [rule], now=NOW).iloc[0]
    assert found["value"] == pytest.approx(value)
    assert found["status"] == status


def test_attempt_metrics_count_samples_in_tasks(tried):
    rule = rules.make_rule(name="r", metric="retry_rate", alert=10, min_samples=7)
    found = rules.evaluate(tried, [rule], now=NOW).iloc[0]
    assert (found["status"], found["detail"]) == ("ok", "too few runs to judge (6, need 7)")


def test_check_reads_attempt_rules_from_a_file(tried, db_path, tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nname = "retries"\nmetric = "retry_rate"\nwindow = "1d"\nalert = "25%"\n'
    )
    result = cli_result("--db", db_path, "check", "--rules", path, "--now", NOW, "--json")
    no_traceback(result, 1)
    (found,) = json.loads(result.stdout)["rules"]
    assert (found["status"], found["alert"]) == ("alert", 25)


# -- rates and HOURS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,number",
    [
        (90, 90.0),
        ("90", 90.0),
        ("90%", 90.0),
        (" 99.5 % ", 99.5),
        ("0.9%", 0.9),
        (0, 0.0),
        ("100%", 100.0),
        (100, 100.0),
        ("1%", 1.0),
    ],  # fmt: skip
)
def test_percents(value, number):
    assert parse_percent(value) == number


@pytest.mark.parametrize(
    "value,message",
    [
        (0.9, "0.9 looks like a fraction: write 90 or 90%, or 0.9% if you mean under one percent"),
        ("0.05", "0.05 looks like a fraction: write 5 or 5%, or 0.05% if you mean under one"),
        (1, "1 looks like a fraction: write 100 or 100%, or 1% if you mean one percent"),
        (150, "150 is not a percent from 0 to 100"),
        ("100.5%", "100.5% is not a percent from 0 to 100"),
        (-5, "-5 is not a percent from 0 to 100"),
        (float("nan"), "nan is not a percent"),
        ("ninety", "not a percent: 'ninety'"),
        (True, "not a percent: True"),
    ],
)
def test_bad_percents(value, message):
    with pytest.raises(InvalidValue) as info:
        parse_percent(value)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "threshold,message",
    [
        ("0.9", "alert: 0.9 looks like a fraction: write 90 or 90%"),
        ('"95.5%"', None),
        ("150", "alert: 150 is not a percent from 0 to 100"),
    ],
)
def test_rules_files_read_rates_as_percents(db, tmp_path, threshold, message):
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rules]]\nname = "r"\nmetric = "success_rate"\nalert = {threshold}\n')
    if message is None:
        (rule,) = rules.load_rules(path).rules
        assert rules.evaluate(db, [rule])["alert"][0] == 95.5
        return
    with pytest.raises(ConfigError, match=message):
        rules.load_rules(path)


@pytest.mark.parametrize(
    "args,message",
    [
        (["health", "24", "--min-success-rate", "0.9"], "0.9 looks like a fraction"),
        (["health", "--min-success-rate", "150"], "150 is not a percent from 0 to 100"),
        (["health", "99999999999999999999"], "hours is more than 100 years"),
        (["retries", "1e7"], "1e7 hours is more than 100 years"),
        (["trends", "--freq", "M"], "'M' is not one of 'h', 'D', 'W'"),
        (["plot", "trends", "-o", "x.png", "--freq", "M"], "'M' is not one of"),
        (["retries", "24", "--since", "7d"], "Give HOURS or --since, not both"),
    ],
)
def test_bad_option_values_exit_2(tried, db_path, args, message):
    result = cli_result("--db", db_path, *args)
    no_traceback(result, 2)
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_health_gate_takes_a_percent(tried, db_path):
    # 24 h before NOW: 9 finished, 3 completed (33.3%).
    args = ["--db", db_path, "health", "24", "--now", NOW, "--min-success-rate"]
    no_traceback(cli_result(*args, "30%"), 0)
    failed = cli_result(*args, "90")
    no_traceback(failed, 1)
    assert "success_rate 33.3% < 90.0%" in failed.output


def test_health_takes_hundred_years(tried, db_path):
    result = cli_result("--db", db_path, "health", str(100 * 366 * 24), "--now", NOW, "--json")
    no_traceback(result, 0)
    assert json.loads(result.stdout)["finished"] == 9


# -- the command -----------------------------------------------------------------------------


def test_retries_command_table(tried, db_path):
    result = cli_result("--db", db_path, "retries", "--now", NOW, "--since", at("10:00"))
    no_traceback(result, 0)
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "agent_name", "tasks", "attempts", "attempts_per_task", "max_attempts",
        "first_attempt_success_rate", "eventual_success_rate", "retry_rate", "rescued_tasks",
        "self_healed_tasks", "failed_duration_ms", "failed_cost_usd",
    ]  # fmt: skip
    assert lines[1].split() == [
        "coder", "4", "7", "1.75", "3", "25.0%", "50.0%", "50.0%", "1", "1", "9s", "$0.50",
    ]  # fmt: skip
    assert lines[2].split() == [
        "reviewer", "2", "2", "1.00", "1", "50.0%", "50.0%", "0.0%", "0", "1",
        "200ms", "<$0.01",
    ]  # fmt: skip
    assert lines[-1] == f"Retried coder after: {TIMEOUTS} (3); Rate limited: '<value>' (1)"


def test_retries_command_hours_and_json(tried, db_path):
    # The last 2 hours before 13:00: from 11:00, b1 c1 c2 d1 of coder.
    result = cli_result("--db", db_path, "retries", "2", "--now", NOW, "--json", "--agent", "coder")
    no_traceback(result, 0)
    (row,) = json.loads(result.stdout)
    assert (row["tasks"], row["attempts"], row["retry_rate"]) == (3, 4, pytest.approx(100 / 3))
    assert row["top_reasons"] == f"Rate limited: '<value>' (1); {TIMEOUTS} (1)"


def test_retries_command_empty(tried, db_path):
    result = cli_result("--db", db_path, "retries", "1", "--now", "2026-03-01")
    no_traceback(result, 0)
    assert result.output == "No finished attempts in this window.\n"


def test_retries_command_defaults_to_the_last_24_hours(tried, db_path):
    # 24 h before 11:00 the next day: from 11:00, b1 c1 c2 d1 of coder (d2 runs).
    args = ["--db", db_path, "retries", "--now", "2026-03-11T11:00:00Z", "--json"]
    result = cli_result(*args, "--agent", "coder")
    no_traceback(result, 0)
    (row,) = json.loads(result.stdout)
    assert (row["tasks"], row["attempts"]) == (3, 4)


def test_reasons_find_a_window_through_its_start_index(tried):
    # Not the agent index read whole for the grouping's order: minutes on 10M rows.
    where, params = window("1d", None, NOW, alias="e")
    plan = tried.execute("EXPLAIN QUERY PLAN " + _REASONS.format(where=where), params).fetchall()
    assert "USING INDEX idx_am_exec_finished_started (started_at>?)" in plan[0][3]
    where, params = window("1d", None, NOW, agent="coder", alias="e")
    plan = tried.execute("EXPLAIN QUERY PLAN " + _REASONS.format(where=where), params).fetchall()
    assert "idx_am_exec_finished_agent (agent_name=? AND started_at>?)" in plan[0][3]
