"""The report window: its bounds, given as timestamps or as spans back from ``now``, and
the SQL terms that select the runs started in it (``since <= started_at < until``).

A leaf: it imports only errors and timestamps. The reports, the live view, rules, the
HTML report, cleanup and the command line share it, so a bound means the same everywhere.
"""

from __future__ import annotations

import datetime as dt

from .errors import InvalidValue
from .timestamps import before, parse_duration, parse_timestamp, to_iso, utcnow

TimeArg = str | dt.datetime | None
"""A moment: ISO text or a datetime (without an offset: UTC), or None."""


def resolve_now(now: TimeArg = None) -> dt.datetime:
    """``now`` as an aware UTC datetime (the current time when None)."""
    return utcnow() if now is None else parse_timestamp(now)


def bound(value: TimeArg | dt.timedelta, now: TimeArg = None) -> str | None:
    """A window bound as stored ISO text: a timestamp (text or datetime), or a span
    before ``now`` (``"7d"`` or a timedelta); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return to_iso(parse_timestamp(value))
        except ValueError:
            try:
                value = parse_duration(value)
            except ValueError:
                raise InvalidValue(
                    f"not a time: {value!r} (use a timestamp such as 2026-11-01"
                    " or a span back such as 6h, 7d, 2w)"
                ) from None
    if isinstance(value, dt.datetime):
        return to_iso(parse_timestamp(value))
    return to_iso(before(resolve_now(now), parse_duration(value)))


def window(
    since: TimeArg | dt.timedelta,
    until: TimeArg | dt.timedelta,
    now: TimeArg = None,
    *,
    agent: str | None = None,
    alias: str = "",
) -> tuple[str, dict[str, str]]:
    """The report window ``since <= started_at < until`` (and ``agent_name = agent``)
    as SQL terms, each starting with `` AND ``, and their named parameters.

    A None bound or agent adds no term; ``alias`` qualifies the columns (``"e"``).
    """
    now = resolve_now(now)  # one moment for both spans
    start, end = bound(since, now), bound(until, now)
    if start is not None and end is not None and start > end:
        raise InvalidValue(f"since ({start}) is after until ({end})")
    column = f"{alias}." if alias else ""
    sql, params = "", {}
    for term, name, value in (
        (f"{column}started_at >= :since", "since", start),
        (f"{column}started_at < :until", "until", end),
        (f"{column}agent_name = :agent", "agent", agent),
    ):
        if value is not None:
            sql += " AND " + term
            params[name] = value
    return sql, params
