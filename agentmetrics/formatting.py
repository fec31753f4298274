"""Human-readable values, as the original tool printed them."""

from __future__ import annotations

import re

import pandas as pd

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


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``), so that
    stored values shown on a terminal cannot move the cursor, clear or retitle it."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
