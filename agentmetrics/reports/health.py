"""System health: what ran in a window (by default the last 24 hours), as one row."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ..errors import InvalidValue
from ..timestamps import before
from . import _rollups
from ._common import DbArg, TimeArg, resolve_now, window
from ._frames import EXECUTION_COUNTS, counted_rows, durations, percentiles
from .stale import DEFAULT_STALE_AFTER, count_stale

ORCHESTRATION_COUNTS = [
    "orchestrations",
    "completed_orchestrations",
    "failed_orchestrations",
    "partial_orchestrations",
    "running_orchestrations",
]
HEALTH_COLUMNS = [
    *ORCHESTRATION_COUNTS,
    *EXECUTION_COUNTS,
    "success_rate",
    "avg_duration_ms",
    "p50_duration_ms",
    "p95_duration_ms",
    "stale_running",
]

# One range count per status on the (status, started_at) index.
_ORCHESTRATIONS = ", ".join(
    f"(SELECT count(*) FROM orchestrations WHERE status = '{status}'{{where}})"
    for status in ("completed", "failed", "partial", "running")
)

# `status != 'in_progress'` is written exactly as in the partial index's WHERE, so
# SQLite can answer from that covering index alone.
_FINISHED = """
SELECT total(status = 'completed'), total(status = 'failed'), avg(duration_ms)
FROM agent_executions WHERE status != 'in_progress'{where}
"""
_IN_PROGRESS = "SELECT count(*) FROM agent_executions WHERE status = 'in_progress'{where}"


def system_health(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    hours: float | None = None,
    now: TimeArg = None,
    stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER,
    exact: bool = False,
) -> pd.DataFrame:
    """Counts, success rate and durations of everything started in ``[since, until)``.

    Without ``since`` and ``until`` the window is the last ``hours`` hours (default
    24), like the original tool's ``health``: ``hours=24`` is ``since="24h",
    until=now``. An orchestration or
    execution belongs to the window by its ``started_at``. Counts match the original
    for the same window; the original printed ``finished`` as "Total".

    :param since: first start time included: a timestamp or a span before ``now``
    :param until: start times before this are included (same forms)
    :param hours: the window's length back from ``now``, instead of ``since``/``until``
    :param now: the time spans and ``stale_after`` are measured back from
    :param stale_after: how long without a sign of life makes a run stale (``"6h"``)
    :param exact: scan the executions instead of reading the rollups; the percentiles
      are then exact, else within 0.5% (see :mod:`agentmetrics.store.rollups`)
    :raises InvalidValue: both ``hours`` and a bound, ``hours`` not a positive
      number, or a bad time
    :returns: one row: the orchestration counts ``orchestrations``,
      ``completed_orchestrations``, ``failed_orchestrations``,
      ``partial_orchestrations``, ``running_orchestrations``; the execution counts;
      ``success_rate``; ``avg_duration_ms``, ``p50_duration_ms``, ``p95_duration_ms``
      of finished executions; ``stale_running``: orchestrations still running and
      executions still in progress with no sign of life for ``stale_after``, whenever
      they started (see :mod:`agentmetrics.reports.stale`), also in the running counts
    """
    if hours is not None and (since is not None or until is not None):
        raise InvalidValue("give hours or since/until, not both")
    moment = resolve_now(now)
    if since is None and until is None:
        hours = 24 if hours is None else hours
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
            raise InvalidValue(f"hours must be a positive number, got {hours!r}")
        since, until = before(moment, hours), moment  # clamped: hours=1e15 is "all"
    where, params = window(since, until, moment)
    with _rollups.reading(db, exact) as (conn, rolled):
        completed_o, failed_o, partial_o, running_o = conn.execute(
            f"SELECT {_ORCHESTRATIONS.format(where=where)}", params
        ).fetchone()
        if rolled:
            found = _rollups.finished(
                conn, params.get("since"), params.get("until"), quantiles=[50, 95]
            )
            completed, failed, total, n, p50, p95 = (
                found[["completed", "failed", "duration_sum", "durations", "p50", "p95"]]
                .iloc[0]
                .tolist()
            )
            avg = total / n if n else None
        else:
            completed, failed, avg = conn.execute(_FINISHED.format(where=where), params).fetchone()
            p50, p95 = percentiles(durations(conn, f"1{where}", params), [50, 95])
        (in_progress,) = conn.execute(_IN_PROGRESS.format(where=where), params).fetchone()
        stale = count_stale(conn, stale_after=stale_after, now=moment)
    row = {
        "orchestrations": completed_o + failed_o + partial_o + running_o,
        "completed_orchestrations": completed_o,
        "failed_orchestrations": failed_o,
        "partial_orchestrations": partial_o,
        "running_orchestrations": running_o,
        "completed": completed,
        "failed": failed,
        "in_progress": in_progress,
        "avg_duration_ms": avg,
        "p50_duration_ms": p50,
        "p95_duration_ms": p95,
        "stale_running": stale,
    }
    return counted_rows([row], HEALTH_COLUMNS, ints=[*ORCHESTRATION_COUNTS, "stale_running"])
