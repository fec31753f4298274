"""The one code path by which spans become orchestrations and executions.

API (used by ``import --format otlp``, ``serve`` and :class:`SQLiteSpanExporter`):

- :func:`ingest_spans` ``(db, spans) -> Ingested``: store decoded spans
  (:class:`~agentmetrics.otel.spans.Span`, or :class:`~agentmetrics.otel.spans.RejectedSpan`
  to count as rejected) and derive the rows of every trace they touch.
- :func:`ingest_request` ``(db, body, content_type) -> Ingested``: the same for the body
  of an OTLP/HTTP ``POST /v1/traces`` (already un-gzipped): ``application/json`` or
  ``application/x-protobuf``. A body that is not an ``ExportTraceServiceRequest``
  raises :class:`~agentmetrics.errors.InvalidExport` with a one-line reason and writes
  nothing; an unknown content type raises :class:`~agentmetrics.errors.InvalidValue`.
  Its two steps, :func:`decode_request` then :func:`ingest_spans`, can run apart
  (``serve`` decodes outside its write lock).

:class:`Ingested` counts accepted and rejected spans (``rejected``, ``error_message``:
what an OTLP partial success reports) and the rows written. Writes happen in short
transactions (about :data:`LOCK_SECONDS` each) with parameterised SQL; a write the
database refuses (read-only, locked past the busy timeout, ``busy_timeout_ms``, full)
raises :class:`~agentmetrics.errors.StorageError`. ``db`` is a path (opened and closed on each
call) or an open Database, better for many calls; calls sharing one Database from
several threads must take turns (a lock around them).

The mapping (docs/opentelemetry.md, "In: how spans become rows"): every span is kept
in ``otel_spans``; each time spans of a trace arrive, the trace's rows are derived again
from all its spans, so spans may arrive in any order and sending the same spans twice
changes nothing.
An agent span (``gen_ai.operation.name`` ``invoke_agent``, OpenInference kind
``AGENT``) is an execution; the workflow span (``invoke_workflow``), or else the root
span of a trace with agent spans, is its orchestration (a running one until that span
arrives). LLM spans (``chat``..., ``LLM``) add their tokens and cost to the execution
they run in, tool spans (``execute_tool``, ``TOOL``) are counted in its metadata.
Retries: an agent span following a failed one of the same agent under the same parent
span is the task's next attempt; a failed tool call followed by the same tool, or an
HTTP request sent again (``http.request.resend_count``), is a retry inside its run
(``retry_count``, ``self_healed``). An orchestration without an error of its own ends
by :func:`agentmetrics.store.tasks.orchestration_status`. Spans carrying ``agentmetrics.*``
attributes (our own export) give back the rows exported, with the exact times it
carries for those OTLP's fields cannot hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlite_utils import Database

from ..errors import InvalidExport, InvalidValue, ReadOnlyDatabase, StorageError
from ..store.batching import BatchSize
from ..store.db import database_file, refused_write, using_database, write_transaction
from ..store.schema import COLUMNS
from ..store.tasks import orchestration_status
from .attributes import EXECUTION, ORCHESTRATION, PREFIX, TIMES, carried
from .spans import STATUS_ERROR, RejectedSpan, Span, decode_json, decode_protobuf, read_file

LOCK_SECONDS = 0.1
_FIRST_BATCH = 500
_MAX_REASONS = 5
# uuid5 namespace of execution ids derived from (trace id, span id).
_NAMESPACE = bytes.fromhex("6f0b8a5251a44f4e9c4b3d0c2f7e8a11")
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}
_ROLES = {
    "invoke_workflow": "workflow",
    "invoke_agent": "agent",
    "execute_tool": "tool",
    "AGENT": "agent",
    "TOOL": "tool",
    "LLM": "llm",
    "EMBEDDING": "llm",
}
# One encoder for every call: creating one per call costs more than encoding.
_dumps = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,
    separators=(",", ":"),
    sort_keys=True,
    default=lambda value: value.hex() if isinstance(value, bytes) else str(value),
).encode


@dataclasses.dataclass
class Ingested:
    """What one ingestion did: spans accepted and rejected, and rows (re)written, once
    per transaction that derived them."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)
    orchestrations: int = 0
    executions: int = 0
    # Rows added to the tables (set by ingest_files; rows above count rewrites too).
    new_orchestrations: int = 0
    new_executions: int = 0

    @property
    def error_message(self) -> str:
        """Why spans were rejected, in one line ("" if none were)."""
        more = self.rejected - len(self.reasons)
        return "; ".join(self.reasons) + (f" (and {more} more)" if more > 0 else "")

    def add(self, other: Ingested) -> None:
        self.accepted += other.accepted
        self.orchestrations += other.orchestrations
        self.executions += other.executions
        for reason in other.reasons:
            self._reject(reason)
        self.rejected += other.rejected - len(other.reasons)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)


# -- what the mapping reads from one span ----------------------------------------------


# What the mapping reads, with the attributes it comes from (the first one present wins).
_FIELDS = {
    "conversation": ("gen_ai.conversation.id", "session.id"),
    "workflow": ("gen_ai.workflow.name",),
    "agent": ("gen_ai.agent.name", "agent.name", "agent_name"),
    "agent_id": ("gen_ai.agent.id",),
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "model_name"),
    "input_tokens": ("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "llm.token_count.completion"),
    "cost": ("gen_ai.usage.cost", "llm.cost.total"),
}
_NUMBERS = {"input_tokens", "output_tokens", "cost"}
_EXECUTION = COLUMNS["agent_executions"]
_USAGE = ("model", "input_tokens", "output_tokens", "cost")
# Which fields each role needs; None: a root span of no known role.
_ROLE_FIELDS: dict[str | None, tuple[str, ...]] = {
    "agent": ("conversation", "agent", "agent_id", *_USAGE),
    "llm": _USAGE,
    "tool": (),
    "workflow": ("conversation", "workflow"),
    None: ("conversation", "workflow"),
}


def _number(value: Any) -> int | float | None:
    """A count or a cost the store holds (a whole number or a finite float >= 0), else None."""
    return _held("cost_usd" if isinstance(value, float) else "input_tokens", value)


def _error(span: Span) -> str | None:
    """A failed span's message: its exception event (``Type: message``; a status
    message may hold a whole traceback), else its status message, else error.type."""
    for name, attributes in span.events:
        if name == "exception":
            kind, message = attributes.get("exception.type"), attributes.get("exception.message")
            if kind or message:
                return ": ".join(str(part) for part in (kind, message) if part)
    if span.status_message:
        return span.status_message
    kind = span.attributes.get("error.type")
    return str(kind) if kind and kind != "_OTHER" else None


def role_of(span: Span) -> str | None:
    """workflow, agent, llm, tool, or None for any other span."""
    attributes = span.attributes
    operation = attributes.get("gen_ai.operation.name")
    if operation in _LLM_OPERATIONS:
        return "llm"
    return _ROLES.get(operation) or _ROLES.get(attributes.get("openinference.span.kind"))


def extract(span: Span) -> tuple[str | None, dict[str, Any] | None]:
    """The span's role and what the mapping needs from it (None for a linking span)."""
    role = role_of(span)
    a = span.attributes
    # An HTTP request sent again (a client's retry) is a retry of the run it is in.
    resends = _held("retry_count", a.get("http.request.resend_count"))
    if role is None and span.parent_span_id is not None:
        return None, {"resends": resends} if resends else None
    data: dict[str, Any] = {"name": span.name}
    if span.status_code == STATUS_ERROR:
        data["error"] = _error(span) or ""
    for field in _ROLE_FIELDS[role]:
        for key in _FIELDS[field]:
            value = a.get(key)
            if value is not None and value != "":
                if field in _NUMBERS:
                    value = _number(value)
                if value is not None:
                    data[field] = value
                break
    if resends:
        data["resends"] = resends
    if role in ("agent", "workflow", None):
        ours = {k[len(PREFIX) :]: v for k, v in a.items() if k.startswith(PREFIX)}
        if ours:
            data["am"] = ours
        if span.resource.get("service.name"):
            data["service"] = span.resource["service.name"]
    return role, data


# -- deriving a trace's rows -----------------------------------------------------------

Record = tuple[str | None, str | None, int, int, dict[str, Any] | None]
"""A stored span: ``(parent_span_id, role, start_ns, end_ns, data)``."""


def _iso(nanos: int) -> tuple[str, str]:
    """Nanoseconds as our ISO timestamp and as SQLite's datetime() (to the second)."""
    seconds, millis = divmod(nanos // 1_000_000, 1000)
    days, second = divmod(seconds, 86_400)
    day = _day(days)
    clock = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    return f"{day}T{clock}.{millis:03d}Z", f"{day} {clock}"


@functools.lru_cache(maxsize=1024)  # a batch's spans share a few days
def _day(days: int) -> str:
    return (_EPOCH + dt.timedelta(days=days)).isoformat()  # years 1-9999, zero-padded


_EPOCH = dt.date(1970, 1, 1)
# The nanoseconds our timestamps can spell: 0001-01-01 to 9999-12-31.
_FIRST_NANOS = (dt.date.min - _EPOCH).days * 86_400 * 10**9
_LAST_NANOS = ((dt.date.max - _EPOCH).days + 1) * 86_400 * 10**9 - 1


def _exact(start: int, end: int | None, data: dict[str, Any] | None) -> tuple[int, int | None]:
    """A span's times, or the exact ones our export carries where OTLP's fields could
    not (``agentmetrics.start_time_unix_nano``/``end_time_unix_nano``, docs/opentelemetry.md)."""
    exact = _ours(data, TIMES)
    return _carried(exact.get("start"), start), (
        None if end is None else _carried(exact.get("end"), end)
    )


def _carried(value: Any, field: int) -> int:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        nanos = int(value)
        if _FIRST_NANOS <= nanos <= _LAST_NANOS:
            return nanos
    return field


def _ours(data: dict[str, Any] | None, table: dict[str, str]) -> dict[str, Any]:
    """What a span of our export carries of ``table`` (:mod:`~agentmetrics.otel.attributes`),
    by column; the ``agentmetrics.*`` attributes are kept in ``data["am"]``."""
    return carried((data or {}).get("am") or {}, table)


def _times(start: int, end: int | None, data: dict[str, Any] | None) -> dict[str, Any]:
    start, end = _exact(start, end, data)
    started_at, created_at = _iso(start)
    return {
        "started_at": started_at,
        "completed_at": None if end is None else _iso(end)[0],
        "duration_ms": None if end is None else round((end - start) / 1_000_000),
        "created_at": created_at,
    }


def _uuid_text(hex32: str) -> str:
    """32 hex digits in the UUID form (8-4-4-4-12)."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _held(column: str, value: Any) -> Any:
    """``value`` if the execution column holds it (:mod:`agentmetrics.store.schema`), else the
    column's default: a bad attribute is dropped, not its span."""
    return _EXECUTION[column].accept(value)


def _in_run_retries(records: list[Record]) -> int:
    """Steps retried inside one run, from the spans it owns: each failed tool call that
    a call of the same tool follows (starting after it ended; pydantic-ai's ModelRetry
    gives exactly this), and each HTTP request sent again."""
    latest: dict[str, int] = {}
    failed = []
    retries = 0
    for _, role, start, end, data in records:
        if role == "tool":
            name = data["name"]
            latest[name] = max(start, latest.get(name, start))
            if "error" in data:
                failed.append((name, start, end))
        retries += "resends" in data
    for name, start, end in failed:
        retries += latest[name] >= end and latest[name] > start
    return retries


class _Trace:
    """The rows of one trace, derived from all of its spans stored so far."""

    def __init__(self, trace_id: str, records: dict[str, Record]) -> None:
        self.trace_id = trace_id
        self.records = records
        self.owners: dict[str, str | None] = {}

    def owner(self, span_id: str | None) -> str | None:
        """The nearest agent span at or above ``span_id`` (None: none known yet)."""
        path = []
        found = None
        while span_id is not None and span_id in self.records:
            if span_id in self.owners:
                found = self.owners[span_id]
                break
            path.append(span_id)
            record = self.records[span_id]
            if record[1] == "agent":
                found = span_id
                break
            span_id = record[0]
        for seen in path:
            self.owners[seen] = found
        return found

    def rows(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The orchestration (None if the trace has none) and the executions."""
        agents = sorted((r[2], s) for s, r in self.records.items() if r[1] == "agent")
        workflows = sorted((r[2], s) for s, r in self.records.items() if r[1] == "workflow")
        roots = sorted((r[2], s) for s, r in self.records.items() if r[0] is None)
        executions = {span_id: self._execution(span_id) for _, span_id in agents}
        self._add_calls(executions)
        self._attempts(agents, executions)
        orchestration = None
        if workflows:
            orchestration = self._orchestration(workflows[0][1], executions)
        elif agents and roots:
            root = roots[0][1]
            # Our export's execution without an orchestration is a trace of its own.
            ours = _ours(self.records[root][4], EXECUTION)
            if not (self.records[root][1] == "agent" and "status" in ours):
                orchestration = self._orchestration(root, executions)
        elif agents:
            orchestration = self._running(executions)
        for span_id, execution in executions.items():
            execution["orchestration_id"] = orchestration["id"] if orchestration else None
            parent = self.owner(self.records[span_id][0])
            execution["parent_execution_id"] = executions[parent]["id"] if parent else None
            execution["metadata_json"] = _dumps(execution.pop("_metadata"))
            execution.pop("_own", None)
            for column in ("input_tokens", "output_tokens", "cost_usd"):  # sums may overflow
                execution[column] = _number(execution[column])
        return orchestration, list(executions.values())

    def _execution(self, span_id: str) -> dict[str, Any]:
        _, _, start, end, data = self.records[span_id]
        data = data or {}
        am = _ours(data, EXECUTION)
        ours = "status" in am
        failed = am.get("status") == "failed" if ours else "error" in data
        name = data.get("agent") or data["name"].removeprefix("invoke_agent ").strip() or "agent"
        metadata: dict[str, Any] = {"trace_id": self.trace_id, "span_id": span_id}
        if data.get("conversation") and not ours:
            metadata["conversation_id"] = data["conversation"]
        self_healed = am.get("self_healed")
        return {
            "id": str(data["agent_id"]) if ours and data.get("agent_id") else self._id(span_id),
            # Ours: agentmetrics.agent_session_id if the export has it, else (as it
            # has been written so far) gen_ai.conversation.id.
            "agent_session_id": (
                str(am.get("agent_session_id") or data["conversation"])
                if ours and (am.get("agent_session_id") or data.get("conversation"))
                else f"{self.trace_id}-{span_id}"
            ),
            "agent_name": str(name),
            "task_id": _text(am.get("task_id")),
            "task_number": _held("task_number", am.get("task_number")),
            "status": "failed" if failed else "completed",
            **_times(start, end, data),
            "retry_count": _held("retry_count", am.get("retry_count")),
            # Ours carry their attempts; others are first ones until _attempts says more.
            "attempt": _held("attempt", am.get("attempt")) if ours else 1,
            "first_attempt_id": _text(am.get("first_attempt_id")) if ours else None,
            "self_healed": int(self_healed) if isinstance(self_healed, bool) else 0,
            "files_created": _held("files_created", am.get("files_created")),
            "files_modified": _held("files_modified", am.get("files_modified")),
            "error_message": (data.get("error") or None) if failed else None,
            "summary_report_path": _text(am.get("summary_report_path")),
            "session_log_path": _text(am.get("session_log_path")),
            "model": _text(data.get("model")),
            "input_tokens": _held("input_tokens", data.get("input_tokens")),
            "output_tokens": _held("output_tokens", data.get("output_tokens")),
            "cost_usd": _held("cost_usd", am.get("cost_usd", data.get("cost"))),
            "_metadata": metadata,
            "_own": {"input_tokens", "output_tokens", "cost_usd"},  # still the agent span's
            "_ours": ours,
            "_trace": self.trace_id,
        }

    def _add_calls(self, executions: dict[str, dict[str, Any]]) -> None:
        """Add each LLM and tool span to its execution, and count the retries in each run."""
        steps: dict[str, list[Record]] = {}  # tool and HTTP resend spans, by execution
        retried = set()  # executions with a failed tool call or a resend
        for record in self.records.values():
            role, data = record[1], record[4]
            counted = role in ("llm", "tool")
            if (counted or (role != "agent" and data and "resends" in data)) and (
                owner := self.owner(record[0])
            ) is not None:
                if counted:
                    self._add_call(executions[owner], record)
                if role != "llm":
                    steps.setdefault(owner, []).append(record)
                    if "error" in data or "resends" in data:
                        retried.add(owner)
        for span_id in retried:
            execution = executions[span_id]
            if not execution["_ours"]:
                retries = _in_run_retries(steps[span_id])
                execution["retry_count"] += retries
                execution["self_healed"] |= retries > 0 and execution["status"] == "completed"

    def _attempts(
        self, agents: list[tuple[int, str]], executions: dict[str, dict[str, Any]]
    ) -> None:
        """Number the attempts of each task, from the agent spans in start order.

        An agent span that starts after a failed one of the same agent under the same
        parent span ended runs that task again: its next attempt (a tool running its
        sub-agent again after it failed). LangGraph's RetryPolicy gives the same: it
        runs the failed node whole again, from the state before it, as a new span; an
        agent run again, not a step retried inside one run, so an attempt too. Our own
        spans carry their attempts.
        """
        chains: dict[tuple[str | None, str], list[str]] = {}
        retried = []
        for _, span_id in agents:
            execution = executions[span_id]
            if execution["_ours"]:
                continue
            parent, _, start, _, _ = self.records[span_id]
            chain = chains.get((parent, execution["agent_name"]))
            if (
                chain
                and executions[chain[-1]]["status"] == "failed"
                and start >= self.records[chain[-1]][3]
            ):
                chain.append(span_id)
                execution["attempt"] = len(chain)
                execution["first_attempt_id"] = executions[chain[0]]["id"]
                if len(chain) == 2:
                    retried.append(chain)
            else:
                chains[parent, execution["agent_name"]] = [span_id]
        for chain in retried:
            # The final attempt counts the task's retries, each attempt its own in-run ones.
            executions[chain[-1]]["retry_count"] += len(chain) - 1

    def _add_call(self, execution: dict[str, Any], record: Record) -> None:
        data = record[4] or {}
        metadata = execution["_metadata"]
        if record[1] == "tool":
            metadata["tool_calls"] = metadata.get("tool_calls", 0) + 1
            if "error" in data:
                metadata["tool_errors"] = metadata.get("tool_errors", 0) + 1
            return
        metadata["llm_calls"] = metadata.get("llm_calls", 0) + 1
        own = execution["_own"]
        for key, column in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cost", "cost_usd"),
        ):
            if key in data:
                if column in own:
                    # The LLM spans' counts replace the agent span's own (often their total).
                    own.discard(column)
                    execution[column] = 0
                execution[column] += data[key]
        if execution["model"] is None and data.get("model"):
            execution["model"] = str(data["model"])

    def _id(self, span_id: str) -> str:
        # uuid.uuid5(_NAMESPACE, name), without the cost of building UUID objects.
        digest = bytearray(
            hashlib.sha1(_NAMESPACE + f"{self.trace_id}/{span_id}".encode()).digest()
        )
        digest[6] = digest[6] & 0x0F | 0x50
        digest[8] = digest[8] & 0x3F | 0x80
        return _uuid_text(digest[:16].hex())

    def _tasks(self, executions: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Task counts: a task's status is its final attempt's."""
        finals: dict[str, dict[str, Any]] = {}
        for e in executions.values():
            task = e["first_attempt_id"] or e["id"]
            if task not in finals or (e["attempt"] or 1) > (finals[task]["attempt"] or 1):
                finals[task] = e
        statuses = [e["status"] for e in finals.values()]
        return {
            "total_tasks": len(statuses),
            "completed_tasks": statuses.count("completed"),
            "failed_tasks": statuses.count("failed"),
        }

    def _orchestration_id(self, executions: dict[str, dict[str, Any]]) -> str:
        for span_id in executions:
            am = _ours(self.records[span_id][4], EXECUTION)
            if am.get("orchestration_id"):
                return str(am["orchestration_id"])
        return _uuid_text(self.trace_id)

    def _orchestration(self, span_id: str, executions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        _, _, start, end, data = self.records[span_id]
        data = data or {}
        am = _ours(data, ORCHESTRATION)
        tasks = self._tasks(executions)
        metadata: dict[str, Any] = {"trace_id": self.trace_id, "span_id": span_id}
        if "status" in am:
            status = am["status"]
            tasks = {key: COLUMNS["orchestrations"][key].accept(am.get(key)) for key in tasks}
            description = data.get("workflow")
        else:
            failed = "error" in data
            completed, failed_tasks = tasks["completed_tasks"], tasks["failed_tasks"]
            status = "failed" if failed else orchestration_status(completed, failed_tasks)
            description = data.get("workflow") or data["name"]
            if failed and data["error"]:
                metadata["error_message"] = data["error"]
            if data.get("service"):
                metadata["service_name"] = data["service"]
        return {
            "id": str(am.get("id") or self._orchestration_id(executions)),
            "session_id": str(data.get("conversation") or self.trace_id),
            "task_description": _text(description),
            "status": status if status in ("completed", "failed", "partial") else "completed",
            **_times(start, end, data),
            **tasks,
            "git_commit_hash": _text(am.get("git_commit_hash")),
            "plan_file_path": _text(am.get("plan_file_path")),
            "progress_file_path": _text(am.get("progress_file_path")),
            "metadata_json": _dumps(metadata),
            "_ours": "status" in am,
            "_trace": self.trace_id,
        }

    def _running(self, executions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """An orchestration whose workflow (or root) span has not arrived yet."""
        start = min(_exact(r[2], None, r[4])[0] for r in self.records.values())
        # Our execution spans carry their orchestration's session id.
        sessions = (
            (self.records[span_id][4] or {}).get("conversation")
            for span_id, execution in executions.items()
            if execution["agent_session_id"] != (self.records[span_id][4] or {}).get("conversation")
            and execution["_ours"]
        )
        return {
            "id": self._orchestration_id(executions),
            "session_id": str(next((s for s in sessions if s), None) or self.trace_id),
            "task_description": None,
            "status": "running",
            **_times(start, None, None),
            **self._tasks(executions),
            "git_commit_hash": None,
            "plan_file_path": None,
            "progress_file_path": None,
            "metadata_json": _dumps({"trace_id": self.trace_id}),
            "_ours": False,
            "_trace": self.trace_id,
        }


# -- writing ---------------------------------------------------------------------------

_STAGE = """
INSERT OR REPLACE INTO otel_spans (trace_id, span_id, parent_span_id, role, start_ns, end_ns, data)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


@functools.cache
def _upsert(table: str, columns: tuple[str, ...], running: bool = False) -> str:
    """INSERT of derived rows (``columns``: their keys) that updates one already stored.

    A running orchestration (its span has not arrived) only ever counts up, and never
    undoes a finished one.
    """
    if running:
        updates = [f"{c} = max(COALESCE({c}, 0), excluded.{c})" for c in _TASK_COUNTS]
        where = " WHERE status = 'running'"
    else:
        updates = [f"{c} = excluded.{c}" for c in columns if c not in ("id", "created_at")]
        where = ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" VALUES ({', '.join(':' + c for c in columns)})"
        f" ON CONFLICT(id) DO UPDATE SET {', '.join(updates)}{where}"
    )


_TASK_COUNTS = ("total_tasks", "completed_tasks", "failed_tasks")


@functools.cache
def _insert(table: str, columns: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    )


def _store(db: Database, table: str, rows: list[dict[str, Any]], running: bool = False) -> None:
    """Write derived rows: insert the new ones, upsert the changed ones, skip the others.

    Re-deriving a trace mostly gives back the rows already stored: an UPDATE that
    changes nothing still costs every index, and marks its hour for the rollups.
    """
    columns = tuple(rows[0])
    compared = tuple(c for c in columns if c != "created_at")  # an upsert keeps it
    stored: dict[str, tuple[Any, ...] | None] = {}
    ids = list({row["id"] for row in rows})
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        sql = (
            f"SELECT {', '.join(compared)} FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})"
        )
        stored.update((values[0], values) for values in db.conn.execute(sql, chunk))
    new, changed = [], []
    for row in rows:
        if row["id"] not in stored:
            new.append(row)
            stored[row["id"]] = None  # a second row of the same id updates the first
        elif stored[row["id"]] != tuple(row[c] for c in compared):
            changed.append(row)
    if new:
        db.conn.executemany(_insert(table, columns), new)
    if changed:
        db.conn.executemany(_upsert(table, columns, running), changed)


def _claim(db: Database, table: str, key: str, rows: list[dict[str, Any]]) -> None:
    """Keep session ids unique and stored metadata.

    A session another row already holds is that row when the span is ours (the row
    takes its id), else this trace's own session (its id gets ``/trace id`` appended).
    Metadata already stored (a tracker's, or from earlier spans) is kept, with ours on
    top, keys sorted: the same text whatever order the spans came in.
    """
    holders: dict[str, tuple[str, str | None]] = {}
    keys = list({row[key] for row in rows})
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT {key}, id, metadata_json FROM {table} WHERE {key} IN ({marks})"
        holders.update((k, (id_, meta)) for k, id_, meta in db.conn.execute(sql, chunk))
    for row in rows:
        ours, trace_id = row.pop("_ours"), row.pop("_trace")
        holder, stored = holders.setdefault(row[key], (row["id"], None))
        if holder != row["id"]:
            if not ours:
                row[key] = f"{row[key]}/{trace_id}"
                holders[row[key]] = (row["id"], None)
                continue
            row["id"] = holder
        if stored:
            try:
                previous = json.loads(stored)
            except ValueError:
                previous = None
            if isinstance(previous, dict):
                row["metadata_json"] = _dumps({**previous, **json.loads(row["metadata_json"])})
        holders[row[key]] = (row["id"], row["metadata_json"])


def _load(db: Database, trace_ids: list[str]) -> dict[str, dict[str, Record]]:
    stored: dict[str, dict[str, Record]] = {t: {} for t in trace_ids}
    for i in range(0, len(trace_ids), 500):
        chunk = trace_ids[i : i + 500]
        rows = db.execute(
            "SELECT trace_id, span_id, parent_span_id, role, start_ns, end_ns, data"
            f" FROM otel_spans WHERE trace_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for trace, span, parent, role, start, end, data in rows:
            stored[trace][span] = (parent, role, start, end, json.loads(data) if data else None)
    return stored


def _write(db: Database, spans: list[Span], result: Ingested) -> None:
    staged = []
    incoming: dict[str, dict[str, Record]] = {}
    for span in spans:
        role, data = extract(span)
        staged.append(
            (
                span.trace_id,
                span.span_id,
                span.parent_span_id,
                role,
                span.start_ns,
                span.end_ns,
                None if data is None else _dumps(data),
            )
        )
        record = (span.parent_span_id, role, span.start_ns, span.end_ns, data)
        incoming.setdefault(span.trace_id, {})[span.span_id] = record
    with write_transaction(db):
        records = _load(db, list(incoming))
        db.conn.executemany(_STAGE, staged)
        orchestrations, executions = [], []
        for trace_id, spans_of_trace in incoming.items():
            records[trace_id].update(spans_of_trace)
            orchestration, rows = _Trace(trace_id, records[trace_id]).rows()
            if orchestration is not None:
                orchestrations.append(orchestration)
            executions.append((orchestration, rows))
        _claim(db, "orchestrations", "session_id", orchestrations)
        for running in (False, True):
            rows = [row for row in orchestrations if (row["status"] == "running") is running]
            if rows:
                _store(db, "orchestrations", rows, running)
        # Orchestration ids may have changed to the stored ones of the same sessions.
        flat = []
        for orchestration, rows in executions:
            for row in rows:
                row["orchestration_id"] = orchestration["id"] if orchestration else None
                flat.append(row)
        _claim(db, "agent_executions", "agent_session_id", flat)
        if flat:
            _store(db, "agent_executions", flat)
    result.accepted += len(spans)
    result.orchestrations += len(orchestrations)
    result.executions += len(flat)


def _write_checked(db: Database, spans: list[Span], result: Ingested) -> None:
    try:
        _write(db, spans, result)
    except UnicodeEncodeError:
        # Text with a lone surrogate (valid in JSON escapes and Python strings, not in
        # UTF-8) cannot be stored: reject those spans, write the others.
        good = []
        for span in spans:
            try:
                _dumps(dataclasses.astuple(span)).encode()
            except UnicodeEncodeError:
                result._reject(f"span {ascii(span.name)}: holds text that is not UTF-8")
            else:
                good.append(span)
        _write(db, good, result)


def batch_sizer(lock_seconds: float = LOCK_SECONDS) -> BatchSize:
    """The sizes of :func:`ingest_spans`'s transactions, to pass to calls in turn."""
    return BatchSize(_FIRST_BATCH, lock_seconds)


def ingest_spans(
    db: str | os.PathLike[str] | Database,
    spans: Iterable[Span | RejectedSpan],
    *,
    lock_seconds: float = LOCK_SECONDS,
    busy_timeout_ms: int | None = None,
    batch_size: BatchSize | None = None,
) -> Ingested:
    """Store spans and derive the orchestrations and executions of their traces.

    Spans are written in transactions holding the write lock about ``lock_seconds``
    each; ``spans`` is consumed as it goes, so a stream of any length keeps memory flat.
    Rows counted in the result are those (re)written, once per transaction.
    ``busy_timeout_ms``: how long to wait for another writer's lock before giving up
    (default :data:`agentmetrics.store.db.BUSY_TIMEOUT_MS`). ``batch_size``: one kept across
    calls (a server's requests), so each call starts at the size the last one reached
    rather than :data:`_FIRST_BATCH` spans (a request of 512 spans in one transaction,
    not two).

    :raises StorageError: the database refused a write (read-only, locked, full)
    """
    result = Ingested()
    size = batch_size or batch_sizer(lock_seconds)
    timeout = {} if busy_timeout_ms is None else {"busy_timeout_ms": busy_timeout_ms}
    with using_database(db, **timeout) as database:
        try:
            batch: list[Span] = []
            for span in spans:
                if isinstance(span, RejectedSpan):
                    result._reject(span.reason)
                    continue
                batch.append(span)
                if len(batch) >= size.size:
                    with size.timed():
                        _write_checked(database, batch, result)
                    batch = []
            if len(batch) >= size.size // 2:  # long enough to tell the speed
                with size.timed():
                    _write_checked(database, batch, result)
            elif batch:
                _write_checked(database, batch, result)
        except sqlite3.DatabaseError as e:
            name = database_file(database) or ":memory:"
            if refused_write(e):
                raise ReadOnlyDatabase(f"{name} is read-only: spans not stored") from None
            raise StorageError(f"Cannot store spans in {name}: {e}") from None
    return result


def ingest_files(
    db: str | os.PathLike[str] | Database,
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Ingested:
    """Import OTLP files (:func:`~agentmetrics.otel.spans.read_file`) through :func:`ingest_spans`.

    Every file is read through once before anything is written: a file that is not
    OTLP, or holds a span that cannot be stored, is refused whole and nothing is
    imported. ``on_total(n)`` receives the number of spans, ``progress(k)`` is called
    as they are read for writing.

    :raises InvalidExport: a file is unreadable, not OTLP, or holds an invalid span
    """
    paths = list(paths)
    total = 0
    for path in paths:
        for where, span in read_file(path, checking=True):
            if isinstance(span, RejectedSpan):
                raise InvalidExport(f"{os.fspath(path)}: {where}: {span.reason}")
            total += 1
    if on_total is not None:
        on_total(total)
    result = Ingested()
    with using_database(db) as database:
        before = _row_counts(database)
        for path in paths:
            result.add(ingest_spans(database, _counted(read_file(path), progress)))
        after = _row_counts(database)
    result.new_orchestrations, result.new_executions = (
        a - b for a, b in zip(after, before, strict=True)
    )
    return result


def _row_counts(db: Database) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("orchestrations", "agent_executions")
    )


def _counted(
    items: Iterator[tuple[str, Span | RejectedSpan]], progress: Callable[[int], None] | None
) -> Iterator[Span | RejectedSpan]:
    count = 0
    for _, span in items:
        yield span
        count += 1
        if progress is not None and count == 1000:
            progress(count)
            count = 0
    if progress is not None and count:
        progress(count)


CONTENT_TYPES = ("application/json", "application/x-protobuf")


def decode_request(body: bytes, content_type: str) -> list[Span | RejectedSpan]:
    """The spans of an OTLP/HTTP trace export request body (already un-gzipped).

    ``content_type`` may carry parameters (``application/json; charset=utf-8``).

    :raises InvalidExport: the body is not an ExportTraceServiceRequest
    :raises InvalidValue: the content type is neither JSON nor protobuf
    :raises MissingDependency: protobuf without opentelemetry-proto installed
    """
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return decode_json(body)
    if media == "application/x-protobuf":
        return decode_protobuf(body)
    raise InvalidValue(
        f"Unsupported content type {content_type!r}: use {' or '.join(CONTENT_TYPES)}"
    )


def ingest_request(
    db: str | os.PathLike[str] | Database,
    body: bytes,
    content_type: str,
    *,
    busy_timeout_ms: int | None = None,
) -> Ingested:
    """Ingest the body of an OTLP/HTTP trace export request (already un-gzipped):
    :func:`decode_request`, then :func:`ingest_spans`.

    :raises InvalidExport: the body is not an ExportTraceServiceRequest (nothing written)
    :raises InvalidValue: the content type is neither JSON nor protobuf
    :raises MissingDependency: protobuf without opentelemetry-proto installed
    """
    spans = decode_request(body, content_type)
    return ingest_spans(db, spans, busy_timeout_ms=busy_timeout_ms)
