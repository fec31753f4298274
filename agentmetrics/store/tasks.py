"""Tasks and attempts, and the one rule for an orchestration's status.

An execution is one *attempt* of a *task*. A task's first attempt has ``attempt`` 1 (or
NULL: rows of the original tool, or written before attempts existed) and no
``first_attempt_id``; each later attempt has ``attempt`` 2, 3, ... and the ``id`` of the
first one in ``first_attempt_id``. So a task is ``COALESCE(first_attempt_id, id)``, and
its outcome is the status of its final attempt (the one with the highest number): a
completed attempt always ends its task.

Tracking (:mod:`agentmetrics.monitor`), ``reap`` and OpenTelemetry ingestion all count
tasks, and end an orchestration that has no explicit status, with what is here.
"""

from __future__ import annotations

# The task an execution belongs to, for ``agent_executions`` rows aliased ``e``.
TASK_KEY = "COALESCE(e.first_attempt_id, e.id)"

# ``e`` is the final attempt of its task: no later attempt of the same task exists.
IS_FINAL_ATTEMPT = """NOT EXISTS (
  SELECT 1 FROM agent_executions AS later
  WHERE later.first_attempt_id = COALESCE(e.first_attempt_id, e.id)
    AND later.attempt > COALESCE(e.attempt, 1))"""

# The tasks of orchestration ``:id`` by the status of their final attempt.
TASK_COUNTS_SQL = f"""
SELECT count(*) AS tasks,
  CAST(total(e.status = 'completed') AS INTEGER) AS completed,
  CAST(total(e.status = 'failed') AS INTEGER) AS failed
FROM agent_executions AS e
WHERE e.orchestration_id = :id AND {IS_FINAL_ATTEMPT}
"""


def orchestration_status(completed: int, failed: int, unfinished: int = 0) -> str:
    """The status of an orchestration that ends without an explicit one.

    ``completed`` when every task completed (or there were none), ``failed`` when
    every task failed, else ``partial``. Tasks still running count as not completed.
    """
    if failed == 0 and unfinished == 0:
        return "completed"
    if completed == 0 and unfinished == 0:
        return "failed"
    return "partial"


def status_sql(completed: str, failed: str, unfinished: str) -> str:
    """:func:`orchestration_status` as a SQL expression over three SQL expressions, for
    writes that decide the status when they are applied (possibly later, from a journal)."""
    return (
        f"CASE WHEN {failed} = 0 AND {unfinished} = 0 THEN 'completed'"
        f" WHEN {completed} = 0 AND {unfinished} = 0 THEN 'failed' ELSE 'partial' END"
    )


# Set the task counts of orchestration ``:id`` from its executions; a planned
# ``total_tasks`` larger than the tasks recorded is kept.
RECOUNT_TASKS_SQL = f"""
UPDATE orchestrations SET (total_tasks, completed_tasks, failed_tasks) = (
  SELECT max(COALESCE(orchestrations.total_tasks, 0), c.tasks), c.completed, c.failed
  FROM ({TASK_COUNTS_SQL}) AS c)
WHERE id = :id
"""
