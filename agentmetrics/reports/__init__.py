"""Read-only reports: functions that take a database (path or ``sqlite_utils.Database``)
and return pandas DataFrames. Learning one means knowing them all: they share one
contract, tested for every report by ``tests/test_contract.py``.

Signature
    ``report(db, [subject,] *, since=None, until=None, agent=None, now=None, ...)``.
    ``db`` and the subject (the agent name of ``agent_stats``/``agent_summary``, the
    session id of ``orchestration_summary``/``executions``/``timeline``) are positional,
    everything else is keyword-only. A report takes only the filters that apply to it (table below).

Window
    A run is in the window when ``since <= started_at < until``: a run starting exactly
    at ``since`` is in, one starting exactly at ``until`` is out. Each bound is a
    timestamp (ISO text or datetime; without an offset, UTC), a span back from ``now``
    (``"7d"``, ``"90m"``, a timedelta), or None for no bound. ``now`` (default: the
    current time) is also the reference for stale runs and regressions.

Snapshot
    A report reads all its queries in one read transaction: a tracker committing
    meanwhile never makes it disagree with itself.

Exact
    The aggregate reports (``system_health``, ``performance_report``, ``agent_summary``,
    ``trends``, ``costs``, ``regressions``, ``retries``) read finished executions through the
    rollups (:mod:`agentmetrics.store.rollups`) and take ``exact=True`` to scan them instead.
    Counts, sums and rates are the same either way. Percentiles are exact up to 20,000
    finished executions in the report, else within 0.5% (DDSketch buckets) and within
    the exact min and max; ``regressions`` ranks durations binned to 0.5% for its U
    test; ``costs`` agree to float rounding. docs/store.md ("Rollups") has the details.

Vocabulary (aggregate reports)
    - ``executions``: every execution started in the window, in progress included;
      ``finished`` = ``completed`` + ``failed``; ``in_progress`` = ``executions`` -
      ``finished``. A report of finished executions only (``costs``) names its count
      ``finished``.
    - ``success_rate``: percent of ``finished`` that completed.
    - ``retries`` (sum of ``retry_count``), ``self_healed_executions`` (executions
      whose ``self_healed`` flag is set), ``files_created``, ``files_modified``: sums
      over ``executions``.
    - ``orchestrations`` and ``<status>_orchestrations``: orchestrations by status.
    - attempts (:mod:`agentmetrics.store.tasks`): ``tasks`` counts first attempts,
      ``first_attempt_success_rate`` is the percent of them that completed,
      ``retry_rate`` the percent of tasks with a second attempt; finished attempts
      only, each in the window of its own start. ``*_tasks`` names a count of tasks
      (``self_healed_tasks``), ``*_executions`` a count of executions
      (``self_healed_executions``).
    - ``stale_after``: the silence (no sign of life) that makes a running run stale, the
      same in ``stale_runs``, ``system_health``, ``reap``, ``--stale-after`` and the
      ``stale_running`` rule.

Row reports (``list_orchestrations``, ``failed_orchestrations``, ``agent_stats``,
``executions``, ``execution_rows``) keep the stored tables' columns: ``retry_count``,
and ``self_healed`` as the row's bool flag.

Dtypes
    - counts and sums: int64, also when the window is empty;
    - rates (``*_rate``): float64 percent, 0 to 100, NaN when the denominator is 0;
    - durations (``duration_ms``, ``*_duration_ms``, ``age_ms``) and offsets
      (``*_offset_ms``): float64 milliseconds, NaN when there is none;
    - timestamps: ``datetime64[us, UTC]``, NaT when there is none;
    - text: object, holding str or None; flags: bool.

========================  ===============================  =====  ==================
report                    window                           agent  columns
========================  ===============================  =====  ==================
system_health             [since, until); default          no     orchestration counts,
                          [now - hours, now), hours=24            execution counts,
                                                                  success_rate,
                                                                  avg/p50/p95 duration,
                                                                  stale_running
performance_report        [since, until)                   yes    agent_name, execution
                                                                  counts, success_rate,
                                                                  avg/min/max/p50/p95/p99
                                                                  duration, sums
agent_summary(db, agent)  [since, until)                   subj.  as performance_report
agent_stats(db, agent)    none (limit)                     subj.  agent_executions row
trends                    [since, until), by period        yes    period, [agent_name],
                                                                  execution counts,
                                                                  success_rate, p50/p95
                                                                  duration, retries,
                                                                  self_healed_executions,
                                                                  tasks,
                                                                  first_attempt_success_rate,
                                                                  retry_rate
retries                   [since, until), finished only    yes    agent_name, tasks,
                                                                  attempts, per task,
                                                                  attempt rates, retried/
                                                                  rescued/self_healed
                                                                  tasks, failed attempts,
                                                                  time and cost,
                                                                  top_reasons
error_patterns            [since, until), failed only      yes    pattern, count, agents,
                                                                  agent_count, first_seen,
                                                                  last_seen, example
self_healing              [since, until)                   yes    agent_name, execution
                                                                  counts,
                                                                  self_healed_executions,
                                                                  self_healed_rate,
                                                                  rescued, rescue_rate
durations                 [since, until), finished only    yes    agent_name, started_at,
                                                                  status, duration_ms
costs                     [since, until), finished only    yes    key columns, finished,
                                                                  total_duration_ms,
                                                                  ``*_priced``, ``*_cost_usd``,
                                                                  method
regressions               baseline [now - recent -         yes    agent_name, metric,
                          baseline, now - recent), recent         baseline/recent value
                          [now - recent, now)                     and n, change, p_value,
                                                                  p_adjusted, regressed,
                                                                  reason
stale_runs                none (stale_after, now)          no     kind, id, session_id,
                                                                  agent_name, started_at,
                                                                  last_seen_at, age_ms
list_orchestrations       none (limit)                     no     orchestrations row
failed_orchestrations     none (limit)                     no     row, task_completion_rate
orchestration_summary     none (one session)               no     row, then the columns
                                                                  of performance_report
                                                                  after agent_name
executions(db, session)   none (one session)               no     agent_executions row
timeline(db, session)     none (one session; spans=)       no     kind, id, parent, depth,
                                                                  lane, agent, task,
                                                                  attempt, status, times,
                                                                  offsets, tokens, cost,
                                                                  error_message
execution_rows            [since, until), in start order   yes    agent_executions row
========================  ===============================  =====  ==================

docs/reports.md lists every column with its dtype, generated from the reports.

Helpers (not reports): ``read_frame``, ``percent`` and ``percentiles`` compute the
reports' numbers for a view that reads live (:mod:`agentmetrics.outputs.watch`). The reports
import the store (:mod:`agentmetrics.store.db`, :mod:`agentmetrics.window`), never
matplotlib or the command line; its private modules are imported only here. Plots,
alerting, the outputs, ``maintenance`` and the command line import the reports; the store
and tracking (``import agentmetrics.monitor``) must never.
"""

# Not reports, so not in __all__: the helpers behind their numbers, for views that
# compute the same numbers live (agentmetrics.outputs.watch).
from ._common import read_frame as read_frame
from ._frames import percent as percent
from ._frames import percentiles as percentiles
from .agents import agent_stats, agent_summary, performance_report
from .cost import costs
from .health import system_health
from .orchestrations import (
    executions,
    failed_orchestrations,
    list_orchestrations,
    orchestration_summary,
)
from .regression import regressions
from .retries import retries
from .rows import execution_rows
from .run import timeline
from .stale import stale_runs
from .trend import durations, error_patterns, self_healing, trends

__all__ = [
    "agent_stats",
    "agent_summary",
    "costs",
    "durations",
    "error_patterns",
    "execution_rows",
    "executions",
    "failed_orchestrations",
    "list_orchestrations",
    "orchestration_summary",
    "performance_report",
    "regressions",
    "retries",
    "self_healing",
    "stale_runs",
    "system_health",
    "timeline",
    "trends",
]
