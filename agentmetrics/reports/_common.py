"""Helpers shared by the report modules: database arguments, time windows, SQL to frames."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..db import open_database
from ..timestamps import before, parse_timestamp, to_iso, utcnow

DbArg = str | os.PathLike[str] | Database
TimeArg = str | dt.datetime | None


@contextlib.contextmanager
def database(db: DbArg) -> Iterator[Database]:
    """Yield a Database for ``db``; a path is opened (never created) and closed after."""
    if isinstance(db, Database):
        yield db
        return
    opened = open_database(db, create=False)
    try:
        yield opened
    finally:
        opened.close()


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[Database]:
    """Run a report's statements in one read transaction.

    Each statement alone sees a consistent database, but a tracker committing
    between two of them would make a report disagree with itself (an execution
    counted neither finished nor in progress). In WAL mode a read transaction
    never blocks writers. Inside a caller's transaction, that one is used.
    """
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN")
    try:
        yield db
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def resolve_now(now: TimeArg = None) -> dt.datetime:
    """``now`` as an aware UTC datetime (the current time when None)."""
    return utcnow() if now is None else parse_timestamp(now)


def iso(moment: TimeArg) -> str | None:
    """A user-given time bound in the stored ISO format (None stays None)."""
    return None if moment is None else to_iso(parse_timestamp(moment))


def hours_window(hours: float, now: TimeArg = None) -> tuple[str, str]:
    """``[now - hours, now]`` as ISO strings, comparable with stored ``started_at``."""
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    end = resolve_now(now)
    return to_iso(before(end, hours)), to_iso(end)


def read_frame(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a parameterised query; the columns survive even when no row matches."""
    return pd.read_sql_query(sql, db.conn, params=params)


def percentile(sorted_values: np.ndarray, q: float) -> float:
    """Exact percentile by linear interpolation between closest ranks (numpy's default).

    ``q`` is in [0, 100]; NaN for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    h = (n - 1) * q / 100
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo]))
