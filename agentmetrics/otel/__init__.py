"""OpenTelemetry in and out: our rows as OTLP traces, and spans from any agent as rows.

The modules:

- :mod:`~agentmetrics.otel.spans`: the one :class:`~agentmetrics.otel.spans.Span` type,
  the status codes, and spans decoded from OTLP/JSON, OTLP protobuf and files;
- :mod:`~agentmetrics.otel.attributes`: our ``agentmetrics.*`` attribute names, one
  table the export writes and the ingest reads;
- out: :mod:`~agentmetrics.otel.export` builds the spans of our rows and encodes them
  (``export --format otlp`` / ``otlp-protobuf``); :mod:`~agentmetrics.otel.push` sends
  them live from a :class:`~agentmetrics.Monitor` (``otlp_endpoint=``);
- in: :mod:`~agentmetrics.otel.ingest`, the one code path by which spans become
  orchestrations and executions, shared by ``agentmetrics import --format otlp``, the
  ``agentmetrics serve`` OTLP/HTTP receiver (:mod:`~agentmetrics.otel.receiver`) and
  :class:`SQLiteSpanExporter` (:mod:`~agentmetrics.otel.sqlite_exporter`), an
  ``opentelemetry-sdk`` span exporter a program adds to its TracerProvider.

Only protobuf, the push and the SDK exporter need the ``otel`` extra, imported where
they are used: importing this package, :mod:`~agentmetrics.otel.export` or
:mod:`~agentmetrics.otel.push` loads no opentelemetry module (tracking imports the push
only when asked for it).

It imports the store (task counts among it) and small leaves (errors, timestamps), never the
exchange, reports, plots or CLI. Tracking (the push), :mod:`agentmetrics.exchange` (the
OTLP export formats), the demo, the CLI and outside code import it; the store never does.
"""

from __future__ import annotations

from typing import Any

from .. import DISTRIBUTION
from ..errors import MissingDependency

__all__ = ["SQLiteSpanExporter"]


def needs_extra(what: str, error: ImportError) -> MissingDependency:
    """The error for ``what`` (a subject with its verb) when the otel extra is missing,
    ``error`` naming the module not found."""
    return MissingDependency(
        f"{what} the otel extra ({error.name} is missing): pip install '{DISTRIBUTION}[otel]'"
    )


def __getattr__(name: str) -> Any:
    # Lazily: importing agentmetrics.otel must work without opentelemetry-sdk.
    if name == "SQLiteSpanExporter":
        from .sqlite_exporter import SQLiteSpanExporter

        return SQLiteSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
