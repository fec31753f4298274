"""The one span type, its status codes, and spans decoded from OTLP/JSON, OTLP protobuf
and files of them.

A :class:`Span` (what the export writes and the ingest reads) holds ids as lowercase
hex, times as nanoseconds since the epoch and attribute values as plain Python values
(str, bool, int, float, bytes, lists and dicts of them). A span that cannot be stored
(bad ids or times) is decoded as a :class:`RejectedSpan` with the reason, so a receiver
can answer with a partial success; a body or file that is not OTLP at all raises
:class:`~agentmetrics.errors.InvalidExport`.

Files (:func:`read_file`) are streamed, so memory stays flat however large they are:

- OTLP/JSON: JSON Lines, one ``ExportTraceServiceRequest`` per line, as ``agentmetrics
  export --format otlp`` and the OpenTelemetry Collector's file exporter write;
- OTLP protobuf: one serialized ``ExportTraceServiceRequest``. Requests written one
  after another into a file are one request too (protobuf concatenates repeated
  fields), so appending requests to a file makes a valid one. It is read one
  ``ResourceSpans`` at a time.

Either may be gzip-compressed. Protobuf needs the ``otel`` extra (``opentelemetry-proto``).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..errors import InvalidExport
from ..store.schema import MAX_INTEGER
from . import needs_extra

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
"""A span's status codes; OTLP/JSON may also spell them by name (:data:`STATUS_NAMES`)."""
STATUS_NAMES = {
    "STATUS_CODE_UNSET": STATUS_UNSET,
    "STATUS_CODE_OK": STATUS_OK,
    "STATUS_CODE_ERROR": STATUS_ERROR,
}
# The times a span's fields carry (nanoseconds): 0 is "unset", above is past int64
# (SQLite, and most readers, hold them as signed 64-bit integers): years 1970-2262.
MIN_NANOS, MAX_NANOS = 1, MAX_INTEGER
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16
_GZIP_MAGIC = b"\x1f\x8b"
_NOT_OTLP_JSON = (
    "not OTLP: expected an ExportTraceServiceRequest (resourceSpans) per line"
    " (an agentmetrics export? import it without --format otlp)"
)


@dataclasses.dataclass(slots=True)
class Span:
    """One finished span: decoded by the ingest, built from a row by the export and the
    live push (:mod:`agentmetrics.otel.export`, whose spans leave ``resource`` and
    ``scope`` to the request that wraps them)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    resource: dict[str, Any] = dataclasses.field(default_factory=dict)
    scope: str = ""


@dataclasses.dataclass(slots=True)
class RejectedSpan:
    """A span that cannot be stored, and why."""

    reason: str


def check(span: Span) -> Span | RejectedSpan:
    """``span`` itself, or a :class:`RejectedSpan` saying what is wrong with it."""
    what = f"span {span.name!r}"
    if not (_TRACE_ID.fullmatch(span.trace_id) and span.trace_id != _INVALID_TRACE):
        return RejectedSpan(f"{what}: traceId must be 32 hex digits, not all zero")
    if not (_SPAN_ID.fullmatch(span.span_id) and span.span_id != _INVALID_SPAN):
        return RejectedSpan(f"{what}: spanId must be 16 hex digits, not all zero")
    if span.parent_span_id is not None and not _SPAN_ID.fullmatch(span.parent_span_id):
        return RejectedSpan(f"{what}: parentSpanId must be 16 hex digits or empty")
    if not MIN_NANOS <= span.start_ns <= span.end_ns <= MAX_NANOS:
        return RejectedSpan(f"{what}: needs start and end times, the end not before the start")
    return span


# -- OTLP/JSON -------------------------------------------------------------------------


def _json_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])  # also "NaN", "Infinity"
    if "arrayValue" in value:
        return [_json_value(v) for v in value["arrayValue"].get("values", ())]
    if "kvlistValue" in value:
        return _json_attributes(value["kvlistValue"].get("values", ()))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def _json_attributes(pairs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    attributes = {}
    for pair in pairs:
        value = pair.get("value") or {}
        # Inlined for the common case: this runs for every attribute of every span.
        if "stringValue" in value:
            attributes[pair["key"]] = value["stringValue"]
        else:
            attributes[pair["key"]] = _json_value(value)
    return attributes


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else ""


def _json_span(raw: dict[str, Any], resource: dict[str, Any], scope: str) -> Span | RejectedSpan:
    try:
        status = raw.get("status") or {}
        code = status.get("code", 0)
        span = Span(
            trace_id=_hex(raw.get("traceId")),
            span_id=_hex(raw.get("spanId")),
            parent_span_id=_hex(raw.get("parentSpanId")) or None,
            name=str(raw.get("name", "")),
            start_ns=int(raw.get("startTimeUnixNano", 0)),
            end_ns=int(raw.get("endTimeUnixNano", 0)),
            status_code=(
                STATUS_NAMES.get(code, STATUS_UNSET) if isinstance(code, str) else int(code)
            ),
            status_message=str(status.get("message") or ""),
            attributes=_json_attributes(raw.get("attributes", ())),
            events=[
                (str(e.get("name", "")), _json_attributes(e.get("attributes", ())))
                for e in raw.get("events", ())
            ],
            resource=resource,
            scope=scope,
        )
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        name = raw.get("name") if isinstance(raw, dict) else None
        return RejectedSpan(f"span {name!r}: malformed ({type(e).__name__}: {e})")
    return check(span)


def _parse_json(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidExport("invalid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidExport(f"invalid JSON ({e})") from None


def decode_json(request: Any) -> list[Span | RejectedSpan]:
    """The spans of an OTLP/JSON ``ExportTraceServiceRequest`` (parsed, or its text).

    :raises InvalidExport: not JSON, or not shaped like an ExportTraceServiceRequest
    """
    if isinstance(request, (str, bytes, bytearray)):
        request = _parse_json(request)
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans", []), list):
        raise InvalidExport("expected an ExportTraceServiceRequest: an object with resourceSpans")
    spans: list[Span | RejectedSpan] = []
    try:
        for resource_spans in request.get("resourceSpans", ()):
            resource = _json_attributes(
                (resource_spans.get("resource") or {}).get("attributes", ())
            )
            # instrumentationLibrarySpans: the name before OTLP 0.15.
            scopes = resource_spans.get("scopeSpans") or resource_spans.get(
                "instrumentationLibrarySpans", ()
            )
            for scope_spans in scopes:
                scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
                scope_name = str(scope.get("name", ""))
                spans.extend(
                    _json_span(raw, resource, scope_name) for raw in scope_spans.get("spans", ())
                )
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        reason = f"{type(e).__name__}: {e}"
        raise InvalidExport(f"malformed ExportTraceServiceRequest ({reason})") from None
    return spans


# -- OTLP protobuf ---------------------------------------------------------------------


def _proto_module() -> Any:
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError as e:
        raise needs_extra("OTLP protobuf needs", e) from None
    return trace_service_pb2, trace_pb2


def _proto_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_proto_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _proto_attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def _proto_attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    attributes = {}
    for pair in pairs:
        value = pair.value
        # Inlined for the common case: this runs for every attribute of every span.
        if value.WhichOneof("value") == "string_value":
            attributes[pair.key] = value.string_value
        else:
            attributes[pair.key] = _proto_value(value)
    return attributes


def _proto_resource_spans(
    resource_spans: Any, checking: bool = False
) -> Iterator[Span | RejectedSpan]:
    """The spans of a ResourceSpans message; ``checking``: without attributes and events
    (a parsed message's cannot be malformed), for a pass that only checks the spans."""
    resource = {} if checking else _proto_attributes(resource_spans.resource.attributes)
    for scope_spans in resource_spans.scope_spans:
        scope = scope_spans.scope.name
        for raw in scope_spans.spans:
            status = raw.status
            yield check(
                Span(
                    trace_id=raw.trace_id.hex(),
                    span_id=raw.span_id.hex(),
                    parent_span_id=raw.parent_span_id.hex() or None,
                    name=raw.name,
                    start_ns=raw.start_time_unix_nano,
                    end_ns=raw.end_time_unix_nano,
                    status_code=status.code,
                    status_message=status.message,
                    attributes={} if checking else _proto_attributes(raw.attributes),
                    events=[]
                    if checking or not raw.events
                    else [(e.name, _proto_attributes(e.attributes)) for e in raw.events],
                    resource=resource,
                    scope=scope,
                )
            )


def decode_protobuf(body: bytes) -> list[Span | RejectedSpan]:
    """The spans of a serialized OTLP protobuf ``ExportTraceServiceRequest``.

    :raises InvalidExport: not a valid ExportTraceServiceRequest
    :raises MissingDependency: opentelemetry-proto is not installed
    """
    trace_service_pb2, _ = _proto_module()
    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError, or RuntimeError on deep nesting
        raise InvalidExport(f"not an OTLP protobuf ExportTraceServiceRequest ({e})") from None
    return [span for rs in request.resource_spans for span in _proto_resource_spans(rs)]


def _varint(f: IO[bytes]) -> int | None:
    """A protobuf varint read from ``f``; None at the end of the file."""
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift:
                raise InvalidExport("the file ends inside a protobuf field")
            return None
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise InvalidExport("not OTLP protobuf (a length is too long)")


def _protobuf_stream(f: IO[bytes], checking: bool = False) -> Iterator[Span | RejectedSpan]:
    """An ExportTraceServiceRequest's spans, one ResourceSpans (field 1) at a time."""
    _, trace_pb2 = _proto_module()
    while (tag := _varint(f)) is not None:
        if tag != 0x0A:  # field 1, length-delimited: resource_spans
            raise InvalidExport("not an OTLP protobuf ExportTraceServiceRequest")
        size = _varint(f)
        data = f.read(size or 0)
        if size is None or len(data) != size:
            raise InvalidExport("the file ends inside a protobuf message (truncated?)")
        try:
            resource_spans = trace_pb2.ResourceSpans.FromString(data)
        except Exception as e:
            raise InvalidExport(f"not an OTLP protobuf ExportTraceServiceRequest ({e})") from None
        yield from _proto_resource_spans(resource_spans, checking)


# -- files -----------------------------------------------------------------------------


def read_file(
    path: str | os.PathLike[str], *, checking: bool = False
) -> Iterator[tuple[str, Span | RejectedSpan]]:
    """Stream the spans of an OTLP/JSON Lines or OTLP protobuf file (gzip or not).

    Yields ``(where, span)``, ``where`` locating the span in the file for messages.
    ``checking``: for a pass that only checks the file, protobuf spans come without
    their attributes and events (JSON ones are decoded whole: those can be malformed).

    :raises InvalidExport: unreadable, or not OTLP (with the line, for JSON)
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as raw:
            f: IO[bytes] = gzip.GzipFile(fileobj=raw) if raw.read(2) == _GZIP_MAGIC else raw
            raw.seek(0)
            head = f.read(64).lstrip()
            f.seek(0)
            if not head:
                raise InvalidExport(f"{name}: the file is empty")
            if head.startswith(b"{") or head.startswith(b"\xef\xbb\xbf{"):
                for i, line in enumerate(f, 1):
                    if i == 1:
                        line = line.removeprefix(b"\xef\xbb\xbf")  # a byte order mark
                    if not line.strip():
                        continue
                    try:
                        request = _parse_json(line)
                        if isinstance(request, dict) and "resourceSpans" not in request:
                            raise InvalidExport(_NOT_OTLP_JSON)  # e.g. our JSON Lines export
                        spans = decode_json(request)
                    except InvalidExport as e:
                        raise InvalidExport(f"{name}: line {i}: {e}") from None
                    for span in spans:
                        yield f"line {i}", span
            elif head.startswith(b"["):
                raise InvalidExport(f"{name}: {_NOT_OTLP_JSON}")
            else:
                for span in _protobuf_stream(f, checking):
                    yield "protobuf", span
    except InvalidExport as e:
        message = str(e)
        raise InvalidExport(message if message.startswith(name) else f"{name}: {message}") from None
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a damaged gzip file
        reason = getattr(e, "strerror", None) or str(e)
        raise InvalidExport(f"Cannot read {name}: {reason}") from None
