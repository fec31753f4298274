import subprocess
import sys
import warnings

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import add_runs, cli_result, no_traceback

from agentmetrics import plots, reports
from agentmetrics.cli import cli
from agentmetrics.demo import build_demo

NOW = "2026-11-01T12:00:00Z"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "demo.db"
    build_demo(path, orchestrations=120, days=10, now=NOW)
    return path


def trend_frame(agents=None):
    periods = pd.date_range("2026-01-01", periods=4, freq="D", tz="UTC")
    rows = []
    for agent in agents or [None]:
        for i, period in enumerate(periods):
            row = {
                "period": period,
                "executions": 10 + i,
                "completed": 8 + i,
                "failed": 2,
                "success_rate": 100 * (8 + i) / (10 + i),
                "p50_duration_ms": 1000.0 * (i + 1),
                "p95_duration_ms": 3000.0 * (i + 1),
                "self_healed": 1,
                "retries": 2,
            }
            if agent is not None:
                row["agent_name"] = agent
            rows.append(row)
    return pd.DataFrame(rows)


def test_plot_trends_single_series():
    fig = plots.plot_trends(trend_frame())
    top, bottom = fig.axes
    assert fig.get_suptitle() == "Agent executions and success rate over time"
    assert [c.get_label() for c in top.containers] == ["completed", "failed"]
    assert [len(c) for c in top.containers] == [4, 4]
    assert [bar.get_height() for bar in top.containers[1]] == [2, 2, 2, 2]
    # failed bars sit on top of the completed ones
    assert [bar.get_y() for bar in top.containers[1]] == [8, 9, 10, 11]
    assert top.get_ylabel() == "Executions (count)"
    assert len(bottom.get_lines()) == 1
    assert bottom.get_ylabel() == "Success rate (%)"
    assert bottom.get_xlabel() == "Period start (UTC)"
    assert isinstance(bottom.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    np.testing.assert_allclose(
        bottom.get_lines()[0].get_ydata(), [80, 900 / 11, 1000 / 12, 1100 / 13]
    )


def test_plot_trends_by_agent_sums_bars_and_draws_a_line_per_agent():
    fig = plots.plot_trends(trend_frame(["a", "b", "c"]))
    top, bottom = fig.axes
    assert [bar.get_height() for bar in top.containers[0]] == [24, 27, 30, 33]
    assert [line.get_label() for line in bottom.get_lines()] == ["a", "b", "c"]
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == ["a", "b", "c"]


def test_plot_durations_per_agent_in_seconds():
    fig = plots.plot_durations(trend_frame(["a", "b"]))
    p50, p95 = fig.axes
    for ax in (p50, p95):
        assert len(ax.get_lines()) == 2
        assert ax.get_ylabel() == "Duration (s)"
    assert p50.get_title() == "Median (p50) duration of finished executions"
    assert p95.get_title() == "p95 duration of finished executions"
    np.testing.assert_allclose(p95.get_lines()[1].get_ydata(), [3, 6, 9, 12])
    assert fig.get_size_inches().tolist() == list(plots.FIGSIZE)


def test_plot_failures():
    by_agent = pd.DataFrame({"agent_name": ["a", "b", "(all agents)"], "failed": [3, 5, 8]})
    patterns = pd.DataFrame(
        {"pattern": [f"pattern {i} " + "x" * 60 for i in range(10)], "count": range(10, 0, -1)}
    )
    fig = plots.plot_failures(by_agent, patterns, top=4)
    left, right = fig.axes
    assert [bar.get_width() for bar in left.patches] == [3, 5]  # the total row is left out
    assert [t.get_text() for t in left.get_yticklabels()] == ["a", "b"]
    assert [bar.get_width() for bar in right.patches] == [7, 8, 9, 10]  # biggest on top
    labels = [t.get_text() for t in right.get_yticklabels()]
    assert labels[-1].startswith("pattern 0 ") and labels[-1].endswith("…")
    assert left.get_xlabel() == right.get_xlabel() == "Failed executions (count)"
    assert right.get_title() == "Top 4 error patterns"


def _covered_points(fig) -> list[str]:
    """Labels of the lines that run under a legend (sampled along every segment)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # lay the figure out as it is saved
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    boxes = [legend.get_window_extent() for legend in legends]
    covered = []
    for ax in fig.axes:
        for line in ax.get_lines():
            xy = ax.transData.transform(np.column_stack(line.get_data(orig=False)).astype(float))
            xy = xy[~np.isnan(xy).any(axis=1)]
            steps = np.linspace(0, 1, 50)[:, None]
            points = [a + steps * (b - a) for a, b in zip(xy[:-1], xy[1:], strict=True)]
            for x, y in np.concatenate(points or [xy]):
                if any(box.contains(x, y) for box in boxes):
                    covered.append(line.get_label())
                    break
    return covered


def test_agent_legends_cover_no_line(demo_path):
    daily = reports.trends(demo_path, by_agent=True, since="7d", now=NOW)
    assert daily["agent_name"].nunique() == 7
    for fig in (plots.plot_durations(daily), plots.plot_trends(daily)):
        assert fig.legends  # one legend entry per agent...
        assert _covered_points(fig) == []  # ...drawn where no line runs


def test_failure_pattern_labels_are_full_size():
    by_agent = pd.DataFrame({"agent_name": ["a"], "failed": [3]})
    patterns = pd.DataFrame({"pattern": ["Timeout after <n>s"], "count": [3]})
    fig = plots.plot_failures(by_agent, patterns)
    import matplotlib

    default = matplotlib.font_manager.FontProperties(size="medium").get_size_in_points()
    for ax in fig.axes:
        assert all(label.get_fontsize() >= default for label in ax.get_yticklabels())


def test_plot_duration_distribution(demo_path):
    df = reports.durations(demo_path)
    fig = plots.plot_duration_distribution(df)
    (ax,) = fig.axes
    agents = sorted(df["agent_name"].unique())
    assert [t.get_text() for t in ax.get_xticklabels()] == agents
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "Duration (s, log scale)"
    # each box's median line sits at the agent's median duration
    medians = [line.get_ydata()[0] for line in ax.lines if line.get_color() == "C1"]
    expected = [np.median(df[df["agent_name"] == a]["duration_ms"]) / 1000 for a in agents]
    np.testing.assert_allclose(medians, expected)


def test_empty_frames_still_draw():
    frame = trend_frame().iloc[0:0]
    for fig in (plots.plot_trends(frame), plots.plot_durations(frame)):
        assert any(t.get_text() == "No data" for t in fig.axes[0].texts)


def test_missing_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="needs the columns success_rate"):
        plots.plot_trends(trend_frame().drop(columns="success_rate"))
    with pytest.raises(ValueError, match="needs the columns failed"):
        plots.plot_failures(pd.DataFrame({"agent_name": []}), pd.DataFrame())


def test_cli_and_reports_do_not_import_matplotlib():
    code = (
        "import sys, agentmetrics.cli, agentmetrics.reports, agentmetrics.demo; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("chart", ["trends", "durations", "failures", "distribution"])
def test_cli_plot_writes_png(demo_path, tmp_path, chart, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / f"{chart}.png"
    result = CliRunner().invoke(
        cli, ["--db", str(demo_path), "plot", chart, "-o", str(out), "--since", "5d", "--now", NOW]
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"Wrote {out}\n"
    assert out.read_bytes()[:8] == PNG


def test_cli_plot_svg_for_one_agent(demo_path, tmp_path):
    out = tmp_path / "t.svg"
    result = CliRunner().invoke(
        cli, ["--db", str(demo_path), "plot", "durations", "-o", str(out), "--agent", "planner"]
    )
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "planner" in svg and "test-runner" not in svg


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["plot", "pie", "-o", "x.png"], 2, "Invalid value for '{trends|durations|failures|"),
        (["plot", "trends"], 2, "Missing option '-o' / '--output'"),
        (
            ["plot", "trends", "-o", "x.png", "--since", "2001-01-01", "--until", "2001-02-01"],
            1,
            "Error: Nothing to plot: no matching executions in this window",
        ),
        (["plot", "trends", "-o", "x.png", "--agent", "nobody"], 1, "Error: Nothing to plot"),
        (["plot", "trends", "-o", "x.nope"], 2, "Error: Format 'nope' is not supported"),
        (["plot", "trends", "-o", "x.png", "--freq", "Y"], 2, "'Y' is not one of 'h', 'D', 'W'"),
        (
            ["plot", "failures", "-o", "x.png", "--since", "soon"],
            2,
            "Error: Invalid value for '--since': not a time: 'soon'",
        ),
        # 100000 dpi was a MemoryError traceback.
        (["plot", "trends", "-o", "x.png", "--dpi", "100000"], 2, "not in the range 10<=x<=600"),
        (["plot", "trends", "-o", "x.png", "--dpi", "601"], 2, "'--dpi': 601 is not in the range"),
        (["plot", "trends", "-o", "x.png", "--dpi", "9"], 2, "'--dpi': 9 is not in the range"),
    ],
)
def test_cli_plot_bad_input(demo_path, tmp_path, args, code, message):
    result = CliRunner().invoke(cli, ["--db", str(demo_path), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_smallest_dpi(demo_path, tmp_path):
    out = tmp_path / "small.png"
    result = CliRunner().invoke(
        cli, ["--db", str(demo_path), "plot", "trends", "-o", str(out), "--dpi", "10"]
    )
    assert result.exit_code == 0, result.output
    # FIGSIZE is 10 x 6 inches: 100 x 60 pixels at 10 dpi (PNG header: width, height).
    header = out.read_bytes()[16:24]
    assert (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")) == (100, 60)


def test_cli_plot_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", "missing.db", "plot", "trends", "-o", "x.png"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "missing.db" in result.output
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "x.png").exists()


# -- charts on empty, single-period and zero-duration data ---------------------------------


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
    result = cli_result("--db", db_path, "plot", "trends", "-o", target)
    no_traceback(result, 1)
    assert result.output.strip() == f"Error: Cannot write {target}: No such file or directory"


def test_one_run_charts_stay_readable():
    # One agent with one day among three: the axis spans those days, not years.
    frame = trend_frame(["a", "b"]).iloc[[0, 4]].reset_index(drop=True)
    frame.loc[1, "period"] = frame.loc[0, "period"]
    frame.loc[1, "p50_duration_ms"] = frame.loc[0, "p50_duration_ms"]  # same value
    fig = plots.plot_durations(frame)
    left, right = (mdates.num2date(x) for x in fig.axes[1].get_xlim())
    assert (right - left).days <= 2
    # Two agents at one value: distinct hollow markers of different sizes, both visible.
    first, second = fig.axes[0].get_lines()
    assert (first.get_marker(), second.get_marker()) == ("o", "s")
    assert first.get_markersize() > second.get_markersize()
    assert first.get_markerfacecolor() == second.get_markerfacecolor() == "none"
    # Counts of one failure: whole-number ticks only.
    by_agent = pd.DataFrame({"agent_name": ["a"], "failed": [1]})
    patterns = pd.DataFrame({"pattern": ["boom"], "count": [1]})
    failures = plots.plot_failures(by_agent, patterns)
    for ax in failures.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(t == int(t) for t in ticks)
