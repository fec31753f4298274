import datetime as dt
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import add_runs

from agentmetrics.cli import cli
from agentmetrics.demo import SLOW_AGENT, build_demo
from agentmetrics.reports.regression import COLUMNS, holm, regressions

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
NOW_ISO = "2026-03-10T12:00:00.000Z"
SPLIT = NOW - dt.timedelta(days=3)  # recent = 3d, baseline = the 14d before


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Runs:
    """Writes executions with chosen durations and outcomes, spread over a window."""

    def __init__(self, db):
        self.db = db
        self.rows = []

    def add(self, agent, durations, start, end, failed=0, status=None):
        span = (end - start) / len(durations)
        for i, duration in enumerate(durations):
            started = start + span * i + dt.timedelta(seconds=1)
            self.rows.append(
                {
                    "id": f"{agent}-{len(self.rows)}",
                    "agent_session_id": f"{agent}-{len(self.rows)}",
                    "agent_name": agent,
                    "status": status or ("failed" if i < failed else "completed"),
                    "started_at": iso(started),
                    "completed_at": iso(started + dt.timedelta(milliseconds=int(duration))),
                    "duration_ms": int(duration),
                }
            )
        return np.array([int(d) for d in durations], dtype=float)

    def baseline(self, agent, durations, **kwargs):
        return self.add(agent, durations, SPLIT - dt.timedelta(days=14), SPLIT, **kwargs)

    def recent(self, agent, durations, **kwargs):
        return self.add(agent, durations, SPLIT, NOW - dt.timedelta(minutes=1), **kwargs)

    def save(self):
        self.db.table("agent_executions").insert_all(self.rows)


@pytest.fixture
def synthetic(db):
    """Agents with known behaviour; returns the durations written for each window."""
    rng = np.random.default_rng(2026)
    runs = Runs(db)
    known = {}
    # 2x slower recently: must be found.
    known["slowed"] = (
        runs.baseline("slowed", rng.lognormal(11, 0.4, 120)),
        runs.recent("slowed", 2 * rng.lognormal(11, 0.4, 40)),
    )
    # The same distribution in both windows (small and noisy): never flagged.
    for i, sigma in enumerate((0.3, 0.6, 1.0)):
        agent = f"steady-{i}"
        known[agent] = (
            runs.baseline(agent, rng.lognormal(10, sigma, 100)),
            runs.recent(agent, rng.lognormal(10, sigma, 30)),
        )
    # Three very slow recent runs: a big change, but too few runs to page anyone.
    known["blip"] = (
        runs.baseline("blip", rng.lognormal(10, 0.3, 100)),
        runs.recent("blip", 10 * rng.lognormal(10, 0.3, 3)),
    )
    # 8% slower with many runs: significant, but below the practical threshold.
    known["creep"] = (
        runs.baseline("creep", rng.lognormal(10, 0.2, 2000)),
        runs.recent("creep", 1.08 * rng.lognormal(10, 0.2, 800)),
    )
    runs.save()
    return known


def test_regressions_durations(synthetic, db):
    df = regressions(db, now=NOW)
    assert list(df.columns) == COLUMNS
    assert list(df["agent_name"]) == sorted(synthetic)
    assert set(df.loc[df["regressed"], "agent_name"]) == {"slowed"}
    for row in df.itertuples():
        base, recent = synthetic[row.agent_name]
        assert row.metric == "p95_duration_ms"
        assert (row.baseline_n, row.recent_n) == (len(base), len(recent))
        assert row.baseline_value == pytest.approx(np.percentile(base, 95))
        assert row.recent_value == pytest.approx(np.percentile(recent, 95))
        assert row.change == pytest.approx(np.percentile(recent, 95) / np.percentile(base, 95))
    by_agent = df.set_index("agent_name")
    assert by_agent.loc["slowed", "p_value"] < 1e-6
    assert by_agent.loc["slowed", "reason"].startswith("regressed: ")
    assert by_agent.loc["blip", "change"] > 5
    assert by_agent.loc["blip", "reason"] == "too few runs (baseline 100, recent 3; need 20)"
    assert by_agent.loc["creep", "p_value"] < 0.01
    assert by_agent.loc["creep", "reason"].startswith("change too small")
    for agent in ("steady-0", "steady-1", "steady-2"):
        assert not by_agent.loc[agent, "regressed"]


def test_regressions_median(synthetic, db):
    df = regressions(db, now=NOW, metric="p50_duration_ms").set_index("agent_name")
    base, recent = synthetic["slowed"]
    assert df.loc["slowed", "recent_value"] == pytest.approx(np.median(recent))
    assert df.loc["slowed", "change"] == pytest.approx(np.median(recent) / np.median(base))
    assert list(df.index[df["regressed"]]) == ["slowed"]


def test_regressions_options(synthetic, db):
    # Lowering the practical threshold lets the significant 8% creep through.
    df = regressions(db, now=NOW, threshold=1.05).set_index("agent_name")
    assert set(df.index[df["regressed"]]) == {"slowed", "creep"}
    # min_samples is what keeps the three slow runs quiet: each beats all 100 baseline
    # runs, so U = 300, mean 150, variance 3 * 100 * 104 / 12 = 2600: p = 0.0017.
    df = regressions(db, now=NOW, min_samples=3).set_index("agent_name")
    expected = 0.5 * math.erfc((300 - 150 - 0.5) / math.sqrt(2600) / math.sqrt(2))
    assert df.loc["blip", "p_value"] == pytest.approx(expected)
    assert set(df.index[df["regressed"]]) == {"slowed", "blip"}
    # ...and one agent can be asked for alone.
    alone = regressions(db, now=NOW, agent="slowed")
    assert list(alone["agent_name"]) == ["slowed"] and alone["regressed"].all()


def test_regressions_windows(db):
    """Window edges: the split belongs to the recent window; older, newer, unfinished
    and duration-less rows are left out."""
    runs = Runs(db)

    def row(started, duration, status="completed"):
        runs.rows.append(
            {
                "id": f"r{len(runs.rows)}",
                "agent_session_id": f"r{len(runs.rows)}",
                "agent_name": "edge",
                "status": status,
                "started_at": iso(started),
                "duration_ms": duration,
            }
        )

    row(SPLIT, 500)  # recent
    row(SPLIT - dt.timedelta(milliseconds=1), 100)  # baseline
    row(SPLIT - dt.timedelta(days=14), 200)  # first instant of the baseline
    row(SPLIT - dt.timedelta(days=14, milliseconds=1), 9999)  # too old
    row(NOW + dt.timedelta(seconds=1), 9999)  # after now
    row(NOW - dt.timedelta(hours=1), None, status="in_progress")
    row(NOW - dt.timedelta(hours=1), None, status="failed")  # no duration
    runs.save()
    df = regressions(db, now=NOW, min_samples=1)
    assert (df.loc[0, "baseline_n"], df.loc[0, "recent_n"]) == (2, 1)
    assert df.loc[0, "baseline_value"] == pytest.approx(np.percentile([100, 200], 95))
    assert df.loc[0, "recent_value"] == 500
    rate = regressions(db, now=NOW, min_samples=1, metric="success_rate")
    assert (rate.loc[0, "baseline_n"], rate.loc[0, "recent_n"]) == (2, 2)
    assert rate.loc[0, "recent_value"] == 50


def test_regressions_success_rate(db):
    rng = np.random.default_rng(5)
    runs = Runs(db)
    # flaky: 5% failures in the baseline, 30% recently.
    runs.baseline("flaky", rng.lognormal(10, 0.3, 200), failed=10)
    runs.recent("flaky", rng.lognormal(10, 0.3, 60), failed=18)
    # shaky: 3 failures out of 25 recently (12%) against 4% before: a big drop, but not
    # significant at 0.01 with so few runs.
    runs.baseline("shaky", rng.lognormal(10, 0.3, 200), failed=8)
    runs.recent("shaky", rng.lognormal(10, 0.3, 25), failed=3)
    # fine: about the same rate.
    runs.baseline("fine", rng.lognormal(10, 0.3, 200), failed=6)
    runs.recent("fine", rng.lognormal(10, 0.3, 60), failed=2)
    runs.save()
    df = regressions(db, now=NOW, metric="success_rate").set_index("agent_name")
    assert df.loc["flaky", "baseline_value"] == pytest.approx(95.0)
    assert df.loc["flaky", "recent_value"] == pytest.approx(70.0)
    assert df.loc["flaky", "change"] == pytest.approx(-25.0)
    # Pooled z-test by hand: p = (190 + 42) / 260, se = sqrt(p(1-p)(1/60 + 1/200)).
    pooled = 232 / 260
    z = (0.70 - 0.95) / math.sqrt(pooled * (1 - pooled) * (1 / 60 + 1 / 200))
    assert df.loc["flaky", "p_value"] == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)))
    assert list(df.index[df["regressed"]]) == ["flaky"]
    assert df.loc["shaky", "recent_value"] == pytest.approx(88.0)
    assert df.loc["shaky", "change"] == pytest.approx(-8.0)
    assert df.loc["shaky", "reason"].startswith("not significant")
    assert df.loc["fine", "reason"].startswith("change too small")


def test_regressions_noise_never_flags(db):
    """Twenty agents drawn from one distribution in both windows: nothing regressed."""
    rng = np.random.default_rng(11)
    runs = Runs(db)
    for i in range(20):
        runs.baseline(f"agent-{i:02d}", rng.lognormal(10, 0.8, 80), failed=int(rng.integers(0, 8)))
        runs.recent(f"agent-{i:02d}", rng.lognormal(10, 0.8, 25), failed=int(rng.integers(0, 3)))
    runs.save()
    for metric in ("p95_duration_ms", "p50_duration_ms", "success_rate"):
        df = regressions(db, now=NOW, metric=metric)
        assert len(df) == 20
        assert not df["regressed"].any(), df[df["regressed"]]
    # Why the p-values are adjusted: among twenty noise-only agents, one has a raw p95
    # p-value below 0.01 and a 1.26x change that would otherwise page someone.
    df = regressions(db, now=NOW).set_index("agent_name")
    assert df.loc["agent-07", "p_value"] < 0.01 and df.loc["agent-07", "change"] > 1.2
    assert df.loc["agent-07", "reason"].startswith("not significant (adjusted p=")


def test_holm():
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, then max(0.06, 0.04 * 1).
    got = holm([0.01, 0.04, math.nan, 0.03, 0.005])
    assert got[2] != got[2]
    assert [got[i] for i in (0, 1, 3, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])
    assert holm([0.7, 0.6, 0.5]) == [1.0, 1.0, 1.0]
    assert holm([]) == []


def test_regressions_adjusts_over_compared_agents(synthetic, db):
    df = regressions(db, now=NOW).set_index("agent_name")
    assert math.isnan(df.loc["blip", "p_adjusted"])  # too few runs: not in the family
    eligible = df.drop(index="blip")
    assert list(eligible["p_adjusted"]) == pytest.approx(holm(list(eligible["p_value"])))


def test_regressions_empty(db):
    df = regressions(db, now=NOW)
    assert list(df.columns) == COLUMNS
    assert df.empty
    assert str(df["regressed"].dtype) == "bool"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "p99"}, "Unknown metric 'p99': use one of p95_duration_ms"),
        ({"threshold": 0.9}, "threshold for durations is a ratio above 1"),
        ({"metric": "success_rate", "threshold": -1}, "positive drop"),
        ({"min_samples": 0}, "min_samples must be a whole number >= 1"),
        ({"alpha": 1.5}, "alpha must be between 0 and 1"),
        ({"recent": "0d"}, "recent: must be longer than zero"),
        ({"baseline": "later"}, "not a duration"),
    ],
)
def test_regressions_bad_arguments(db, kwargs, message):
    with pytest.raises(ValueError, match=message):
        regressions(db, now=NOW, **kwargs)


DEMO_NOW = "2026-11-01T12:00:00Z"


@pytest.fixture
def demo_path(tmp_path):
    path = tmp_path / "demo.db"
    build_demo(path, now=DEMO_NOW)
    return path


@pytest.mark.parametrize("metric", ["p95_duration_ms", "p50_duration_ms"])
def test_demo_slowed_agent_found(demo_path, metric):
    df = regressions(demo_path, now=DEMO_NOW, metric=metric)
    assert list(df.loc[df["regressed"], "agent_name"]) == [SLOW_AGENT]
    assert len(df) == 7  # the steady agents are compared too, and not flagged


def test_demo_success_rate_steady(demo_path):
    assert not regressions(demo_path, now=DEMO_NOW, metric="success_rate")["regressed"].any()


def invoke(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), "regressions", *args])


def test_cli_regressions_found(demo_path):
    result = invoke(demo_path, "--now", DEMO_NOW)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "1 of 7 agents regressed (p95_duration_ms, last 3d vs the 14d before)"
    assert "agent_name" in lines[1] and "reason" in lines[1]
    (flagged,) = [line for line in lines if "REGRESSED" in line]
    assert flagged.split()[0] == SLOW_AGENT


def test_cli_regressions_json(demo_path):
    result = invoke(demo_path, "--now", DEMO_NOW, "--metric", "success_rate", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 7 and not any(r["regressed"] for r in rows)
    assert set(rows[0]) == set(COLUMNS)


def test_cli_regressions_options(synthetic, db_path):
    args = ["--now", NOW_ISO, "--recent", "3d", "--baseline", "14d"]
    result = invoke(db_path, *args, "--agent", "steady-0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0 of 1 agents regressed")
    result = invoke(db_path, *args, "--threshold", "1.05", "--csv")
    assert result.exit_code == 1
    assert result.output.count("True") == 2  # slowed and creep


def test_cli_regressions_no_data(db_path, db):
    result = invoke(db_path, "--now", NOW_ISO)
    assert result.exit_code == 0
    assert result.output == "0 of 0 agents regressed (p95_duration_ms, last 3d vs the 14d before)\n"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--recent", "soon"], 2, "Error: Invalid value for '--recent': not a duration: 'soon'"),
        (["--threshold", "0.5"], 1, "Error: threshold for durations is a ratio above 1"),
        (["--alpha", "2"], 1, "Error: alpha must be between 0 and 1"),
        (["--min-samples", "0"], 2, "'--min-samples': 0 is not in the range x>=1."),
        (["--metric", "p99"], 2, "Invalid value for '--metric'"),
    ],
)
def test_cli_regressions_bad_input(db_path, db, args, code, message):
    result = invoke(db_path, *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


# -- the success-rate test on rare failures ------------------------------------------------


def test_one_failure_after_a_flawless_baseline_is_noise(db):
    # Baseline: 1000 completed runs; recent: 1 failure in 20 (95%, exactly the 5-point
    # threshold). Given 1 failure among 1020 runs, the chance it falls among the 20
    # recent ones is 20/1020 = 0.0196: not significant at 0.01. The z-test's normal
    # approximation claimed p < 1e-11 and paged.
    add_runs(db, "a", "2026-03-01T00:00:00", 1000)
    add_runs(db, "a", "2026-03-09T00:00:00", 20, failed=1)
    row = regressions(db, metric="success_rate", now=NOW_ISO).iloc[0]
    assert (row["baseline_n"], row["recent_n"], row["change"]) == (1000, 20, -5.0)
    assert row["p_value"] == pytest.approx(20 / 1020)
    assert not row["regressed"]
    assert row["reason"].startswith("not significant")


def test_several_failures_after_a_flawless_baseline_regress(db):
    # 4 failures in 20 recent runs: P(all 4 of 4 failures among the 20 recent of 1020)
    # = C(20, 4) / C(1020, 4).
    add_runs(db, "a", "2026-03-01T00:00:00", 1000)
    add_runs(db, "a", "2026-03-09T00:00:00", 20, failed=4)
    row = regressions(db, metric="success_rate", now=NOW_ISO).iloc[0]
    assert row["p_value"] == pytest.approx(math.comb(20, 4) / math.comb(1020, 4))
    assert row["regressed"]


def test_identical_perfect_windows_are_not_judged_regressed(db):
    add_runs(db, "a", "2026-03-01T00:00:00", 50)
    add_runs(db, "a", "2026-03-09T00:00:00", 50)
    row = regressions(db, metric="success_rate", now=NOW_ISO).iloc[0]
    assert row["change"] == 0 and not row["regressed"]


def test_all_failed_windows(db):
    # Everything failed in both windows: no drop, nothing to flag.
    add_runs(db, "a", "2026-03-01T00:00:00", 40, failed=40)
    add_runs(db, "a", "2026-03-09T00:00:00", 40, failed=40)
    row = regressions(db, metric="success_rate", now=NOW_ISO).iloc[0]
    assert (row["baseline_value"], row["recent_value"]) == (0, 0)
    assert not row["regressed"]


def test_regressions_rejects_nan_threshold(db):
    with pytest.raises(ValueError, match="threshold must be a finite number, got nan"):
        regressions(db, threshold=float("nan"))
