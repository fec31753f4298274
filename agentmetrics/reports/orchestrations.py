"""Orchestration reports: the list, the failures, one orchestration and its executions."""

from __future__ import annotations

import pandas as pd
from sqlite_utils import Database

from ..errors import UnknownSession
from ..store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from ._common import DbArg, reading, subject
from ._frames import (
    AGGREGATE_COLUMNS,
    EXECUTION_SUMS,
    check_limit,
    counted,
    durations,
    percent,
    percentiles,
    rows_frame,
    select_list,
)

SUMMARY_COLUMNS = [*ORCHESTRATION_COLUMNS, *AGGREGATE_COLUMNS]

_ORCHESTRATION = select_list(ORCHESTRATION_COLUMNS)


def list_orchestrations(db: DbArg, *, limit: int = 50) -> pd.DataFrame:
    """The newest orchestrations first, like the original's ``list``.

    :param limit: how many to return, at least 1
    :raises InvalidValue: ``limit`` is not a whole number of at least 1
    :returns: the columns of the ``orchestrations`` table: ``id``, ``session_id``,
      ``task_description``, ``status``, ``started_at``, ``completed_at``,
      ``duration_ms`` (NaN while running), ``total_tasks``, ``completed_tasks``,
      ``failed_tasks``, ``git_commit_hash``, ``plan_file_path``,
      ``progress_file_path``, ``created_at``, ``metadata_json``; timestamps as UTC
      datetimes
    """
    limit = check_limit(limit)
    sql = f"SELECT {_ORCHESTRATION} FROM orchestrations ORDER BY started_at DESC LIMIT ?"
    with reading(db) as conn:
        return rows_frame(conn, sql, [limit])


def failed_orchestrations(
    db: DbArg, *, limit: int = 50, include_partial: bool = False
) -> pd.DataFrame:
    """Failed orchestrations, newest first, like the original's ``failures``.

    :param limit: how many to return, at least 1
    :param include_partial: also list ``partial`` ones (some tasks failed)
    :raises InvalidValue: ``limit`` is not a whole number of at least 1
    :returns: the columns of :func:`list_orchestrations` plus
      ``task_completion_rate``: percent of ``total_tasks`` completed (NaN when 0)
    """
    limit = check_limit(limit)
    statuses = ["failed", "partial"] if include_partial else ["failed"]
    # One LIMITed descending walk of the (status, started_at) index per status, then a
    # merge: an IN list would sort every failed and partial row to keep the newest.
    parts = " UNION ALL ".join(
        f"SELECT * FROM (SELECT {_ORCHESTRATION} FROM orchestrations"
        f" WHERE status = '{status}' ORDER BY started_at DESC LIMIT :limit)"
        for status in statuses
    )
    sql = f"SELECT * FROM ({parts}) ORDER BY started_at DESC LIMIT :limit"
    with reading(db) as conn:
        frame = rows_frame(conn, sql, {"limit": limit})
    total = frame["total_tasks"].astype("float64")
    frame["task_completion_rate"] = percent(frame["completed_tasks"], total)
    return frame


def orchestration_summary(db: DbArg, session_id: str) -> pd.DataFrame:
    """One orchestration with counts, success rate and durations of its executions.

    :param session_id: the orchestration's session id
    :raises UnknownSession: no orchestration has this session id
    :returns: one row: the columns of :func:`list_orchestrations`, then the
      execution counts, ``success_rate``, ``avg_duration_ms``, ``min_duration_ms``,
      ``max_duration_ms``, ``p50_duration_ms``, ``p95_duration_ms``,
      ``p99_duration_ms`` (of finished
      executions) and the sums ``retries``, ``self_healed_executions``,
      ``files_created``, ``files_modified`` over its executions
    """
    with reading(db) as conn:
        frame = _orchestration(conn, session_id)
        params = {"id": frame["id"].iloc[0]}
        sums = conn.execute(
            """SELECT total(status = 'completed'), total(status = 'failed'),
              total(status = 'in_progress'),
              avg(CASE WHEN status != 'in_progress' THEN duration_ms END),
              min(CASE WHEN status != 'in_progress' THEN duration_ms END),
              max(CASE WHEN status != 'in_progress' THEN duration_ms END),
              total(retry_count), total(self_healed != 0), total(files_created),
              total(files_modified)
            FROM agent_executions WHERE orchestration_id = :id""",
            params,
        ).fetchone()
        p50, p95, p99 = percentiles(durations(conn, "orchestration_id = :id", params), [50, 95, 99])
    names = ["completed", "failed", "in_progress"]
    names += ["avg_duration_ms", "min_duration_ms", "max_duration_ms", *EXECUTION_SUMS]
    extra = pd.DataFrame([dict(zip(names, sums, strict=True))], columns=AGGREGATE_COLUMNS)
    extra["p50_duration_ms"], extra["p95_duration_ms"], extra["p99_duration_ms"] = p50, p95, p99
    return pd.concat([frame, counted(extra)], axis=1)[SUMMARY_COLUMNS]


def executions(db: DbArg, session_id: str) -> pd.DataFrame:
    """The executions of one orchestration, in the order they started.

    :param session_id: the orchestration's session id
    :raises UnknownSession: no orchestration has this session id
    :returns: the columns of :func:`agentmetrics.reports.agent_stats`
    """
    with reading(db) as conn:
        orchestration_id = _orchestration(conn, session_id)["id"].iloc[0]
        return rows_frame(
            conn,
            f"SELECT {select_list(EXECUTION_COLUMNS)} FROM agent_executions"
            " WHERE orchestration_id = ? ORDER BY started_at, task_number, agent_session_id",
            [orchestration_id],
        )


def _orchestration(db: Database, session_id: str) -> pd.DataFrame:
    session_id = subject("session_id", session_id)
    frame = rows_frame(
        db, f"SELECT {_ORCHESTRATION} FROM orchestrations WHERE session_id = ?", [session_id]
    )
    if frame.empty:
        raise UnknownSession(f"No orchestration with session id {session_id!r}")
    return frame
