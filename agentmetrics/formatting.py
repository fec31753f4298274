"""Human-readable values, as the original tool printed them."""

from __future__ import annotations

import math

import pandas as pd


def format_duration(ms: float | None) -> str:
    """``850ms``, ``12s``, ``3m 5s``, ``2h 4m``; ``-`` for a missing value."""
    if ms is None or pd.isna(ms):  # also pandas' NA, from a nullable integer column
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
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}%"
