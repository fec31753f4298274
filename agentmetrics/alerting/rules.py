"""Alerting rules: thresholds on metrics, evaluated by ``agentmetrics check``.

Rules live in ``agentmetrics.toml`` as an array of tables, or in ``pyproject.toml``
as ``[[tool.agentmetrics.rules]]`` (see :mod:`agentmetrics.alerting.config` for the lookup)::

    [[rules]]
    name = "success rate"
    metric = "success_rate"
    window = "24h"          # default 24h
    warn = 95               # rates, in percent (95 or "95%"): warn/alert when the
    alert = 90              # value falls below

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
``"15m"``, ``"1.5h"``, ``"3d"``, ``"2w"``; a bare number is an error. Every rate is in
percent, ``90`` or ``"90%"``: a bare value above 0 and up to 1 is refused as ambiguous (a
fraction? write ``"0.9%"`` for under one percent), and so is one above 100.
Metrics (:data:`METRICS`) and the extra keys they take:

- ``success_rate`` (percent of finished executions that completed), ``p95_duration_ms``,
  ``p50_duration_ms``: ``min_samples`` (default 1): with fewer finished executions in
  the window the rule is ok and says it had too few runs to judge;
- ``first_attempt_success_rate`` (percent of tasks whose first attempt completed) and
  ``retry_rate`` (percent of tasks that needed more than one attempt; rises above):
  from :func:`~agentmetrics.reports.retries`, with ``min_samples`` counted in tasks;
- ``failed_executions``, ``failed_orchestrations`` and ``running_orchestrations`` (the
  last two take no ``agent``): counts in the window;
- ``stale_running`` (no ``agent`` or ``window``): unfinished runs with no sign of life
  for ``stale_after`` (default ``"6h"``);
- ``regressions``: how many agents regressed (:mod:`agentmetrics.reports.regression`);
  ``window`` is the recent window (default ``"3d"``), with ``baseline`` (``"14d"``),
  ``of`` (``"p95_duration_ms"``, ``"p50_duration_ms"`` or ``"success_rate"``),
  ``min_samples``, ``threshold`` and ``alpha``;
- ``cost_usd``: estimated cost of the window's executions, priced with ``[costs]``.

Every value comes from a report function (``system_health`` for all agents,
``agent_summary`` for one, ``retries``, ``stale_runs``, ``costs``, ``regressions``), read in one
snapshot. ``agentmetrics health --min-success-rate/--max-*`` builds rules with
:func:`health_rules` and evaluates them here too. Adding a metric is one function
decorated with :func:`metric`; loading the file is :mod:`agentmetrics.alerting.config`'s job,
notifying :mod:`agentmetrics.alerting.notify`'s.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..errors import ConfigError, InvalidValue, UnknownAgent
from ..formatting import format_value, parse_percent
from ..reports.agents import agent_summary
from ..reports.cost import cost_rates, costs
from ..reports.health import system_health
from ..reports.regression import DEFAULT_ALPHA, DEFAULT_MIN_SAMPLES, regressions
from ..reports.regression import METRICS as REGRESSION_METRICS
from ..reports.retries import retries
from ..reports.stale import DEFAULT_STALE_AFTER, count_stale
from ..store.db import DbArg, reading
from ..timestamps import before, parse_duration, positive_duration, to_iso
from ..window import resolve_now
from .config import ConfigFile, read_config

STATUSES = ("ok", "warn", "alert")
DEFAULT_WINDOW = "24h"
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
    reports: dict[tuple, pd.Series | None] = field(default_factory=dict)  # per window

    def window(self, rule: Rule) -> tuple[str, str]:
        """The rule's window ``[now - window, now)`` as ISO strings."""
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
        raise InvalidValue(f"direction must be 'above' or 'below', got {direction!r}")

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
            raise InvalidValue(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def _number(low: float, high: float | None = None, whole: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise InvalidValue(f"must be a {'whole ' if whole else ''}number, got {value!r}")
        if value <= low or (high is not None and value >= high):
            bounds = f"above {low:g}" + (f" and below {high:g}" if high is not None else "")
            raise InvalidValue(f"must be {bounds}, got {value!r}")
        return value

    return check


# -- metrics ----------------------------------------------------------------------------


class _TooFewRuns(Exception):
    """Raised by a metric whose sample is below the rule's ``min_samples``: not judged."""

    def __init__(self, value: float | None, runs: int, needed: int) -> None:
        super().__init__(f"too few runs to judge ({runs}, need {needed})")
        self.value = value


def _window_report(context: Context, rule: Rule) -> pd.Series | None:
    """The report row a windowed metric reads, computed once per window and agent:
    :func:`system_health` for all agents, :func:`agent_summary` for one (None when
    the agent was never recorded)."""
    key = (rule.window, rule.agent)
    if key not in context.reports:
        start, end = context.window(rule)
        if rule.agent is None:
            row = system_health(context.db, since=start, until=end, now=context.now).iloc[0]
        else:
            try:
                row = agent_summary(
                    context.db, rule.agent, since=start, until=end, now=context.now
                ).iloc[0]
            except UnknownAgent:
                row = None
        context.reports[key] = row
    return context.reports[key]


def _retries_report(context: Context, rule: Rule) -> pd.Series | None:
    """The :func:`~agentmetrics.reports.retries` row of the rule's window (every agent's
    total, or its agent's), computed once per window and agent (None: no attempt)."""
    key = ("retries", rule.window, rule.agent)
    if key not in context.reports:
        start, end = context.window(rule)
        frame = retries(
            context.db, since=start, until=end, agent=rule.agent, now=context.now, total=True
        )
        context.reports[key] = frame.iloc[-1] if len(frame) else None
    return context.reports[key]


def _report_value(
    column: str,
    sampled: bool = False,
    report: Callable[[Context, Rule], pd.Series | None] = _window_report,
    runs: str = "finished",
) -> Callable[[Context, Rule], float | None]:
    """A metric reading ``column`` of ``report``'s row; ``sampled``: judged only with
    at least ``min_samples`` of ``runs`` (finished executions, or tasks)."""

    def compute(context: Context, rule: Rule) -> float | None:
        row = report(context, rule)
        if row is None or pd.isna(row[column]):
            return None
        value, count = float(row[column]), int(row[runs])
        needed = rule.options.get("min_samples", 1)
        if sampled and 0 < count < needed:
            raise _TooFewRuns(value, count, needed)
        return value

    return compute


# Rates and percentiles of a handful of runs swing wildly; min_samples lets a rule
# ignore windows with fewer finished executions (tasks, for the attempt rates).
_SAMPLE_OPTIONS = {"min_samples": (_number(0, whole=True), 1)}

for _name, _direction, _unit in (
    ("success_rate", "below", "percent"),
    ("p95_duration_ms", "above", "ms"),
    ("p50_duration_ms", "above", "ms"),
):
    metric(_name, _direction, _unit, options=_SAMPLE_OPTIONS)(_report_value(_name, sampled=True))
for _name, _direction in (("first_attempt_success_rate", "below"), ("retry_rate", "above")):
    metric(_name, _direction, "percent", options=_SAMPLE_OPTIONS)(
        _report_value(_name, sampled=True, report=_retries_report, runs="tasks")
    )
metric("failed_executions", "above", "count")(_report_value("failed"))
for _name in ("failed_orchestrations", "running_orchestrations"):
    metric(_name, "above", "count", agent=False)(_report_value(_name))


@metric("cost_usd", "above", "usd")
def _cost_usd(context: Context, rule: Rule) -> float:
    """Estimated cost of the window's finished executions, priced with ``[costs]``."""
    start, end = context.window(rule)
    rates = cost_rates(context.config)
    frame = costs(context.db, rates=rates, since=start, until=end, agent=rule.agent)
    return float(frame["cost_usd"].sum())


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
    config = read_config(path)
    if config is None:
        raise ConfigError(
            "No rules file: create agentmetrics.toml with [[rules]] tables"
            " (or [[tool.agentmetrics.rules]] in pyproject.toml), or pass --rules FILE"
        )
    raw = config.data.get("rules")
    if raw is None:
        raise ConfigError(f"{config.path}: no rules: add [[{config.table_name('rules')}]] tables")
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise config.error("must be an array of tables ([[rules]])", key="rules")
    if not raw:
        raise config.error("is empty", key="rules")
    rules = [_check_rule(table, _file_problem(config, i, table)) for i, table in enumerate(raw)]
    names = [rule.name for rule in rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _file_problem(config, i, raw[i])("name", f"duplicate rule name {name!r}")
    return RuleSet(config.path, rules, config.data)


def _file_problem(
    config: ConfigFile, index: int, table: dict[str, Any]
) -> Callable[[str | None, str], ConfigError]:
    name = table.get("name")
    label = f"rule {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "") + ": "
    return lambda key, problem: config.error(
        problem, table="rules", index=index, key=key, label=label
    )


def make_rule(**table: Any) -> Rule:
    """A rule from the keys of a ``[[rules]]`` table, checked as :func:`load_rules` does.

    :raises InvalidValue: a key is missing, unknown or has a bad value
    """
    return _check_rule(table, lambda key, problem: InvalidValue(f"{key or 'rule'}: {problem}"))


# The health command's --min/--max options and the metric each one bounds.
HEALTH_GATE = {
    "min_success_rate": "success_rate",
    "max_running": "running_orchestrations",
    "max_failed": "failed_executions",
    "max_failed_orchestrations": "failed_orchestrations",
    "max_p95": "p95_duration_ms",
    "max_stale": "stale_running",
}


def health_rules(
    hours: float = 24, stale_after: str = DEFAULT_STALE_AFTER, **limits: Any
) -> list[Rule]:
    """The rules of ``agentmetrics health``'s gate: one ``alert`` rule per limit given.

    :param hours: the window, as :func:`~agentmetrics.reports.system_health`'s
    :param stale_after: how long without a sign of life makes a run stale
    :param limits: :data:`HEALTH_GATE` keys (``max_p95`` a duration like ``"5m"``);
      None values are skipped
    """
    window = np.format_float_positional(hours, trim="-") + "h"
    rules = []
    for option, limit in limits.items():
        if option not in HEALTH_GATE:
            raise InvalidValue(
                f"Unknown health limit {option!r}: use one of {', '.join(HEALTH_GATE)}"
            )
        if limit is None:
            continue
        spec = METRICS[HEALTH_GATE[option]]
        table: dict[str, Any] = {"name": option, "metric": spec.name, "alert": limit}
        if spec.window:
            table["window"] = window
        if "stale_after" in spec.options:
            table["stale_after"] = stale_after
        rules.append(make_rule(**table))
    return rules


def _check_rule(table: dict[str, Any], fail: Callable[[str | None, str], Exception]) -> Rule:
    """The checked rule of ``table``; ``fail(key, problem)`` makes the error to raise."""
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
    which are written with their unit: ``"10m"``; rates in percent, ``90`` or
    ``"90%"``, see :func:`~agentmetrics.formatting.parse_percent`)."""
    if value is None:
        return None
    if spec.unit == "ms":
        return parse_duration(value).total_seconds() * 1000
    if spec.unit == "percent":
        return parse_percent(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)  # TOML allows nan and inf: a rule that never fires
    ):
        raise InvalidValue(f"must be a number, got {value!r}")
    return value


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
    with reading(db) as conn:
        context = Context(conn, moment, config or {})
        for rule in rules:
            spec = METRICS[rule.metric]
            warn, alert = _threshold(spec, rule.warn), _threshold(spec, rule.alert)
            try:
                value = spec.compute(context, rule)
                status = status_of(spec, value, warn, alert)
                detail = _detail(spec, value, status, warn, alert)
            except _TooFewRuns as e:
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


def for_display(results: pd.DataFrame) -> pd.DataFrame:
    """The results of :func:`evaluate` as text for a table: statuses not ok in
    capitals, values and thresholds in the metric's unit, and why a rule is not ok."""

    def shown(column: str) -> list[str]:
        return [_shown(m, v) for m, v in zip(results["metric"], results[column], strict=True)]

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
            "why": list(results["detail"]),
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
    shown, limit = format_value(value, spec.unit), format_value(threshold, spec.unit)
    if shown == limit:  # never "7s > 7s": both unrounded, in the metric's unit
        suffix = {"percent": "%", "ms": "ms", "usd": " USD"}.get(spec.unit, "")
        shown, limit = f"{value:g}{suffix}", f"{threshold:g}{suffix}"
    return f"{shown} {sign} {limit}"


def _shown(metric_name: str, value: float | None) -> str:
    return format_value(value, METRICS[metric_name].unit if metric_name in METRICS else "count")


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
