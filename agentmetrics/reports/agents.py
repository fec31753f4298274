"""Per-agent reports: the performance table, one agent's summary and its executions."""

from __future__ import annotations

import pandas as pd
from sqlite_utils import Database

from ..errors import UnknownAgent
from ..store.migrations import EXECUTION_COLUMNS
from . import _rollups
from ._arrow import bulk_frame
from ._common import DbArg, TimeArg, resolve_now, subject, window
from ._frames import (
    AGGREGATE_COLUMNS,
    EXECUTION_SUMS,
    check_limit,
    counted_rows,
    percentiles,
    select_list,
    split_durations,
)

PERFORMANCE_COLUMNS = ["agent_name", *AGGREGATE_COLUMNS]

_SUMS = """count(*), total(status = 'completed'), total(status = 'failed'),
  avg(duration_ms), min(duration_ms), max(duration_ms), total(retry_count),
  total(self_healed != 0), total(files_created), total(files_modified),
  group_concat(duration_ms)"""
# The durations for the percentiles come from the same index scan as the sums.

# The distinct agents with finished executions, found by a loose index scan: one
# seek per agent on the (agent_name, ...) partial index instead of a full scan, then
# one range scan per agent. Both keep the whole query on that covering index.
_FINISHED_BY_AGENT = f"""
WITH RECURSIVE agents(name) AS (
  SELECT min(agent_name) FROM agent_executions WHERE status != 'in_progress'
  UNION ALL
  SELECT (SELECT min(agent_name) FROM agent_executions
          WHERE status != 'in_progress' AND agent_name > agents.name)
  FROM agents WHERE agents.name IS NOT NULL
)
SELECT e.agent_name, {_SUMS}
FROM agents JOIN agent_executions e ON e.agent_name = agents.name
WHERE e.status != 'in_progress'{{where}}
GROUP BY e.agent_name
"""
_FINISHED_ONE_AGENT = f"""
SELECT agent_name, {_SUMS} FROM agent_executions
WHERE status != 'in_progress'{{where}} GROUP BY agent_name
"""
_IN_PROGRESS = """
SELECT agent_name, count(*), total(retry_count), total(self_healed != 0),
  total(files_created), total(files_modified)
FROM agent_executions WHERE status = 'in_progress'{where} GROUP BY agent_name
"""


def performance_report(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    now: TimeArg = None,
    exact: bool = False,
) -> pd.DataFrame:
    """One row per agent: execution counts, success rate, durations, retries and files.

    Executions count by ``started_at`` in ``[since, until)``. Counts, success rate and
    min/max/avg durations match the original tool's ``performance`` for the same
    rows; the percentiles are new.

    :param since: first start time included: a timestamp or a span before ``now``
    :param until: start times before this are included (same forms)
    :param agent: only this agent
    :param now: the time spans are measured back from (default: the current time)
    :param exact: scan the executions instead of reading the rollups; the percentiles
      are then exact, else within 0.5% (see :mod:`agentmetrics.store.rollups`)
    :raises InvalidValue: a bound is not a time, or ``since`` is after ``until``
    :returns: sorted by most executions first, then ``agent_name``; columns
      ``agent_name``, the execution counts, ``success_rate``, ``avg_duration_ms``,
      ``min_duration_ms``, ``max_duration_ms``, ``p50_duration_ms``,
      ``p95_duration_ms``, ``p99_duration_ms`` (of finished executions) and the sums
      ``retries``, ``self_healed_executions``, ``files_created``, ``files_modified`` (see
      :mod:`agentmetrics.reports` for the vocabulary)
    """
    with _rollups.reading(db, exact) as (conn, rolled):
        return _performance(conn, since, until, agent, now, rolled)


def agent_summary(
    db: DbArg,
    agent: str,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    now: TimeArg = None,
    exact: bool = False,
) -> pd.DataFrame:
    """The :func:`performance_report` row of one agent (all its executions by default).

    :param exact: as for :func:`performance_report`
    :raises UnknownAgent: no execution has this agent name
    :returns: one row with the columns of :func:`performance_report` (zero counts
      and NaN durations when the window holds none of the agent's executions)
    """
    with _rollups.reading(db, exact) as (conn, rolled):
        _check_agent(conn, agent)
        frame = _performance(conn, since, until, agent, now, rolled)
    if frame.empty:
        frame = _finish([{"agent_name": agent}])
    return frame


def agent_stats(db: DbArg, agent: str, *, limit: int | None = None) -> pd.DataFrame:
    """Every execution of one agent, newest first (no row cap unless ``limit`` is given).

    :param agent: the agent's name, exactly as recorded
    :param limit: return only the newest ``limit`` executions
    :raises UnknownAgent: no execution has this agent name
    :raises InvalidValue: ``limit`` is not a whole number of at least 1
    :returns: the columns of the ``agent_executions`` table (see ``Row frames`` in
      :mod:`agentmetrics.reports`)
    """
    agent = subject("agent", agent)
    if limit is not None:
        limit = check_limit(limit)
    columns = select_list(EXECUTION_COLUMNS)
    # Finished rows come in order from the partial (agent_name, started_at, ...)
    # index and running ones from the small in-progress index: SQLite merges the two.
    sql = f"""
    SELECT {columns} FROM agent_executions
    WHERE agent_name = :agent AND status != 'in_progress'
    UNION ALL
    SELECT {columns} FROM agent_executions
    WHERE agent_name = :agent AND status = 'in_progress'
    ORDER BY started_at DESC
    """
    params: dict = {"agent": agent}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    frame = bulk_frame(db, sql, params)
    if frame.empty:  # no window: any execution of the agent would be a row
        raise UnknownAgent(f"No executions of agent {agent!r}")
    return frame


def _check_agent(db: Database, agent_name: str) -> None:
    agent_name = subject("agent", agent_name)
    found = db.execute(
        "SELECT 1 FROM agent_executions WHERE agent_name = ? AND status != 'in_progress'"
        " UNION ALL SELECT 1 FROM agent_executions"
        " WHERE agent_name = ? AND status = 'in_progress' LIMIT 1",
        [agent_name, agent_name],
    ).fetchone()
    if found is None:
        raise UnknownAgent(f"No executions of agent {agent_name!r}")


def _performance(
    db: Database,
    since: TimeArg,
    until: TimeArg,
    agent: str | None,
    now: TimeArg,
    rolled: bool = False,
) -> pd.DataFrame:
    now = resolve_now(now)  # one moment for both windows' spans
    terms, params = window(since, until, now, agent=agent)
    rows: dict[str, dict] = {}
    if rolled:
        found = _rollups.finished(
            db,
            params.get("since"),
            params.get("until"),
            agent=agent,
            by=["agent_name"],
            quantiles=[50, 95, 99],
        )
        for row in found.itertuples(index=False):
            rows[row.agent_name] = {
                "agent_name": row.agent_name,
                "completed": row.completed,
                "failed": row.failed,
                "avg_duration_ms": row.duration_sum / row.durations if row.durations else None,
                "min_duration_ms": row.duration_min,
                "max_duration_ms": row.duration_max,
                **{column: getattr(row, column) for column in EXECUTION_SUMS},
                "p50_duration_ms": row.p50,
                "p95_duration_ms": row.p95,
                "p99_duration_ms": row.p99,
            }
        finished = []
    elif agent is not None:
        finished = db.execute(_FINISHED_ONE_AGENT.format(where=terms), params)
    else:
        joined, _ = window(since, until, now, alias="e")
        finished = db.execute(_FINISHED_BY_AGENT.format(where=joined), params)
    for (
        name, n, completed, failed, avg, low, high, retries, healed, created, modified, text
    ) in finished:  # fmt: skip
        p50, p95, p99 = percentiles(split_durations(text), [50, 95, 99])
        rows[name] = {
            "agent_name": name,
            "finished": n,
            "completed": completed,
            "failed": failed,
            "avg_duration_ms": avg,
            "min_duration_ms": low,
            "max_duration_ms": high,
            "retries": retries,
            "self_healed_executions": healed,
            "files_created": created,
            "files_modified": modified,
            "p50_duration_ms": p50,
            "p95_duration_ms": p95,
            "p99_duration_ms": p99,
        }
    for name, n, retries, healed, created, modified in db.execute(
        _IN_PROGRESS.format(where=terms), params
    ):
        row = rows.setdefault(name, {"agent_name": name})
        row["in_progress"] = n
        for column, value in zip(EXECUTION_SUMS, (retries, healed, created, modified), strict=True):
            row[column] = row.get(column, 0) + value
    return _finish(list(rows.values()))


def _finish(rows: list[dict]) -> pd.DataFrame:
    frame = counted_rows(rows, PERFORMANCE_COLUMNS)
    if len(frame) < 2:
        return frame
    frame = frame.sort_values(["executions", "agent_name"], ascending=[False, True])
    return frame.reset_index(drop=True)
