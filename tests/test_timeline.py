"""One run seen whole: reports.timeline, plots.plot_timeline, the terminal waterfall,
`show` and `plot timeline`, the rich display and the HTML report's failed runs.

Expected values are read off the data each test writes (seconds after T0), by hand.
"""

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_original_db
from test_otel_in import OPENINFERENCE, oi, request, span

import agentmetrics
from agentmetrics import plots, reports
from agentmetrics.cli import cli
from agentmetrics.errors import UnknownSession
from agentmetrics.otel.ingest import ingest_request
from agentmetrics.outputs import display, waterfall
from agentmetrics.outputs.htmlreport import render_report
from agentmetrics.reports.run import lanes

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NOW = T0 + dt.timedelta(seconds=30)
UTC = "datetime64[us, UTC]"


def at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0 + dt.timedelta(seconds=seconds)).as_unit("us")


@pytest.fixture
def run_db(db_path):
    """Session ``run-1``: ``lead`` (1-20 s) runs ``worker`` task 1 twice (attempt 1 fails
    2-5 s, attempt 2 completes 6-9 s) and ``reviewer`` (from 10 s, still running);
    ``tester`` (12-15 s, failed) ran beside ``lead``. The orchestration ends partial at 21 s.
    """
    clock = {"at": 0.0}
    m = agentmetrics.Monitor(db_path, clock=lambda: T0 + dt.timedelta(seconds=clock["at"]))

    def step(seconds, call, *args, **kwargs):
        clock["at"] = seconds
        return call(*args, **kwargs)

    orchestration = step(0, m.start_orchestration, "run-1", "ship it")
    for seconds, session, agent, task in (
        (1, "lead", "lead", None),
        (2, "w1", "worker", 1),
        (6, "w2", "worker", 1),
        (10, "rev", "reviewer", 2),
        (12, "solo", "tester", None),
    ):
        step(
            seconds,
            m.start_agent_execution,
            session,
            agent,
            orchestration_id=orchestration,
            task_number=task,
        )
        if session == "w1":
            step(5, m.complete_agent_execution, "w1", "failed", error_message="boom")
        if session == "w2":
            step(9, m.complete_agent_execution, "w2", "completed", input_tokens=100)
    step(15, m.complete_agent_execution, "solo", "failed", error_message="tests red")
    step(20, m.complete_agent_execution, "lead", "completed")
    step(21, m.complete_orchestration, "run-1", "partial")
    db = m.db
    ids = {r["agent_session_id"]: r["id"] for r in db.query("SELECT * FROM agent_executions")}
    db.execute(
        "UPDATE agent_executions SET parent_execution_id = ?"
        " WHERE agent_session_id IN ('w1', 'w2', 'rev')",
        [ids["lead"]],
    )
    db.execute(
        "UPDATE agent_executions SET attempt = 2, first_attempt_id = ?"
        " WHERE agent_session_id = 'w2'",
        [ids["w1"]],
    )
    m.close()
    return db_path, ids


def test_timeline_rows_by_hand(run_db):
    path, ids = run_db
    frame = reports.timeline(path, "run-1")
    assert frame["kind"].tolist() == ["execution"] * 5
    assert frame["id"].tolist() == [ids[s] for s in ("lead", "w1", "w2", "rev", "solo")]
    assert frame["parent_execution_id"].tolist() == [
        None,
        ids["lead"],
        ids["lead"],
        ids["lead"],
        None,
    ]
    assert frame["depth"].tolist() == [0, 1, 1, 1, 0]
    # Lanes: lead, then its children's tasks by start (worker, reviewer), then tester.
    assert frame["lane"].tolist() == [0, 1, 1, 2, 3]
    assert frame["agent_name"].tolist() == ["lead", "worker", "worker", "reviewer", "tester"]
    assert frame["name"].tolist() == frame["agent_name"].tolist()
    assert frame["attempt"].tolist() == [1, 1, 2, 1, 1]
    assert frame["first_attempt_id"].tolist() == [None, None, ids["w1"], None, None]
    assert frame["status"].tolist() == ["completed", "failed", "completed", "in_progress", "failed"]
    np.testing.assert_array_equal(frame["task_number"], [np.nan, 1, 1, 2, np.nan])
    np.testing.assert_array_equal(frame["start_offset_ms"], [1000, 2000, 6000, 10000, 12000])
    np.testing.assert_array_equal(frame["end_offset_ms"], [20000, 5000, 9000, np.nan, 15000])
    np.testing.assert_array_equal(frame["duration_ms"], [19000, 3000, 3000, np.nan, 3000])
    assert frame["started_at"].tolist() == [at(s) for s in (1, 2, 6, 10, 12)]
    assert frame["completed_at"].iloc[3] is pd.NaT and frame["completed_at"].iloc[0] == at(20)
    assert frame["error_message"].tolist() == [None, "boom", None, None, "tests red"]
    np.testing.assert_array_equal(frame["input_tokens"], [np.nan, np.nan, 100, np.nan, np.nan])
    about = frame.attrs["orchestration"]
    assert (about["session_id"], about["status"], about["started_at"]) == (
        "run-1",
        "partial",
        at(0),
    )
    # Nothing stored from OpenTelemetry: spans=True adds no row.
    pd.testing.assert_frame_equal(reports.timeline(path, "run-1", spans=True), frame)


def test_lanes_summarise_tasks(run_db):
    path, _ = run_db
    found = lanes(reports.timeline(path, "run-1"))
    assert found["label"].tolist() == [
        "lead",
        "└ worker #1 (2 attempts)",
        "└ reviewer #2",
        "tester",
    ]
    assert found["status"].tolist() == ["completed", "completed", "in_progress", "failed"]
    assert found["attempts"].tolist() == [1, 2, 1, 1]
    # The worker's lane: from its first attempt's start to its final attempt's end.
    assert found.loc[1, ["start_offset_ms", "end_offset_ms"]].tolist() == [2000, 9000]
    assert found["error_message"].tolist() == [None, "boom", None, "tests red"]


def test_unknown_session_is_a_clear_error(run_db):
    path, _ = run_db
    with pytest.raises(UnknownSession, match="No orchestration with session id 'nope'"):
        reports.timeline(path, "nope")
    result = CliRunner().invoke(cli, ["--db", str(path), "plot", "timeline", "nope", "-o", "x.png"])
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: No orchestration with session id 'nope'\n",
    )


def test_orchestration_without_executions(db_path):
    m = agentmetrics.Monitor(db_path)
    m.start_orchestration("empty")
    m.close()
    frame = reports.timeline(db_path, "empty", spans=True)
    assert frame.empty and list(frame.columns)[:5] == [
        "kind",
        "id",
        "parent_execution_id",
        "depth",
        "lane",
    ]
    fig = plots.plot_timeline(frame)
    assert [t.get_text() for t in fig.axes[0].texts] == ["No data"]
    assert waterfall.render(frame, 80) == ["No executions recorded for this orchestration."]


# -- OpenTelemetry: spans under their executions ---------------------------------------

FAILING_TOOL = span(8, 6, "fetch", 570, 575, oi("TOOL"), status={"code": 2, "message": "timeout"})


@pytest.fixture
def traced(tmp_path):
    path = tmp_path / "traced.db"
    body = json.dumps(request(*OPENINFERENCE, FAILING_TOOL)).encode()
    ingest_request(path, body, "application/json")
    return path


def test_spans_follow_their_execution(traced):
    frame = reports.timeline(traced, "chat-7", spans=True)
    assert frame["kind"].tolist() == ["execution", "llm", "tool", "execution", "llm", "tool"]
    assert frame["name"].tolist() == [
        "researcher_agent",
        "ChatModel",
        "search",
        "writer_agent",
        "ChatModel",
        "fetch",
    ]
    researcher, writer = frame.loc[frame["kind"] == "execution", "id"]
    assert frame["id"].tolist()[1:3] == ["0000000000000003", "0000000000000004"]
    assert frame["parent_execution_id"].tolist() == [None, researcher, researcher] + [
        researcher,
        writer,
        writer,
    ]
    assert frame["depth"].tolist() == [0, 1, 1, 1, 2, 2]
    assert frame["lane"].tolist() == [0, 0, 0, 1, 1, 1]
    assert frame["agent_name"].tolist() == ["researcher_agent"] * 3 + ["writer_agent"] * 3
    # The tool failed, its agent span did not: the writer completed.
    assert frame["status"].tolist() == ["completed"] * 5 + ["failed"]
    # The root span starts the orchestration at 0 ms.
    np.testing.assert_array_equal(frame["start_offset_ms"], [10, 20, 130, 210, 220, 570])
    np.testing.assert_array_equal(frame["end_offset_ms"], [600, 120, 180, 580, 560, 575])
    np.testing.assert_array_equal(frame["duration_ms"], [590, 100, 50, 370, 340, 5])
    np.testing.assert_array_equal(frame["input_tokens"], [5, 5, np.nan, 3, 3, np.nan])
    np.testing.assert_array_equal(frame["output_tokens"], [2, 2, np.nan, 1, 1, np.nan])
    assert frame["model"].tolist() == ["m-1", "m-1", None, "m-2", "m-2", None]
    assert frame["error_message"].tolist()[5] == "timeout"
    assert frame["started_at"].iloc[2] == frame["started_at"].iloc[0] + pd.Timedelta("120ms")
    # Without spans: the executions only, the same rows.
    executions = reports.timeline(traced, "chat-7")
    pd.testing.assert_frame_equal(
        executions, frame[frame["kind"] == "execution"].reset_index(drop=True)
    )


def test_original_tool_file_is_flat(tmp_path):
    path = make_original_db(
        tmp_path / "original.db",
        [dict(id="o", session_id="old", status="failed", started_at="2024-03-01 12:00:00")],
        [
            dict(
                id="e1",
                orchestration_id="o",
                agent_session_id="a1",
                agent_name="backend",
                task_number=1,
                status="completed",
                started_at="2024-03-01 12:00:02",
                completed_at="2024-03-01 12:00:10",
                duration_ms=8000,
            ),
            dict(
                id="e2",
                orchestration_id="o",
                agent_session_id="a2",
                agent_name="tests",
                task_number=2,
                status="failed",
                started_at="2024-03-01 12:00:11",
                completed_at="2024-03-01 12:00:30",
                duration_ms=19000,
                error_message="red",
            ),
        ],
    )
    frame = reports.timeline(path, "old", spans=True)
    assert frame[["depth", "lane", "attempt"]].values.tolist() == [[0, 0, 1], [0, 1, 1]]
    assert frame["start_offset_ms"].tolist() == [2000, 11000]
    assert frame["end_offset_ms"].tolist() == [10000, 30000]


# -- the chart -------------------------------------------------------------------------


def boxes(collection):
    """(left, right, top) of each rectangle in a PolyCollection."""
    return [
        (p.vertices[:, 0].min(), p.vertices[:, 0].max(), p.vertices[:, 1].min())
        for p in collection.get_paths()
    ]


def bars(ax):
    """(label, [(lane, left, width, colour)]) per collection of execution bars (one per
    status, labelled; the spans' collection has no label)."""
    return {
        c.get_label(): [
            (round(top + 0.3), left, right - left, tuple(c.get_facecolor()[0]))
            for left, right, top in boxes(c)
        ]
        for c in ax.collections
        if not c.get_label().startswith("_")
    }


def rgba(name):
    return mcolors.to_rgba(name)


def test_plot_timeline_bars_lanes_and_colours(run_db):
    path, _ = run_db
    fig = plots.plot_timeline(reports.timeline(path, "run-1"), now=NOW)
    (ax,) = fig.axes
    found = bars(ax)
    assert set(found) == {"completed", "failed", "running (to now)"}
    # Seconds: the run is 30 s long up to NOW.
    assert ax.get_xlabel() == "Time since the orchestration started (s)"
    assert found["completed"] == [(0, 1, 19, rgba("tab:green")), (1, 6, 3, rgba("tab:green"))]
    assert found["failed"] == [(1, 2, 3, rgba("tab:red")), (3, 12, 3, rgba("tab:red"))]
    # The reviewer runs from 10 s to NOW (30 s), hatched.
    ((lane, left, width, _),) = found["running (to now)"]
    assert (lane, left, width) == (2, 10, 20)
    assert ax.collections[2].get_hatch() == "//"
    # The failed ones are crossed at their end.
    (crosses,) = ax.get_lines()
    assert crosses.get_marker() == "X"
    assert list(zip(crosses.get_xdata(), crosses.get_ydata(), strict=True)) == [(5, 1), (15, 3)]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["lead", "└ worker #1 (2 attempts)", "└ reviewer #2", "tester"]
    assert ax.get_ylim() == (3.5, -0.5)  # lane 0 on top
    # The worker's two attempts are numbered on its lane.
    assert sorted(t.get_text() for t in ax.texts) == ["#1", "#2"]
    assert fig.get_suptitle() == "run-1 (partial): ship it"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["completed", "failed", "running (to now)"]


def test_plot_timeline_draws_spans_inside_their_lane(traced):
    fig = plots.plot_timeline(reports.timeline(traced, "chat-7", spans=True))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "Time since the orchestration started (ms)"
    (calls,) = [c for c in ax.collections if c.get_label().startswith("_")]
    # llm 20-120 and tool 130-180 in lane 0; llm 220-560 and the failed tool in lane 1.
    assert [(a, b, round(y)) for a, b, y in boxes(calls)] == [
        (20, 120, 0),
        (130, 180, 0),
        (220, 560, 1),
        (570, 575, 1),
    ]
    colors = [tuple(c) for c in calls.get_facecolors()]
    assert colors == [rgba("tab:purple"), rgba("tab:orange"), rgba("tab:purple"), rgba("black")]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "completed",
        "llm call",
        "tool call",
        "failed call",
    ]


def many(count, retried_every=0):
    """A timeline frame of ``count`` one-second executions, one after another."""
    lanes = np.arange(count)
    frame = pd.DataFrame(
        {
            "kind": "execution",
            "lane": lanes,
            "depth": 0,
            "agent_name": [f"agent-{i}" for i in lanes],
            "task_number": np.nan,
            "attempt": 1,
            "status": ["failed" if i % 7 == 3 else "completed" for i in lanes],
            "start_offset_ms": lanes * 1000.0,
            "end_offset_ms": lanes * 1000.0 + 1000,
            "duration_ms": 1000.0,
            "error_message": None,
        }
    )
    return frame


def test_plot_timeline_folds_beyond_500():
    frame = many(520)
    fig = plots.plot_timeline(frame)
    (ax,) = fig.axes
    assert sum(len(c.get_paths()) for c in ax.collections) == 500
    # 500 lanes: every 5th labelled, from the first.
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"agent-{i}" for i in range(0, 500, 5)]
    assert ax.get_ylabel() == "Lanes (1 in 5 labelled)"
    assert fig.get_size_inches()[1] == 20  # not 80 inches
    # Lanes 500 to 519 folded: failed are i % 7 == 3 -> 502, 509, 516.
    assert ax.get_title(loc="left") == (
        "Folded: 20 more executions in 20 lanes (17 completed, 3 failed) after the first 500"
    )
    shown = plots.plot_timeline(many(500))
    assert sum(len(c.get_paths()) for c in shown.axes[0].collections) == 500
    assert shown.axes[0].get_title(loc="left") == ""
    # Up to 100 lanes, each has its label; 101 lanes: one in two.
    for count, step in ((100, 1), (101, 2)):
        lanes_ax = plots.plot_timeline(many(count)).axes[0]
        assert len(lanes_ax.get_yticklabels()) == len(range(0, count, step))
        assert lanes_ax.get_ylabel() == ("" if step == 1 else "Lanes (1 in 2 labelled)")


def test_plot_timeline_one_run_has_axes_around_it():
    fig = plots.plot_timeline(many(1))
    (ax,) = fig.axes
    left, right = ax.get_xlim()
    assert left == 0 and right > 1000  # ms: the bar (0-1000) ends inside the axes
    assert ax.get_ylim() == (0.5, -0.5)
    assert fig.get_size_inches()[1] >= 2.4
    # An instant run is still a visible bar.
    instant = many(1).assign(end_offset_ms=0.0, duration_ms=0.0)
    ((left, right, _),) = boxes(plots.plot_timeline(instant).axes[0].collections[0])
    assert right - left > 0


# -- the terminal ----------------------------------------------------------------------


def test_waterfall_lines(run_db):
    path, _ = run_db
    lines = waterfall.render(reports.timeline(path, "run-1"), 80, now=NOW, color=False)
    # Labels 24 wide, bars 80 - 24 - 26 - 2 = 28 cells for 30 s.
    # Each bar from round(start * 28 / 30 s) to round(end * 28 / 30 s), one cell at least.
    assert lines == [
        " " * 25 + "0ms" + " " * 22 + "30s",
        "lead".ljust(24) + "  " + "█" * 18 + " " * 9 + " completed 19s",
        "└ worker #1 (2 attempts)" + "   1xx 2█" + " " * 20 + " completed 3s (2 attempts)",
        "└ reviewer #2".ljust(24) + " " * 10 + "░" * 19 + " running -",
        "tester".ljust(24) + " " * 12 + "xxx" + " " * 14 + " failed 3s",
        " " * 25 + "↳ tests red",
    ]


def test_waterfall_colours_by_status(run_db):
    path, _ = run_db
    lines = waterfall.render(reports.timeline(path, "run-1"), 80, now=NOW, color=True)
    assert "\x1b[31m1\x1b[0m\x1b[31mx\x1b[0m" in lines[2] and "\x1b[32m█\x1b[0m" in lines[1]
    assert "\x1b[34m░\x1b[0m" in lines[3]


def test_show_pipes_the_metrics_then_the_table(run_db):
    path, _ = run_db
    result = CliRunner().invoke(cli, ["--db", str(path), "show", "run-1"], catch_exceptions=False)
    metrics, table = result.stdout.split("\n\n")
    assert metrics.splitlines()[1].split() == ["session_id", "run-1"]
    rows = table.splitlines()
    assert rows[0].split()[:5] == ["depth", "agent_name", "task_number", "attempt", "status"]
    assert rows[2].split() == [
        "1",
        "worker",
        "1",
        "1",
        "failed",
        "2s",
        "5s",
        "3s",
        "-",
        "-",
        "-",
        "boom",
    ]
    assert rows[3].split()[:9] == ["1", "worker", "1", "2", "completed", "6s", "9s", "3s", "100"]
    assert rows[4].split()[:8] == ["1", "reviewer", "2", "1", "in_progress", "10s", "-", "-"]


def test_show_draws_the_waterfall_on_a_terminal(run_db, monkeypatch):
    path, _ = run_db
    monkeypatch.setattr("agentmetrics.cli._terminal_width", lambda: 80)
    args = ["--db", str(path), "show", "run-1", "--now", NOW.isoformat()]
    view = CliRunner().invoke(cli, args, catch_exceptions=False).stdout.split("\n\n")[1]
    view = view.splitlines()
    assert view[2].startswith("└ worker #1 (2 attempts)   1xx 2█ ")
    assert view[-1].endswith("↳ tests red")


@pytest.mark.parametrize("extension", ["png", "svg"])
def test_cli_plot_timeline(run_db, tmp_path, extension):
    path, _ = run_db
    out = tmp_path / f"run.{extension}"
    result = CliRunner().invoke(
        cli,
        ["--db", str(path), "plot", "timeline", "run-1", "-o", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0 and out.read_bytes()[:4] in (b"\x89PNG", b"<?xm")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["timeline"], "Error: timeline needs a SESSION"),
        (["trends", "run-1"], "Error: trends takes no SESSION"),
    ],
)
def test_cli_plot_session_argument(run_db, tmp_path, args, message):
    path, _ = run_db
    result = CliRunner().invoke(
        cli, ["--db", str(path), "plot", *args, "-o", str(tmp_path / "x.png")]
    )
    assert (result.exit_code, result.stderr.strip()) == (2, message)


# -- notebooks and the HTML report ------------------------------------------------------


def test_run_view_is_a_summary_and_a_chart(run_db):
    path, ids = run_db
    view = display.run(path, "run-1", now=NOW)
    assert repr(view) == "<Run run-1: partial, 5 executions (2 failed)>"
    pd.testing.assert_frame_equal(view.timeline, reports.timeline(path, "run-1", spans=True))
    assert view.summary["executions"].tolist() == [5]
    page = view._repr_html_()
    assert '<td class="status-partial">partial</td>' in page and "<td>ship it</td>" in page
    assert page.count("<svg") == 1
    assert page == display.run(path, "run-1", now=NOW)._repr_html_()  # stable text


def test_monitor_and_orchestration_display(run_db):
    path, _ = run_db
    m = agentmetrics.Monitor(path)
    page = m._repr_html_()
    assert "1 orchestrations (1 partial)" in page and "<code>run-1</code>" in page
    assert page.count("<svg") == 1
    assert repr(m) == "<Monitor test.db>" and "<code>test.db</code>" in page
    with m.orchestration("run-2", "next") as o:
        assert "<td>next</td>" in o._repr_html_()
    m.close()
    missing = agentmetrics.monitor.Orchestration(agentmetrics.Monitor(path), "x", "ghost")
    assert missing._repr_html_() == (
        "<p>Orchestration ghost: No orchestration with session id &#x27;ghost&#x27;</p>"
    )


def test_display_stays_out_of_tracking():
    code = (
        "import sys, agentmetrics.monitor; "
        "print('agentmetrics.outputs.display' in sys.modules, 'matplotlib' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["False", "False"]


def test_report_expands_failed_and_partial_runs(run_db, traced):
    path, _ = run_db
    page = render_report(path, since="2024-02-29", until="2024-03-02", config={})
    section = page[page.index('<section id="failed-runs">') : page.index('<section id="running">')]
    assert section.count("<details>") == 1 and section.count("<svg") == 1
    assert (
        '<span class="status status-partial">partial</span> <code>run-1</code> ship it' in section
    )
    assert "tasks: 0 completed, 0 failed" in section  # as stored: run-1 set no counts
    # A completed orchestration has no entry.
    assert "No failed or partial" in render_report(
        traced, since="2026-05-01", until="2026-06-01", config={}
    )


def test_docs_example_runs_and_shows_its_waterfall(tmp_path, monkeypatch):
    page = (Path(__file__).parent.parent / "docs" / "reports.md").read_text()
    section = page[page.index("## One run, seen whole") : page.index("## Loading rows")]
    example = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)
    shown = re.search(r"```text\n(.+?)\n```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    namespace = {}
    exec(example, namespace)
    assert (tmp_path / "one-run.png").read_bytes()[:4] == b"\x89PNG"
    assert repr(namespace["view"]) == "<Run ticket-42: failed, 5 executions (4 failed)>"
    # What `show` draws on a 100-column terminal.
    args = ["--db", "data/one-run.db", "show", "ticket-42"]
    monkeypatch.setattr("agentmetrics.cli._terminal_width", lambda: 100)
    output = CliRunner().invoke(cli, args, catch_exceptions=False).stdout
    assert output.split("\n\n")[1] == shown + "\n"
