"""The timeline of one orchestration: its executions in start order, with their nesting
and attempts, and on request the OpenTelemetry spans each one ran.

Rows are laid out for a waterfall: a *lane* holds one task (every attempt of it, see
:mod:`agentmetrics.store.tasks`), and lanes are numbered parent first, then its children's
tasks in start order, so a nested run sits under the one it ran inside. A span belongs
to the execution of the nearest agent span above it (as ingestion maps them) and
takes that execution's lane.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ._arrow import bulk_columns, json_columns
from ._common import DbArg, snapshot, using_database
from ._frames import rows_frame
from .orchestrations import _orchestration

COLUMNS = [
    "kind",
    "id",
    "parent_execution_id",
    "depth",
    "lane",
    "agent_name",
    "name",
    "task_id",
    "task_number",
    "attempt",
    "first_attempt_id",
    "status",
    "started_at",
    "completed_at",
    "start_offset_ms",
    "end_offset_ms",
    "duration_ms",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "error_message",
]
SPAN_KINDS = ("llm", "tool")
# What an execution's spans take from it.
_INHERITED = ("agent_name", "task_id", "task_number", "attempt", "first_attempt_id")
_TRACE = "CASE WHEN json_valid(metadata_json) THEN json_extract(metadata_json, '$.{}') END"
_EXECUTIONS = f"""
SELECT 'execution' AS kind, id, parent_execution_id, agent_name, agent_name AS name, task_id,
  task_number, attempt, first_attempt_id, status, started_at, completed_at, duration_ms, model,
  input_tokens, output_tokens, cost_usd, error_message,
  {_TRACE.format("trace_id")} AS trace_id, {_TRACE.format("span_id")} AS span_id
FROM agent_executions WHERE orchestration_id = ?
ORDER BY started_at, task_number, agent_session_id
"""
# Every span of a trace, with its data (JSON) for the frame's columns: the data's keys
# and the columns they fill. Ingestion stores a failed span's error as text (maybe
# empty), never null. Text holds strings; a model that is not one is spelled by Python.
_SPANS = """
SELECT span_id AS id, parent_span_id AS parent, role AS kind, start_ns, end_ns, {data}
FROM otel_spans WHERE trace_id = :trace ORDER BY span_id
"""
_DATA = {
    "name": "name",
    "model": "model",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cost": "cost_usd",
    "error": "error_message",
}
_NUMBERS = ("input_tokens", "output_tokens", "cost")
_STATUSES = np.array(["completed", "failed"], dtype=object)
# What pyarrow parses, and what SQLite extracts when it cannot (no Arrow, or a value
# of another type): ``odd`` then holds the data of a span whose model is not text.
_RAW = "coalesce(data, '{}') || char(10) AS data"
_EXTRACTED = (
    ", ".join(
        f"CAST(json_extract(data, '$.{key}') AS REAL) AS {column}"
        if key in _NUMBERS
        else f"json_extract(data, '$.{key}') AS {column}"
        for key, column in _DATA.items()
    )
    + ", CASE WHEN json_type(data, '$.model') NOT IN ('text', 'null') THEN data END AS odd"
)
_MS = pd.Timedelta(milliseconds=1)


def timeline(db: DbArg, session_id: str, *, spans: bool = False) -> pd.DataFrame:
    """The executions of one orchestration, in start order, placed for a waterfall.

    Works for every source: tracked runs, OpenTelemetry traces (whose spans are kept)
    and the original tool's files (no parents: every execution at depth 0).

    :param session_id: the orchestration's session id
    :param spans: also list, after each execution, the LLM and tool calls stored for
      it by OpenTelemetry ingestion, in start order
    :raises UnknownSession: no orchestration has this session id
    :returns: one row per execution (then per span): ``kind`` (``execution``, ``llm``
      or ``tool``), ``id`` (the execution's, or the span's id), ``parent_execution_id``
      (the execution it ran inside; a span's is its own execution), ``depth`` (0 for a
      run of the orchestration itself, +1 per level of nesting), ``lane`` (0, 1, ...:
      one per task, parents first), ``agent_name``, ``name`` (the agent, or the span's
      name), ``task_id``, ``task_number``, ``attempt``, ``first_attempt_id``,
      ``status`` (a span is ``completed`` or ``failed``), ``started_at``,
      ``completed_at``, ``start_offset_ms`` and ``end_offset_ms`` (from the
      orchestration's start; the end NaN while running), ``duration_ms``, ``model``,
      ``input_tokens``, ``output_tokens``, ``cost_usd``, ``error_message``. A span
      repeats its execution's agent, task and attempt. ``frame.attrs["orchestration"]``
      holds the orchestration's ``session_id``, ``task_description``, ``status``,
      ``started_at`` and ``completed_at``.
    """
    with using_database(db, create=False) as conn:
        with snapshot(conn):
            orchestration = _orchestration(conn, session_id).iloc[0]
            runs = rows_frame(conn, _EXECUTIONS, [orchestration["id"]])
        # Many rows, read through Arrow when it can: in a snapshot of their own.
        calls = _stored_spans(conn, runs) if spans and len(runs) else None
    start = orchestration["started_at"]
    runs["depth"], runs["lane"] = _layout(
        runs["id"].tolist(), runs["parent_execution_id"].tolist(), _task_keys(runs)
    )
    runs["start_offset_ms"] = (runs["started_at"] - start) / _MS
    ends = runs["completed_at"].fillna(runs["started_at"] + runs["duration_ms"] * _MS)
    runs["end_offset_ms"] = (ends - start) / _MS
    frame = runs[COLUMNS]
    if calls is not None:
        frame = _with_spans(frame, calls, start)
    frame.attrs["orchestration"] = {
        key: orchestration[key]
        for key in ("session_id", "task_description", "status", "started_at", "completed_at")
    }
    return frame


def _task_keys(runs: pd.DataFrame) -> list[str]:
    """Each execution's task: ``COALESCE(first_attempt_id, id)``."""
    return runs["first_attempt_id"].where(runs["first_attempt_id"].notna(), runs["id"]).tolist()


def _layout(
    ids: Sequence[str], parents: Sequence[str | None], tasks: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each execution's depth (ancestors in this orchestration) and lane (its task's
    place: parents first, children in start order). A parent outside the orchestration
    counts as none; a cycle in bad data is cut where it closes."""
    index = {id_: i for i, id_ in enumerate(ids)}
    parent = [index.get(p) if p is not None else None for p in parents]
    depth = [-1] * len(ids)
    for i in range(len(ids)):
        path, seen, j = [], set(), i
        while j is not None and depth[j] < 0 and j not in seen:
            path.append(j)
            seen.add(j)
            j = parent[j]
        level = depth[j] + 1 if j is not None and depth[j] >= 0 else 0
        for k in reversed(path):
            depth[k] = level
            level += 1
    first: dict[str, int] = {}
    for i, task in enumerate(tasks):
        first.setdefault(task, i)
    children: dict[str | None, list[str]] = defaultdict(list)
    for task, i in first.items():
        above = parent[i]
        up = tasks[above] if above is not None and tasks[above] != task else None
        children[up].append(task)
    lanes: dict[str, int] = {}
    for root in [*children[None], *first]:  # then tasks caught in a cycle
        stack = [root]
        while stack:
            task = stack.pop()
            if task not in lanes:
                lanes[task] = len(lanes)
                stack.extend(reversed(children[task]))
    return np.array(depth, dtype=np.int64), np.array([lanes[t] for t in tasks], dtype=np.int64)


def _stored_spans(conn: Database, runs: pd.DataFrame) -> dict[str, np.ndarray] | None:
    """The spans of the executions' traces: ``_SPANS``'s columns (numbers cast) and
    ``owner``, the row in ``runs`` of an LLM or tool call's execution (-1 for other
    spans); None when no call is stored."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'otel_spans'"
    ).fetchone():
        return None
    agents: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (trace, span) in enumerate(zip(runs["trace_id"], runs["span_id"], strict=True)):
        if trace is not None and span is not None:
            agents[str(trace)][str(span)] = i
    found = []
    for trace, executions in agents.items():
        spans = _span_columns(conn, trace)
        calls = pd.Index(spans["kind"], dtype=object).isin(SPAN_KINDS)
        spans["owner"] = np.where(calls, _owners(spans, executions), -1)
        found.append(spans)
    if not found:
        return None
    spans = (
        found[0]
        if len(found) == 1
        else {n: np.concatenate([f[n] for f in found]) for n in found[0]}
    )
    return spans if (spans["owner"] >= 0).any() else None


def _span_columns(conn: Database, trace: str) -> dict[str, np.ndarray]:
    """:data:`_SPANS` of ``trace``, its data read by pyarrow or else by SQLite, the
    numbers as int64 and float64 arrays."""
    params = {"trace": trace}
    fields = {key: float if key in _NUMBERS else str for key in _DATA}
    found = json_columns(conn, _SPANS.format(data=_RAW), params, fields)
    if found is None:
        found = bulk_columns(conn, _SPANS.format(data=_EXTRACTED), params)
        odd = found.pop("odd")
        for i in np.flatnonzero(pd.notna(odd)):  # a model stored as a number or a list
            found["model"][i] = _text(json.loads(odd[i]).get("model"))
    spans = {_DATA.get(name, name): values for name, values in found.items()}
    for name in ("start_ns", "end_ns"):
        spans[name] = np.asarray(spans[name], dtype=np.int64)
    for key in _NUMBERS:
        spans[_DATA[key]] = np.asarray(spans[_DATA[key]], dtype=np.float64)  # None: NaN
    return spans


def _owners(spans: dict[str, np.ndarray], executions: dict[str, int]) -> np.ndarray:
    """For each span of a trace, the row in ``executions`` (agent span id: row) of the
    nearest agent span above it, or -1: none, or an agent span of no execution here,
    or a cycle in bad data."""
    count = len(spans["id"])
    index = pd.Index(spans["id"], dtype=object)
    up = index.get_indexer(pd.Index(spans["parent"], dtype=object))
    up[up < 0] = count  # a parent outside the trace: the end, at a row of its own
    agent = np.append(spans["kind"] == "agent", False)
    # Where each span leads: an agent span to itself, another to its parent.
    step = np.append(np.where(agent[:-1], np.arange(count), up), count)
    # Jump twice as far each round: log2(n) rounds reach the end of any chain; a span
    # still short of an agent then is in a cycle, whose spans lead to no execution.
    for _ in range(count.bit_length() + 1):
        further = step[step]
        if np.array_equal(further, step):
            break
        step = further
    rows = np.full(count + 1, -1, dtype=np.int64)
    known = index.get_indexer(list(executions))
    rows[known[known >= 0]] = np.array(list(executions.values()), dtype=np.int64)[known >= 0]
    rows[~agent] = -1
    return rows[step[up]]


def _with_spans(
    frame: pd.DataFrame, spans: dict[str, np.ndarray], start: pd.Timestamp
) -> pd.DataFrame:
    """``frame`` with each execution's calls (``spans`` from :func:`_stored_spans`
    whose ``owner`` is one of its rows) after it, in start order."""
    count = len(frame)
    kept = np.flatnonzero(spans["owner"] >= 0)
    owner = spans["owner"][kept]
    # Executions keep their order, each followed by its calls by start time.
    order = np.lexsort(
        (
            np.concatenate([np.zeros(count, np.int64), spans["start_ns"][kept]]),
            np.concatenate([np.zeros(count, np.int64), np.ones(len(kept), np.int64)]),
            np.concatenate([np.arange(count), owner]),
        )
    )
    # Each row's place in [frame's rows, spans], and its execution's row in frame.
    source = np.concatenate([np.arange(count), count + kept])[order]
    execution = np.concatenate([np.arange(count), owner])[order]
    is_span = source >= count
    data: dict[str, Any] = {}
    for column, values in _span_values(spans, start).items():
        mine = frame[column]
        if isinstance(mine.dtype, pd.DatetimeTZDtype):
            both = np.concatenate([mine.dt.tz_localize(None).to_numpy(), values])[source]
            data[column] = pd.Series(both, copy=False).dt.tz_localize("UTC")
        else:
            both = np.concatenate([mine.to_numpy(), values])[source]
            data[column] = pd.Series(both, dtype=mine.dtype, copy=False)
    for column in ("lane", *_INHERITED):
        data[column] = pd.Series(frame[column].to_numpy()[execution], dtype=frame[column].dtype)
    data["depth"] = frame["depth"].to_numpy()[execution] + is_span
    ids, parents = frame["id"].to_numpy()[execution], frame["parent_execution_id"].to_numpy()
    data["parent_execution_id"] = pd.Series(
        np.where(is_span, ids, parents[execution]), dtype=object
    )
    return pd.DataFrame({column: data[column] for column in COLUMNS}, copy=False)


def _span_values(spans: dict[str, np.ndarray], start: pd.Timestamp) -> dict[str, np.ndarray]:
    """The frame's columns a span fills itself (times: UTC datetime64[us])."""
    start_ns, end_ns, error = spans["start_ns"], spans["end_ns"], spans["error_message"]
    values = {name: spans[name] for name in ("kind", "id", "name", "model", "cost_usd")}
    return values | {
        "input_tokens": spans["input_tokens"],
        "output_tokens": spans["output_tokens"],
        "status": _STATUSES[pd.notna(error).astype(np.int64)],
        "error_message": np.where(error == "", None, error),
        "started_at": start_ns.astype("datetime64[ns]").astype("datetime64[us]"),
        "completed_at": end_ns.astype("datetime64[ns]").astype("datetime64[us]"),
        "start_offset_ms": (start_ns - start.value) / 1e6,  # value: ns since the epoch
        "end_offset_ms": (end_ns - start.value) / 1e6,
        "duration_ms": (end_ns - start_ns) / 1e6,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# -- for the views: one line per task, and what a view of at most N executions shows ----

MAX_EXECUTIONS = 500


def lanes(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per lane of a :func:`timeline` frame: ``lane``, ``depth``,
    ``agent_name``, ``task_number``, ``attempts``, ``status`` (of the final attempt),
    ``start_offset_ms`` (the first attempt's), ``end_offset_ms`` (the final attempt's:
    NaN while it runs), ``duration_ms`` (the final attempt's), ``error_message`` (of
    the last failed attempt) and ``label`` (the agent, ``#task``, the attempts,
    indented by depth: ``└ `` under its parent)."""
    runs = frame[frame["kind"] == "execution"]
    final = runs.sort_values(["lane", "attempt", "start_offset_ms"]).groupby("lane").tail(1)
    final = final.set_index("lane")
    first = runs.groupby("lane").head(1).set_index("lane")
    failed = runs[runs["status"] == "failed"].groupby("lane")["error_message"].last()
    out = pd.DataFrame(
        {
            "depth": first["depth"],
            "agent_name": first["agent_name"],
            "task_number": first["task_number"],
            "attempts": runs.groupby("lane").size(),
            "status": final["status"],
            "start_offset_ms": runs.groupby("lane")["start_offset_ms"].min(),
            "end_offset_ms": final["end_offset_ms"],
            "duration_ms": final["duration_ms"],
            "error_message": failed.reindex(first.index).astype(object),
        }
    ).sort_index()
    out["error_message"] = out["error_message"].where(out["error_message"].notna(), None)
    out["label"] = [
        ("   " * (depth - 1) + "└ " if depth else "")
        + str(agent)
        + ("" if pd.isna(task) else f" #{task:g}")
        + (f" ({attempts} attempts)" if attempts > 1 else "")
        for depth, agent, task, attempts in zip(
            out["depth"], out["agent_name"], out["task_number"], out["attempts"], strict=True
        )
    ]
    return out.rename_axis("lane").reset_index()


def fold(frame: pd.DataFrame, limit: int = MAX_EXECUTIONS) -> tuple[pd.DataFrame, str | None]:
    """The rows of the first lanes holding at most ``limit`` executions (at least one
    lane), and a sentence saying what was left out (None when nothing was)."""
    runs = frame[frame["kind"] == "execution"]
    if len(runs) <= limit:
        return frame, None
    per_lane = runs.groupby("lane").size().sort_index()
    kept = max(1, int((per_lane.cumsum() <= limit).sum()))
    last_lane = per_lane.index[kept - 1]
    left = runs[runs["lane"] > last_lane]
    statuses = left["status"].value_counts()
    counts = ", ".join(f"{statuses[s]:,} {s}" for s in sorted(statuses.index))
    note = (
        f"Folded: {len(left):,} more executions in {len(per_lane) - kept:,} lanes"
        f" ({counts}) after the first {len(runs) - len(left):,}"
    )
    return frame[frame["lane"] <= last_lane], note


def now_offset(frame: pd.DataFrame, now) -> float:
    """``now`` in ms after the orchestration's start (the latest end without a start)."""
    started = (frame.attrs.get("orchestration") or {}).get("started_at")
    if started is None:
        return float(frame["end_offset_ms"].max(skipna=True) or 0)
    moment = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if moment.tzinfo is None:
        moment = moment.tz_localize("UTC")
    return (moment - started) / pd.Timedelta(milliseconds=1)
