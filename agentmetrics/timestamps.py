"""UTC timestamps in the original tool's formats.

``started_at``/``completed_at`` are ``YYYY-MM-DDTHH:MM:SS.sssZ`` (what JavaScript's
``toISOString()`` writes) and ``created_at`` is SQLite's ``datetime('now')``
(``YYYY-MM-DD HH:MM:SS``). Writing exactly these formats keeps text comparison and
sorting correct in files shared with the original tool.
"""

from __future__ import annotations

import datetime as dt
import re

# SQL expression for "now" in the ISO format; SQLite keeps 'now' fixed within a statement.
SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def to_iso(moment: dt.datetime) -> str:
    """Format a datetime as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (naive values are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    # Not strftime: it does not zero-pad years before 1000, which would break sorting.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def before(moment: dt.datetime, span: dt.timedelta | float) -> dt.datetime:
    """``moment - span`` (a number is hours), clamped to the earliest time Python knows."""
    try:
        return moment - (span if isinstance(span, dt.timedelta) else dt.timedelta(hours=span))
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def to_sqlite_datetime(moment: dt.datetime) -> str:
    """Format a datetime as SQLite's ``datetime()`` does: ``YYYY-MM-DD HH:MM:SS``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f" {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def parse_timestamp(value: str | dt.datetime) -> dt.datetime:
    """Parse any stored or user-given timestamp into an aware UTC datetime.

    Accepts the original's ISO form, SQLite's ``YYYY-MM-DD HH:MM:SS``, dates, and
    offsets; a value without an offset is UTC.
    """
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: use 6.
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "00000")[:6], text)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def normalize(value: str | dt.datetime | None) -> str | None:
    """Rewrite a timestamp in the ISO storage format, keeping None."""
    return None if value is None else to_iso(parse_timestamp(value))


def parse_duration(value: str | float | int | dt.timedelta) -> dt.timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"6h"``, ``"3d"``, ``"2w"`` (a bare number is hours)."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)):
        return dt.timedelta(hours=value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 6h, 3d, 2w)")
    number, unit = float(match.group(1)), match.group(2) or "h"
    try:
        return dt.timedelta(seconds=number * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f"duration too large: {value!r}") from None
