"""Every deliberate error agentmetrics raises is an AgentMetricsError: ``except
AgentMetricsError`` catches bad arguments too (and ``except ValueError`` still does)."""

import io

import pandas as pd
import pytest

import agentmetrics
from agentmetrics import (
    cleanup,
    demo,
    htmlreport,
    otlp,
    plots,
    prometheus,
    rules,
    stats,
    tabular,
    watch,
)
from agentmetrics.errors import AgentMetricsError


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
    "tabular unknown table": lambda p: tabular.write_csv(p, "nope", io.StringIO()),
    "otlp batch_size 0": lambda p: list(otlp.iter_batches([], batch_size=0)),
    "rules metric direction": lambda p: rules.metric("x", "sideways", "count"),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_a_bad_argument_is_an_agentmetrics_error_and_a_value_error(path, call):
    with pytest.raises(AgentMetricsError) as raised:
        call(path)
    assert isinstance(raised.value, ValueError)
