"""Retries: how many attempts each agent's tasks took, and what the failed ones cost.

An execution is one *attempt* of a *task* (:mod:`agentmetrics.store.tasks`). The report
counts finished attempts, each in the window of its own start: a task counts where
its first attempt started, a retry or a rescue where that later attempt started.
A task whose first attempt started before ``since`` and whose retry started after
it shows the retry but not the task; over windows much longer than retries take,
that edge is noise, and the rates are capped at 100.

The counts and sums come from the rollups (:mod:`agentmetrics.store.rollups`) like every
aggregate report's; the reasons retried are read from the table: the window's
failed attempts that were followed by another attempt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..store import rollups
from ..store.tasks import IS_FINAL_ATTEMPT
from . import _rollups
from ._common import DbArg, TimeArg, read_frame, resolve_now, window
from ._frames import percent, texts
from .cost import checked_rates, price_sums, priced_sql
from .trend import TOTAL_LABEL, normalize_error

RETRY_COLUMNS = [
    "agent_name",
    "tasks",
    "attempts",
    "attempts_per_task",
    "max_attempts",
    "first_attempt_success_rate",
    "eventual_success_rate",
    "retry_rate",
    "retried_tasks",
    "rescued_tasks",
    "self_healed_tasks",
    "failed_attempts",
    "failed_duration_ms",
    "failed_cost_usd",
    "top_reasons",
]
# The rollup sums the report is made of (see rollups.SUM_COLUMNS).
_SUMS = [
    "completed",
    "failed",
    "first_attempts",
    "first_attempt_completed",
    "retried",
    "rescued",
    "max_attempt",
    "self_healed_tasks",
    "failed_duration",
]
# How many normalised reasons each agent lists, most frequent first.
TOP_REASONS = 3


def retries(
    db: DbArg,
    *,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    now: TimeArg = None,
    rates: dict[str, Any] | None = None,
    total: bool = False,
    exact: bool = False,
) -> pd.DataFrame:
    """Attempts per task, first-attempt and eventual success, and the cost of failures,
    per agent, over the finished attempts started in ``[since, until)``.

    :param since: first start time included: a timestamp or a span before ``now``
    :param until: start times before this are included (same forms)
    :param agent: only this agent's attempts
    :param now: the time spans are measured back from (default: the current time)
    :param rates: a ``[costs]`` table to price failed attempts with, as
      :func:`~agentmetrics.reports.costs` takes it (None: by time at its default rate)
    :param total: add a last row ``agent_name == "(all agents)"`` over every agent
    :param exact: scan the executions instead of reading the rollups (same numbers;
      costs agree to float rounding)
    :returns: one row per agent with a finished attempt, by name: ``agent_name``,
      ``tasks`` (first attempts), ``attempts``, ``attempts_per_task`` (mean),
      ``max_attempts`` (the highest attempt number), ``first_attempt_success_rate``
      (percent of tasks whose first attempt completed), ``eventual_success_rate``
      (percent of tasks that completed at last: first attempt or a retry),
      ``retry_rate`` (percent of tasks that needed more than one attempt),
      ``retried_tasks`` (tasks with a second attempt), ``rescued_tasks`` (completed by a
      retry), ``self_healed_tasks`` (ended by a run that recovered from an in-run
      retry), ``failed_attempts``, ``failed_duration_ms`` (their time, 0 without any),
      ``failed_cost_usd`` (their cost, priced as ``costs`` does) and ``top_reasons``:
      the :data:`TOP_REASONS` most frequent normalised error messages of failed
      attempts that were retried, ``"pattern (count)"`` joined by ``"; "`` (None
      when nothing was retried)
    """
    checked = checked_rates(rates)
    moment = resolve_now(now)
    where, params = window(since, until, moment, agent=agent, alias="e")
    with _rollups.reading(db, exact) as (conn, rolled):
        if rolled:
            sums = _rolled_sums(conn, params, agent, checked)
        else:
            sums = _exact_sums(conn, where, params, checked)
        reasons = _reasons(conn, where, params)
    sums = sums.sort_values("agent_name").reset_index(drop=True)
    if total and len(sums):
        totals = sums.drop(columns="agent_name").sum()
        totals["max_attempt"] = sums["max_attempt"].max()
        sums.loc[len(sums)] = {"agent_name": TOTAL_LABEL, **totals}
        reasons = pd.concat([reasons, reasons.assign(agent_name=TOTAL_LABEL)])
    return _frame(sums, reasons)


def _exact_sums(conn: Database, where: str, params: dict, rates: dict) -> pd.DataFrame:
    """The sums per agent by a scan, and ``failed_cost_usd``, priced row by row."""
    listed = ", ".join(f"{rollups.SUM_COLUMNS[name]} AS {name}" for name in _SUMS)
    sums = read_frame(
        conn,
        f"SELECT e.agent_name, {listed} FROM agent_executions e"
        f" WHERE e.status != 'in_progress'{where} GROUP BY e.agent_name",
        params,
    )
    failed, cost_params = f"{where} AND e.status = 'failed'", dict(params)
    cost = read_frame(conn, priced_sql(rates, "e.agent_name", failed, cost_params), cost_params)
    return sums.merge(
        cost[["group_key", "cost_usd"]].rename(
            columns={"group_key": "agent_name", "cost_usd": "failed_cost_usd"}
        ),
        on="agent_name",
        how="left",
    )


def _rolled_sums(conn: Database, params: dict, agent: str | None, rates: dict) -> pd.DataFrame:
    """:func:`_exact_sums` from the rollups' sums per agent and model."""
    found = _rollups.finished(
        conn, params.get("since"), params.get("until"), agent=agent, by=["agent_name", "model"]
    )
    costs = price_sums(found, rates, rollups.FAILED)
    frame = found[["agent_name", *_SUMS]].assign(failed_cost_usd=sum(costs.values()))
    combine = {name: "max" if name == "max_attempt" else "sum" for name in _SUMS}
    return frame.groupby("agent_name", as_index=False).agg(combine | {"failed_cost_usd": "sum"})


# The window's failed attempts followed by another attempt, counted per message. The
# unary + keeps SQLite from reading the agent index whole for the grouping's order when
# the window's start index finds the few rows.
_REASONS = f"""
SELECT e.agent_name, e.error_message, count(*) AS count FROM agent_executions e
WHERE e.status != 'in_progress' AND e.status = 'failed'{{where}} AND NOT {IS_FINAL_ATTEMPT}
GROUP BY +e.agent_name, e.error_message
"""


def _reasons(conn: Database, where: str, params: dict) -> pd.DataFrame:
    """The normalised messages of the window's failed attempts followed by another
    attempt, counted per agent: columns ``agent_name``, ``pattern``, ``count``."""
    found = read_frame(conn, _REASONS.format(where=where), params)
    messages = texts(found)["error_message"]  # all NULL would read as NaN
    # Each distinct message normalised once (and cached): the costly part at scale.
    found["pattern"] = [normalize_error(message) for message in messages]
    return found[["agent_name", "pattern", "count"]]


def _frame(sums: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """The report's columns from the sums per agent and the reasons."""
    counts = {name: sums[name].fillna(0).astype("int64") for name in _SUMS}
    tasks = counts["first_attempts"]
    attempts = counts["completed"] + counts["failed"]
    eventual = np.minimum(counts["first_attempt_completed"] + counts["rescued"], tasks)
    frame = pd.DataFrame(
        {
            "agent_name": sums["agent_name"].astype(object),
            "tasks": tasks,
            "attempts": attempts,
            "attempts_per_task": (attempts / tasks.where(tasks > 0)).astype("float64"),
            "max_attempts": counts["max_attempt"],
            "first_attempt_success_rate": percent(counts["first_attempt_completed"], tasks),
            "eventual_success_rate": percent(eventual, tasks),
            "retry_rate": percent(np.minimum(counts["retried"], tasks), tasks),
            "retried_tasks": counts["retried"],
            "rescued_tasks": counts["rescued"],
            "self_healed_tasks": counts["self_healed_tasks"],
            "failed_attempts": counts["failed"],
            "failed_duration_ms": sums["failed_duration"].astype("float64"),
            "failed_cost_usd": sums["failed_cost_usd"].fillna(0.0).astype("float64"),
            "top_reasons": _joined(reasons).reindex(sums["agent_name"]).to_numpy(),
        },
        columns=RETRY_COLUMNS,
    )
    return texts(frame, ["top_reasons"])


def _joined(reasons: pd.DataFrame) -> pd.Series:
    """The top reasons per agent as one text each (index: agent names)."""
    if reasons.empty:
        return pd.Series([], dtype=object)
    reasons = reasons.groupby(["agent_name", "pattern"], as_index=False)["count"].sum()
    ranked = reasons.sort_values(["agent_name", "count", "pattern"], ascending=[True, False, True])
    top = ranked.groupby("agent_name").head(TOP_REASONS)
    shown = top["pattern"] + " (" + top["count"].astype("int64").astype(str) + ")"
    return shown.groupby(top["agent_name"]).agg("; ".join)


__all__ = ["RETRY_COLUMNS", "retries"]
