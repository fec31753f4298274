"""Per-agent reports: the performance table, one agent's summary and its executions."""

from __future__ import annotations

import pandas as pd
from sqlite_utils import Database

from ..errors import UnknownAgent
from ..migrations import EXECUTION_COLUMNS
from ._common import DbArg, TimeArg, database, iso, snapshot
from ._frames import (
    check_limit,
    percentiles,
    rows_frame,
    select_list,
    split_durations,
    success_rate,
)

PERFORMANCE_COLUMNS = [
    "agent_name",
    "executions",
    "completed",
    "failed",
    "success_rate",
    "avg_duration_ms",
    "min_duration_ms",
    "max_duration_ms",
    "p50_duration_ms",
    "p95_duration_ms",
    "p99_duration_ms",
    "total_retries",
    "self_healed",
    "files_created",
    "files_modified",
]
_COUNTS = ["executions", "completed", "failed", "total_retries", "self_healed"]
_COUNTS += ["files_created", "files_modified"]

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
WHERE agent_name = :agent AND status != 'in_progress'{{where}} GROUP BY agent_name
"""
_IN_PROGRESS = """
SELECT agent_name, count(*), total(retry_count), total(self_healed != 0),
  total(files_created), total(files_modified)
FROM agent_executions WHERE status = 'in_progress'{where} GROUP BY agent_name
"""


def performance_report(db: DbArg, since: TimeArg = None, until: TimeArg = None) -> pd.DataFrame:
    """One row per agent: execution counts, success rate, durations, retries and files.

    Executions count by ``started_at`` in ``[since, until]`` (no bound when None).
    Counts, success rate and min/max/avg durations match the original tool's
    ``performance`` for the same rows; the percentiles are new.

    :param db: database path or ``sqlite_utils.Database``
    :param since: first start time included (a datetime or ISO text)
    :param until: last start time included
    :raises ValueError: a bound is not a timestamp, or ``since`` is after ``until``
    :returns: sorted by most executions first, then ``agent_name``; columns

      - ``agent_name``
      - ``executions`` (all started, in progress included), ``completed``, ``failed``
      - ``success_rate``: percent of finished executions that completed (NaN if none)
      - ``avg_duration_ms``, ``min_duration_ms``, ``max_duration_ms``,
        ``p50_duration_ms``, ``p95_duration_ms``, ``p99_duration_ms``: of finished
        executions, exact percentiles by linear interpolation (NaN if none)
      - ``total_retries``, ``self_healed`` (executions that self-healed),
        ``files_created``, ``files_modified``: sums (int)
    """
    with database(db) as conn, snapshot(conn):
        return _performance(conn, since, until, None)


def agent_summary(
    db: DbArg, agent_name: str, since: TimeArg = None, until: TimeArg = None
) -> pd.DataFrame:
    """The :func:`performance_report` row of one agent, over all its executions.

    :raises UnknownAgent: no execution has this agent name
    :returns: one row with the columns of :func:`performance_report` (zero counts
      and NaN durations when the window holds none of the agent's executions)
    """
    with database(db) as conn, snapshot(conn):
        _check_agent(conn, agent_name)
        frame = _performance(conn, since, until, agent_name)
    if frame.empty:
        empty = {column: 0 for column in _COUNTS}
        frame = _finish([{"agent_name": agent_name, **empty}])
    return frame


def agent_stats(db: DbArg, agent_name: str, limit: int | None = None) -> pd.DataFrame:
    """Every execution of one agent, newest first (no row cap unless ``limit`` is given).

    :param agent_name: the agent's name, exactly as recorded
    :param limit: return only the newest ``limit`` executions
    :raises UnknownAgent: no execution has this agent name
    :raises ValueError: ``limit`` is not a whole number of at least 1
    :returns: the columns of the ``agent_executions`` table: ``id``,
      ``orchestration_id``, ``agent_session_id``, ``agent_name``, ``task_id``,
      ``task_number``, ``status``, ``started_at``, ``completed_at``, ``duration_ms``,
      ``retry_count``, ``self_healed`` (bool), ``files_created``, ``files_modified``,
      ``error_message``, ``summary_report_path``, ``session_log_path``,
      ``created_at``, ``model``, ``input_tokens``, ``output_tokens``, ``cost_usd``,
      ``metadata_json``. Timestamps are UTC datetimes; ``duration_ms`` is NaN while
      running.
    """
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
    params: dict = {"agent": agent_name}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    with database(db) as conn, snapshot(conn):
        _check_agent(conn, agent_name)
        return rows_frame(conn, sql, params)


def _window(since: TimeArg, until: TimeArg, column: str = "started_at") -> tuple[str, dict]:
    start, end = iso(since), iso(until)
    if start is not None and end is not None and start > end:
        raise ValueError(f"since ({start}) is after until ({end})")
    where, params = "", {}
    if start is not None:
        where += f" AND {column} >= :start"
        params["start"] = start
    if end is not None:
        where += f" AND {column} <= :end"
        params["end"] = end
    return where, params


def _check_agent(db: Database, agent_name: str) -> None:
    found = db.execute(
        "SELECT 1 FROM agent_executions WHERE agent_name = ? AND status != 'in_progress'"
        " UNION ALL SELECT 1 FROM agent_executions"
        " WHERE agent_name = ? AND status = 'in_progress' LIMIT 1",
        [agent_name, agent_name],
    ).fetchone()
    if found is None:
        raise UnknownAgent(f"No executions of agent {agent_name!r}")


def _performance(db: Database, since: TimeArg, until: TimeArg, agent: str | None) -> pd.DataFrame:
    where, params = _window(since, until)
    rows: dict[str, dict] = {}
    if agent is None:
        joined, _ = _window(since, until, "e.started_at")
        finished = db.execute(_FINISHED_BY_AGENT.format(where=joined), params)
    else:
        finished = db.execute(_FINISHED_ONE_AGENT.format(where=where), {**params, "agent": agent})
    for (
        name, n, completed, failed, avg, low, high, retries, healed, created, modified, text
    ) in finished:  # fmt: skip
        p50, p95, p99 = percentiles(split_durations(text), [50, 95, 99])
        rows[name] = {
            "agent_name": name,
            "executions": n,
            "completed": completed,
            "failed": failed,
            "avg_duration_ms": avg,
            "min_duration_ms": low,
            "max_duration_ms": high,
            "total_retries": retries,
            "self_healed": healed,
            "files_created": created,
            "files_modified": modified,
            "p50_duration_ms": p50,
            "p95_duration_ms": p95,
            "p99_duration_ms": p99,
        }
    running_where = where + (" AND agent_name = :agent" if agent is not None else "")
    running_params = params if agent is None else {**params, "agent": agent}
    for name, n, retries, healed, created, modified in db.execute(
        _IN_PROGRESS.format(where=running_where), running_params
    ):
        row = rows.setdefault(name, {"agent_name": name, "completed": 0, "failed": 0})
        row["executions"] = row.get("executions", 0) + n
        for column, value in (
            ("total_retries", retries),
            ("self_healed", healed),
            ("files_created", created),
            ("files_modified", modified),
        ):
            row[column] = row.get(column, 0) + value
    return _finish(list(rows.values()))


def _finish(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=PERFORMANCE_COLUMNS)
    frame["success_rate"] = [
        success_rate(c, f) for c, f in zip(frame["completed"], frame["failed"], strict=True)
    ]
    frame = frame.astype({column: "int64" for column in _COUNTS})
    frame = frame.astype({column: "float64" for column in PERFORMANCE_COLUMNS[4:11]})
    frame["agent_name"] = frame["agent_name"].astype(object)
    frame = frame.sort_values(["executions", "agent_name"], ascending=[False, True])
    return frame.reset_index(drop=True)
