"""One duration grammar: every duration threshold and setting takes a unit, and a
bare number is an error that shows the units (it used to mean hours here and
milliseconds there)."""

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentmetrics import Monitor
from agentmetrics.alerting import rules
from agentmetrics.cli import cli
from agentmetrics.errors import InvalidValue
from agentmetrics.maintenance import reap
from agentmetrics.outputs.prometheus import metrics_text
from agentmetrics.reports import regressions, stale_runs, system_health
from agentmetrics.timestamps import parse_duration

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
NOW_ISO = "2026-03-10T12:00:00.000Z"


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("600000ms", 600),
        ("90s", 90),
        ("15m", 15 * 60),
        ("1.5h", 90 * 60),
        ("3d", 3 * 24 * 3600),
        ("2w", 14 * 24 * 3600),
        (" 250ms ", 0.25),
    ],
)
def test_every_unit(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("bare", ["600000", " 7 ", "1.5", 600000, 2.5])
def test_bare_number_is_an_error_showing_the_units(bare):
    with pytest.raises(InvalidValue, match=r"needs a unit: use e\.g\. .*ms, 90s, 15m, 1\.5h, 3d"):
        parse_duration(bare)


def test_error_names_the_setting():
    with pytest.raises(InvalidValue) as e:
        parse_duration("600000", "--max-p95")
    assert str(e.value) == (
        "--max-p95: '600000' needs a unit: use e.g. 600000ms, 90s, 15m, 1.5h, 3d, 2w"
    )


@pytest.fixture
def timed(db_path):
    """Finished runs of 2, 4, 6 and 8 s in the last hour, and one stale in_progress run.

    p95 by linear interpolation: rank 0.95 * 3 = 2.85, 6000 + 0.85 * 2000 = 7700 ms.
    """
    base = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    clock = {"at": base}
    m = Monitor(db_path, clock=lambda: clock["at"])
    for i, seconds in enumerate([2, 4, 6, 8]):
        clock["at"] = base + dt.timedelta(minutes=i)
        m.start_agent_execution(f"a-{i}", "coder")
        clock["at"] += dt.timedelta(seconds=seconds)
        m.complete_agent_execution(f"a-{i}", "completed")
    clock["at"] = base - dt.timedelta(days=30)
    m.start_agent_execution("lost", "coder")
    m.close()
    return db_path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    "limit, passes",
    [
        ("7701ms", True),
        ("7699ms", False),
        ("7.7s", True),  # equal to p95: not over
        ("7.6s", False),
        ("0.13m", True),  # 7800 ms
        ("0.12m", False),  # 7200 ms
        ("0.0022h", True),  # 7920 ms
        ("0.002h", False),  # 7200 ms
        ("0.0001d", True),  # 8640 ms
        ("0.00008d", False),  # 6912 ms
        ("0.00002w", True),  # 12096 ms
        ("0.00001w", False),  # 6048 ms
    ],
)
def test_health_max_p95_in_every_unit(timed, limit, passes):
    result = run("--db", timed, "health", "--max-p95", limit)
    assert result.exit_code == (0 if passes else 1), result.output
    assert passes or result.stderr.startswith("Error: Unhealthy: p95_duration_ms 7")


@pytest.mark.parametrize(
    "args, label, number",
    [
        (["health", "--max-p95", "600000"], "--max-p95", "600000"),
        (["health", "--stale-after", "6"], "--stale-after", "6"),
        (["metrics", "--stale-after", "6"], "--stale-after", "6"),
        (["reap", "--stale-after", "6"], "--stale-after", "6"),
        (["regressions", "--recent", "7"], "--recent", "7"),
        (["regressions", "--baseline", "14"], "--baseline", "14"),
    ],
)
def test_cli_bare_numbers_are_one_line_errors(timed, args, label, number):
    before = timed.read_bytes()
    result = run("--db", timed, *args)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: Invalid value for '{label}': '{number}' needs a unit:"
        f" use e.g. {number}ms, 90s, 15m, 1.5h, 3d, 2w\n"
    )
    assert result.stdout == ""
    assert timed.read_bytes() == before  # reap wrote nothing


def test_cli_time_window_spans_need_a_unit(timed):
    # --since 7 silently meant 7 hours.
    result = run("--db", timed, "trends", "--since", "7")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Invalid value for '--since': not a time: '7'")
    assert "6h, 7d, 2w" in result.stderr
    assert run("--db", timed, "trends", "--since", "2h", "--json").exit_code == 0


def test_health_hours_positional_keeps_the_original_meaning(timed):
    # `health [HOURS]` is the original tool's CLI: a bare number of hours.
    assert json.loads(run("--db", timed, "health", "2", "--json").stdout)["executions"] == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda db: stale_runs(db, stale_after=6, now=NOW),
        lambda db: stale_runs(db, stale_after="6", now=NOW),
        lambda db: reap(db, stale_after=6, now=NOW),
        lambda db: regressions(db, recent=7, now=NOW),
        lambda db: regressions(db, baseline="14", now=NOW),
        lambda db: system_health(db, now=NOW, stale_after=6),
        lambda db: metrics_text(db, now=NOW, stale_after=6),
        lambda db: rules.evaluate(db, [rules.Rule("r", "success_rate", window=24, alert=50)]),
        lambda db: rules.evaluate(db, [rules.Rule("r", "p95_duration_ms", alert=600000)]),
    ],
)
def test_python_api_bare_numbers(db, call):
    with pytest.raises(InvalidValue, match="needs a unit: use e.g."):
        call(db)


def test_python_api_takes_timedelta_and_unit_strings(timed):
    # The stale run started 30 days ago: stale after 29 days, not after 31.
    for stale_after, stale in [(dt.timedelta(days=29), 1), ("29d", 1), ("31d", 0), ("5w", 0)]:
        assert len(stale_runs(timed, stale_after=stale_after)) == stale


def test_python_rules_take_timedelta_and_unit_thresholds(timed):
    rule_set = [
        rules.Rule("a", "p95_duration_ms", warn=dt.timedelta(milliseconds=7600), alert="7.8s"),
        rules.Rule("b", "p95_duration_ms", alert=dt.timedelta(seconds=7)),
    ]
    results = rules.evaluate(timed, rule_set)
    assert list(results["status"]) == ["warn", "alert"]
    assert list(results["warn"].fillna(-1)) == [7600, -1]
    assert list(results["alert"]) == [7800, 7000]


def write_rule(extra: str):
    path = Path("agentmetrics.toml")
    path.write_text(f'[[rules]]\nname = "r"\n{extra}\n')
    return path


@pytest.mark.parametrize(
    "extra, key, number",
    [
        ('metric = "p95_duration_ms"\nalert = 600000', "alert", "600000"),
        ('metric = "p50_duration_ms"\nwarn = 1.5', "warn", "1.5"),
        ('metric = "success_rate"\nalert = 90\nwindow = 24', "window", "24"),
        ('metric = "stale_running"\nalert = 0\nstale_after = 6', "stale_after", "6"),
        ('metric = "regressions"\nalert = 0\nbaseline = 14', "baseline", "14"),
    ],
)
def test_rules_bare_numbers_need_a_unit(extra, key, number):
    with pytest.raises(rules.ConfigError) as e:
        rules.load_rules(write_rule(extra))
    assert f"rule 1 ('r'): {key}: '{number}' needs a unit: use e.g. {number}ms, 90s" in str(e.value)


def test_cli_check_bare_duration_threshold_is_a_config_error(timed):
    write_rule('metric = "p95_duration_ms"\nalert = 600000')
    result = run("--db", timed, "check")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: agentmetrics.toml, line 4: rule 1 ('r'): alert: '600000'"
    )


@pytest.mark.parametrize(
    "threshold, status",
    [
        ('"7701ms"', "ok"),
        ('"7699ms"', "alert"),
        ('"7.7s"', "ok"),
        ('"0.12m"', "alert"),  # 7200 ms
        ('"0.0022h"', "ok"),  # 7920 ms
        ('"0.00008d"', "alert"),  # 6912 ms
    ],
)
def test_rules_duration_thresholds_take_units(timed, threshold, status):
    ruleset = rules.load_rules(write_rule(f'metric = "p95_duration_ms"\nalert = {threshold}'))
    result = rules.evaluate(timed, ruleset).iloc[0]
    assert result["value"] == pytest.approx(7700)
    assert result["status"] == status


def test_docs_rules_example_loads(db, tmp_path):
    ci = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    example = ci.split("```toml\n")[1].split("```")[0]
    path = tmp_path / "agentmetrics.toml"
    path.write_text(example)
    results = rules.evaluate(db, rules.load_rules(path)).set_index("name")
    assert results.loc["coder p95", "alert"] == 10 * 60 * 1000


def test_window_spans_take_timedelta_and_refuse_bare_numbers(timed):
    from agentmetrics.reports import performance_report, trends

    now = dt.datetime.now(dt.timezone.utc)
    by_text = trends(timed, freq="h", since="3h", now=now)
    by_timedelta = trends(timed, freq="h", since=dt.timedelta(hours=3), now=now)
    assert by_text.equals(by_timedelta) and by_text["executions"].sum() == 4
    with pytest.raises(InvalidValue, match="'7' needs a unit"):
        trends(timed, since=7)
    with pytest.raises(InvalidValue, match="'7' needs a unit"):
        performance_report(timed, since=7)
