"""System health: what ran in the last N hours, as one row."""

from __future__ import annotations

import pandas as pd

from ._common import DbArg, TimeArg, database, hours_window, snapshot
from ._frames import durations, percentiles, success_rate
from .stale import DEFAULT_OLDER_THAN, count_stale

HEALTH_COLUMNS = [
    "total_orchestrations",
    "completed_orchestrations",
    "failed_orchestrations",
    "partial_orchestrations",
    "running_orchestrations",
    "total_executions",
    "finished_executions",
    "completed_executions",
    "failed_executions",
    "in_progress_executions",
    "success_rate",
    "avg_duration_ms",
    "p50_duration_ms",
    "p95_duration_ms",
    "stale_running",
]

_WINDOW = "started_at >= :start AND started_at <= :end"

# One range count per status on the (status, started_at) index.
_ORCHESTRATIONS = ", ".join(
    f"(SELECT count(*) FROM orchestrations WHERE status = '{status}' AND {_WINDOW})"
    for status in ("completed", "failed", "partial", "running")
)

# `status != 'in_progress'` is written exactly as in the partial index's WHERE, so
# SQLite can answer from that covering index alone.
_FINISHED = f"""
SELECT count(*), total(status = 'completed'), avg(duration_ms)
FROM agent_executions WHERE status != 'in_progress' AND {_WINDOW}
"""
_IN_PROGRESS = f"SELECT count(*) FROM agent_executions WHERE status = 'in_progress' AND {_WINDOW}"


def system_health(
    db: DbArg, hours: float = 24, now: TimeArg = None, stale_after: str = DEFAULT_OLDER_THAN
) -> pd.DataFrame:
    """Counts, success rate and durations of everything started in ``[now - hours, now]``.

    An orchestration or execution belongs to the window by its ``started_at``. Counts
    match the original tool's ``health`` for the same window; the original printed
    ``finished_executions`` as "Total".

    :param db: database path or ``sqlite_utils.Database``
    :param hours: length of the window, a positive number
    :param now: end of the window (default: the current time)
    :param stale_after: how long without a sign of life makes a run stale (``"6h"``)
    :raises ValueError: ``hours`` is not a positive number, or ``now`` is not a timestamp
    :returns: one row with the columns

      - ``total_orchestrations``, ``completed_orchestrations``, ``failed_orchestrations``,
        ``partial_orchestrations``, ``running_orchestrations`` (int)
      - ``total_executions`` (all started, in progress included), ``finished_executions``
        (completed + failed), ``completed_executions``, ``failed_executions``,
        ``in_progress_executions`` (int)
      - ``success_rate``: percent of finished executions that completed (NaN if none)
      - ``avg_duration_ms``, ``p50_duration_ms``, ``p95_duration_ms``: of finished
        executions; percentiles are exact, by linear interpolation as numpy's default
        (NaN if none)
      - ``stale_running``: orchestrations still running and executions still in
        progress with no sign of life for ``stale_after``, whenever they started (see
        :mod:`agentmetrics.reports.stale`); these are also in the running counts
    """
    start, end = hours_window(hours, now)
    params = {"start": start, "end": end}
    with database(db) as conn, snapshot(conn):
        completed_o, failed_o, partial_o, running_o = conn.execute(
            f"SELECT {_ORCHESTRATIONS}", params
        ).fetchone()
        finished, completed, avg = conn.execute(_FINISHED, params).fetchone()
        (in_progress,) = conn.execute(_IN_PROGRESS, params).fetchone()
        p50, p95 = percentiles(durations(conn, _WINDOW, params), [50, 95])
        stale = count_stale(conn, stale_after, end)
    completed = int(completed)
    row = {
        "total_orchestrations": completed_o + failed_o + partial_o + running_o,
        "completed_orchestrations": completed_o,
        "failed_orchestrations": failed_o,
        "partial_orchestrations": partial_o,
        "running_orchestrations": running_o,
        "total_executions": finished + in_progress,
        "finished_executions": finished,
        "completed_executions": completed,
        "failed_executions": finished - completed,
        "in_progress_executions": in_progress,
        "success_rate": success_rate(completed, finished - completed),
        "avg_duration_ms": float("nan") if avg is None else float(avg),
        "p50_duration_ms": p50,
        "p95_duration_ms": p95,
        "stale_running": stale,
    }
    frame = pd.DataFrame([row], columns=HEALTH_COLUMNS)
    return frame.astype({column: "int64" for column in [*HEALTH_COLUMNS[:10], "stale_running"]})
