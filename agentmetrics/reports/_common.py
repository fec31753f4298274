"""What the report modules share: database access (:mod:`agentmetrics.store.db`), the window
(:mod:`agentmetrics.window`), and SQL to frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..store import schema
from ..store.db import DbArg, reading, snapshot, using_database
from ..window import TimeArg, bound, resolve_now
from ..window import window as _window

__all__ = [
    "DbArg",
    "TimeArg",
    "bound",
    "read_frame",
    "reading",
    "resolve_now",
    "snapshot",
    "subject",
    "using_database",
    "window",
]


def subject(name: str, value: Any) -> str:
    """A report's subject (a session id, an agent name) as stored text, so a value
    SQLite cannot bind (a lone surrogate, an integer past 64 bits) is an InvalidValue."""
    return schema.text(name, value)


def window(
    since: Any, until: Any, now: TimeArg = None, *, agent: str | None = None, alias: str = ""
) -> tuple[str, dict[str, str]]:
    """:func:`agentmetrics.window.window`, with ``agent`` checked as a :func:`subject`."""
    agent = None if agent is None else subject("agent", agent)
    return _window(since, until, now, agent=agent, alias=alias)


def read_frame(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a parameterised query; the columns survive even when no row matches."""
    return pd.read_sql_query(sql, db.conn, params=params)
