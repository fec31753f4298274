"""Orchestrations as OpenTelemetry traces, in the OTLP/JSON encoding.

Each orchestration becomes one trace: an ``invoke_workflow`` root span with an
``invoke_agent {agent name}`` child span per execution, named and attributed after the
OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.workflow.name``, ``gen_ai.agent.name``, ``gen_ai.agent.id`` = the
execution id, ``gen_ai.conversation.id`` = the session id, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``/``output_tokens``). Our other columns travel as
``agentmetrics.*`` attributes. A failed run has span status ERROR (code 2) and an
``error.type``: the exception class name its error message starts with (``TimeoutError:
...``), else ``_OTHER``. An execution with no orchestration is a trace of its own.

Ids are derived from ours (sha256), so exporting twice gives the same traces. Runs
still in progress have no end time and are left out until they finish.

The output is JSON Lines: each line is one ``ExportTraceServiceRequest`` holding up to
``batch_size`` traces, the form the OpenTelemetry Collector's ``otlpjsonfile`` receiver
reads; each line can also be POSTed as is to an OTLP/HTTP ``/v1/traces`` endpoint.
OTLP/JSON writes ids as lowercase hex, 64-bit integers (timestamps in nanoseconds,
``intValue``) as strings and field names in lowerCamelCase.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any

from . import DISTRIBUTION
from .timestamps import parse_timestamp

SPAN_KIND_INTERNAL = 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
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


def unix_nano(timestamp: str) -> str:
    """A stored timestamp as nanoseconds since the epoch, as a decimal string."""
    delta = parse_timestamp(timestamp) - _EPOCH
    return str(delta // dt.timedelta(microseconds=1) * 1000)


def error_type(message: str | None) -> str:
    """A low-cardinality error class for ``error.type``."""
    match = _ERROR_TYPE.match(message or "")
    return match.group(1) if match else "_OTHER"


def attribute(key: str, value: Any) -> dict[str, Any]:
    """One OTLP ``KeyValue``, typed by the Python value."""
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


def _attributes(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [attribute(key, value) for key, value in pairs if value is not None]


def _end(row: dict[str, Any]) -> str | None:
    if row.get("completed_at"):
        return unix_nano(row["completed_at"])
    if row.get("duration_ms") is not None:
        return str(int(unix_nano(row["started_at"])) + int(row["duration_ms"]) * 1_000_000)
    return None


def orchestration_span(orchestration: dict[str, Any]) -> dict[str, Any] | None:
    """The ``invoke_workflow`` root span of a finished orchestration (None if running)."""
    end = _end(orchestration)
    if orchestration["status"] == "running" or end is None:
        return None
    name = orchestration.get("task_description")
    status = orchestration["status"]
    span = {
        "traceId": trace_id(orchestration["id"]),
        "spanId": span_id("orchestration", orchestration["id"]),
        "name": f"invoke_workflow {name}" if name else "invoke_workflow",
        "kind": SPAN_KIND_INTERNAL,
        "startTimeUnixNano": unix_nano(orchestration["started_at"]),
        "endTimeUnixNano": end,
        "attributes": _attributes(
            [
                ("gen_ai.operation.name", "invoke_workflow"),
                ("gen_ai.workflow.name", name),
                ("gen_ai.conversation.id", orchestration["session_id"]),
                ("error.type", "orchestration_failed" if status == "failed" else None),
                ("agentmetrics.orchestration.id", orchestration["id"]),
                ("agentmetrics.status", status),
                ("agentmetrics.total_tasks", orchestration.get("total_tasks")),
                ("agentmetrics.completed_tasks", orchestration.get("completed_tasks")),
                ("agentmetrics.failed_tasks", orchestration.get("failed_tasks")),
                ("agentmetrics.git_commit_hash", orchestration.get("git_commit_hash")),
                ("agentmetrics.plan_file_path", orchestration.get("plan_file_path")),
                ("agentmetrics.progress_file_path", orchestration.get("progress_file_path")),
            ]
        ),
        # partial: some tasks failed but the workflow finished; left UNSET, the
        # agentmetrics.status attribute says which.
        "status": {
            "code": {"completed": STATUS_OK, "failed": STATUS_ERROR}.get(status, STATUS_UNSET)
        },
    }
    return span


def execution_span(
    execution: dict[str, Any], parent: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``invoke_agent`` span of a finished execution (None if in progress).

    ``parent`` is its orchestration's span; without one the execution is a root span
    in a trace of its own.
    """
    end = _end(execution)
    if execution["status"] == "in_progress" or end is None:
        return None
    failed = execution["status"] == "failed"
    span: dict[str, Any] = {
        "traceId": parent["traceId"] if parent else trace_id(execution["id"]),
        "spanId": span_id("execution", execution["id"]),
    }
    if parent:
        span["parentSpanId"] = parent["spanId"]
    self_healed = execution.get("self_healed")
    status: dict[str, Any] = {"code": STATUS_ERROR if failed else STATUS_OK}
    if failed and execution.get("error_message"):
        status["message"] = execution["error_message"]
    span.update(
        {
            "name": f"invoke_agent {execution['agent_name']}",
            "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": unix_nano(execution["started_at"]),
            "endTimeUnixNano": end,
            "attributes": _attributes(
                [
                    ("gen_ai.operation.name", "invoke_agent"),
                    ("gen_ai.agent.name", execution["agent_name"]),
                    ("gen_ai.agent.id", execution["id"]),
                    ("gen_ai.conversation.id", execution["agent_session_id"]),
                    ("gen_ai.request.model", execution.get("model")),
                    ("gen_ai.usage.input_tokens", execution.get("input_tokens")),
                    ("gen_ai.usage.output_tokens", execution.get("output_tokens")),
                    ("error.type", error_type(execution.get("error_message")) if failed else None),
                    ("agentmetrics.status", execution["status"]),
                    ("agentmetrics.orchestration.id", execution.get("orchestration_id")),
                    ("agentmetrics.task_id", execution.get("task_id")),
                    ("agentmetrics.task_number", execution.get("task_number")),
                    ("agentmetrics.retry_count", execution.get("retry_count")),
                    (
                        "agentmetrics.self_healed",
                        None if self_healed is None else bool(self_healed),
                    ),
                    ("agentmetrics.files_created", execution.get("files_created")),
                    ("agentmetrics.files_modified", execution.get("files_modified")),
                    ("agentmetrics.cost_usd", _float(execution.get("cost_usd"))),
                    ("agentmetrics.summary_report_path", execution.get("summary_report_path")),
                    ("agentmetrics.session_log_path", execution.get("session_log_path")),
                ]
            ),
            "status": status,
        }
    )
    return span


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def session_spans(orchestration: dict[str, Any] | None, executions: list[dict[str, Any]]):
    """All spans of one orchestration (or of standalone executions), parents first."""
    parent = orchestration_span(orchestration) if orchestration is not None else None
    if orchestration is not None and parent is None:
        return []
    spans = [parent] if parent else []
    for execution in executions:
        span = execution_span(execution, parent)
        if span is not None:
            spans.append(span)
    return spans


def _package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def request(spans: list[dict[str, Any]], service_name: str = SERVICE_NAME) -> dict[str, Any]:
    """Wrap spans in an ``ExportTraceServiceRequest`` (one resource, one scope)."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes([("service.name", service_name)])},
                "scopeSpans": [
                    {
                        "scope": {"name": "agentmetrics", "version": _package_version()},
                        "spans": spans,
                    }
                ],
            }
        ]
    }


def iter_requests(
    sessions: Iterable[Session],
    batch_size: int = DEFAULT_BATCH_SIZE,
    service_name: str = SERVICE_NAME,
) -> Iterator[dict[str, Any]]:
    """Group the spans of ``batch_size`` sessions (orchestrations with their executions,
    as :func:`agentmetrics.exchange.iter_sessions` yields them) per request."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    spans: list[dict[str, Any]] = []
    traces = 0
    for orchestration, executions in sessions:
        spans.extend(session_spans(orchestration, executions))
        traces += 1 if orchestration is not None else len(executions)
        if traces >= batch_size:
            if spans:
                yield request(spans, service_name)
            spans, traces = [], 0
    if spans:
        yield request(spans, service_name)


def write_otlp(sessions: Iterable[Session], out: IO[str], single: bool = False) -> tuple[int, int]:
    """Write sessions as JSON Lines of ``ExportTraceServiceRequest`` (an export format).

    Returns how many orchestrations and executions were written as spans.
    """
    written = [0, 0]
    for item in iter_requests(sessions):
        for span in item["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            written[not span["name"].startswith("invoke_workflow")] += 1
        out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        out.write("\n")
    return written[0], written[1]
