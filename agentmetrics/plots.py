"""Charts: report DataFrame in, matplotlib ``Figure`` out.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so they
need no GUI backend and leave no global state: save one with ``fig.savefig(path)``,
or let Jupyter show it. Sizes are fixed so a figure's text repr is stable.

>>> from agentmetrics import plots, reports
>>> fig = plots.plot_trends(reports.trends("data/demo.db"))  # doctest: +SKIP
>>> fig.savefig("trends.png")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import InvalidValue
from .reports.cost import METHOD_COLUMNS, METHODS
from .reports.run import MAX_EXECUTIONS, fold, lanes, now_offset
from .reports.trend import TOTAL_LABEL

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (10.0, 6.0)
WIDE_FIGSIZE = (12.0, 5.0)
_LABEL_CHARS = 48


def _figure(nrows: int = 1, ncols: int = 1, figsize=FIGSIZE, **kwargs) -> tuple[Figure, list]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, list(axes.flat)


def _dates(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("Period start (UTC)")


def _naive(times: pd.Series) -> pd.Series:
    """UTC datetimes without a timezone, which matplotlib plots as UTC."""
    times = pd.to_datetime(times, utc=True)
    return times.dt.tz_convert("UTC").dt.tz_localize(None)


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise InvalidValue(f"{what} needs the columns {', '.join(missing)} (from reports.{what})")


def _per_agent(df: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    if "agent_name" not in df.columns:
        return [(None, df)]
    return [(name, rows) for name, rows in df.groupby("agent_name", sort=True)]


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)


def plot_trends(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Executions per period (completed and failed stacked) above the success rate.

    :param df: :func:`agentmetrics.reports.trend` output; with ``by_agent=True``
      the bars sum every agent and the success rate has one line per agent
    """
    _require(df, ["period", "executions", "completed", "failed", "success_rate"], "trends")
    fig, (top, bottom) = _figure(2, 1, sharex=True)
    fig.suptitle(title or "Agent executions and success rate over time")
    totals = df.groupby("period", sort=True)[["executions", "completed", "failed"]].sum()
    periods = _naive(pd.Series(totals.index))
    width = _bar_width(periods, df.attrs.get("freq"))
    top.bar(periods, totals["completed"], width, label="completed", color="tab:green")
    top.bar(
        periods,
        totals["failed"],
        width,
        bottom=totals["completed"],
        label="failed",
        color="tab:red",
    )
    top.set_ylabel("Executions (count)")
    top.set_title("Executions per period")
    top.legend(loc="upper left")
    _lines(bottom, df, "success_rate")
    bottom.set_ylabel("Success rate (%)")
    bottom.set_title("Success rate (completed / finished)")
    bottom.set_ylim(_rate_floor(df["success_rate"]), 101)
    if "agent_name" in df.columns and not df.empty:
        _agent_legend(fig, bottom)
    if df.empty:
        _no_data(top)
    _dates(bottom)
    return fig


# Hollow markers of shrinking size, so agents at the same value nest, not hide.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _lines(ax: Axes, df: pd.DataFrame, column: str, divisor: float = 1) -> None:
    """One line per agent of ``column`` over the periods."""
    for i, (name, rows) in enumerate(_per_agent(df)):
        ax.plot(
            _naive(rows["period"]),
            rows[column] / divisor,
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=max(3.0, 9.0 - 1.5 * (i % len(_MARKERS))),
            markerfacecolor="none",
            label=name,
        )


def _agent_legend(fig: Figure, ax: Axes) -> None:
    """One entry per agent under the charts, where it cannot cover a line."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 7))


_PERIOD_DAYS = {"h": 1 / 24, "D": 1.0, "W": 7.0}


def _bar_width(periods: pd.Series, freq: str | None = None) -> float:
    """Bar width in days: 80% of a period (``trends`` records its ``freq`` in
    ``df.attrs``), or of the gap between periods."""
    if freq in _PERIOD_DAYS:
        return 0.8 * _PERIOD_DAYS[freq]
    if len(periods) < 2:
        # One period: an hour unless it starts at midnight.
        midnight = len(periods) == 0 or periods.iloc[0] == periods.iloc[0].normalize()
        return 0.8 if midnight else 0.8 / 24
    step = periods.diff().dropna().min()
    return 0.8 * step / pd.Timedelta(days=1)


def _rate_floor(rates: pd.Series) -> float:
    lowest = rates.min()
    if pd.isna(lowest):
        return 0
    return max(0, (int(lowest) // 10) * 10 - 10)


def plot_durations(df: pd.DataFrame, title: str | None = None) -> Figure:
    """p50 and p95 duration per period, one line per agent.

    :param df: :func:`agentmetrics.reports.trend` output, ideally ``by_agent=True``
    """
    _require(df, ["period", "p50_duration_ms", "p95_duration_ms"], "trends")
    fig, axes = _figure(2, 1, sharex=True)
    fig.suptitle(title or "Execution duration over time")
    for ax, column, label in zip(
        axes, ("p50_duration_ms", "p95_duration_ms"), ("Median (p50)", "p95"), strict=True
    ):
        _lines(ax, df, column, 1000)
        ax.set_ylabel("Duration (s)")
        ax.set_title(f"{label} duration of finished executions")
        ax.set_ylim(bottom=0)
    if "agent_name" in df.columns and not df.empty:
        _agent_legend(fig, axes[0])
    if df.empty:
        _no_data(axes[0])
    _dates(axes[1])
    if not df.empty:  # an agent with one point would stretch the axis over years
        periods = _naive(pd.Series(df["period"].unique())).sort_values()
        margin = pd.Timedelta(days=_bar_width(periods, df.attrs.get("freq")))
        axes[1].set_xlim(periods.iloc[0] - margin, periods.iloc[-1] + margin)
    return fig


def plot_failures(
    by_agent: pd.DataFrame, patterns: pd.DataFrame, top: int = 8, title: str | None = None
) -> Figure:
    """Failed executions per agent (left) and per error pattern (right).

    :param by_agent: a frame with ``agent_name`` and ``failed`` (from
      :func:`agentmetrics.reports.self_healing` or ``performance_report``); a total
      row is ignored
    :param patterns: :func:`agentmetrics.reports.error_patterns` output
    :param top: show at most this many patterns (the most frequent)
    """
    _require(by_agent, ["agent_name", "failed"], "self_healing")
    _require(patterns, ["pattern", "count"], "error_patterns")
    fig, (left, right) = _figure(1, 2, figsize=WIDE_FIGSIZE, width_ratios=(1, 2))
    fig.suptitle(title or "Where executions fail")
    agents = by_agent[by_agent["agent_name"] != TOTAL_LABEL].sort_values(
        ["failed", "agent_name"], ascending=[True, False]
    )
    from matplotlib.ticker import MaxNLocator

    left.barh(agents["agent_name"], agents["failed"], color="tab:red")
    left.set_xlabel("Failed executions (count)")
    left.set_ylabel("Agent")
    left.set_title("Failures by agent")
    shown = patterns.sort_values(["count", "pattern"], ascending=[False, True]).head(top)
    shown = shown.iloc[::-1]
    labels = [_shorten(text) for text in shown["pattern"]]
    right.barh(range(len(shown)), shown["count"], color="tab:orange")
    right.set_yticks(range(len(shown)), labels)
    right.set_xlabel("Failed executions (count)")
    right.set_title(f"Top {len(shown)} error patterns")
    for ax, data in ((left, agents), (right, shown)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.2 ticks
        if data.empty:
            _no_data(ax)
    return fig


def _shorten(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def plot_duration_distribution(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Box plot of finished executions' durations per agent (log scale).

    Boxes span p25-p75 with the median line; whiskers reach p5 and p95. Durations
    under 1 ms are drawn at 1 ms (a log scale has no zero).

    :param df: :func:`agentmetrics.reports.trend.durations` output
      (``agent_name``, ``duration_ms``)
    """
    _require(df, ["agent_name", "duration_ms"], "durations")
    fig, (ax,) = _figure(1, 1, figsize=WIDE_FIGSIZE)
    ax.set_title(title or "Duration distribution per agent")
    groups = _per_agent(df)
    if df.empty:
        _no_data(ax)
    else:
        ax.boxplot(
            # A log scale has no 0: instant runs are drawn at 1 ms.
            [rows["duration_ms"].clip(lower=1) / 1000 for _, rows in groups],
            tick_labels=[name for name, _ in groups],
            whis=(5, 95),
            showfliers=False,
        )
        ax.set_yscale("log")
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("Agent")
    ax.set_ylabel("Duration (s, log scale)")
    return fig


STATUS_COLORS = {"completed": "tab:green", "failed": "tab:red", "in_progress": "tab:blue"}
_SPAN_COLORS = {"llm": "tab:purple", "tool": "tab:orange"}
_FAILED_CALL = "black"  # seen on a failed (red) execution too
_LANE_INCHES = (0.3, 0.16)  # per lane: up to _ROOMY_LANES lanes, then beyond
_ROOMY_LANES = 30
_MAX_INCHES = 20  # a chart's height: its lanes get thinner beyond
_MAX_LABELS = 100
# Time units for the axis, by the orchestration's length: (up to ms, divisor, name).
_UNITS = ((2_000, 1, "ms"), (120_000, 1_000, "s"), (7_200_000, 60_000, "min"))


def plot_timeline(
    frame: pd.DataFrame,
    *,
    now=None,
    title: str | None = None,
    max_executions: int = MAX_EXECUTIONS,
) -> Figure:
    """A waterfall of one orchestration: a lane per task (its attempts side by side),
    indented by depth, bars coloured by status (failed ones also crossed, a running
    one drawn to ``now`` and hatched), the stored spans as thin bars inside (LLM
    calls purple, tool calls orange, failed calls black).

    Beyond ``max_executions`` executions, later lanes are folded and the chart says so;
    beyond 100 lanes, one lane in two (three...) is labelled, in a chart at most 20
    inches tall.

    :param frame: :func:`agentmetrics.reports.timeline` output
    :param now: where running executions end (default: the current time)
    """
    _require(frame, ["kind", "lane", "status", "start_offset_ms", "end_offset_ms"], "timeline")
    shown, note = fold(frame, max_executions)
    runs = shown[shown["kind"] == "execution"]
    summary = lanes(shown)
    count = len(summary)
    height = 1.6 + _LANE_INCHES[0] * min(count, _ROOMY_LANES)
    height += _LANE_INCHES[1] * max(0, count - _ROOMY_LANES)
    fig, (ax,) = _figure(1, 1, figsize=(FIGSIZE[0], min(max(2.4, height), _MAX_INCHES)))
    fig.suptitle(title or _timeline_title(frame))
    if note:
        ax.set_title(note, loc="left", fontsize="small", color=STATUS_COLORS["failed"])
    if runs.empty:
        _no_data(ax)
        return fig
    end = runs["end_offset_ms"].fillna(now_offset(frame, now))
    end = end.where(end >= runs["start_offset_ms"], runs["start_offset_ms"])
    length = max(float(end.max()), float(shown["end_offset_ms"].max(skipna=True) or 0), 1.0)
    divisor, unit = next(((d, u) for top, d, u in _UNITS if length <= top), (3_600_000, "h"))
    start = runs["start_offset_ms"] / divisor
    # Instant runs still show: at least 0.4% of the axis wide.
    width = ((end - runs["start_offset_ms"]) / divisor).clip(lower=0.004 * length / divisor)
    _draw_runs(ax, runs, start.to_numpy(), (start + width).to_numpy())
    failed = runs["status"] == "failed"
    if failed.any():
        ax.plot((start + width)[failed], runs.loc[failed, "lane"], "X", color="black", markersize=7)
    extra = _draw_spans(ax, shown[shown["kind"] != "execution"], divisor)
    if count <= _ROOMY_LANES:
        _attempt_numbers(ax, runs, start)
    _lane_labels(ax, summary, 6 if count > _ROOMY_LANES else 10)
    ax.set_ylim(summary["lane"].max() + 0.5, summary["lane"].min() - 0.5)
    lowest = min(0.0, float(start.min()))
    ax.set_xlim(lowest, lowest + (length / divisor - lowest) * 1.03)
    ax.set_xlabel(f"Time since the orchestration started ({unit})")
    handles = ax.get_legend_handles_labels()[0] + extra
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    return fig


def _draw_runs(ax: Axes, runs: pd.DataFrame, left: np.ndarray, right: np.ndarray) -> None:
    """The executions as bars, one collection per status (one artist per bar would
    take most of the drawing time of a large chart)."""
    from matplotlib.collections import PolyCollection

    top = runs["lane"].to_numpy() - 0.3
    for status, color in STATUS_COLORS.items():
        mask = (runs["status"] == status).to_numpy()
        if mask.any():
            running = status == "in_progress"
            ax.add_collection(
                PolyCollection(
                    _boxes(left[mask], right[mask], top[mask], top[mask] + 0.6),
                    facecolors=color,
                    edgecolors="white" if running else color,
                    hatch="//" if running else None,
                    label="running (to now)" if running else status,
                )
            )


def _boxes(left, right, top, bottom) -> np.ndarray:
    """Rectangles as PolyCollection vertices."""
    corners = ((left, top), (right, top), (right, bottom), (left, bottom))
    return np.stack([np.column_stack(corner) for corner in corners], axis=1)


def _lane_labels(ax: Axes, summary: pd.DataFrame, size: float) -> None:
    """Lane labels aligned left, so a nested run's indent shows. At most
    :data:`_MAX_LABELS` (each text drawn costs milliseconds): beyond, one lane in
    two, three..., as the axis says."""
    step = -(-len(summary) // _MAX_LABELS)
    shown = summary.iloc[::step]
    ax.set_yticks(shown["lane"], shown["label"], fontsize=size, ha="left")
    widest = max(len(label) for label in shown["label"])
    ax.tick_params(axis="y", pad=0.6 * size * widest + 4)  # about a character's width
    if step > 1:
        ax.set_ylabel(f"Lanes (1 in {step} labelled)", fontsize="small")


def _timeline_title(frame: pd.DataFrame) -> str:
    about = frame.attrs.get("orchestration") or {}
    if not about:
        return "Timeline"
    text = f"{about['session_id']} ({about['status']})"
    return f"{text}: {_shorten(about['task_description'])}" if about["task_description"] else text


def _draw_spans(ax: Axes, calls: pd.DataFrame, divisor: float) -> list:
    """LLM and tool calls as thin bars in their execution's lane, failed ones black;
    returns their legend entries."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    if calls.empty:
        return []
    left = calls["start_offset_ms"].to_numpy() / divisor
    right = np.maximum(calls["end_offset_ms"].to_numpy() / divisor, left)
    top = calls["lane"].to_numpy() + 0.08
    verts = _boxes(left, right, top, top + 0.2)
    colors = [
        _FAILED_CALL if status == "failed" else _SPAN_COLORS.get(kind, "tab:gray")
        for kind, status in zip(calls["kind"], calls["status"], strict=True)
    ]
    ax.add_collection(PolyCollection(verts, facecolors=colors, edgecolors="black", linewidths=0.3))
    entries = [
        Patch(color=_SPAN_COLORS.get(kind, "tab:gray"), label=f"{kind} call")
        for kind in sorted(set(calls.loc[calls["status"] != "failed", "kind"]))
    ]
    if (calls["status"] == "failed").any():
        entries.append(Patch(color=_FAILED_CALL, label="failed call"))
    return entries


def _attempt_numbers(ax: Axes, runs: pd.DataFrame, start: pd.Series) -> None:
    """Label each attempt of a task that needed more than one: ``#1``, ``#2``..."""
    retried = runs.groupby("lane")["attempt"].transform("size") > 1
    for lane, attempt, left in zip(
        runs.loc[retried, "lane"], runs.loc[retried, "attempt"], start[retried], strict=True
    ):
        ax.annotate(
            f"#{attempt}",
            (left, lane),
            xytext=(2, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
            color="white",
            fontweight="bold",
        )


__all__ = [
    "plot_duration_distribution",
    "plot_durations",
    "plot_failures",
    "plot_timeline",
    "plot_trends",
]


def cost_chart(frame: pd.DataFrame, title: str = "Estimated cost") -> Figure:
    """A horizontal bar chart of a :func:`~agentmetrics.reports.costs` frame, stacked
    by pricing method."""
    from matplotlib.figure import Figure

    label_column = frame.columns[0]
    labels = [
        "(no orchestration)"
        if value is None or value != value
        else f"{value:%Y-%m-%d}"
        if label_column == "day"
        else str(value)
        for value in (
            frame["task_description"].fillna(frame[label_column])
            if label_column == "orchestration_id"
            else frame[label_column]
        )
    ]
    fig = Figure(figsize=(8, max(2.5, 0.45 * len(frame) + 1.2)), layout="constrained")
    ax = fig.subplots()
    left = [0.0] * len(frame)
    colors = {"time": "#4c78a8", "tokens": "#f58518", "recorded": "#54a24b"}
    positions = list(range(len(frame)))[::-1]
    for method, column in zip(METHODS, METHOD_COLUMNS, strict=True):
        values = frame[column].tolist()
        if any(values):
            ax.barh(positions, values, left=left, label=method, color=colors[method])
            left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(positions, labels)
    ax.set_xlabel("Cost (USD)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="method", loc="lower right")
    return fig
