"""Human-readable values, as the original tool printed them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pandas as pd

from .errors import InvalidValue

# C0 and C1 controls, DEL, line/paragraph separators and bidirectional overrides.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def format_duration(ms: float | None) -> str:
    """``850ms``, ``12s``, ``3m 5s``, ``2h 4m``; ``-`` for a missing value."""
    if pd.isna(ms):  # None, NaN, or pandas' NA of a nullable integer column
        return "-"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = int(ms // 1000)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


def format_percent(value: float | None) -> str:
    """``87.5%``; ``-`` when there is nothing to divide."""
    if pd.isna(value):
        return "-"
    return f"{value:.1f}%"


def parse_percent(value: float | str) -> float:
    """A rate a person wrote, in percent: ``90``, ``"90"`` and ``"90%"`` are all 90.

    The one reading of rates for CLI options and rules files. A bare value above 0 and
    up to 1 is refused as ambiguous (``0.9`` looks like a fraction; ``"0.9%"`` is under
    one percent), as is anything outside 0 to 100.

    :raises InvalidValue: not a percent, or an ambiguous one
    """
    text = value.strip() if isinstance(value, str) else None
    marked = text is not None and text.endswith("%")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(text.removesuffix("%").strip()) if text is not None else float(value)
    except ValueError:
        raise InvalidValue(f"not a percent: {value!r} (write 90 or 90%)") from None
    shown = text if text is not None else f"{number:g}"
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise InvalidValue(f"{shown} is not a percent from 0 to 100")
    if not marked and 0 < number <= 1:
        meant = "under one percent" if number < 1 else "one percent"
        raise InvalidValue(
            f"{shown} looks like a fraction: write {number * 100:g} or {number * 100:g}%,"
            f" or {shown}% if you mean {meant}"
        )
    return number


def format_usd(value: float | None) -> str:
    """US dollars to the cent, in one format: ``$1,234.50``, ``$0.21``, ``$0.00``;
    ``<$0.01`` for a cost under half a cent (not zero); ``-`` for a missing value."""
    if pd.isna(value):  # None, NaN, or pandas' NA
        return "-"
    if 0 < value < 0.005:
        return "<$0.01"
    return f"${value:,.2f}"


def format_value(value: float | None, unit: str) -> str:
    """A value in its unit (``percent``, ``ms``, ``usd`` or ``count``) for people:
    ``97.5%``, ``2m 5s``, ``$12.40``, ``3``; ``-`` for a missing value."""
    if pd.isna(value):
        return "-"
    shown = {"percent": format_percent, "ms": format_duration, "usd": format_usd}
    return shown[unit](value) if unit in shown else f"{value:g}"


def format_time(value) -> str:
    """A timestamp to the second, ``2026-11-01 12:00:00``; ``-`` for a missing value."""
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value)


def _whole(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"


def formatters(df: pd.DataFrame) -> dict[str, Callable[[Any], str]]:
    """How each column of a report reads best, by the contract's names and dtypes:
    durations (``*duration_ms``), rates (``*_rate``), timestamps, and whole numbers
    that a float column holds only to keep NaN."""
    shown: dict[str, Callable[[Any], str]] = {}
    for column in df.columns:
        if column.endswith("duration_ms"):
            shown[column] = format_duration
        elif column.endswith("_rate"):
            shown[column] = format_percent
        elif pd.api.types.is_datetime64_any_dtype(df[column]):
            shown[column] = format_time
        elif pd.api.types.is_float_dtype(df[column]) and (df[column].dropna() % 1 == 0).all():
            shown[column] = _whole
    return shown


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a report for people: ``2m 5s``, ``66.7%``, times to the second, and
    counts as integers, also after ``.T`` (the columns become objects, so transposing a
    one-row report such as ``system_health`` no longer turns counts into ``3.00``)."""
    shown = df.astype(object)
    for column, formatter in formatters(df).items():
        shown[column] = df[column].map(formatter).astype(object)
    return shown


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``), so that
    stored values shown on a terminal cannot move the cursor, clear or retitle it."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
