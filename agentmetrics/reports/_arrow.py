"""Loading many rows through Arrow, when ``adbc-driver-sqlite`` is installed.

Reading rows with the sqlite3 module creates a Python object per value, and pandas
then parses every timestamp text: about 160,000 execution rows a second. The ADBC
driver reads a query's result into Arrow columns in C, and pyarrow parses the
timestamps, so a frame costs a Python object only per text value. It is an option
(``pip install 'agentmetrics-sqlite[arrow]'``): without it, or for a query it cannot
serve identically, :func:`arrow_frame` returns None and the caller reads through
sqlite3, which gives an equal frame.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..store.db import database_file
from ..store.migrations import COLUMN_TYPES
from ._common import DbArg, snapshot, using_database
from ._frames import TIMESTAMPS, rows_frame, to_utc, typed

try:
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json
except ImportError:  # the optional `arrow` extra
    adbc = None

# The driver infers each column's type from its first batch and fails when a later
# batch differs (a text column NULL in the first rows): one batch for the whole result.
_ONE_BATCH = {"adbc.sqlite.query.batch_rows": str(2**30)}
_TEXT_TYPES = {"TEXT"}
_JSON_TYPES = {str: pa.string(), float: pa.float64()} if adbc is not None else {}
_PARAMETER = re.compile(r":(\w+)")
_ZONE = re.compile(r"(?:[zZ]|[+-]\d\d(?::?\d\d)?)$")
# Memory-mapped reads: each row fetched through an index is a page lookup without a
# system call (2 GB is SQLite's usual cap, not memory taken).
_MMAP = "PRAGMA mmap_size = 2147483648"


def available() -> bool:
    """Whether the Arrow path is installed."""
    return adbc is not None


def bulk_frame(db: DbArg, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """:func:`~._frames.rows_frame` for queries returning many rows: through Arrow when
    it can, else through sqlite3. A caller's open transaction may hold writes that
    only its own connection sees: then sqlite3 reads them."""
    with using_database(db, create=False) as conn:
        own = not conn.conn.in_transaction
        with snapshot(conn):
            frame = arrow_frame(conn, sql, params) if own else None
            return rows_frame(conn, sql, params) if frame is None else frame


def bulk_columns(db: Database, sql: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columns of a query returning many rows, as numpy arrays: through Arrow when
    it can (text as object arrays of str or None, numbers as int64 or float64 with
    NULL as NaN, a column of NULLs as None), else the values sqlite3 reads, as object
    arrays (the caller casts them). Inside a caller's transaction, sqlite3 reads."""
    table = None if db.conn.in_transaction else _arrow_table(db, sql, params)
    if table is not None:
        return _arrays(table)
    cursor = db.conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    rows = cursor.fetchall()
    values = np.empty((len(rows), len(names)), dtype=object)
    if rows:
        values[:] = rows
    return {name: values[:, i] for i, name in enumerate(names)}


def json_columns(
    db: Database, sql: str, params: dict[str, Any], fields: dict[str, type]
) -> dict[str, np.ndarray] | None:
    """:func:`bulk_columns` through Arrow for a query whose last column holds JSON
    objects, each text ending with a newline: that column is replaced by the
    ``fields`` (key: ``str`` or ``float``) of its objects, a missing or null one as
    None or NaN. pyarrow parses them in C, several times faster than SQLite's
    ``json_extract``. None when Arrow cannot read the query, or a field holds a value
    of another type (the caller then extracts them in SQL)."""
    table = None if db.conn.in_transaction else _arrow_table(db, sql, params)
    if table is None:
        return None
    *names, last = table.column_names
    texts = table.column(last).combine_chunks()
    if not len(texts) or texts.null_count or not pa.types.is_string(texts.type):
        return None
    schema = pa.schema([(key, _JSON_TYPES[kind]) for key, kind in fields.items()])
    # The texts one after another, as stored in the column: newline-delimited JSON.
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset :]
    body = texts.buffers()[2].slice(int(offsets[0]), int(offsets[len(texts)] - offsets[0]))
    try:
        parsed = pa_json.read_json(
            pa.BufferReader(body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(body.size, 1)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid:
        return None  # a number where text is expected, or the reverse
    if parsed.num_rows != len(texts):
        return None
    return _arrays(table.select(names)) | _arrays(parsed.select(list(fields)))


def _arrays(table: Any) -> dict[str, np.ndarray]:
    found = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        column = column.combine_chunks()
        if column.null_count == len(column):
            found[name] = np.full(len(column), None, dtype=object)
        else:
            found[name] = column.to_numpy(zero_copy_only=False)
    return found


def arrow_frame(db: Database, sql: str, params: dict[str, Any]) -> pd.DataFrame | None:
    """The frame :func:`~._frames.rows_frame` gives for ``sql`` over table columns
    (``:name`` parameters, rewritten as ``?``: no ``:word`` may appear in its literals),
    read through Arrow from ``db``'s file with a connection of its own; None when that
    is not possible (no driver, no file, a value of another type than the column's).
    One statement: a snapshot of its own."""
    table = _arrow_table(db, sql, params)
    return None if table is None else _frame(table)


def _arrow_table(db: Database, sql: str, params: dict[str, Any]) -> Any:
    """``sql``'s result as an Arrow table (see :func:`arrow_frame`), or None."""
    file = database_file(db) if adbc is not None else None
    if file is None:
        return None
    names: list[str] = []
    positional = _PARAMETER.sub(lambda m: names.append(m.group(1)) or "?", sql)
    uri = "file:" + urllib.parse.quote(file) + "?mode=ro"
    # A read-only file of the original tool gets our columns from temporary views.
    views = db.conn.execute("SELECT sql FROM sqlite_temp_master WHERE type = 'view'").fetchall()
    try:
        with adbc.connect(uri) as conn, conn.cursor() as cursor:
            for statement in [_MMAP] + [view for (view,) in views]:
                cursor.execute(statement)
            cursor.adbc_statement.set_options(**_ONE_BATCH)
            cursor.execute(positional, [params[name] for name in names])
            return cursor.fetch_arrow_table()
    except (adbc.Error, OSError):
        return None  # e.g. a read-only folder without the -shm file: sqlite3 can


def _frame(table: Any) -> pd.DataFrame | None:
    types = {column: kind for columns in COLUMN_TYPES.values() for column, kind in columns.items()}
    data = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        column = column.combine_chunks()
        if column.null_count == len(column):
            data[name] = _all_null(name, types.get(name), len(column))
            continue
        is_text = pa.types.is_string(column.type)
        if name in TIMESTAMPS:
            if not is_text:
                return None
            data[name] = _timestamps(column)
        elif is_text != (types.get(name) in _TEXT_TYPES):
            return None  # text in a number column or the reverse: sqlite3 keeps it as is
        elif is_text:
            data[name] = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
        else:
            data[name] = column.to_numpy(zero_copy_only=False)
    return typed(pd.DataFrame(data, columns=table.column_names))


def _all_null(name: str, kind: str | None, n: int) -> Any:
    if name in TIMESTAMPS:
        return pd.Series(
            np.full(n, np.datetime64("NaT", "us")), dtype="datetime64[us]"
        ).dt.tz_localize("UTC")
    if kind in _TEXT_TYPES:
        return pd.Series([None] * n, dtype=object)
    return np.full(n, np.nan)


def _timestamps(column: Any) -> pd.Series:
    """Stored timestamp text as :func:`~._frames.to_utc` parses it, UTC microseconds.

    pyarrow parses a column in one form, ISO with ``Z`` or an offset or SQLite's
    ``YYYY-MM-DD HH:MM:SS`` (UTC), 20x faster than pandas; pandas parses the rest.
    """
    first = column.drop_null()[0].as_py()
    aware = _ZONE.search(first) is not None
    try:
        parsed = pc.cast(column, pa.timestamp("us", "UTC" if aware else None)).to_pandas()
    except pa.ArrowInvalid:
        return to_utc(pd.Series(column.to_numpy(zero_copy_only=False), dtype=object))
    return parsed if aware else parsed.dt.tz_localize("UTC")
