"""What the report modules share: database access (:mod:`agentmetrics.store.db`), the window
(:mod:`agentmetrics.window`), and SQL to frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..store.db import DbArg, reading, snapshot, using_database
from ..window import TimeArg, bound, resolve_now, window

__all__ = [
    "DbArg",
    "TimeArg",
    "bound",
    "read_frame",
    "reading",
    "resolve_now",
    "snapshot",
    "using_database",
    "window",
]


def read_frame(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a parameterised query; the columns survive even when no row matches."""
    return pd.read_sql_query(sql, db.conn, params=params)
