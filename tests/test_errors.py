"""Every deliberate error agentmetrics raises is an AgentMetricsError: ``except
AgentMetricsError`` catches bad arguments too (and ``except ValueError`` still does)."""

import datetime as dt
import io
import sqlite3

import pandas as pd
import pytest
from click.testing import CliRunner

import agentmetrics
from agentmetrics import demo, plots, stats
from agentmetrics.alerting import rules
from agentmetrics.cli import cli
from agentmetrics.errors import AgentMetricsError
from agentmetrics.exchange import write_csv
from agentmetrics.otel.export import iter_batches
from agentmetrics.outputs import htmlreport, prometheus, watch
from agentmetrics.store import cleanup


@pytest.fixture
def path(db_path):
    agentmetrics.open_database(db_path).close()
    return db_path


BAD_CALLS = {
    "cleanup days -1 (the issue)": lambda p: cleanup.cleanup(p, -1),
    "cleanup batch_size 0": lambda p: cleanup.cleanup(p, 1, batch_size=0),
    "build_demo days -1 (the issue)": lambda p: demo.build_demo(p, days=-1),
    "build_demo orchestrations 0": lambda p: demo.build_demo(p, orchestrations=0),
    "build_demo orchestrations 1.5": lambda p: demo.build_demo(p, orchestrations=1.5),
    "build_demo days before the year 1": lambda p: demo.build_demo(p, days=1e9),
    "stats unknown alternative": lambda p: stats.fisher_exact(1, 2, 1, 2, alternative="up"),
    "stats counts out of range": lambda p: stats.two_proportion_z(5, 2, 1, 2),
    "plots without the columns": lambda p: plots.plot_trends(pd.DataFrame({"x": [1]})),
    "htmlreport since after until": lambda p: htmlreport.render_report(
        p, since="2026-03-02", until="2026-03-01"
    ),
    "prometheus buckets": lambda p: prometheus.collect(p, buckets=(2.0, 1.0)),
    "watch recent_minutes 0": lambda p: watch.snapshot(p, recent_minutes=0),
    "tabular unknown table": lambda p: write_csv(p, "nope", io.StringIO()),
    "otlp batch_size 0": lambda p: list(iter_batches([], batch_size=0)),
    "rules metric direction": lambda p: rules.metric("x", "sideways", "count"),
}


# A report's subject that SQLite cannot bind: a lone surrogate, an integer past 64 bits.
UNBINDABLE = {"lone surrogate": "\ud800", "2**64": 2**64}
SUBJECT_REPORTS = {
    "timeline": lambda p, v: agentmetrics.reports.timeline(p, v),
    "executions": lambda p, v: agentmetrics.reports.executions(p, v),
    "orchestration_summary": lambda p, v: agentmetrics.reports.orchestration_summary(p, v),
    "agent_stats": lambda p, v: agentmetrics.reports.agent_stats(p, v),
    "agent_summary": lambda p, v: agentmetrics.reports.agent_summary(p, v),
    "performance agent=": lambda p, v: agentmetrics.reports.performance_report(p, agent=v),
    "retries agent=": lambda p, v: agentmetrics.reports.retries(p, agent=v),
    "trends agent=": lambda p, v: agentmetrics.reports.trends(p, agent=v),
    "execution_rows agent=": lambda p, v: agentmetrics.reports.execution_rows(p, agent=v),
}
BAD_CALLS |= {
    f"{report} {kind}": lambda p, report=report, value=value: SUBJECT_REPORTS[report](p, value)
    for report in SUBJECT_REPORTS
    for kind, value in UNBINDABLE.items()
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_a_bad_argument_is_an_agentmetrics_error_and_a_value_error(path, call):
    with pytest.raises(AgentMetricsError) as raised:
        call(path)
    assert isinstance(raised.value, ValueError)


def tables(path):
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"'))) for name in names}
    finally:
        conn.close()


def test_a_read_command_that_ends_in_error_changes_no_tracked_row(db_path):
    """docs/cli.md: an error writes nothing but the derived rollup tables a read brings up to
    date first (here a failed gate, after the report that refreshed them)."""
    now = [dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)]
    monitor = agentmetrics.Monitor(db_path, clock=lambda: now[0])
    for n in range(5):
        monitor.start_agent_execution(f"a{n}", "coder")
        now[0] += dt.timedelta(seconds=2)
        monitor.complete_agent_execution(f"a{n}", "completed")
    monitor.close()
    before = tables(db_path)
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "health", "--max-p95", "1ms", "--now", "2026-03-01T01:00Z"]
    )
    assert result.exit_code == 1
    assert result.stderr == "Error: Unhealthy: p95_duration_ms 2s > 1ms\n"
    after = tables(db_path)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"am_rollups", "am_rollup_sketches", "am_rollup_state"}  # rolled up
    assert set(after) == set(before)
