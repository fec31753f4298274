"""Execution rows in bulk: every column of the executions in a window, for notebooks."""

from __future__ import annotations

import pandas as pd

from ..store.migrations import EXECUTION_COLUMNS
from ._arrow import bulk_frame
from ._common import DbArg, TimeArg, window
from ._frames import select_list

_COLUMNS = select_list(EXECUTION_COLUMNS)
# Finished rows in start order from the partial (started_at, ...) index, or the
# (agent_name, started_at, ...) one, and running ones from the small in-progress
# index: SQLite merges the two, no sort.
_ROWS = f"""
SELECT {_COLUMNS} FROM agent_executions WHERE status != 'in_progress'{{where}}
UNION ALL
SELECT {_COLUMNS} FROM agent_executions WHERE status = 'in_progress'{{where}}
ORDER BY started_at
"""


def execution_rows(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    now: TimeArg = None,
) -> pd.DataFrame:
    """Every execution started in ``[since, until)`` (of ``agent``), in start order.

    For notebooks: with the ``arrow`` extra installed rows load through Arrow, over a
    million a second; without it through sqlite3, into an equal frame.

    :param since: first start time included: a timestamp or a span before ``now``
    :param until: start times before this are included (same forms)
    :param agent: only this agent's executions (an unknown agent: no rows)
    :param now: the time spans are measured back from (default: the current time)
    :raises InvalidValue: a bound is not a time, or ``since`` is after ``until``
    :returns: the columns of :func:`agentmetrics.reports.agent_stats`
    """
    where, params = window(since, until, now, agent=agent)
    return bulk_frame(db, _ROWS.format(where=where), params)
