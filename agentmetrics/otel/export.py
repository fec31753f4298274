"""Orchestrations as OpenTelemetry traces, in the OTLP/JSON and OTLP protobuf encodings.

Each orchestration becomes one trace: an ``invoke_workflow`` root span with an
``invoke_agent {agent name}`` child span per execution, named and attributed after the
OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.workflow.name``, ``gen_ai.agent.name``, ``gen_ai.agent.id`` = the
execution id, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``/``output_tokens``)
and OpenInference's (``openinference.span.kind`` CHAIN for the workflow, AGENT for an
execution). Every span of an orchestration carries its session id as ``session.id`` and
``gen_ai.conversation.id``; an execution's own session id travels as
``agentmetrics.agent_session_id``, with our other columns as ``agentmetrics.*``
attributes. A failed run has span status ERROR (code 2) and an ``error.type``: the
exception class name its error message starts with (``TimeoutError: ...``), else
``_OTHER``. An execution with no orchestration is a trace of its own, its session its
agent session.

Times are nanoseconds since the epoch, from 1 to 2^63-1 (1970 to 2262): OTLP's 0 means
"unset", and readers (ours, SQLite, most backends) hold them as signed 64-bit integers.
A stored time outside that range is clamped into it, and the exact nanoseconds travel
as a decimal string in ``agentmetrics.start_time_unix_nano`` /
``agentmetrics.end_time_unix_nano``, which our import takes over the clamped field.

Ids are derived from ours (sha256), so exporting twice gives the same traces, and a
finished execution of a still running orchestration is exported with its parent's
future span id: the trace joins up when the workflow span follows. Runs still in
progress have no end time and are left out until they finish.

:func:`orchestration_span` and :func:`execution_span` build a :class:`Span` from a row:
the one definition behind both export encodings and the live push
(:mod:`agentmetrics.otel.push`). ``otlp`` is JSON Lines, each line one
``ExportTraceServiceRequest`` holding up to ``batch_size`` traces, the form the
OpenTelemetry Collector's ``otlpjsonfile`` receiver reads; each line can also be POSTed
as is to an OTLP/HTTP ``/v1/traces`` endpoint. OTLP/JSON writes ids as lowercase hex,
64-bit integers (timestamps in nanoseconds, ``intValue``) as strings and field names in
lowerCamelCase. ``otlp-protobuf`` is the same requests in the protobuf encoding,
concatenated: protobuf merges concatenated messages, so the file is one
``ExportTraceServiceRequest`` (a body for ``POST /v1/traces`` with ``Content-Type:
application/x-protobuf``), written batch by batch with flat memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import re
import types
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any

from .. import DISTRIBUTION
from ..errors import InvalidValue, MissingDependency
from ..timestamps import parse_timestamp

SPAN_KIND_INTERNAL = 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
# SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: the parent (if any) is known to be local, as the
# OpenTelemetry SDK's encoder marks every span it sends.
SPAN_FLAGS = 0x100
DEFAULT_BATCH_SIZE = 100
SERVICE_NAME = "agentmetrics"
# The times a span's fields carry (nanoseconds): 0 is "unset", above is past int64.
MIN_NANOS, MAX_NANOS = 1, 2**63 - 1

_NON_FINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ERROR_TYPE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Interrupt|Exit))\b")

Session = tuple[dict[str, Any] | None, list[dict[str, Any]]]


def trace_id(key: str) -> str:
    """A 32-hex-digit trace id derived from an orchestration (or execution) id."""
    return hashlib.sha256(f"agentmetrics/trace/{key}".encode()).hexdigest()[:32]


def span_id(kind: str, key: str) -> str:
    """A 16-hex-digit span id derived from a row's kind and id."""
    return hashlib.sha256(f"agentmetrics/{kind}/{key}".encode()).hexdigest()[:16]


def unix_nano(timestamp: str) -> int:
    """A stored timestamp as nanoseconds since the epoch."""
    delta = parse_timestamp(timestamp) - _EPOCH
    return delta // dt.timedelta(microseconds=1) * 1000


def error_type(message: str | None) -> str:
    """A low-cardinality error class for ``error.type``."""
    match = _ERROR_TYPE.match(message or "")
    return match.group(1) if match else "_OTHER"


def attribute(key: str, value: Any) -> dict[str, Any]:
    """One OTLP/JSON ``KeyValue``, typed by the Python value."""
    if isinstance(value, bool):
        typed = {"boolValue": value}
    elif isinstance(value, int):
        typed = {"intValue": str(value)}
    elif isinstance(value, float):
        # The protobuf JSON mapping spells non-finite doubles as strings; a bare
        # Infinity/NaN token is not JSON at all.
        typed = {"doubleValue": value if math.isfinite(value) else _NON_FINITE[str(value)]}
    else:
        typed = {"stringValue": str(value)}
    return {"key": key, "value": typed}


@dataclasses.dataclass(frozen=True)
class Span:
    """One finished span, independent of its encoding."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start: int  # nanoseconds since the epoch, MIN_NANOS to MAX_NANOS
    end: int
    attributes: dict[str, Any]  # str, int, float or bool values; no None
    status: int = STATUS_UNSET
    message: str | None = None

    @property
    def is_workflow(self) -> bool:
        return self.attributes.get("gen_ai.operation.name") == "invoke_workflow"

    def to_json(self) -> dict[str, Any]:
        """The span in the OTLP/JSON encoding."""
        span: dict[str, Any] = {"traceId": self.trace_id, "spanId": self.span_id}
        if self.parent_span_id:
            span["parentSpanId"] = self.parent_span_id
        status: dict[str, Any] = {"code": self.status}
        if self.message:
            status["message"] = self.message
        span.update(
            {
                "flags": SPAN_FLAGS,
                "name": self.name,
                "kind": SPAN_KIND_INTERNAL,
                "startTimeUnixNano": str(self.start),
                "endTimeUnixNano": str(self.end),
                "attributes": [attribute(key, value) for key, value in self.attributes.items()],
                "status": status,
            }
        )
        return span

    def to_readable(self) -> Any:
        """The span as an opentelemetry-sdk ``ReadableSpan`` (what span processors take)."""
        sdk = _sdk()
        context = functools.partial(
            sdk.SpanContext, trace_flags=sdk.TraceFlags(sdk.TraceFlags.SAMPLED), is_remote=False
        )
        trace = int(self.trace_id, 16)
        return sdk.ReadableSpan(
            name=self.name,
            context=context(trace, int(self.span_id, 16)),
            parent=context(trace, int(self.parent_span_id, 16)) if self.parent_span_id else None,
            resource=sdk.resource,
            attributes=self.attributes,
            kind=sdk.SpanKind.INTERNAL,
            status=sdk.Status(sdk.StatusCode(self.status), self.message),
            start_time=self.start,
            end_time=self.end,
            instrumentation_scope=sdk.scope,
        )


def _attributes(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value is not None}


def _clamp(nanos: int) -> int:
    return min(max(nanos, MIN_NANOS), MAX_NANOS)


def _exact_times(start: int, end: int) -> list[tuple[str, str | None]]:
    """The attributes carrying times the span's fields cannot hold (None: not needed)."""
    return [
        (f"agentmetrics.{name}_time_unix_nano", None if _clamp(nanos) == nanos else str(nanos))
        for name, nanos in (("start", start), ("end", end))
    ]


def _end(row: dict[str, Any]) -> int | None:
    if row.get("completed_at"):
        return unix_nano(row["completed_at"])
    if row.get("duration_ms") is not None:
        return unix_nano(row["started_at"]) + int(row["duration_ms"]) * 1_000_000
    return None


def _workflow_ids(orchestration_id: str) -> tuple[str, str]:
    return trace_id(orchestration_id), span_id("orchestration", orchestration_id)


def orchestration_span(orchestration: dict[str, Any]) -> Span | None:
    """The ``invoke_workflow`` root span of a finished orchestration (None if running)."""
    end = _end(orchestration)
    status = orchestration["status"]
    if status == "running" or end is None:
        return None
    name = orchestration.get("task_description")
    start = unix_nano(orchestration["started_at"])
    return Span(
        *_workflow_ids(orchestration["id"]),
        parent_span_id=None,
        name=f"invoke_workflow {name}" if name else "invoke_workflow",
        start=_clamp(start),
        end=_clamp(end),
        attributes=_attributes(
            [
                ("gen_ai.operation.name", "invoke_workflow"),
                ("openinference.span.kind", "CHAIN"),
                ("gen_ai.workflow.name", name),
                ("gen_ai.conversation.id", orchestration["session_id"]),
                ("session.id", orchestration["session_id"]),
                ("error.type", "orchestration_failed" if status == "failed" else None),
                ("agentmetrics.orchestration.id", orchestration["id"]),
                ("agentmetrics.status", status),
                ("agentmetrics.total_tasks", orchestration.get("total_tasks")),
                ("agentmetrics.completed_tasks", orchestration.get("completed_tasks")),
                ("agentmetrics.failed_tasks", orchestration.get("failed_tasks")),
                ("agentmetrics.git_commit_hash", orchestration.get("git_commit_hash")),
                ("agentmetrics.plan_file_path", orchestration.get("plan_file_path")),
                ("agentmetrics.progress_file_path", orchestration.get("progress_file_path")),
                *_exact_times(start, end),
            ]
        ),
        # partial: some tasks failed but the workflow finished; left UNSET, the
        # agentmetrics.status attribute says which.
        status={"completed": STATUS_OK, "failed": STATUS_ERROR}.get(status, STATUS_UNSET),
    )


def execution_span(
    execution: dict[str, Any], orchestration: dict[str, Any] | None = None
) -> Span | None:
    """The ``invoke_agent`` span of a finished execution (None if in progress).

    ``orchestration`` is its orchestration's row (``id`` and ``session_id`` are enough,
    and it may still be running); without one the execution is a root span in a trace
    of its own.
    """
    end = _end(execution)
    if execution["status"] == "in_progress" or end is None:
        return None
    failed = execution["status"] == "failed"
    if orchestration is not None:
        trace, parent = _workflow_ids(orchestration["id"])
        session = orchestration["session_id"]
    else:
        trace, parent = trace_id(execution["id"]), None
        session = execution["agent_session_id"]
    self_healed = execution.get("self_healed")
    start = unix_nano(execution["started_at"])
    return Span(
        trace,
        span_id("execution", execution["id"]),
        parent_span_id=parent,
        name=f"invoke_agent {execution['agent_name']}",
        start=_clamp(start),
        end=_clamp(end),
        attributes=_attributes(
            [
                ("gen_ai.operation.name", "invoke_agent"),
                ("openinference.span.kind", "AGENT"),
                ("gen_ai.agent.name", execution["agent_name"]),
                ("gen_ai.agent.id", execution["id"]),
                ("gen_ai.conversation.id", session),
                ("session.id", session),
                ("gen_ai.request.model", execution.get("model")),
                ("gen_ai.usage.input_tokens", execution.get("input_tokens")),
                ("gen_ai.usage.output_tokens", execution.get("output_tokens")),
                ("error.type", error_type(execution.get("error_message")) if failed else None),
                ("agentmetrics.agent_session_id", execution["agent_session_id"]),
                ("agentmetrics.status", execution["status"]),
                ("agentmetrics.orchestration.id", execution.get("orchestration_id")),
                ("agentmetrics.task_id", execution.get("task_id")),
                ("agentmetrics.task_number", execution.get("task_number")),
                ("agentmetrics.attempt", execution.get("attempt")),
                ("agentmetrics.first_attempt_id", execution.get("first_attempt_id")),
                ("agentmetrics.retry_count", execution.get("retry_count")),
                ("agentmetrics.self_healed", None if self_healed is None else bool(self_healed)),
                ("agentmetrics.files_created", execution.get("files_created")),
                ("agentmetrics.files_modified", execution.get("files_modified")),
                ("agentmetrics.cost_usd", _float(execution.get("cost_usd"))),
                ("agentmetrics.summary_report_path", execution.get("summary_report_path")),
                ("agentmetrics.session_log_path", execution.get("session_log_path")),
                *_exact_times(start, end),
            ]
        ),
        status=STATUS_ERROR if failed else STATUS_OK,
        message=execution.get("error_message") if failed else None,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def session_spans(
    orchestration: dict[str, Any] | None, executions: list[dict[str, Any]]
) -> list[Span]:
    """The finished spans of one orchestration (or of standalone executions), parents first."""
    parent = orchestration_span(orchestration) if orchestration is not None else None
    spans = [parent] if parent else []
    for execution in executions:
        span = execution_span(execution, orchestration)
        if span is not None:
            spans.append(span)
    return spans


def _package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def request(spans: list[dict[str, Any]], service_name: str = SERVICE_NAME) -> dict[str, Any]:
    """Wrap OTLP/JSON spans in an ``ExportTraceServiceRequest`` (one resource, one scope)."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attribute("service.name", service_name)]},
                "scopeSpans": [
                    {
                        "scope": {"name": "agentmetrics", "version": _package_version()},
                        "spans": spans,
                    }
                ],
            }
        ]
    }


def iter_batches(
    sessions: Iterable[Session], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[list[Span]]:
    """The spans of ``batch_size`` sessions (orchestrations with their executions, as
    :func:`agentmetrics.exchange.iter_sessions` yields them) at a time."""
    if batch_size < 1:
        raise InvalidValue(f"batch_size must be at least 1, got {batch_size}")
    spans: list[Span] = []
    traces = 0
    for orchestration, executions in sessions:
        spans.extend(session_spans(orchestration, executions))
        traces += 1 if orchestration is not None else len(executions)
        if traces >= batch_size:
            if spans:
                yield spans
            spans, traces = [], 0
    if spans:
        yield spans


def iter_requests(
    sessions: Iterable[Session],
    batch_size: int = DEFAULT_BATCH_SIZE,
    service_name: str = SERVICE_NAME,
) -> Iterator[dict[str, Any]]:
    """OTLP/JSON ``ExportTraceServiceRequest`` objects of ``batch_size`` sessions each."""
    for spans in iter_batches(sessions, batch_size):
        yield request([span.to_json() for span in spans], service_name)


def _counted(batches: Iterable[list[Span]], written: list[int]) -> Iterator[list[Span]]:
    for spans in batches:
        workflows = sum(span.is_workflow for span in spans)
        written[0] += workflows
        written[1] += len(spans) - workflows
        yield spans


def write_otlp(sessions: Iterable[Session], out: IO[str], single: bool = False) -> tuple[int, int]:
    """Write sessions as JSON Lines of ``ExportTraceServiceRequest`` (an export format).

    Returns how many orchestrations and executions were written as spans.
    """
    written = [0, 0]
    for spans in _counted(iter_batches(sessions), written):
        item = request([span.to_json() for span in spans])
        out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        out.write("\n")
    return written[0], written[1]


def write_otlp_protobuf(
    sessions: Iterable[Session], out: IO[bytes], single: bool = False
) -> tuple[int, int]:
    """Write sessions as one protobuf ``ExportTraceServiceRequest`` (an export format).

    Returns how many orchestrations and executions were written as spans.
    """
    encode = _sdk().encode_spans  # before writing anything: a missing extra writes nothing
    written = [0, 0]
    for spans in _counted(iter_batches(sessions), written):
        out.write(encode([span.to_readable() for span in spans]).SerializeToString())
    return written[0], written[1]


@functools.cache
def _sdk() -> Any:
    """opentelemetry-sdk's span types and the protobuf encoder, imported on first use."""
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
    except ImportError as e:
        raise MissingDependency(
            f"OTLP protobuf and the live push need the otel extra ({e.name} is missing):"
            f" pip install '{DISTRIBUTION}[otel]'"
        ) from None
    return types.SimpleNamespace(
        encode_spans=encode_spans,
        ReadableSpan=ReadableSpan,
        SpanContext=SpanContext,
        SpanKind=SpanKind,
        Status=Status,
        StatusCode=StatusCode,
        TraceFlags=TraceFlags,
        resource=Resource({"service.name": SERVICE_NAME}),
        scope=InstrumentationScope("agentmetrics", _package_version()),
    )
