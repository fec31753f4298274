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
attributes (:mod:`agentmetrics.otel.attributes`). A failed run has span status ERROR
(code 2) and an ``error.type``: the exception class name its error message starts with
(``TimeoutError: ...``), else ``_OTHER``. An execution with no orchestration is a trace
of its own, its session its agent session.

Times are nanoseconds since the epoch, from 1 to 2^63-1 (1970 to 2262): OTLP's 0 means
"unset", and readers (ours, SQLite, most backends) hold them as signed 64-bit integers.
A stored time outside that range is clamped into it, and the exact nanoseconds travel
as a decimal string in ``agentmetrics.start_time_unix_nano`` /
``agentmetrics.end_time_unix_nano``, which our import takes over the clamped field.

Ids are derived from ours (sha256), so exporting twice gives the same traces, and a
finished execution of a still running orchestration is exported with its parent's
future span id: the trace joins up when the workflow span follows. Runs still in
progress have no end time and are left out until they finish.

:func:`orchestration_span` and :func:`execution_span` build a
:class:`~agentmetrics.otel.spans.Span` from a row: the one definition behind both export
encodings (:func:`to_json`, :func:`to_readable`) and the live push
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
from ..errors import InvalidValue
from ..timestamps import parse_timestamp
from . import attributes, needs_extra
from .spans import MAX_NANOS, MIN_NANOS, STATUS_ERROR, STATUS_OK, STATUS_UNSET, Span

SPAN_KIND_INTERNAL = 1
# SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: the parent (if any) is known to be local, as the
# OpenTelemetry SDK's encoder marks every span it sends.
SPAN_FLAGS = 0x100
DEFAULT_BATCH_SIZE = 100
SERVICE_NAME = "agentmetrics"

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


def to_json(span: Span) -> dict[str, Any]:
    """A span in the OTLP/JSON encoding."""
    encoded: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.parent_span_id:
        encoded["parentSpanId"] = span.parent_span_id
    status: dict[str, Any] = {"code": span.status_code}
    if span.status_message:
        status["message"] = span.status_message
    encoded.update(
        {
            "flags": SPAN_FLAGS,
            "name": span.name,
            "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": str(span.start_ns),
            "endTimeUnixNano": str(span.end_ns),
            "attributes": [attribute(key, value) for key, value in span.attributes.items()],
            "status": status,
        }
    )
    return encoded


def to_readable(span: Span) -> Any:
    """A span as an opentelemetry-sdk ``ReadableSpan`` (what span processors take)."""
    sdk = _sdk()
    context = functools.partial(
        sdk.SpanContext, trace_flags=sdk.TraceFlags(sdk.TraceFlags.SAMPLED), is_remote=False
    )
    trace = int(span.trace_id, 16)
    return sdk.ReadableSpan(
        name=span.name,
        context=context(trace, int(span.span_id, 16)),
        parent=context(trace, int(span.parent_span_id, 16)) if span.parent_span_id else None,
        resource=sdk.resource,
        attributes=span.attributes,
        kind=sdk.SpanKind.INTERNAL,
        status=sdk.Status(sdk.StatusCode(span.status_code), span.status_message or None),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=sdk.scope,
    )


def _attributes(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value is not None}


def _clamp(nanos: int) -> int:
    return min(max(nanos, MIN_NANOS), MAX_NANOS)


def _exact_times(start: int, end: int) -> list[tuple[str, str | None]]:
    """The attributes carrying times the span's fields cannot hold (None: not needed)."""
    return [
        (attributes.TIMES[name], None if _clamp(nanos) == nanos else str(nanos))
        for name, nanos in (("start", start), ("end", end))
    ]


# How a column's value is written as an attribute (the others as they are stored).
_ATTRIBUTE_TYPES = {"self_healed": bool, "cost_usd": float}


def _ours(row: dict[str, Any], table: dict[str, str]) -> list[tuple[str, Any]]:
    """A row's columns as our ``agentmetrics.*`` attributes (None: not written)."""
    pairs = []
    for column, name in table.items():
        value = row.get(column)
        if value is not None and column in _ATTRIBUTE_TYPES:
            value = _ATTRIBUTE_TYPES[column](value)
        pairs.append((name, value))
    return pairs


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
    trace, span = _workflow_ids(orchestration["id"])
    return Span(
        trace_id=trace,
        span_id=span,
        parent_span_id=None,
        name=f"invoke_workflow {name}" if name else "invoke_workflow",
        start_ns=_clamp(start),
        end_ns=_clamp(end),
        attributes=_attributes(
            [
                ("gen_ai.operation.name", "invoke_workflow"),
                ("openinference.span.kind", "CHAIN"),
                ("gen_ai.workflow.name", name),
                ("gen_ai.conversation.id", orchestration["session_id"]),
                ("session.id", orchestration["session_id"]),
                ("error.type", "orchestration_failed" if status == "failed" else None),
                *_ours(orchestration, attributes.ORCHESTRATION),
                *_exact_times(start, end),
            ]
        ),
        # partial: some tasks failed but the workflow finished; left UNSET, the
        # agentmetrics.status attribute says which.
        status_code={"completed": STATUS_OK, "failed": STATUS_ERROR}.get(status, STATUS_UNSET),
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
    start = unix_nano(execution["started_at"])
    return Span(
        trace_id=trace,
        span_id=span_id("execution", execution["id"]),
        parent_span_id=parent,
        name=f"invoke_agent {execution['agent_name']}",
        start_ns=_clamp(start),
        end_ns=_clamp(end),
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
                *_ours(execution, attributes.EXECUTION),
                *_exact_times(start, end),
            ]
        ),
        status_code=STATUS_ERROR if failed else STATUS_OK,
        status_message=(execution.get("error_message") or "") if failed else "",
    )


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
        yield request([to_json(span) for span in spans], service_name)


def _counted(batches: Iterable[list[Span]], written: list[int]) -> Iterator[list[Span]]:
    for spans in batches:
        workflows = sum(
            span.attributes.get("gen_ai.operation.name") == "invoke_workflow" for span in spans
        )
        written[0] += workflows
        written[1] += len(spans) - workflows
        yield spans


def write_otlp(sessions: Iterable[Session], out: IO[str], single: bool = False) -> tuple[int, int]:
    """Write sessions as JSON Lines of ``ExportTraceServiceRequest`` (an export format).

    Returns how many orchestrations and executions were written as spans.
    """
    written = [0, 0]
    for spans in _counted(iter_batches(sessions), written):
        item = request([to_json(span) for span in spans])
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
        out.write(encode([to_readable(span) for span in spans]).SerializeToString())
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
        raise needs_extra("OTLP protobuf and the live push need", e) from None
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
