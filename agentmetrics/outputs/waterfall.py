"""The timeline of one orchestration drawn in a terminal (``agentmetrics show``).

One line per lane of :func:`agentmetrics.reports.timeline` (a task, its attempts side
by side), bars scaled to the width: ``█`` completed, ``x`` failed (red), ``░`` running
up to now (blue), each attempt of a retried task starting with its number, then the
final attempt's status and duration; a failed task's error on the line below.
"""

from __future__ import annotations

import click
import pandas as pd

from ..formatting import format_duration, printable
from ..reports.run import MAX_EXECUTIONS, fold, lanes, now_offset

_MARKS = {"completed": ("█", "green"), "failed": ("x", "red"), "in_progress": ("░", "blue")}
_RIGHT = 26  # status, duration and attempts
_MIN_BAR = 10


def render(frame: pd.DataFrame, width: int, *, now=None, color: bool = True) -> list[str]:
    """The waterfall of a :func:`~agentmetrics.reports.timeline` frame as lines of at
    most ``width`` characters (ANSI colours when ``color``)."""
    shown, note = fold(frame, MAX_EXECUTIONS)
    runs = shown[shown["kind"] == "execution"]
    if runs.empty:
        return ["No executions recorded for this orchestration."]
    summary = lanes(shown)
    label_width = min(max(len(label) for label in summary["label"]), max(12, width // 3))
    bar_width = max(_MIN_BAR, width - label_width - _RIGHT - 2)
    ends = runs["end_offset_ms"].fillna(now_offset(frame, now))
    ends = ends.where(ends >= runs["start_offset_ms"], runs["start_offset_ms"])
    origin = min(0.0, float(runs["start_offset_ms"].min()))
    length = max(float(ends.max()) - origin, 1.0)
    scale = bar_width / length
    lines = [
        " " * (label_width + 1)
        + _axis(format_duration(origin), format_duration(length + origin), bar_width)
    ]
    for lane in summary.itertuples(index=False):
        cells = [" "] * bar_width
        colors: list[str | None] = [None] * bar_width
        own = runs[runs["lane"] == lane.lane]
        for start, end, status, attempt in zip(
            own["start_offset_ms"], ends[own.index], own["status"], own["attempt"], strict=True
        ):
            first = min(bar_width - 1, round((start - origin) * scale))
            last = max(first + 1, min(bar_width, round((end - origin) * scale)))
            mark, fg = _MARKS.get(status, ("?", None))
            for i in range(first, last):
                cells[i], colors[i] = mark, fg
            if lane.attempts > 1 and attempt < 10:
                cells[first] = str(attempt)  # where each attempt starts
        bar = "".join(
            click.style(cell, fg=fg) if color and fg else cell
            for cell, fg in zip(cells, colors, strict=True)
        )
        label = printable(lane.label)
        label = label if len(label) <= label_width else label[: label_width - 1] + "…"
        status = "running" if lane.status == "in_progress" else lane.status
        right = f"{status} {format_duration(lane.duration_ms)}"
        if lane.attempts > 1:
            right += f" ({lane.attempts} attempts)"
        if color:
            right = click.style(right, fg=_MARKS.get(lane.status, ("", None))[1])
        lines.append(f"{label:<{label_width}} {bar} {right}")
        if lane.error_message is not None and lane.status == "failed":
            error = printable(lane.error_message)
            room = max(10, width - label_width - 3)
            error = error if len(error) <= room else error[: room - 1] + "…"
            lines.append(" " * (label_width + 1) + "↳ " + error)
    if note:
        lines.append(note)
    return lines


def _axis(left: str, right: str, width: int) -> str:
    return left + right.rjust(max(1, width - len(left)))
