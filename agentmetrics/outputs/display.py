"""Rich display in notebooks (STYLE.md section 13): what Jupyter shows for a
:class:`~agentmetrics.monitor.Monitor`, an orchestration handle and a run view.

:func:`run` reads one orchestration whole, its summary and its timeline, as a
:class:`Run`: its ``_repr_html_`` is a summary and the waterfall as inline SVG, while
``.summary`` and ``.timeline`` stay the report DataFrames. A repr only reads, and
shows a one-line message instead of failing when the database cannot be read.
``import agentmetrics.monitor`` does not load this module: the reprs import it.
"""

from __future__ import annotations

import html
import sqlite3
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import AgentMetricsError
from ..formatting import format_duration, format_percent
from ..reports.orchestrations import list_orchestrations, orchestration_summary
from ..reports.run import timeline
from ..store.db import DbArg, reading
from .htmlreport import _count, _database_name, _moment, _text, svg, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..monitor import Monitor, Orchestration

_LATEST = 5
_STYLE = (
    "<style>.am-run table{border-collapse:collapse;font-size:12px}"
    ".am-run td,.am-run th{padding:2px 8px;text-align:left}"
    ".am-run .status-failed,.am-run .status-partial{color:#cf222e;font-weight:600}"
    ".am-run .chart svg{max-width:100%;height:auto}</style>"
)


class Run:
    """One orchestration seen whole: :attr:`summary` (one row of
    :func:`~agentmetrics.reports.orchestration_summary`), :attr:`timeline` (the
    :func:`~agentmetrics.reports.timeline` frame) and :meth:`plot`, its waterfall."""

    def __init__(self, summary: pd.DataFrame, frame: pd.DataFrame, now: Any = None) -> None:
        self.summary = summary
        self.timeline = frame
        self.now = now

    @property
    def session_id(self) -> str:
        return self.summary["session_id"].iloc[0]

    def plot(self) -> Figure:
        """The waterfall (:func:`agentmetrics.plots.plot_timeline`)."""
        from ..plots import plot_timeline

        return plot_timeline(self.timeline, now=self.now)

    def __repr__(self) -> str:
        row = self.summary.iloc[0]
        return (
            f"<Run {row['session_id']}: {row['status']}, {row['executions']} executions"
            f" ({row['failed']} failed)>"
        )

    def _repr_html_(self) -> str:
        row = self.summary.iloc[0]
        facts = [
            ("Session", _text(row["session_id"])),
            ("Task", _text(row["task_description"])),
            ("Status", _text(row["status"])),
            ("Started (UTC)", _moment(row["started_at"])),
            ("Duration", format_duration(row["duration_ms"])),
            ("Tasks", f"{_count(row['completed_tasks'])} of {_count(row['total_tasks'])} done"),
            ("Executions", f"{_count(row['executions'])} ({_count(row['failed'])} failed)"),
            ("Success rate", format_percent(row["success_rate"])),
        ]
        cells = "".join(
            f"<tr><th>{html.escape(name)}</th>"
            f"<td{_status_class(name, value)}>{html.escape(value)}</td></tr>"
            for name, value in facts
        )
        return f'{_STYLE}<div class="am-run"><table>{cells}</table>{svg(self.plot())}</div>'


def _status_class(name: str, value: str) -> str:
    return f' class="status-{html.escape(value)}"' if name == "Status" else ""


def run(db: DbArg, session_id: str, *, spans: bool = True, now: Any = None) -> Run:
    """One orchestration's summary and timeline, read in one snapshot.

    :param spans: include the stored OpenTelemetry calls in the timeline
    :param now: where running executions end in the chart (default: the current time)
    :raises UnknownSession: no orchestration has this session id
    """
    with reading(db) as conn:
        return Run(
            orchestration_summary(conn, session_id),
            timeline(conn, session_id, spans=spans),
            now,
        )


def _unreadable(what: str, error: Exception) -> str:
    return f"<p>{html.escape(what)}: {html.escape(str(error))}</p>"


def monitor_html(monitor: Monitor) -> str:
    """A Monitor: its file, orchestrations by status, the newest ones, and the
    timeline of the newest."""
    try:
        with monitor._lock:
            return _database_html(monitor.db, monitor.pending)
    except (AgentMetricsError, sqlite3.Error) as e:
        return _unreadable("agentmetrics Monitor (database not readable)", e)


def _database_html(db, pending: int) -> str:
    with reading(db) as conn:
        counts = dict(
            conn.execute("SELECT status, count(*) FROM orchestrations GROUP BY status").fetchall()
        )
        latest = list_orchestrations(conn, limit=_LATEST)
        newest = run(conn, latest["session_id"].iloc[0]) if len(latest) else None
        name = _database_name(conn)
    by_status = ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) or "none yet"
    parts = [
        f"<p><b>agentmetrics Monitor</b> on <code>{html.escape(name)}</code>: "
        f"{sum(counts.values()):,} orchestrations ({html.escape(by_status)})"
        + (f", {pending:,} writes pending" if pending else "")
        + "</p>",
        table(
            latest,
            [
                ("session_id", "Session", None),
                ("status", "Status", None),
                ("task_description", "Task", None),
                ("started_at", "Started (UTC)", _moment),
                ("duration_ms", "Duration", format_duration),
            ],
            empty="No orchestrations recorded.",
        ),
    ]
    if newest is not None:
        parts.append(f"<p>The newest, <code>{html.escape(newest.session_id)}</code>:</p>")
        parts.append(newest._repr_html_())
    return _STYLE + '<div class="am-run">' + "".join(parts) + "</div>"


def orchestration_html(orchestration: Orchestration) -> str:
    """An orchestration handle: its run view, as stored so far."""
    monitor = orchestration.monitor
    try:
        with monitor._lock:
            return run(monitor.db, orchestration.session_id)._repr_html_()
    except (AgentMetricsError, sqlite3.Error) as e:
        return _unreadable(f"Orchestration {orchestration.session_id}", e)
