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

from ._common import DbArg, reading
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
_SPANS = """
SELECT span_id, parent_span_id, role, start_ns, end_ns, data FROM otel_spans WHERE trace_id = ?
"""
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
    with reading(db) as conn:
        orchestration = _orchestration(conn, session_id).iloc[0]
        runs = rows_frame(conn, _EXECUTIONS, [orchestration["id"]])
        found = _stored_spans(conn, runs) if spans and len(runs) else []
    start = orchestration["started_at"]
    runs["depth"], runs["lane"] = _layout(
        runs["id"].tolist(), runs["parent_execution_id"].tolist(), _task_keys(runs)
    )
    runs["start_offset_ms"] = (runs["started_at"] - start) / _MS
    ends = runs["completed_at"].fillna(runs["started_at"] + runs["duration_ms"] * _MS)
    runs["end_offset_ms"] = (ends - start) / _MS
    frame = runs[COLUMNS]
    if found:
        frame = _with_spans(frame, found, start)
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


def _stored_spans(conn, runs: pd.DataFrame) -> list[tuple[int, tuple]]:
    """``(execution row, span row)`` for the LLM and tool spans under each execution."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'otel_spans'"
    ).fetchone():
        return []
    agents: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (trace, span) in enumerate(zip(runs["trace_id"], runs["span_id"], strict=True)):
        if trace is not None and span is not None:
            agents[str(trace)][str(span)] = i
    found = []
    for trace, executions in agents.items():
        rows = conn.execute(_SPANS, [trace]).fetchall()
        up = {row[0]: (row[1], row[2]) for row in rows}
        owners: dict[str | None, int | None] = {}
        for row in rows:
            if row[2] in SPAN_KINDS:
                owner = _owner(row[1], up, executions, owners)
                if owner is not None:
                    found.append((owner, row))
    return found


def _owner(
    span_id: str | None,
    up: dict[str, tuple[str | None, str | None]],
    executions: dict[str, int],
    owners: dict[str | None, int | None],
) -> int | None:
    """The execution of the nearest agent span at or above ``span_id`` (memoised)."""
    path = []
    found = None
    while span_id is not None and span_id in up:
        if span_id in owners:
            found = owners[span_id]
            break
        path.append(span_id)
        parent, role = up[span_id]
        if role == "agent":
            found = executions.get(span_id)
            break
        span_id = parent
    for seen in path:
        owners[seen] = found
    return found


def _with_spans(frame: pd.DataFrame, found: list[tuple[int, tuple]], start: pd.Timestamp):
    """``frame`` with each execution's spans after it, in start order."""
    owner = np.fromiter((i for i, _ in found), np.int64, len(found))
    span_ids, _, kinds, starts, ends, datas = zip(*(row for _, row in found), strict=True)
    # One parse of all the spans' data: a call of json.loads per span costs far more.
    data = json.loads("[" + ",".join(d or "{}" for d in datas) + "]")
    start_ns = np.array(starts, dtype=np.int64)
    end_ns = np.array(ends, dtype=np.int64)
    base = start.value  # ns since the epoch
    columns: dict[str, Any] = {
        "kind": _objects(kinds),
        "id": _objects(span_ids),
        "name": _objects([d.get("name") for d in data]),
        "status": _objects(["failed" if "error" in d else "completed" for d in data]),
        "started_at": pd.to_datetime(start_ns, utc=True).as_unit("us"),
        "completed_at": pd.to_datetime(end_ns, utc=True).as_unit("us"),
        "start_offset_ms": (start_ns - base) / 1e6,
        "end_offset_ms": (end_ns - base) / 1e6,
        "duration_ms": (end_ns - start_ns) / 1e6,
        "model": _objects([_text(d.get("model")) for d in data]),
        # numpy reads None as NaN in a float array.
        "input_tokens": np.array([d.get("input_tokens") for d in data], dtype=np.float64),
        "output_tokens": np.array([d.get("output_tokens") for d in data], dtype=np.float64),
        "cost_usd": np.array([d.get("cost") for d in data], dtype=np.float64),
        "error_message": _objects([d.get("error") or None for d in data]),
    }
    for column in ("parent_execution_id", "depth", "lane", *_INHERITED):
        columns[column] = frame[column].to_numpy()[owner]
    columns["parent_execution_id"] = frame["id"].to_numpy()[owner]
    columns["depth"] = columns["depth"] + 1
    calls = pd.DataFrame({c: columns[c] for c in COLUMNS}, copy=False)
    both = pd.concat([frame, calls], ignore_index=True)
    # Executions keep their order, each followed by its spans by start time.
    order = np.lexsort(
        (
            np.concatenate([np.zeros(len(frame), np.int64), start_ns]),
            np.concatenate([np.zeros(len(frame), np.int64), np.ones(len(calls), np.int64)]),
            np.concatenate([np.arange(len(frame)), owner]),
        )
    )
    return both.take(order).reset_index(drop=True)


def _objects(values: Sequence[Any]) -> pd.Series:
    """Text as object dtype holding str or None (see ``_frames.texts``), built directly."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return pd.Series(array, dtype=object, copy=False)


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
