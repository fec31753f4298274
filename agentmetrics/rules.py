"""Alerting rules: thresholds on metrics, evaluated by ``agentmetrics check``.

Rules live in ``agentmetrics.toml`` as an array of tables, or in ``pyproject.toml``
as ``[[tool.agentmetrics.rules]]`` (see :mod:`agentmetrics.config` for the lookup)::

    [[rules]]
    name = "success rate"
    metric = "success_rate"
    window = "24h"          # default 24h
    warn = 95               # rates: warn/alert when the value falls below
    alert = 90

    [[rules]]
    name = "coder p95"
    metric = "p95_duration_ms"
    agent = "code-writer"   # optional
    warn = "5m"             # durations and counts: when the value rises above
    alert = "10m"           # durations take a unit: 600000ms, 90s, 15m, 1.5h, 3d

    [[rules]]
    name = "no failed orchestrations"
    metric = "failed_orchestrations"
    alert = 0               # any failure alerts

A rule needs at least one of ``warn``/``alert``; a value equal to a threshold does
not breach it. Every duration (``window``, ``stale_after``, ``baseline`` and the
thresholds of duration metrics) is a string with its unit: ``"600000ms"``, ``"90s"``,
``"15m"``, ``"1.5h"``, ``"3d"``, ``"2w"``; a bare number is an error.
Metrics (:data:`METRICS`) and the extra keys they take:

- ``success_rate`` (percent of finished executions that completed), ``p95_duration_ms``,
  ``p50_duration_ms``: ``min_samples`` (default 1): with fewer finished executions in
  the window the rule is ok and says it had too few runs to judge;
- ``failed_executions``, ``failed_orchestrations`` (no ``agent``): counts in the window;
- ``stale_running`` (no ``agent`` or ``window``): unfinished runs with no sign of life
  for ``stale_after`` (default ``"6h"``);
- ``regressions``: how many agents regressed (:mod:`agentmetrics.reports.regression`);
  ``window`` is the recent window (default ``"3d"``), with ``baseline`` (``"14d"``),
  ``of`` (``"p95_duration_ms"``, ``"p50_duration_ms"`` or ``"success_rate"``),
  ``min_samples``, ``threshold`` and ``alpha``;
- ``cost_usd``: estimated cost of the window's executions, priced with ``[costs]``.

Adding a metric is one function decorated with :func:`metric`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlite_utils import Database

from .config import find_config
from .errors import AgentMetricsError, InvalidValue
from .formatting import printable
from .reports._common import DbArg, database, resolve_now
from .reports._frames import percentiles
from .reports.regression import DEFAULT_ALPHA, DEFAULT_MIN_SAMPLES, regressions
from .reports.regression import METRICS as REGRESSION_METRICS
from .reports.stale import DEFAULT_STALE_AFTER, count_stale
from .timestamps import before, parse_duration, positive_duration, to_iso

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STATUSES = ("ok", "warn", "alert")
DEFAULT_WINDOW = "24h"
NOTIFY_TIMEOUT = 5.0
NOTIFY_MAX_RESPONSE = 64 * 1024  # bytes of the webhook's answer read, at most
RESULT_COLUMNS = [
    "name",
    "metric",
    "agent",
    "window",
    "value",
    "warn",
    "alert",
    "status",
    "detail",
]
_FLOATS = ("value", "warn", "alert")
_COMMON_KEYS = ("name", "metric", "agent", "window", "warn", "alert")


class ConfigError(AgentMetricsError):
    """The rules file is missing, not valid TOML, or a rule is invalid."""


@dataclass(frozen=True)
class Rule:
    """One ``[[rules]]`` table, checked; ``warn``/``alert`` of a duration metric are
    durations with their unit (``"10m"``) or timedeltas, other thresholds numbers."""

    name: str
    metric: str
    agent: str | None = None
    window: str = DEFAULT_WINDOW
    warn: float | str | dt.timedelta | None = None
    alert: float | str | dt.timedelta | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a metric is computed from: the database, the time and the whole config."""

    db: Database
    now: dt.datetime
    config: dict[str, Any] = field(default_factory=dict)

    def window(self, rule: Rule) -> tuple[str, str]:
        """The rule's window ``[now - window, now]`` as ISO strings."""
        return to_iso(before(self.now, parse_duration(rule.window))), to_iso(self.now)


@dataclass(frozen=True)
class Metric:
    """A metric rules can watch.

    ``direction`` is ``"below"`` for rates (bad when low) and ``"above"`` for
    durations and counts; ``compute`` returns the value, or None without data;
    ``options`` maps extra rule keys to a checker returning the clean value (it
    raises ValueError with the problem) and their defaults.
    """

    name: str
    direction: str
    compute: Callable[[Context, Rule], float | None]
    unit: str
    agent: bool = True
    window: bool = True
    default_window: str = DEFAULT_WINDOW
    options: dict[str, tuple[Callable[[Any], Any], Any]] = field(default_factory=dict)


METRICS: dict[str, Metric] = {}


def metric(
    name: str,
    direction: str,
    unit: str,
    *,
    agent: bool = True,
    window: bool = True,
    default_window: str = DEFAULT_WINDOW,
    options: dict[str, tuple[Callable[[Any], Any], Any]] | None = None,
) -> Callable:
    """Register the decorated ``compute(context, rule)`` function as a rule metric.

    :param unit: ``"percent"``, ``"ms"``, ``"count"`` or ``"usd"`` (for display)
    :param agent: whether a rule may name an ``agent``
    :param window: whether a rule may set a ``window``
    """
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")

    def register(compute: Callable[[Context, Rule], float | None]):
        METRICS[name] = Metric(
            name, direction, compute, unit, agent, window, default_window, options or {}
        )
        return compute

    return register


# -- rule option checkers --------------------------------------------------------------


def _positive_duration(value: Any) -> str:
    positive_duration(value)
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def _number(low: float, high: float | None = None, whole: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise ValueError(f"must be a {'whole ' if whole else ''}number, got {value!r}")
        if value <= low or (high is not None and value >= high):
            bounds = f"above {low:g}" + (f" and below {high:g}" if high is not None else "")
            raise ValueError(f"must be {bounds}, got {value!r}")
        return value

    return check


# -- metrics ----------------------------------------------------------------------------


def _finished(context: Context, rule: Rule, select: str, extra: str = "") -> list[tuple]:
    start, end = context.window(rule)
    sql = (
        f"SELECT {select} FROM agent_executions WHERE status != 'in_progress'"
        f" AND started_at >= :start AND started_at <= :end{extra}"
    )
    params: dict[str, Any] = {"start": start, "end": end}
    if rule.agent is not None:
        sql += " AND agent_name = :agent"
        params["agent"] = rule.agent
    return context.db.execute(sql, params).fetchall()


class TooFewRuns(Exception):
    """Raised by a metric whose sample is below the rule's ``min_samples``: not judged."""

    def __init__(self, value: float | None, runs: int, needed: int) -> None:
        super().__init__(f"too few runs to judge ({runs}, need {needed})")
        self.value = value


def _enough(value: float | None, runs: int, rule: Rule) -> float | None:
    needed = rule.options.get("min_samples", 1)
    if 0 < runs < needed:
        raise TooFewRuns(value, runs, needed)
    return value


# Rates and percentiles of a handful of runs swing wildly; min_samples lets a rule
# ignore windows with fewer finished executions.
_SAMPLE_OPTIONS = {"min_samples": (_number(0, whole=True), 1)}


@metric("success_rate", "below", "percent", options=_SAMPLE_OPTIONS)
def _success_rate(context: Context, rule: Rule) -> float | None:
    finished, completed = _finished(context, rule, "count(*), sum(status = 'completed')")[0]
    return _enough(None if finished == 0 else 100 * completed / finished, finished, rule)


def _duration_percentile(q: float) -> Callable[[Context, Rule], float | None]:
    def compute(context: Context, rule: Rule) -> float | None:
        rows = _finished(context, rule, "duration_ms", " AND duration_ms IS NOT NULL")
        value = percentiles([r[0] for r in rows], [q])[0] if rows else None
        return _enough(value, len(rows), rule)

    return compute


metric("p95_duration_ms", "above", "ms", options=_SAMPLE_OPTIONS)(_duration_percentile(95))
metric("p50_duration_ms", "above", "ms", options=_SAMPLE_OPTIONS)(_duration_percentile(50))


@metric("failed_executions", "above", "count")
def _failed_executions(context: Context, rule: Rule) -> float:
    return _finished(context, rule, "count(*)", " AND status = 'failed'")[0][0]


@metric("cost_usd", "above", "usd")
def _cost_usd(context: Context, rule: Rule) -> float:
    """Estimated cost of the window's finished executions, priced with ``[costs]``."""
    from .reports.cost import cost_rates, costs

    start, end = context.window(rule)
    frame = costs(context.db, rates=cost_rates(context.config), since=start, until=end)
    if rule.agent is not None:
        frame = frame[frame["agent_name"] == rule.agent]
    return float(frame["cost_usd"].sum())


@metric("failed_orchestrations", "above", "count", agent=False)
def _failed_orchestrations(context: Context, rule: Rule) -> float:
    start, end = context.window(rule)
    sql = (
        "SELECT count(*) FROM orchestrations WHERE status = 'failed'"
        " AND started_at >= :start AND started_at <= :end"
    )
    return context.db.execute(sql, {"start": start, "end": end}).fetchone()[0]


@metric(
    "stale_running",
    "above",
    "count",
    agent=False,
    window=False,
    options={"stale_after": (_positive_duration, DEFAULT_STALE_AFTER)},
)
def _stale_running(context: Context, rule: Rule) -> float:
    return count_stale(context.db, stale_after=rule.options["stale_after"], now=context.now)


# Keys of earlier releases: a file using one gets told the new name.
_RENAMED = {"older_than": "stale_after"}


@metric(
    "regressions",
    "above",
    "count",
    default_window="3d",
    options={
        "of": (_choice(*REGRESSION_METRICS), "p95_duration_ms"),
        "baseline": (_positive_duration, "14d"),
        "min_samples": (_number(0, whole=True), DEFAULT_MIN_SAMPLES),
        "threshold": (_number(0), None),
        "alpha": (_number(0, 1), DEFAULT_ALPHA),
    },
)
def _regressions(context: Context, rule: Rule) -> float:
    """How many agents regressed; ``window`` is the recent window (default 3d)."""
    found = regressions(
        context.db,
        recent=rule.window,
        baseline=rule.options["baseline"],
        now=context.now,
        metric=rule.options["of"],
        min_samples=rule.options["min_samples"],
        threshold=rule.options["threshold"],
        alpha=rule.options["alpha"],
        agent=rule.agent,
    )
    return int(found["regressed"].sum())


# -- loading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSet:
    """The rules read from one file, with the whole config (other features' tables)."""

    path: Path
    rules: list[Rule]
    config: dict[str, Any]


def load_rules(path: str | os.PathLike[str] | None = None) -> RuleSet:
    """Read and check the rules of ``path``, or of the config file found from cwd.

    :raises ConfigError: no file, invalid TOML, or an invalid rule; the message names
      the file, the line and the key
    """
    if path is None:
        try:
            found = find_config()
        except InvalidValue as e:  # a pyproject.toml that is not valid TOML
            raise ConfigError(str(e)) from None
        if found is None:
            raise ConfigError(
                "No rules file: create agentmetrics.toml with [[rules]] tables"
                " (or [[tool.agentmetrics.rules]] in pyproject.toml), or pass --rules FILE"
            )
        # Shown relative to the current folder, as the user would type it.
        file = Path(os.path.relpath(found))
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"Rules file {file} not found")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read {file}: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None
    in_pyproject = file.name == "pyproject.toml"
    if in_pyproject:
        data = data.get("tool", {}).get("agentmetrics", {})
    header = r"tool\s*\.\s*agentmetrics\s*\.\s*rules" if in_pyproject else r"rules"
    locate = _Locator(file, text, header)
    raw = data.get("rules")
    if raw is None:
        where = "[[tool.agentmetrics.rules]]" if in_pyproject else "[[rules]]"
        raise ConfigError(f"{file}: no rules: add {where} tables")
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise locate.error(None, "rules", "must be an array of tables ([[rules]])")
    if not raw:
        raise locate.error(None, "rules", "is empty")
    rules = [_check_rule(table, i, locate) for i, table in enumerate(raw)]
    names = [rule.name for rule in rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise locate.error(i, "name", f"duplicate rule name {name!r}", name)
    return RuleSet(file, rules, data)


def _check_rule(table: dict[str, Any], index: int, locate: _Locator) -> Rule:
    def fail(key: str | None, problem: str) -> ConfigError:
        return locate.error(index, key, problem, table.get("name"))

    for key in ("name", "metric"):
        if key not in table:
            raise fail(None, f"missing key {key!r}")
    name = table["name"]
    if not isinstance(name, str) or not name.strip():
        raise fail("name", f"must be a non-empty string, got {name!r}")
    metric_name = table["metric"]
    if not isinstance(metric_name, str) or metric_name not in METRICS:
        raise fail("metric", f"unknown metric {metric_name!r}: use one of {', '.join(METRICS)}")
    spec = METRICS[metric_name]
    allowed = [k for k in _COMMON_KEYS if (k != "agent" or spec.agent)]
    allowed = [k for k in allowed if (k != "window" or spec.window)] + list(spec.options)
    for key in table:
        if key not in allowed:
            if key in _COMMON_KEYS:
                problem = f"does not apply to metric {metric_name!r}"
            elif key in _RENAMED:
                problem = f"renamed: use {_RENAMED[key]!r}"
            else:
                problem = f"unknown key (allowed: {', '.join(allowed)})"
            raise fail(key, problem)
    agent = table.get("agent")
    if agent is not None and (not isinstance(agent, str) or not agent):
        raise fail("agent", f"must be an agent name, got {agent!r}")
    window = table.get("window", spec.default_window)
    try:
        _positive_duration(window)
    except ValueError as e:
        raise fail("window", str(e)) from None
    thresholds = {}
    for key in ("warn", "alert"):
        try:
            thresholds[key] = _threshold(spec, table.get(key))
        except ValueError as e:
            raise fail(key, str(e)) from None
    warn, alert = thresholds["warn"], thresholds["alert"]
    if warn is None and alert is None:
        raise fail(None, "needs a 'warn' or an 'alert' threshold")
    if warn is not None and alert is not None:
        shown = f"({table['warn']} {{}} {table['alert']}) for {metric_name}"
        if spec.direction == "above" and warn > alert:
            raise fail("warn", "must not be above alert " + shown.format(">"))
        if spec.direction == "below" and warn < alert:
            raise fail("warn", "must not be below alert " + shown.format("<"))
    options = {}
    for key, (check, default) in spec.options.items():
        if key not in table:
            options[key] = default
            continue
        try:
            options[key] = check(table[key])
        except ValueError as e:
            raise fail(key, str(e)) from None
    return Rule(name, metric_name, agent, window, table.get("warn"), table.get("alert"), options)


def _threshold(spec: Metric, value: Any) -> float | None:
    """A ``warn``/``alert`` value in the metric's unit (milliseconds for durations,
    which are written with their unit: ``"10m"``)."""
    if value is None:
        return None
    if spec.unit == "ms":
        return parse_duration(value).total_seconds() * 1000
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)  # TOML allows nan and inf: a rule that never fires
    ):
        raise ValueError(f"must be a number, got {value!r}")
    return value


class _Locator:
    """Finds the line of a key inside the n-th ``[[rules]]`` table of the file text.

    tomllib reports lines for syntax errors only; for a bad value we scan the text.
    """

    def __init__(self, file: Path, text: str, header: str) -> None:
        self.file = file
        self.lines = text.splitlines()
        self.header = re.compile(rf"^\[\[\s*{header}\s*\]\]")

    def line(self, index: int | None, key: str | None) -> int | None:
        if index is None:
            return self._key_line(0, len(self.lines), key) if key else None
        seen = -1
        for number, text in enumerate(self.lines):
            if self.header.match(text.strip()):
                seen += 1
                if seen == index:
                    end = next(
                        (
                            i
                            for i in range(number + 1, len(self.lines))
                            if self.lines[i].lstrip().startswith("[")
                        ),
                        len(self.lines),
                    )
                    found = self._key_line(number + 1, end, key) if key else None
                    return found or number + 1
        return None

    def _key_line(self, start: int, end: int, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
        for number in range(start, end):
            if pattern.match(self.lines[number]):
                return number + 1
        return None

    def error(
        self, index: int | None, key: str | None, problem: str, name: Any = None
    ) -> ConfigError:
        line = self.line(index, key)
        where = f"{self.file}, line {line}" if line else str(self.file)
        rule = ""
        if index is not None:
            rule = f"rule {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "") + ": "
        return ConfigError(f"{where}: {rule}{key + ': ' if key else ''}{problem}")


# -- evaluation -------------------------------------------------------------------------


def status_of(spec: Metric, value: float | None, warn: float | None, alert: float | None) -> str:
    """``ok``, ``warn`` or ``alert`` for a value (no data is ``ok``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "ok"

    def breached(threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value < threshold if spec.direction == "below" else value > threshold

    return "alert" if breached(alert) else "warn" if breached(warn) else "ok"


def evaluate(
    db: DbArg,
    rules: list[Rule] | RuleSet,
    now: str | dt.datetime | None = None,
    config: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate rules against the database.

    :param rules: a :class:`RuleSet` (from :func:`load_rules`) or a list of rules
    :param config: the whole config, for metrics that need other tables (costs);
      taken from the RuleSet when not given
    :returns: one row per rule, in file order, with columns ``name``, ``metric``,
      ``agent`` (None: all agents), ``window`` (e.g. ``"24h"``; None where it does not
      apply), ``value`` (NaN without data), ``warn``, ``alert`` (NaN when not set;
      like ``value``, in milliseconds for durations),
      ``status`` (``ok``/``warn``/``alert``) and ``detail`` (one line)
    """
    if isinstance(rules, RuleSet):
        config = rules.config if config is None else config
        rules = rules.rules
    moment = resolve_now(now)
    records = []
    with database(db) as conn:
        context = Context(conn, moment, config or {})
        for rule in rules:
            spec = METRICS[rule.metric]
            warn, alert = _threshold(spec, rule.warn), _threshold(spec, rule.alert)
            try:
                value = spec.compute(context, rule)
                status = status_of(spec, value, warn, alert)
                detail = _detail(spec, value, status, warn, alert)
            except TooFewRuns as e:
                value, status, detail = e.value, "ok", str(e)
            if rule.agent is not None and status == "ok" and not _agent_known(conn, rule.agent):
                # A misspelt agent would otherwise pass forever as "no data".
                status = "warn"
                detail = f"no execution of agent {rule.agent!r} was ever recorded: check the name"
            records.append(
                (
                    rule.name,
                    rule.metric,
                    rule.agent,
                    rule.window if spec.window else None,
                    math.nan if value is None else float(value),
                    math.nan if warn is None else float(warn),
                    math.nan if alert is None else float(alert),
                    status,
                    detail,
                )
            )
    columns = zip(*records, strict=True) if records else [()] * len(RESULT_COLUMNS)
    # object columns keep None for "all agents" / "no window" (not NaN).
    return pd.DataFrame(
        {
            name: pd.Series(list(values), dtype=float if name in _FLOATS else object)
            for name, values in zip(RESULT_COLUMNS, columns, strict=True)
        }
    )


def _agent_known(db: Database, agent: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM agent_executions WHERE agent_name = ? LIMIT 1", [agent]
        ).fetchone()
        is not None
    )


def format_value(metric_name: str, value: float | None) -> str:
    """A metric value for people: ``97.5%``, ``2m 5s``, ``3``, ``$12.40``; ``-`` if none."""
    from .formatting import format_duration, format_percent

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    unit = METRICS[metric_name].unit if metric_name in METRICS else "count"
    if unit == "percent":
        return format_percent(value)
    if unit == "ms":
        return format_duration(value)
    if unit == "usd":
        return f"${value:,.2f}"
    return f"{value:g}"


def for_display(results: pd.DataFrame) -> pd.DataFrame:
    """The results of :func:`evaluate` as text for a table: statuses not ok in
    capitals, values and thresholds in the metric's unit."""

    def shown(column: str) -> list[str]:
        return [format_value(m, v) for m, v in zip(results["metric"], results[column], strict=True)]

    return pd.DataFrame(
        {
            "status": [s if s == "ok" else s.upper() for s in results["status"]],
            "name": results["name"],
            "metric": results["metric"],
            "agent": results["agent"],
            "window": results["window"],
            "value": shown("value"),
            "warn": shown("warn"),
            "alert": shown("alert"),
        }
    )


def _detail(
    spec: Metric, value: float | None, status: str, warn: float | None, alert: float | None
) -> str:
    if value is None:
        return "no data in the window"
    sign = "<" if spec.direction == "below" else ">"
    threshold = alert if status == "alert" else warn if status == "warn" else None
    if threshold is None:
        return ""
    return f"{format_value(spec.name, value)} {sign} {format_value(spec.name, threshold)}"


def overall_status(results: pd.DataFrame) -> str:
    """The worst status among the results (``ok`` when there are none)."""
    present = set(results["status"])
    return next((s for s in reversed(STATUSES) if s in present), "ok")


# -- notification -----------------------------------------------------------------------


def payload(results: pd.DataFrame, database: str | None = None) -> dict[str, Any]:
    """The JSON message for ``--json`` and ``--notify``.

    ``text`` is a Slack-compatible summary of the rules that are not ok; ``status``,
    ``database``, ``counts`` and ``rules`` (every rule with its value and thresholds)
    are for machines.
    """
    status = overall_status(results)
    counts = {s: int((results["status"] == s).sum()) for s in STATUSES}
    lines = [
        f"agentmetrics check: {status.upper()} ({counts['alert']} alert, "
        f"{counts['warn']} warn, {counts['ok']} ok)" + (f" on {database}" if database else "")
    ]
    for row in results.itertuples(index=False):
        if row.status != "ok":
            scope = f" [{row.agent}]" if row.agent else ""
            lines.append(f"- {row.status.upper()} {row.name}{scope}: {row.detail}")
    rules = [
        {
            "name": row.name,
            "metric": row.metric,
            "agent": row.agent,
            "window": row.window,
            "status": row.status,
            "value": _json_number(row.value),
            "warn": _json_number(row.warn),
            "alert": _json_number(row.alert),
            "detail": row.detail,
        }
        for row in results.itertuples(index=False)
    ]
    return {
        "text": "\n".join(lines),
        "status": status,
        "database": database,
        "counts": counts,
        "rules": rules,
    }


def _json_number(value: float) -> float | int | None:
    if value is None or math.isnan(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


def redact_url(url: str) -> str:
    """Only the scheme and host of ``url``: a webhook URL carries its secret in the path,
    query or user part (Slack's token is in the path), so nothing more is ever shown."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return printable(f"{parts.scheme}://{host}{port}") if parts.scheme and host else "(a URL)"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them: urllib would resend the POST as a
    GET without its body, and the notification would be lost while looking sent."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def notify(url: str, message: dict[str, Any], timeout: float = NOTIFY_TIMEOUT) -> str | None:
    """POST ``message`` as JSON to ``url``; return None on success, else the problem.

    Never raises for network trouble and never waits much longer than ``timeout``
    seconds in all, even for a server that trickles its answer. Only a 2xx answer is a
    success (a redirect is not followed); at most :data:`NOTIFY_MAX_RESPONSE` bytes of
    it are read. The problem never contains more of ``url`` than :func:`redact_url`.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return f"not an http(s) URL: {redact_url(url)}"
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "agentmetrics"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    outcome: list[str | None] = []

    def send() -> None:
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(NOTIFY_MAX_RESPONSE)
            outcome.append(None)
        except urllib.error.HTTPError as e:
            e.close()
            if 300 <= e.code < 400:
                outcome.append(
                    f"HTTP {e.code}: a redirect, not followed (give the URL it redirects to)"
                )
            else:
                outcome.append(printable(f"HTTP {e.code} {e.reason}"))
        except urllib.error.URLError as e:
            outcome.append(printable(str(e.reason)))
        except OSError as e:  # timed out, connection reset
            outcome.append(printable(str(e) or type(e).__name__))
        except Exception as e:  # noqa: BLE001 - any failure to notify is reported, not fatal
            outcome.append(type(e).__name__)  # its message may quote the URL

    # urlopen's timeout applies per socket operation; the thread bounds the whole call.
    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    if not outcome:
        return f"timed out after {timeout:g}s"
    return outcome[0]
