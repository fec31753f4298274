"""A small hand-made database for the costs, OTLP, Prometheus, watch and report tests.

Every number the tests expect is derived from the table in :data:`RUNS` by hand.
"""

from __future__ import annotations

import datetime as dt

import agentmetrics

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
NOW = dt.datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)

# (orchestration session, agent session, agent, offset from T0 (s), duration (s),
#  status, completion keyword arguments)
RUNS = [
    ("s-1", "a-1", "coder", 0, 60, "completed", {"files_created": 2, "files_modified": 3}),
    (
        "s-1",
        "a-2",
        "reviewer",
        60,
        120,
        "failed",
        {"error_message": "TimeoutError: too slow", "retry_count": 2, "self_healed": True},
    ),
    (
        "s-2",
        "a-3",
        "coder",
        3600,
        30,
        "completed",
        {"model": "m-small", "input_tokens": 1000, "output_tokens": 500},
    ),
    ("s-2", "a-4", "tester", 3630, 10, "completed", {"cost_usd": 0.25}),
    (None, "a-5", "coder", 86400, 600, "completed", {}),
]


class Clock:
    def __init__(self, moment: dt.datetime) -> None:
        self.moment = moment

    def __call__(self) -> dt.datetime:
        return self.moment


def build(path) -> dict[str, str]:
    """Write the runs into ``path``; return the ids by session id."""
    clock = Clock(T0)
    monitor = agentmetrics.Monitor(path, clock=clock)
    ids: dict[str, str] = {}
    clock.moment = T0
    ids["s-1"] = monitor.start_orchestration("s-1", "Build feature", total_tasks=2)
    clock.moment = T0 + dt.timedelta(seconds=3600)
    ids["s-2"] = monitor.start_orchestration("s-2", "Fix <bug> & test", total_tasks=2)
    for session, agent_session, agent, offset, duration, status, extra in RUNS:
        clock.moment = T0 + dt.timedelta(seconds=offset)
        ids[agent_session] = monitor.start_agent_execution(
            agent_session, agent, orchestration_id=ids.get(session) if session else None
        )
        clock.moment += dt.timedelta(seconds=duration)
        monitor.complete_agent_execution(agent_session, status, **extra)
    clock.moment = T0 + dt.timedelta(seconds=300)
    monitor.complete_orchestration("s-1", "completed", completed_tasks=1, failed_tasks=1)
    clock.moment = T0 + dt.timedelta(seconds=3700)
    monitor.complete_orchestration("s-2", "failed")
    # Still running at NOW: an orchestration started 7h before NOW (stale after 6h) with
    # an agent in progress, and a fresh standalone agent started 10 minutes before NOW.
    clock.moment = NOW - dt.timedelta(hours=7)
    ids["s-3"] = monitor.start_orchestration("s-3", "Long job")
    ids["a-6"] = monitor.start_agent_execution("a-6", "coder", orchestration_id=ids["s-3"])
    clock.moment = NOW - dt.timedelta(minutes=10)
    ids["a-7"] = monitor.start_agent_execution("a-7", "tester")
    monitor.close()
    return ids
