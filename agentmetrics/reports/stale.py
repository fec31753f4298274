"""Stale runs: orchestrations still ``running`` and executions still ``in_progress``
long after anything could still be happening, the trace of a crashed process.

The last sign of life of an execution is its ``started_at`` (nothing else is written
until it completes); for an orchestration it is the latest of its own ``started_at``
and its executions' ``started_at``/``completed_at``: an orchestration whose agents
are still starting and finishing is alive, however long ago it began.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ..timestamps import before, positive_duration, to_iso
from ._common import DbArg, TimeArg, read_frame, reading, resolve_now
from ._frames import to_utc, typed

DEFAULT_STALE_AFTER = "6h"

STALE_COLUMNS = [
    "kind",
    "id",
    "session_id",
    "agent_name",
    "started_at",
    "last_seen_at",
    "age_ms",
]

# Both halves only visit unfinished rows started before the cutoff (the status/started_at
# and partial in_progress indexes); the orchestration half looks its executions up by
# orchestration_id. An execution's last sign of life is its start, so counting its half
# needs the in_progress index alone.
_STALE_EXECUTIONS = (
    "FROM agent_executions e WHERE e.status = 'in_progress' AND e.started_at < :cutoff"
)
_STALE_ORCHESTRATIONS = """
  SELECT 'orchestration' AS kind, o.id, o.session_id, NULL AS agent_name, o.started_at,
    max(o.started_at, COALESCE((
      SELECT max(max(e.started_at, COALESCE(e.completed_at, e.started_at)))
      FROM agent_executions e WHERE e.orchestration_id = o.id
    ), o.started_at)) AS last_seen_at
  FROM orchestrations o
  WHERE o.status = 'running' AND o.started_at < :cutoff
"""
STALE_SQL = f"""
SELECT kind, id, session_id, agent_name, started_at, last_seen_at FROM (
  {_STALE_ORCHESTRATIONS}
  UNION ALL
  SELECT 'execution', e.id, e.agent_session_id, e.agent_name, e.started_at, e.started_at
  {_STALE_EXECUTIONS}
)
WHERE last_seen_at < :cutoff
"""
_COUNT_STALE_SQL = f"""
SELECT (SELECT count(*) FROM ({_STALE_ORCHESTRATIONS}) WHERE last_seen_at < :cutoff)
  + (SELECT count(*) {_STALE_EXECUTIONS})
"""


def stale_cutoff(stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER, now: TimeArg = None) -> str:
    """The ISO time before which a run's last sign of life makes it stale."""
    return to_iso(before(resolve_now(now), positive_duration(stale_after, "stale_after")))


def stale_runs(
    db: DbArg,
    *,
    stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER,
    now: TimeArg = None,
) -> pd.DataFrame:
    """Unfinished runs with no sign of life for longer than ``stale_after``.

    :param stale_after: an age such as ``"6h"``, ``"90m"``, ``"2d"``
    :param now: the reference time (default: the current time)
    :returns: one row per stale run, oldest sign of life first, with columns

      - ``kind``: ``"orchestration"`` or ``"execution"``
      - ``id``: the row's id
      - ``session_id``: the orchestration's ``session_id`` or the execution's
        ``agent_session_id``
      - ``agent_name``: the execution's agent (None for orchestrations)
      - ``started_at``, ``last_seen_at``: UTC datetimes
      - ``age_ms``: milliseconds from ``last_seen_at`` to ``now`` (float64)
    """
    moment = resolve_now(now)
    cutoff = stale_cutoff(stale_after, moment)
    with reading(db) as conn:
        df = read_frame(
            conn,
            STALE_SQL + " ORDER BY last_seen_at, kind, id",
            {"cutoff": cutoff},
        )
    df = typed(df)
    df["last_seen_at"] = to_utc(df["last_seen_at"])
    age = pd.Timestamp(moment) - df["last_seen_at"]
    df["age_ms"] = (age.dt.total_seconds() * 1000).round().astype("float64")
    return df[STALE_COLUMNS]


def count_stale(
    db: DbArg, *, stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER, now: TimeArg = None
) -> int:
    """How many orchestrations and executions :func:`stale_runs` would list."""
    cutoff = stale_cutoff(stale_after, now)
    with reading(db) as conn:
        return conn.execute(_COUNT_STALE_SQL, {"cutoff": cutoff}).fetchone()[0]
