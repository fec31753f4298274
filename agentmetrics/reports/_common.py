"""Helpers shared by the report modules: database arguments, time windows, SQL to frames."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..db import open_database
from ..errors import InvalidValue
from ..timestamps import before, parse_duration, parse_timestamp, to_iso, utcnow

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


@contextlib.contextmanager
def reading(db: DbArg) -> Iterator[Database]:
    """:func:`database` and :func:`snapshot` together: what every report reads through."""
    with database(db) as conn, snapshot(conn):
        yield conn


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


def read_frame(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a parameterised query; the columns survive even when no row matches."""
    return pd.read_sql_query(sql, db.conn, params=params)
