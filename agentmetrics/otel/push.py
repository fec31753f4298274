"""The live push: what a Monitor records, sent as OpenTelemetry spans while runs happen.

When an execution or orchestration finishes, its row is read back and turned into the
span ``export --format otlp`` writes for it (same ids, names and attributes, built by
:mod:`agentmetrics.otel.export`), then handed to opentelemetry-sdk's ``BatchSpanProcessor``
with the OTLP/HTTP protobuf exporter, which sends batches from a thread of its own. The
tracking call only queues the span: it never waits for the network and never raises.
At most ``max_queue_size`` spans wait; beyond that, and when the endpoint does not take
a batch (down, refusing, too slow), spans are dropped and counted in :attr:`dropped`.
Runs in progress have no end yet, so nothing is sent for them until they finish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from sqlite_utils import Database

from ..errors import InvalidValue
from ..store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from . import needs_extra
from .export import execution_span, orchestration_span, to_readable

MAX_QUEUE_SIZE = 2048
BATCH_SIZE = 512
SCHEDULE_DELAY = 1.0  # seconds between sends when the queue holds less than a batch
CLOSE_TIMEOUT = 5.0  # seconds close() and the exit wait for the last batches
TRACES_PATH = "/v1/traces"

log = logging.getLogger("agentmetrics")

_EXECUTION_SQL = f"""
SELECT {", ".join(f"e.{c}" for c in EXECUTION_COLUMNS)}, o.id, o.session_id
FROM agent_executions e LEFT JOIN orchestrations o ON o.id = e.orchestration_id
WHERE e.agent_session_id = ?
"""
_ORCHESTRATION_SQL = (
    f"SELECT {', '.join(ORCHESTRATION_COLUMNS)} FROM orchestrations WHERE session_id = ?"
)


def traces_url(endpoint: str) -> str:
    """The ``/v1/traces`` URL of an OTLP/HTTP base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT``),
    or the URL itself when it already ends in ``/v1/traces`` (as
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and Phoenix's docs write it)."""
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise InvalidValue(
            f"otlp_endpoint must be an http:// or https:// URL (or True), got {endpoint!r}"
        )
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


class LivePush:
    """Sends finished runs as spans to one OTLP/HTTP endpoint.

    :param endpoint: the receiver's base URL (``http://collector:4318``; ``/v1/traces`` is
      appended unless the URL already ends with it), or True for
      ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (else
      ``http://localhost:4318``). Headers come from ``$OTEL_EXPORTER_OTLP_HEADERS`` either way.
    :param max_queue_size: how many spans may wait to be sent
    :param timeout: seconds one send may take, retries included
    """

    def __init__(
        self,
        endpoint: str | bool,
        *,
        max_queue_size: int = MAX_QUEUE_SIZE,
        timeout: float | None = None,
    ) -> None:
        url = None if endpoint is True else traces_url(endpoint)  # type: ignore[arg-type]
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as e:
            raise needs_extra("The live push needs", e) from None
        self.max_queue_size = max_queue_size
        self.sent = 0
        self.dropped = 0
        self._waiting = 0  # queued or being sent
        self._closed = False
        self._deadline = math.inf  # for sending, set by close()
        self._lock = threading.Lock()
        self._exporter = OTLPSpanExporter(endpoint=url, timeout=timeout)
        self.endpoint: str = getattr(self._exporter, "_endpoint", url or "the OTLP endpoint")
        self._processor = BatchSpanProcessor(
            _Counting(self),
            max_queue_size=max_queue_size,
            max_export_batch_size=min(BATCH_SIZE, max_queue_size),
            schedule_delay_millis=SCHEDULE_DELAY * 1000,
        )

    @property
    def waiting(self) -> int:
        """How many spans are queued or being sent."""
        return self._waiting

    def execution_finished(self, db: Database | None, agent_session_id: str) -> None:
        """Queue the span of a just finished execution (never raises)."""
        self._queue(db, _EXECUTION_SQL, agent_session_id, _execution)

    def orchestration_finished(self, db: Database | None, session_id: str) -> None:
        """Queue the span of a just finished orchestration (never raises)."""
        self._queue(db, _ORCHESTRATION_SQL, session_id, _orchestration)

    def missed(self) -> None:
        """A finished run whose row could not be stored yet: it has no span to send."""
        with self._lock:
            self.dropped += 1

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop.

        Batches not begun within ``timeout`` seconds (default :data:`CLOSE_TIMEOUT`) are
        dropped; one being sent then may take up to the exporter's own timeout
        (``$OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default).
        """
        if self._closed:
            return
        self._deadline = time.monotonic() + (CLOSE_TIMEOUT if timeout is None else timeout)
        try:
            self._processor.shutdown()
        except Exception as e:  # the exit path must not fail on the exporter's account
            log.debug("agentmetrics: live push shutdown: %s", e)
        with self._lock:
            self._closed = True
            self.dropped += self._waiting
            self._waiting = 0
        if self.dropped:
            log.warning(
                "agentmetrics: %d spans could not be sent to %s", self.dropped, self.endpoint
            )

    def _queue(self, db: Database | None, sql: str, key: str, build) -> None:
        try:
            with self._lock:
                if self._closed or self._waiting >= self.max_queue_size:
                    self.dropped += 1
                    return
                self._waiting += 1
            row = db.execute(sql, [key]).fetchone() if db is not None else None
            span = build(row) if row is not None else None
            if span is None:
                raise LookupError(f"no finished run {key!r} to send")
            self._processor.on_end(to_readable(span))
        except Exception as e:  # tracking never fails because of the push
            log.debug("agentmetrics: live push skipped %r: %s", key, e)
            self._settle(1, sent=False)

    def _settle(self, count: int, sent: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._waiting -= count
            if sent:
                self.sent += count
            else:
                self.dropped += count


def _execution(row: tuple) -> Any:
    execution = dict(zip(EXECUTION_COLUMNS, row, strict=False))
    orchestration_id, session_id = row[len(EXECUTION_COLUMNS) :]
    parent = {"id": orchestration_id, "session_id": session_id} if orchestration_id else None
    return execution_span(execution, parent)


def _orchestration(row: tuple) -> Any:
    return orchestration_span(dict(zip(ORCHESTRATION_COLUMNS, row, strict=True)))


class _Counting:
    """The OTLP exporter, counting what it sent and what it could not."""

    def __init__(self, push: LivePush) -> None:
        self.push = push

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if time.monotonic() > self.push._deadline:
            result = SpanExportResult.FAILURE
            self.push._settle(len(spans), sent=False)
            return result
        try:
            result = self.push._exporter.export(spans)
        except Exception as e:
            log.debug("agentmetrics: live push export failed: %s", e)
            result = SpanExportResult.FAILURE
        self.push._settle(len(spans), sent=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.push._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
