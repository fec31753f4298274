"""Maintenance writes: closing the stale runs a crashed process left behind."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd

from .errors import ReadOnlyDatabase
from .reports.stale import DEFAULT_STALE_AFTER, STALE_COLUMNS, stale_runs
from .store.db import DbArg, ensure_database, refused_write, using_database, write_transaction
from .store.tasks import RECOUNT_TASKS_SQL, status_sql
from .timestamps import sql_duration_ms, to_iso
from .window import TimeArg, resolve_now

REAP_COLUMNS = [*STALE_COLUMNS, "error_message"]

_DURATION = sql_duration_ms(":last_seen")

# The status condition makes a run that finished meanwhile stay untouched; an existing
# message is kept, the new one appended.
_REAP_EXECUTION = f"""
UPDATE agent_executions SET status = 'failed', completed_at = :last_seen,
  duration_ms = {_DURATION},
  error_message = CASE WHEN COALESCE(error_message, '') = '' THEN :message
                       ELSE error_message || char(10) || :message END
WHERE id = :id AND status = 'in_progress'
"""

# An abandoned orchestration's status: the one rule, every task that did not complete
# counted as failed (it never will), and failed when it recorded no task at all.
_EVERY_OTHER_TASK_FAILED = status_sql("completed_tasks", "total_tasks - completed_tasks", "0")
_ABANDONED_STATUS = (
    f"CASE WHEN COALESCE(total_tasks, 0) = 0 THEN 'failed' ELSE {_EVERY_OTHER_TASK_FAILED} END"
)

# Orchestrations have no error_message column: the message goes into metadata_json,
# merged into an existing JSON object, or wrapping metadata that is not one. Its task
# counts are recounted first.
_REAP_ORCHESTRATION = f"""
UPDATE orchestrations SET status = {_ABANDONED_STATUS}, completed_at = :last_seen,
  duration_ms = {_DURATION},
  metadata_json = CASE
    WHEN metadata_json IS NULL THEN json_object('error_message', :message)
    WHEN json_valid(metadata_json) AND json_type(metadata_json) = 'object' THEN
      json_set(metadata_json, '$.error_message',
               COALESCE(json_extract(metadata_json, '$.error_message') || char(10), '')
               || :message)
    ELSE json_object('error_message', :message, 'previous_metadata', metadata_json)
  END
WHERE id = :id AND status = 'running'
"""


def reap(
    db: DbArg,
    *,
    stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER,
    now: TimeArg = None,
    dry_run: bool = False,
) -> pd.DataFrame:
    """Close stale runs (see :func:`agentmetrics.reports.stale.stale_runs`) as ``failed``.

    Each run gets ``completed_at`` = its last sign of life, the duration up to then,
    and the message ``abandoned: no activity since <last seen>; reaped at <now>``
    (in ``error_message`` for executions, in ``metadata_json`` for orchestrations,
    which have no such column). A reaped orchestration's task counts are recounted from
    its executions, as the context manager keeps them, and its status follows the one
    rule (:func:`agentmetrics.store.tasks.orchestration_status`) with every task that did not
    complete counted as failed: ``partial`` when some completed; with no task at all,
    ``failed``. Everything happens in one transaction; finished rows are never touched.

    :param stale_after: how long without a sign of life makes a run stale
    :param now: the reference time (default: the current time)
    :param dry_run: only list what would be reaped
    :returns: the reaped runs: the columns of ``stale_runs`` plus ``error_message``
    """
    moment = resolve_now(now)
    with using_database(db, create=False) as conn:
        runs = _with_messages(stale_runs(conn, stale_after=stale_after, now=moment), moment)
        if dry_run or runs.empty:  # nothing to write: no write lock, fine on a read-only file
            return runs
        try:
            # A plain Database of an original file gets metadata_json first.
            ensure_database(conn)
            with write_transaction(conn):
                # Listed again under the write lock, so no run can finish in between.
                runs = _with_messages(stale_runs(conn, stale_after=stale_after, now=moment), moment)
                # Executions first: their failures count in their orchestration.
                for row in runs.sort_values("kind", kind="stable").itertuples(index=False):
                    params = {
                        "id": row.id,
                        "last_seen": to_iso(row.last_seen_at),
                        "message": row.error_message,
                    }
                    if row.kind == "orchestration":
                        conn.execute(RECOUNT_TASKS_SQL, {"id": row.id})
                        conn.execute(_REAP_ORCHESTRATION, params)
                    else:
                        conn.execute(_REAP_EXECUTION, params)
        except sqlite3.OperationalError as e:
            if refused_write(e):
                raise ReadOnlyDatabase(
                    f"Cannot reap {len(runs)} stale runs: the database is read-only"
                    " (--dry-run lists them without writing)"
                ) from None
            raise
    return runs


def _with_messages(runs: pd.DataFrame, moment: dt.datetime) -> pd.DataFrame:
    reaped_at = to_iso(moment)
    runs["error_message"] = [
        f"abandoned: no activity since {to_iso(seen)}; reaped at {reaped_at}"
        for seen in runs["last_seen_at"]
    ]
    return runs[REAP_COLUMNS]
