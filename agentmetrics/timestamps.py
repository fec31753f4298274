"""UTC timestamps in the original tool's formats.

``started_at``/``completed_at`` are ``YYYY-MM-DDTHH:MM:SS.sssZ`` (what JavaScript's
``toISOString()`` writes) and ``created_at`` is SQLite's ``datetime('now')``
(``YYYY-MM-DD HH:MM:SS``). Writing exactly these formats keeps text comparison and
sorting correct in files shared with the original tool.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from .errors import InvalidValue

# SQL expression for "now" in the ISO format; SQLite keeps 'now' fixed within a statement.
SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def sql_duration_ms(end: str) -> str:
    """SQL for the whole milliseconds from a row's ``started_at`` to the SQL time ``end``:
    what completing or reaping a run stores in ``duration_ms``."""
    return f"CAST(ROUND((julianday({end}) - julianday(started_at)) * 86400000) AS INTEGER)"


UNITS = "90s, 15m, 1.5h, 3d, 2w"
"""Examples of the duration grammar, for error messages."""


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
    elif not isinstance(value, str):
        raise InvalidValue(f"not a timestamp: {value!r}")
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: use 6.
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "00000")[:6], text)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidValue(f"not a timestamp: {value!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def normalize(value: str | dt.datetime | None) -> str | None:
    """Rewrite a timestamp in the ISO storage format, keeping None."""
    return None if value is None else to_iso(parse_timestamp(value))


def parse_duration(value: str | dt.timedelta, name: str | None = None) -> dt.timedelta:
    """Parse a duration with its unit: ``"600000ms"``, ``"90s"``, ``"15m"``, ``"1.5h"``,
    ``"3d"``, ``"2w"``, or a timedelta.

    A bare number is an error: whether ``600000`` meant milliseconds or hours would
    be a guess. ``name`` prefixes the error message (``"--max-p95: ..."``).
    """
    if isinstance(value, dt.timedelta):
        return value
    prefix = f"{name}: " if name else ""
    bare = isinstance(value, (int, float)) and not isinstance(value, bool)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if (bare and math.isfinite(value)) or (match and match.group(2) is None):
        number = str(value).strip()
        raise InvalidValue(f"{prefix}{str(value)!r} needs a unit: use e.g. {number}ms, {UNITS}")
    if not match:
        raise InvalidValue(f"{prefix}not a duration: {value!r} (use e.g. {UNITS})")
    try:
        return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise InvalidValue(f"{prefix}duration too large: {value!r}") from None


def positive_duration(value: str | dt.timedelta, name: str | None = None) -> dt.timedelta:
    """:func:`parse_duration` for a span that must be longer than zero."""
    span = parse_duration(value, name)
    if span <= dt.timedelta(0):
        raise InvalidValue(f"{name + ': ' if name else ''}must be longer than zero, got {value!r}")
    return span
