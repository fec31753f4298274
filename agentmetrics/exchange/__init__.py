"""Exchange: moving data between the store and files or other databases.

Export (JSON, JSON Lines, OTLP, CSV, Parquet), import of exports and merge of database
files. The modules, from the ground up:

- :mod:`~agentmetrics.exchange.sessions`: the store read as sessions (an orchestration
  with its executions), as rows or encoded as JSON by SQLite, and the JSON and JSON
  Lines writers;
- :mod:`~agentmetrics.exchange.tables`: the CSV and Parquet writers, one table per file;
- :mod:`~agentmetrics.exchange.formats`: the registry of export formats and the export
  functions that go through it (:func:`export`, :func:`export_tables`,
  :func:`export_table`);
- :mod:`~agentmetrics.exchange.sources`: what can be imported (export files, database
  files) as one stream of validated rows;
- :mod:`~agentmetrics.exchange.writer`: the import writer: the conflict rules, id
  remapping, short transactions (:func:`import_files`, :func:`merge_databases`).

It imports the store (with the statuses tracking defines) and
:mod:`agentmetrics.otel.export` (the OTLP formats), never the reports, plots or CLI.
The CLI and outside code import it; the store, tracking (:mod:`agentmetrics.monitor`)
and :mod:`agentmetrics.otel` never do. Outside code uses the names exported here.
"""

from .formats import (
    EXPORT_FORMATS,
    SESSION_FORMATS,
    TABLE_FORMATS,
    ExportCounts,
    ExportFormat,
    export,
    export_table,
    export_tables,
)
from .sessions import Encoding, Session, iter_encoded_sessions, iter_sessions
from .tables import TABLES, parquet_schema, write_csv, write_parquet
from .writer import Counts, ImportResult, import_files, merge_databases

__all__ = [
    "EXPORT_FORMATS",
    "SESSION_FORMATS",
    "TABLES",
    "TABLE_FORMATS",
    "Counts",
    "Encoding",
    "ExportCounts",
    "ExportFormat",
    "ImportResult",
    "Session",
    "export",
    "export_table",
    "export_tables",
    "import_files",
    "iter_encoded_sessions",
    "iter_sessions",
    "merge_databases",
    "parquet_schema",
    "write_csv",
    "write_parquet",
]
