"""An ``opentelemetry-sdk`` span exporter that writes into an agentmetrics database.

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from agentmetrics.otel import SQLiteSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter("monitoring.db")))

Spans go through :func:`agentmetrics.otel.ingest.ingest_spans`, like every other way in.
Use a ``BatchSpanProcessor``: it exports from a background thread in batches, so the
program does not wait for the database (a ``SimpleSpanProcessor`` writes on every span
end). :meth:`SQLiteSpanExporter.export` never raises into the program: a batch the
database cannot take is dropped, counted in ``dropped`` and logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from ..store.db import ensure_database
from . import needs_extra
from .ingest import batch_sizer, ingest_spans
from .spans import Span

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError as e:  # pragma: no cover - the otel extra is missing
    raise needs_extra("SQLiteSpanExporter needs", e) from None

log = logging.getLogger("agentmetrics")


def _plain(value: Any) -> Any:
    # The SDK keeps sequence attributes as tuples.
    return list(value) if isinstance(value, tuple) else value


def _attributes(attributes: Any) -> dict[str, Any]:
    return {key: _plain(value) for key, value in (attributes or {}).items()}


def to_span(span: ReadableSpan) -> Span:
    """A finished SDK span in the normalized form."""
    context, parent = span.context, span.parent
    return Span(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status_code=span.status.status_code.value,
        status_message=span.status.description or "",
        attributes=_attributes(span.attributes),
        events=[(event.name, _attributes(event.attributes)) for event in span.events],
        resource=_attributes(span.resource.attributes),
        scope=span.instrumentation_scope.name if span.instrumentation_scope else "",
    )


class SQLiteSpanExporter(SpanExporter):
    """Export finished spans into ``db`` (a path, opened on first use, or a Database).

    ``exported`` and ``dropped`` count the spans stored and those lost because the
    database refused them.
    """

    def __init__(self, db: str | os.PathLike[str] | Database) -> None:
        self._target = db
        self._db: Database | None = db if isinstance(db, Database) else None
        self._lock = threading.Lock()
        self._batch_size = batch_sizer()  # used with the lock held
        self._closed = False
        self.exported = 0
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._closed:
                self.dropped += len(spans)
                return SpanExportResult.FAILURE
            try:
                if self._db is None:
                    self._db = ensure_database(self._target)
                result = ingest_spans(
                    self._db, [to_span(span) for span in spans], batch_size=self._batch_size
                )
            except Exception as e:  # never into the program: it is being traced, not us
                self.dropped += len(spans)
                log.warning("agentmetrics: %d spans not stored: %s", len(spans), e)
                return SpanExportResult.FAILURE
            self.exported += result.accepted
            self.dropped += result.rejected
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # export() writes before returning: nothing is ever buffered here.
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None and self._db is not self._target:
                self._db.close()
            self._db = None
