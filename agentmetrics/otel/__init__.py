"""OpenTelemetry in: spans from any instrumented agent become orchestrations and executions.

Three ways in share one code path, :func:`agentmetrics.otel.ingest.ingest_spans`:
``agentmetrics import --format otlp FILE...``, the ``agentmetrics serve`` OTLP/HTTP
receiver (:func:`agentmetrics.otel.ingest.decode_request`, then ``ingest_spans``) and
:class:`SQLiteSpanExporter`, an ``opentelemetry-sdk`` span exporter a program adds to
its TracerProvider. Only the exporter and protobuf decoding need the ``otel`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SQLiteSpanExporter"]


def __getattr__(name: str) -> Any:
    # Lazily: importing agentmetrics.otel must work without opentelemetry-sdk.
    if name == "SQLiteSpanExporter":
        from .sqlite_exporter import SQLiteSpanExporter

        return SQLiteSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
