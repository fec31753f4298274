"""How things change over time: trends per period, error patterns and self-healing.

Counts are aggregated in SQL; percentiles are exact (linear interpolation, numpy's
default) over the finished executions' durations of each period, fetched as two or
three columns only.
"""

from __future__ import annotations

import functools
import re

import pandas as pd

from ..errors import InvalidValue
from . import _rollups
from ._common import DbArg, TimeArg, bound, read_frame, reading, resolve_now, window
from ._frames import (
    ATTEMPT_COLUMNS,
    EXECUTION_COUNTS,
    attempt_rates,
    check_limit,
    counted,
    percent,
    texts,
    to_utc,
    typed,
)

# Period start of `started_at` (stored as YYYY-MM-DDTHH:MM:SS.sssZ), in the same format.
FREQUENCIES = {
    "h": "substr(started_at, 1, 13) || ':00:00.000Z'",
    "D": "substr(started_at, 1, 10) || 'T00:00:00.000Z'",
    # Weeks start on Monday: the next Sunday (or today), six days back.
    "W": "date(substr(started_at, 1, 10), 'weekday 0', '-6 days') || 'T00:00:00.000Z'",
}
_STEPS = {"h": pd.Timedelta(hours=1), "D": pd.Timedelta(days=1), "W": pd.Timedelta(days=7)}
# Every period is a row, even an empty one: a window of centuries in hours would be
# millions of rows (and a chart that never finishes drawing).
MAX_PERIODS = 100_000

TREND_COLUMNS = [
    "period",
    *EXECUTION_COUNTS,
    "success_rate",
    "p50_duration_ms",
    "p95_duration_ms",
    "retries",
    "self_healed_executions",
    *ATTEMPT_COLUMNS,
]
PATTERN_COLUMNS = [
    "pattern",
    "count",
    "agents",
    "agent_count",
    "first_seen",
    "last_seen",
    "example",
]
SELF_HEALING_COLUMNS = [
    "agent_name",
    *EXECUTION_COUNTS,
    "self_healed_executions",
    "self_healed_rate",
    "rescued",
    "rescue_rate",
]
TOTAL_LABEL = "(all agents)"
NO_MESSAGE = "(no error message)"


def trends(
    db: DbArg,
    *,
    freq: str = "D",
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    by_agent: bool = False,
    now: TimeArg = None,
    exact: bool = False,
) -> pd.DataFrame:
    """Executions per period (hour, day or week), by start time.

    Every period from ``since`` (or the first execution) to ``until`` (or ``now``
    when only ``since`` is given; else the last execution) is a row, with zero
    executions when nothing ran.

    :param freq: ``"h"`` (hours), ``"D"`` (days) or ``"W"`` (weeks starting Monday)
    :param since: first start time included: a timestamp or a span before ``now``
      such as ``"7d"``
    :param until: start times before this are included (same forms)
    :param agent: only this agent's executions
    :param by_agent: one row per period and agent (column ``agent_name`` after
      ``period``); every agent seen in the window gets every period
    :param now: the time spans are measured back from (default: the current time)
    :param exact: scan the executions instead of reading the rollups; the percentiles
      are then exact, else within 0.5% (see :mod:`agentmetrics.store.rollups`)
    :returns: columns ``period`` (period start, UTC datetime), the execution
      counts, ``success_rate``, ``p50_duration_ms``, ``p95_duration_ms`` (of finished
      executions), ``retries``, ``self_healed_executions``, and of the finished attempts:
      ``tasks`` (first attempts), ``first_attempt_success_rate`` and ``retry_rate``
      (see :func:`~agentmetrics.reports.retries`; each attempt in the period of its
      own start)
    :raises ValueError: unknown ``freq``, a bad time, ``since`` after ``until``, or a
      window of more than :data:`MAX_PERIODS` periods
    """
    if freq not in FREQUENCIES:
        raise InvalidValue(f"Unknown freq {freq!r}: use one of {', '.join(FREQUENCIES)}")
    period = FREQUENCIES[freq]
    now = resolve_now(now)
    keys = ["period", "agent_name"] if by_agent else ["period"]
    group = ", ".join(keys)
    select = f"{period} AS period" + (", agent_name" if by_agent else "")
    where, params = window(since, until, now, agent=agent)
    with _rollups.reading(db, exact) as (conn, rolled):
        if rolled:
            counts, quantiles = _rolled_counts(conn, params, keys, select, group, where, freq)
        else:
            counts, quantiles = _exact_counts(conn, params, keys, select, group, where)
    columns = TREND_COLUMNS[:1] + keys[1:] + TREND_COLUMNS[1:]
    periods = _periods(counts["period"], since, until, freq, now)
    if by_agent:
        agents = sorted(counts["agent_name"].unique())
        index = pd.MultiIndex.from_product([periods, agents], names=keys)
    else:
        index = pd.Index(periods, name="period")
    counts["period"] = to_utc(counts["period"])
    frame = counted(counts.set_index(keys).reindex(index))
    tries = frame[_ATTEMPT_SUMS].fillna(0).astype("int64")
    frame["tasks"] = tries["first_attempts"]
    frame = frame.assign(**attempt_rates(*(tries[name] for name in _ATTEMPT_SUMS)))
    frame["p50_duration_ms"] = quantiles[0.5].reindex(index).astype("float64")
    frame["p95_duration_ms"] = quantiles[0.95].reindex(index).astype("float64")
    result = texts(frame.reset_index()[columns])
    result["period"] = result["period"].dt.as_unit("us")
    result.attrs["freq"] = freq  # lets charts size one period's bar
    return result


# The rollup sums of finished attempts the attempt columns are made of.
_ATTEMPT_SUMS = ["first_attempts", "first_attempt_completed", "retried"]
_COUNTS = """SELECT {select},
  count(CASE WHEN status = 'completed' THEN 1 END) AS completed,
  count(CASE WHEN status = 'failed' THEN 1 END) AS failed,
  count(CASE WHEN status = 'in_progress' THEN 1 END) AS in_progress,
  count(CASE WHEN self_healed THEN 1 END) AS self_healed_executions,
  coalesce(sum(retry_count), 0) AS retries,
  total(status != 'in_progress' AND ifnull(attempt, 1) = 1) AS first_attempts,
  total(status = 'completed' AND ifnull(attempt, 1) = 1) AS first_attempt_completed,
  total(status != 'in_progress' AND attempt = 2) AS retried
FROM agent_executions WHERE {status}{where} GROUP BY {group}"""


def _exact_counts(conn, params, keys, select, group, where) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The counts per group, and the p50/p95 durations (columns 0.5, 0.95), by a scan."""
    counts = read_frame(
        conn, _COUNTS.format(select=select, status="1", where=where, group=group), params
    )
    durations = read_frame(
        conn,
        f"SELECT {select}, duration_ms FROM agent_executions"
        f" WHERE status != 'in_progress' AND duration_ms IS NOT NULL{where}",
        params,
    )
    durations["period"] = to_utc(durations["period"])
    durations["duration_ms"] = durations["duration_ms"].astype("float64")
    # pandas' linear quantile is numpy's percentile, per group in one pass.
    quantiles = durations.groupby(keys)["duration_ms"].quantile([0.5, 0.95]).unstack()
    return counts, quantiles.reindex(columns=[0.5, 0.95])


def _rolled_counts(
    conn, params, keys, select, group, where, freq
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`_exact_counts` from the rollups, and the running executions."""
    found = _rollups.finished(
        conn,
        params.get("since"),
        params.get("until"),
        agent=params.get("agent"),
        by=keys,
        period=FREQUENCIES[freq],
        hourly=freq == "h",
        quantiles=[50, 95],
    )
    running = read_frame(
        conn,
        _COUNTS.format(select=select, status="status = 'in_progress'", where=where, group=group),
        params,
    )
    found = found.rename(columns={"p50": 0.5, "p95": 0.95})
    finished = found[
        [*keys, "completed", "failed", "self_healed_executions", "retries", *_ATTEMPT_SUMS]
    ]
    counts = pd.concat([finished, running]).groupby(keys, as_index=False).sum()
    quantiles = found.assign(period=to_utc(found["period"])).set_index(keys)[[0.5, 0.95]]
    return counts, quantiles


def _periods(
    found: pd.Series, since: TimeArg, until: TimeArg, freq: str, now: TimeArg
) -> pd.DatetimeIndex:
    try:
        return _period_range(found, since, until, freq, now)
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta):
        # pandas 2 holds nanosecond timestamps only, from 1677-09-21 on; pandas 3 more.
        raise InvalidValue(
            f"this pandas ({pd.__version__}) cannot hold periods that far back: use a later since"
        ) from None


def _period_range(
    found: pd.Series, since: TimeArg, until: TimeArg, freq: str, now: TimeArg
) -> pd.DatetimeIndex:
    starts = pd.to_datetime(found, utc=True)
    first = bound(since, now)
    last = bound(until, now)
    first_ts = _floor(pd.Timestamp(first), freq) if first else starts.min()
    # `until` is excluded: a window ending at midnight has no row for that day.
    last_ts = _floor(pd.Timestamp(last) - pd.Timedelta(milliseconds=1), freq) if last else None
    last_ts = starts.max() if last_ts is None else last_ts
    if first and not last:
        # [since, now]: the quiet periods up to now are rows too, not a shorter table.
        last_ts = _floor(pd.Timestamp(resolve_now(now)), freq)
        if not starts.empty:
            last_ts = max(last_ts, starts.max())
    if pd.isna(first_ts) or pd.isna(last_ts) or last_ts < first_ts:
        return pd.DatetimeIndex([], tz="UTC", name="period")
    count = (last_ts - first_ts) // _STEPS[freq] + 1
    if count > MAX_PERIODS:
        raise InvalidValue(
            f"{count:,} periods of {freq!r} from {first_ts:%Y-%m-%d} to {last_ts:%Y-%m-%d}:"
            f" at most {MAX_PERIODS:,}; use a later since, an earlier until or a longer freq"
        )
    return pd.date_range(first_ts, last_ts, freq=_STEPS[freq], name="period")


def _floor(moment: pd.Timestamp, freq: str) -> pd.Timestamp:
    if freq == "h":
        return moment.floor("h")
    day = moment.floor("D")
    return day if freq == "D" else day - pd.Timedelta(days=day.weekday())


# -- error patterns --------------------------------------------------------------------

# (pattern, placeholder, needs): a pattern cannot match a message holding none of its
# needs, so it is skipped there (an empty tuple: always tried). Regular expressions cost
# most of the time of a report's reasons: thousands of distinct messages at scale.
_FOLDS = [
    (re.compile(r"'[^']*'"), "'<value>'", ("'",)),
    (re.compile(r'"[^"]*"'), "'<value>'", ('"',)),
    (re.compile(r"`[^`]*`"), "'<value>'", ("`",)),
    (re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.IGNORECASE), "<url>", ("://",)),
    (
        re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?"),
        "<time>",
        (":",),
    ),
    (
        re.compile(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE
        ),
        "<id>",
        ("-",),
    ),
    # Absolute, home, relative (./x, ../x) and multi-part relative paths; Windows drives.
    (
        re.compile(
            r"(?:\b[A-Za-z]:\\[\w.\-\\]+)|(?:(?<![\w.~])(?:~|\.{1,2})?/[\w.\-]+(?:/[\w.\-]*)*)"
            r"|(?:\b(?=[\w.\-/]*[A-Za-z])[\w.\-]+(?:/[\w.\-]+)+)"
        ),
        "<path>",
        ("/", ":\\"),
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<id>", ("0x", "0X")),
    # Hex ids: words of hex digits with both a letter and a digit (6+ long: see below).
    (re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]*\d[0-9a-f]*\b", re.IGNORECASE), "<hexid>", ()),
    (re.compile(r"(?<![A-Za-z0-9])\d+(?:\.\d+)?"), "<n>", ()),
    (re.compile(r"\s+"), " ", ()),
]
_HEX_MIN = 6


@functools.lru_cache(maxsize=65536)
def normalize_error(message: str | None) -> str:
    """Fold the variable parts of an error message into placeholders.

    Quoted values become ``'<value>'``, URLs ``<url>``, timestamps ``<time>``, UUIDs
    and hex ids (6+ hex digits with a digit and a letter, or ``0x...``) ``<id>``,
    file paths ``<path>`` and other numbers ``<n>`` (digits right after a letter,
    as in ``sha256`` or ``ipv4``, are kept), so ``Timeout after 30s in /tmp/a1/x.py`` and
    ``Timeout after 45s in /tmp/b2/y.py`` share one pattern.
    """
    if message is None or not message.strip():
        return NO_MESSAGE
    text = message
    for pattern, placeholder, needs in _FOLDS:
        if needs and not any(needed in text for needed in needs):
            continue
        if placeholder == "<hexid>":
            text = pattern.sub(_hex_or_keep, text)
        else:
            text = pattern.sub(placeholder, text)
    return text.strip()


def _hex_or_keep(match: re.Match) -> str:
    word = match.group(0)
    return "<id>" if len(word) >= _HEX_MIN else word


def error_patterns(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    limit: int | None = None,
    now: TimeArg = None,
) -> pd.DataFrame:
    """Failed executions grouped by :func:`normalize_error` of their message.

    :param since: first start time included (timestamp or span before ``now``)
    :param until: start times before this are included
    :param agent: only this agent's failures
    :param limit: at most this many patterns (the most frequent)
    :returns: columns ``pattern``, ``count``, ``agents`` (comma-separated, sorted),
      ``agent_count``, ``first_seen``, ``last_seen`` (UTC datetimes of the first and
      last start), ``example`` (the most recent message); most frequent first
    """
    if limit is not None:
        limit = check_limit(limit)
    where, params = window(since, until, now, agent=agent)
    with reading(db) as conn:
        # Grouped in SQL by the Python normaliser, registered on this connection.
        conn.conn.create_function(
            "agentmetrics_error_pattern", 1, normalize_error, deterministic=True
        )
        # The example is the latest message: the max of "started_at <US> message"
        # (a bare column next to both min() and max() would be undefined in SQLite).
        frame = read_frame(
            conn,
            f"""SELECT agentmetrics_error_pattern(error_message) AS pattern,
              count(*) AS count, min(started_at) AS first_seen,
              max(started_at) AS last_seen,
              max(started_at || char(31) || error_message) AS example,
              count(DISTINCT agent_name) AS agent_count,
              group_concat(DISTINCT agent_name) AS agents
            FROM agent_executions WHERE status = 'failed'{where}
            GROUP BY pattern ORDER BY count DESC, pattern"""
            + (" LIMIT :limit" if limit else ""),
            {**params, "limit": limit},
        )
    frame["example"] = frame["example"].map(
        lambda latest: None if latest is None else latest.split("\x1f", 1)[1]
    )
    frame["agents"] = frame["agents"].fillna("").str.split(",").map(sorted).map(", ".join)
    frame[["count", "agent_count"]] = frame[["count", "agent_count"]].astype("int64")
    for column in ("first_seen", "last_seen"):
        frame[column] = to_utc(frame[column])
    return texts(frame[PATTERN_COLUMNS])


# -- self-healing ----------------------------------------------------------------------


def self_healing(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    total: bool = True,
    now: TimeArg = None,
) -> pd.DataFrame:
    """How often self-healing occurred per agent, and how often it rescued the run.

    :param total: add a last row ``agent_name == "(all agents)"`` summing every agent
    :returns: columns ``agent_name``, the execution counts, ``self_healed_executions``
      (executions where it occurred), ``self_healed_rate`` (percent of executions),
      ``rescued`` (self-healed and completed), ``rescue_rate`` (percent of
      self-healed that completed; NaN if none healed); agents by name
    """
    where, params = window(since, until, now, agent=agent)
    with reading(db) as conn:
        frame = read_frame(
            conn,
            f"""SELECT agent_name,
              count(CASE WHEN status = 'completed' THEN 1 END) AS completed,
              count(CASE WHEN status = 'failed' THEN 1 END) AS failed,
              count(CASE WHEN status = 'in_progress' THEN 1 END) AS in_progress,
              count(CASE WHEN self_healed THEN 1 END) AS self_healed_executions,
              count(CASE WHEN self_healed AND status = 'completed' THEN 1 END) AS rescued
            FROM agent_executions WHERE 1{where} GROUP BY agent_name ORDER BY agent_name""",
            params,
        )
    counts = ["completed", "failed", "in_progress", "self_healed_executions", "rescued"]
    if total and not frame.empty:
        frame.loc[len(frame)] = [TOTAL_LABEL, *frame[counts].sum()]
    frame = texts(counted(frame))
    frame["rescued"] = frame["rescued"].astype("int64")
    healed = frame["self_healed_executions"]
    frame["self_healed_rate"] = percent(healed, frame["executions"])
    frame["rescue_rate"] = percent(frame["rescued"], healed)
    return frame[SELF_HEALING_COLUMNS]


# -- raw durations (for distribution charts) -------------------------------------------


def durations(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    now: TimeArg = None,
) -> pd.DataFrame:
    """The finished executions' durations, for distribution charts.

    :returns: columns ``agent_name``, ``started_at`` (UTC datetime), ``status``,
      ``duration_ms`` (float64); ordered by start time
    """
    where, params = window(since, until, now, agent=agent)
    with reading(db) as conn:
        frame = read_frame(
            conn,
            "SELECT agent_name, started_at, status, duration_ms FROM agent_executions"
            f" WHERE status != 'in_progress' AND duration_ms IS NOT NULL{where}"
            " ORDER BY started_at",
            params,
        )
    return typed(frame)


__all__ = [
    "durations",
    "error_patterns",
    "normalize_error",
    "self_healing",
    "trends",
]
