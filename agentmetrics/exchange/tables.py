"""The table writers, for spreadsheets and data tools: CSV and Parquet.

Each of the two tables (``orchestrations``, ``executions``) is written as it is stored,
one row per row, streamed from one cursor in chunks so memory stays flat. Parquet
needs pyarrow (``pip install 'agentmetrics-sqlite[parquet]'``); its columns are typed:
``started_at``, ``completed_at`` and ``created_at`` as ``timestamp[ms, tz=UTC]``,
``self_healed`` as bool, text as string, counts and ``duration_ms`` as int64,
``cost_usd`` as double, NULL as null in every column. Writing them into files goes
through the format registry (:func:`agentmetrics.exchange.export_tables`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from sqlite_utils import Database

from .. import DISTRIBUTION
from ..errors import AgentMetricsError, InvalidValue, MissingDependency
from ..store.db import using_database
from ..store.migrations import COLUMN_TYPES, EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS

TABLES = {
    "orchestrations": ("orchestrations", ORCHESTRATION_COLUMNS),
    "executions": ("agent_executions", EXECUTION_COLUMNS),
}
CHUNK_ROWS = 10_000
_ARROW_TYPES = {"INTEGER": "int64", "REAL": "float64", "TEXT": "string"}
TIMESTAMPS = ("started_at", "completed_at", "created_at")
BOOLEANS = ("self_healed",)
Progress = Callable[[int], None] | None  # called with each chunk's number of rows
# Stored timestamp text (ISO with Z or an offset, or SQLite's datetime()) as epoch
# milliseconds, exact: SQLite keeps julian days as integer milliseconds. Text SQLite
# cannot read stays as it is, so pyarrow refuses it below with the value in the message.
_EPOCH_MS = "coalesce(CAST(round((julianday({0}) - 2440587.5) * 86400000) AS INTEGER), {0})"


def _rows(
    db: Database,
    table: str,
    chunk_rows: int,
    expressions: dict[str, str] | None = None,
    progress: Progress = None,
) -> Iterator[list[tuple]]:
    """The rows of ``table`` in chunks; ``expressions`` replace some columns' values."""
    name, columns = _table(table)
    select = ", ".join((expressions or {}).get(c, c) for c in columns)
    cursor = db.conn.execute(f"SELECT {select} FROM {name} ORDER BY rowid")
    while chunk := cursor.fetchmany(chunk_rows):
        yield chunk
        if progress is not None:
            progress(len(chunk))


def _table(table: str) -> tuple[str, tuple[str, ...]]:
    """The stored name and the columns of an exported ``table``."""
    if table not in TABLES:
        raise InvalidValue(f"Unknown table {table!r}: use one of {', '.join(TABLES)}")
    return TABLES[table]


def write_csv(
    db: str | os.PathLike[str] | Database,
    table: str,
    out: IO[str],
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = None,
) -> int:
    """Write ``table`` as CSV (header row first, NULL as an empty field); return the rows."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    with using_database(db, create=False) as conn:
        chunks = _rows(conn, table, chunk_rows, progress=progress)
        writer.writerow(_table(table)[1])
        for chunk in chunks:
            writer.writerows(chunk)
            count += len(chunk)
    return count


def require_pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, imported on first use."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependency(
            f"Parquet export needs pyarrow: pip install '{DISTRIBUTION}[parquet]'"
        ) from None
    return pa, pq


def parquet_schema(table: str) -> Any:
    """The pyarrow schema of ``table`` as :func:`write_parquet` writes it."""
    pa, _ = require_pyarrow()
    name = TABLES[table][0]
    fields = []
    for column, kind in COLUMN_TYPES[name].items():
        if column in TIMESTAMPS:
            type_ = pa.timestamp("ms", tz="UTC")
        elif column in BOOLEANS:
            type_ = pa.bool_()
        else:
            type_ = getattr(pa, _ARROW_TYPES[kind])()
        fields.append(pa.field(column, type_))
    return pa.schema(fields)


def write_parquet(
    db: str | os.PathLike[str] | Database,
    table: str,
    out: str | os.PathLike[str] | IO[bytes],
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = None,
) -> int:
    """Write ``table`` as a Parquet file, one row group per chunk; return the rows."""
    pa, pq = require_pyarrow()
    _table(table)
    schema = parquet_schema(table)
    expressions = {c: _EPOCH_MS.format(c) for c in TIMESTAMPS}
    count = 0
    with using_database(db, create=False) as conn, pq.ParquetWriter(out, schema) as writer:
        for chunk in _rows(conn, table, chunk_rows, expressions, progress):
            columns = list(zip(*chunk, strict=True))
            arrays = [_array(pa, table, f, v) for f, v in zip(schema, columns, strict=True)]
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            count += len(chunk)
    return count


def _array(pa: Any, table: str, field: Any, values: tuple) -> Any:
    """``values`` as an array of ``field``'s type; the first value that does not fit is named."""
    try:
        if field.name in BOOLEANS:  # stored as 0/1
            return pa.array(values, pa.int64()).cast(pa.bool_())
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        if len(values) > 1:
            for value in values:
                _array(pa, table, field, (value,))
        raise AgentMetricsError(
            f"Column {table}.{field.name} holds a value Parquet cannot store"
            f" as {field.type}: {values[0] if len(values) == 1 else e!r}"
        ) from None
