"""Read-only reports: functions that take a database (path or ``sqlite_utils.Database``)
and return pandas DataFrames. Time windows accept ``now=`` for reproducible results."""

from .costs import costs  # noqa: E402
