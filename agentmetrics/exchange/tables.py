"""Table exports for spreadsheets and data tools: CSV and Parquet.

Each of the two tables (``orchestrations``, ``executions``) is written as it is stored,
one row per row, streamed from one cursor in chunks so memory stays flat. Parquet
needs pyarrow (``pip install 'agentmetrics-sqlite[parquet]'``); its columns are typed:
``started_at``, ``completed_at`` and ``created_at`` as ``timestamp[ms, tz=UTC]``,
``self_healed`` as bool, text as string, counts and ``duration_ms`` as int64,
``cost_usd`` as double, NULL as null in every column.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from sqlite_utils import Database

from .. import DISTRIBUTION
from ..atomic import atomic_file
from ..errors import AgentMetricsError, InvalidValue, MissingDependency
from ..migrations import COLUMN_TYPES, EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from ..reports._common import DbArg, database

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
    db: DbArg, table: str, out: IO[str], chunk_rows: int = CHUNK_ROWS, progress: Progress = None
) -> int:
    """Write ``table`` as CSV (header row first, NULL as an empty field); return the rows."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    with database(db) as conn:
        chunks = _rows(conn, table, chunk_rows, progress=progress)
        writer.writerow(_table(table)[1])
        for chunk in chunks:
            writer.writerows(chunk)
            count += len(chunk)
    return count


def _pyarrow():
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
    pa, _ = _pyarrow()
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
    db: DbArg,
    table: str,
    out: str | os.PathLike[str] | IO[bytes],
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = None,
) -> int:
    """Write ``table`` as a Parquet file, one row group per chunk; return the rows."""
    pa, pq = _pyarrow()
    _table(table)
    schema = parquet_schema(table)
    expressions = {c: _EPOCH_MS.format(c) for c in TIMESTAMPS}
    count = 0
    with database(db) as conn, pq.ParquetWriter(out, schema) as writer:
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


def export_tables(
    db: DbArg, directory: str | os.PathLike[str], format: str = "csv", progress: Progress = None
) -> dict[str, Path]:
    """Write both tables into ``directory`` (created if missing, its parent must exist) as
    ``orchestrations.<format>`` and ``executions.<format>``; return their paths.

    Both files are replaced together at the end, atomically each
    (:mod:`agentmetrics.atomic`): a failure changes neither and leaves no new folder.
    """
    spec = _table_format(format)
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise AgentMetricsError(f"{folder} is a file: give a directory for both tables")
    if not folder.exists() and folder.suffix.lower() in (".csv", ".parquet"):
        raise AgentMetricsError(
            f"{folder} looks like a file name, but both tables need a directory: give"
            f" -o DIRECTORY (for DIRECTORY/orchestrations.{format} and"
            f" DIRECTORY/executions.{format}), or --table for one table"
        )
    _check_folder(folder, folder.parent)
    created = not folder.exists()
    folder.mkdir(exist_ok=True)
    written = {table: folder / f"{table}.{format}" for table in TABLES}
    try:
        with database(db) as conn, contextlib.ExitStack() as files:
            for table, path in written.items():
                out = files.enter_context(atomic_file(path, binary=spec.binary))
                spec.write_table(conn, table, out, progress=progress)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return written


def export_table(
    db: DbArg,
    table: str,
    path: str | os.PathLike[str],
    format: str = "csv",
    progress: Progress = None,
) -> int:
    """Write one table to the file ``path`` as ``csv`` or ``parquet``, atomically
    (:mod:`agentmetrics.atomic`); return the rows."""
    spec = _table_format(format)
    target = Path(path)
    if target.is_dir():
        raise AgentMetricsError(f"{target} is a directory: give a file name for one table")
    _check_folder(target, target.parent)
    with atomic_file(target, binary=spec.binary) as out:
        return spec.write_table(db, table, out, progress=progress)


def _table_format(format: str):
    """The :data:`~agentmetrics.exchange.EXPORT_FORMATS` entry of a table format."""
    from .writer import EXPORT_FORMATS, TABLE_FORMATS  # it imports this module's writers

    if format not in TABLE_FORMATS:
        raise InvalidValue(
            f"Unknown table format {format!r}: use one of {', '.join(TABLE_FORMATS)}"
        )
    if format == "parquet":
        _pyarrow()  # fail before creating anything
    return EXPORT_FORMATS[format]


def _check_folder(target: Path, folder: Path) -> None:
    if not folder.is_dir():
        raise AgentMetricsError(f"Cannot write {target}: folder {folder} does not exist")
