"""A self-contained HTML report: the dashboard a CI run leaves behind.

:func:`render_report` runs the reports over one time window and fills the
``templates/report.html`` template (``string.Template``): a health summary, alert
rule status (when rules are configured), regressions, the per-agent performance
table, trend charts, failure patterns, each failed or partial orchestration expanding
to its timeline, running and stale runs, and estimated costs.
Charts are inline SVG and the CSS is inline, so the file needs no network to view.
Every value from the database is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from .. import DISTRIBUTION
from ..atomic import atomic_file
from ..errors import InvalidValue
from ..formatting import format_duration, format_percent, format_usd
from ..store.db import DbArg, database_file, reading
from ..timestamps import parse_timestamp, to_iso
from ..window import TimeArg, bound, resolve_now

DEFAULT_SPAN = dt.timedelta(days=7)
TITLE = "agentmetrics report"

Column = tuple[str, str, Callable[[Any], str] | None]
"""(DataFrame column, header, formatter); a formatter marks a numeric column."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _text(value: Any) -> str:
    return "-" if _missing(value) else str(value)


def _count(value: Any) -> str:
    return "-" if _missing(value) else f"{int(value):,}"


def _moment(value: Any) -> str:
    if _missing(value):
        return "-"
    return to_iso(parse_timestamp(value) if isinstance(value, str) else value)[:16].replace(
        "T", " "
    )


def table(frame: pd.DataFrame, columns: Sequence[Column], empty: str = "No rows.") -> str:
    """An escaped HTML table of ``frame``'s ``columns``."""
    if frame.empty:
        return f'<p class="empty">{html.escape(empty)}</p>'
    head = "".join(
        f"<th{' class=num' if fmt else ''}>{html.escape(header)}</th>" for _, header, fmt in columns
    )
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column, _, fmt in columns:
            value = record.get(column)
            if fmt is None:
                css = ""
                if column in ("status", "verdict"):
                    css = f' class="status status-{html.escape(_text(value).lower())}"'
                cells.append(f"<td{css}>{html.escape(_text(value))}</td>")
            else:
                cells.append(f'<td class="num">{html.escape(fmt(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def svg(fig) -> str:
    """A matplotlib Figure as an inline ``<svg>`` element, the same text every time."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": DISTRIBUTION}):  # else element ids are random
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return '<div class="chart">' + text[text.index("<svg") :] + "</div>"


def _cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div></div>'
            for label, value in items
        )
        + "</div>"
    )


def _health(conn, since: str, until: str) -> str:
    from ..reports.health import system_health

    row = system_health(conn, since=since, until=until, now=until).iloc[0]
    return _cards(
        [
            ("Orchestrations", _count(row["orchestrations"])),
            ("Completed", _count(row["completed_orchestrations"])),
            ("Failed", _count(row["failed_orchestrations"])),
            ("Partial", _count(row["partial_orchestrations"])),
            ("Running", _count(row["running_orchestrations"])),
            ("Executions", _count(row["executions"])),
            ("Success rate", format_percent(row["success_rate"])),
            ("p50 duration", format_duration(row["p50_duration_ms"])),
            ("p95 duration", format_duration(row["p95_duration_ms"])),
        ]
    )


def _alerts(conn, rules: Any, now: str) -> str:
    from ..alerting.rules import evaluate, for_display

    if rules is None:
        return (
            '<p class="empty">No alert rules configured: add <code>[[rules]]</code> tables'
            " to agentmetrics.toml to see their status here.</p>"
        )
    shown = for_display(evaluate(conn, rules, now=now))
    shown["status"] = shown["status"].str.lower()
    return table(
        shown,
        [
            ("status", "Status", None),
            ("name", "Rule", None),
            ("metric", "Metric", None),
            ("agent", "Agent", None),
            ("window", "Window", None),
            ("value", "Value", str),
            ("warn", "Warn", str),
            ("alert", "Alert", str),
        ],
    )


def _regressions(conn, now: str) -> str:
    from ..reports.regression import regressions

    found = regressions(conn, now=now)
    found = found.assign(
        verdict=["regressed" if flag else "ok" for flag in found["regressed"]],
    )
    return table(
        found,
        [
            ("verdict", "", None),
            ("agent_name", "Agent", None),
            ("baseline_value", "Baseline p95", format_duration),
            ("recent_value", "Recent p95", format_duration),
            ("change", "Change", lambda v: "-" if _missing(v) else f"×{v:.2f}"),
            ("baseline_n", "Baseline runs", _count),
            ("recent_n", "Recent runs", _count),
            ("reason", "Why", None),
        ],
        empty="No finished executions in the last 17 days.",
    )


def _performance(conn, since: str, until: str) -> str:
    from ..reports.agents import performance_report

    return table(
        performance_report(conn, since=since, until=until),
        [
            ("agent_name", "Agent", None),
            ("executions", "Runs", _count),
            ("completed", "Completed", _count),
            ("failed", "Failed", _count),
            ("success_rate", "Success", format_percent),
            ("avg_duration_ms", "Avg", format_duration),
            ("p50_duration_ms", "p50", format_duration),
            ("p95_duration_ms", "p95", format_duration),
            ("p99_duration_ms", "p99", format_duration),
            ("max_duration_ms", "Max", format_duration),
            ("retries", "Retries", _count),
            ("self_healed_executions", "Self-healed", _count),
        ],
        empty="No executions in this window.",
    )


def _frequency(since: str, until: str) -> str:
    days = (parse_timestamp(until) - parse_timestamp(since)) / dt.timedelta(days=1)
    return "h" if days <= 2 else "D" if days <= 120 else "W"


def _trends(conn, since: str, until: str) -> str:
    from ..plots import plot_durations, plot_trends
    from ..reports.trend import trends

    freq = _frequency(since, until)
    overall = trends(conn, freq=freq, since=since, until=until)
    if overall.empty or overall["executions"].sum() == 0:
        return '<p class="empty">No executions in this window.</p>'
    by_agent = trends(conn, freq=freq, since=since, until=until, by_agent=True)
    return svg(plot_trends(overall)) + svg(plot_durations(by_agent))


def _failures(conn, since: str, until: str) -> str:
    from ..plots import plot_failures
    from ..reports.agents import performance_report
    from ..reports.trend import error_patterns

    patterns = error_patterns(conn, since=since, until=until, limit=10)
    if patterns.empty:
        return '<p class="empty">No failed executions in this window.</p>'
    chart = svg(plot_failures(performance_report(conn, since=since, until=until), patterns))
    return chart + table(
        patterns,
        [
            ("pattern", "Pattern", None),
            ("count", "Count", _count),
            ("agents", "Agents", None),
            ("last_seen", "Last seen (UTC)", _moment),
            ("example", "Latest message", None),
        ],
    )


FAILED_RUNS_SHOWN = 10
_FAILED_RUNS = """
SELECT session_id, task_description, status, started_at, duration_ms, completed_tasks,
  failed_tasks FROM orchestrations
WHERE status IN ('failed', 'partial') AND started_at >= :since AND started_at < :until
ORDER BY started_at DESC
"""


def _failed_runs(conn, since: str, until: str, now: str) -> str:
    """Each failed or partial orchestration of the window (the newest few), a summary
    line that expands to its timeline."""
    from ..plots import plot_timeline
    from ..reports.run import timeline

    cursor = conn.execute(_FAILED_RUNS, {"since": since, "until": until})
    shown = cursor.fetchmany(FAILED_RUNS_SHOWN)
    more = len(cursor.fetchall())
    if not shown:
        return '<p class="empty">No failed or partial orchestrations in this window.</p>'
    parts = []
    for session, task, status, started, duration, completed, failed in shown:
        chart = svg(plot_timeline(timeline(conn, session, spans=True), now=now))
        summary = (
            f'<span class="status status-{html.escape(status)}">{html.escape(status)}</span> '
            f"<code>{html.escape(session)}</code> {html.escape(_text(task))}"
            f' <span class="note">· started {html.escape(_moment(started))}'
            f" · {html.escape(format_duration(duration))} · tasks: {_count(completed)}"
            f" completed, {_count(failed)} failed</span>"
        )
        parts.append(f"<details><summary>{summary}</summary>{chart}</details>")
    if more:
        parts.append(
            f'<p class="note">{more:,} more not shown: <code>agentmetrics failures'
            " --include-partial</code> lists them, <code>agentmetrics show SESSION</code>"
            " draws one.</p>"
        )
    return "".join(parts)


def _running(conn, now: str) -> str:
    from ..reports.stale import DEFAULT_STALE_AFTER, stale_runs
    from .watch import snapshot

    running = snapshot(conn, now=now, limit=20).running
    stale = stale_runs(conn, now=now)
    return (
        table(
            running,
            [
                ("session_id", "Session", None),
                ("task_description", "Task", None),
                ("started_at", "Started (UTC)", _moment),
                ("elapsed_ms", "Elapsed", format_duration),
                ("agents_running", "Agents running", _count),
            ],
            empty="Nothing is running.",
        )
        + f"<h3>Stale (no sign of life for {html.escape(DEFAULT_STALE_AFTER)})</h3>"
        + table(
            stale,
            [
                ("kind", "Kind", None),
                ("session_id", "Session", None),
                ("agent_name", "Agent", None),
                ("last_seen_at", "Last seen (UTC)", _moment),
                ("age_ms", "Silent for", format_duration),
            ],
            empty="No stale runs.",
        )
    )


def _costs(conn, since: str, until: str, config: dict[str, Any]) -> str:
    from ..plots import cost_chart
    from ..reports.cost import cost_rates, costs

    frame = costs(conn, rates=cost_rates(config), since=since, until=until)
    if frame.empty:
        return '<p class="empty">No finished executions in this window.</p>'
    total = frame["cost_usd"].sum()
    note = (
        f'<p class="note">Total {html.escape(format_usd(total))}. Recorded costs are used as is,'
        " token counts are priced with <code>[costs.models]</code>, other executions by"
        " their duration at the hourly rate of <code>[costs]</code>.</p>"
    )
    return (
        note
        + svg(cost_chart(frame, title="Estimated cost by agent"))
        + table(
            frame,
            [
                ("agent_name", "Agent", None),
                ("finished", "Runs", _count),
                ("total_duration_ms", "Total time", format_duration),
                ("time_cost_usd", "By time", format_usd),
                ("token_cost_usd", "By tokens", format_usd),
                ("recorded_cost_usd", "Recorded", format_usd),
                ("cost_usd", "Total", format_usd),
                ("method", "Method", None),
            ],
        )
    )


def _load_rules(rules_path: str | os.PathLike[str] | None):
    from ..alerting.config import read_config
    from ..alerting.rules import load_rules

    if rules_path is not None:
        return load_rules(rules_path)
    found = read_config()
    if found is None or "rules" not in found.data:
        return None
    return load_rules(found.path)


def render_report(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    now: TimeArg = None,
    rules_path: str | os.PathLike[str] | None = None,
    config: dict[str, Any] | None = None,
    title: str = TITLE,
) -> str:
    """The report as one HTML document.

    :param since: start of the window, included: a timestamp or a span before ``now``
      (default: 7 days before ``until``)
    :param until: end of the window, excluded (default: ``now``)
    :param now: the reference time for running/stale runs, regressions and rules
      (default: ``until``, else the current time)
    :param rules_path: alert rules file; None uses the config file's rules if it has any
    :param config: the configuration (cost rates); None reads the config file
    """
    from ..alerting.config import load_config

    # A report on a past window describes that window as of its end.
    reference = to_iso(resolve_now(now if now is not None else bound(until, now)))
    end = bound(until, now) or reference
    start = bound(since, reference) or to_iso(parse_timestamp(end) - DEFAULT_SPAN)
    if start >= end:
        raise InvalidValue(f"since ({start}) must be before until ({end})")
    rules = _load_rules(rules_path)
    if config is None:
        config = rules.config if rules is not None else load_config()
    with reading(db) as conn:
        name = _database_name(conn)
        values = {
            "health": _health(conn, start, end),
            "alerts": _alerts(conn, rules, reference),
            "regressions": _regressions(conn, reference),
            "performance": _performance(conn, start, end),
            "trends": _trends(conn, start, end),
            "failures": _failures(conn, start, end),
            "failed_runs": _failed_runs(conn, start, end, reference),
            "running": _running(conn, reference),
            "costs": _costs(conn, start, end, config),
        }
    from importlib.metadata import version

    template = Template(
        resources.files("agentmetrics.outputs").joinpath("templates/report.html").read_text("utf-8")
    )
    window = f"{_moment(start)} to {_moment(end)} UTC"
    return template.substitute(
        values,
        title=html.escape(title),
        version=html.escape(version(DISTRIBUTION)),
        subtitle=html.escape(f"{name} · {window}"),
        footer=html.escape(f"Generated by agentmetrics at {_moment(reference)} UTC."),
    )


def _database_name(conn) -> str:
    file = database_file(conn)
    return Path(file).name if file else "in-memory database"


def write_report(db: DbArg, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Render the report (arguments as :func:`render_report`) and write it to ``path``
    atomically (see :mod:`agentmetrics.atomic`)."""
    text = render_report(db, **kwargs)
    with atomic_file(path) as out:
        out.write(text)
    return Path(path)
