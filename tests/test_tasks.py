import itertools
import sqlite3

import pytest

from agentmetrics.store.tasks import RECOUNT_TASKS_SQL, orchestration_status, status_sql

# The rule by hand: (completed, failed, unfinished) -> status.
RULE = {
    (0, 0, 0): "completed",
    (3, 0, 0): "completed",
    (0, 2, 0): "failed",
    (2, 1, 0): "partial",
    (2, 0, 1): "partial",
    (0, 2, 1): "partial",
    (0, 0, 1): "partial",
}


@pytest.mark.parametrize("counts, status", RULE.items())
def test_orchestration_status(counts, status):
    assert orchestration_status(*counts) == status


def test_the_sql_form_of_the_rule_agrees_with_the_python_one():
    conn = sqlite3.connect(":memory:")
    sql = f"SELECT {status_sql(':c', ':f', ':u')}"
    for c, f, u in itertools.product(range(3), repeat=3):
        (status,) = conn.execute(sql, {"c": c, "f": f, "u": u}).fetchone()
        assert status == orchestration_status(c, f, u), (c, f, u)


def test_recount_counts_tasks_by_their_last_attempt(db):
    started = "2026-03-01T12:00:00.000Z"
    db.table("orchestrations").insert(
        {"id": "o", "session_id": "s", "status": "running", "started_at": started, "total_tasks": 2}
    )
    rows = [
        # (id, status, attempt, first_attempt_id): NULL attempt is a first attempt
        ("t1", "failed", None, None),  # retried, then completed: one completed task
        ("t1b", "failed", 2, "t1"),
        ("t1c", "completed", 3, "t1"),
        ("t2", "failed", 1, None),  # failed for good
        ("t3", "failed", None, None),  # retried, the retry still running
        ("t3b", "in_progress", 2, "t3"),
        ("t4", "completed", None, None),  # an original tool's row
    ]
    for id, status, attempt, first in rows:
        db.table("agent_executions").insert(
            {"id": id, "orchestration_id": "o", "agent_session_id": id, "agent_name": "x",
             "status": status, "started_at": started, "attempt": attempt,
             "first_attempt_id": first}
        )  # fmt: skip
    db.execute(RECOUNT_TASKS_SQL, {"id": "o"})
    counts = db.execute("SELECT total_tasks, completed_tasks, failed_tasks FROM orchestrations")
    assert counts.fetchone() == (4, 2, 1)
