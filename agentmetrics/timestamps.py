"""UTC timestamps in the original tool's formats.

``started_at``/``completed_at`` are ``YYYY-MM-DDTHH:MM:SS.sssZ`` (what JavaScript's
``toISOString()`` writes) and ``created_at`` is SQLite's ``datetime('now')``
(``YYYY-MM-DD HH:MM:SS``). Writing exactly these formats keeps text comparison and
sorting correct in files shared with the original tool.
"""

from __future__ import annotations

import datetime as dt
import re

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S"
# SQL expression for "now" in the ISO format; SQLite keeps 'now' fixed within a statement.
SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def to_iso(moment: dt.datetime) -> str:
    """Format a datetime as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (naive values are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime(ISO_FORMAT) + f".{moment.microsecond // 1000:03d}Z"


def to_sqlite_datetime(moment: dt.datetime) -> str:
    """Format a datetime as SQLite's ``datetime()`` does: ``YYYY-MM-DD HH:MM:SS``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


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
    return dt.timedelta(seconds=number * _UNIT_SECONDS[unit])
