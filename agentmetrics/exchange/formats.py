"""The export formats: one registry, and the functions that write an export through it.

:data:`EXPORT_FORMATS` names every format with its writer: the session formats (json,
jsonl, otlp, otlp-protobuf) stream sessions into one file (:func:`export`), the table
formats (csv, parquet) write one table per file (:func:`export_tables`,
:func:`export_table`). Adding a format is adding an entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sqlite_utils import Database

from ..atomic import atomic_file
from ..errors import AgentMetricsError, InvalidValue
from ..otel.export import write_otlp, write_otlp_protobuf
from ..store.db import using_database
from .sessions import Encoding, iter_encoded_sessions, iter_sessions, write_json, write_jsonl
from .tables import TABLES, Progress, require_pyarrow, write_csv, write_parquet


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """How to write one export format.

    A session format (json, jsonl, otlp, otlp-protobuf) streams with ``write(sessions,
    out, single)``, ``single`` being True for a one-session export; one that writes only
    some rows returns ``(orchestrations, executions)`` written, None meaning all. A
    table format (csv, parquet) writes one whole table per file with
    ``write_table(db, table, out, progress=None)`` (``progress`` called with each chunk's
    number of rows); ``binary``: into a file opened in binary mode (else text);
    ``encoded``: ``write`` gets :data:`~agentmetrics.exchange.sessions.EncodedSession`
    items encoded so, instead of :data:`~agentmetrics.exchange.sessions.Session` ones.
    """

    write: Callable[[Iterable[Any], IO[str], bool], tuple[int, int] | None] | None = None
    write_table: Callable[..., int] | None = None
    binary: bool = False
    encoded: Encoding | None = None


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "json": ExportFormat(write_json, encoded=Encoding()),
    "jsonl": ExportFormat(write_jsonl, encoded=Encoding("\n", typed=True)),
    # OpenTelemetry traces: JSON Lines of ExportTraceServiceRequest, or one protobuf
    # ExportTraceServiceRequest (see agentmetrics.otel.export).
    "otlp": ExportFormat(write_otlp),
    "otlp-protobuf": ExportFormat(write_otlp_protobuf, binary=True),
    "csv": ExportFormat(write_table=write_csv),
    "parquet": ExportFormat(write_table=write_parquet, binary=True),
}
"""Every export format by name (:func:`export` writes the session formats,
:func:`export_tables` and :func:`export_table` the table formats); add an entry to
support another one."""
SESSION_FORMATS = tuple(name for name, f in EXPORT_FORMATS.items() if f.write is not None)
TABLE_FORMATS = tuple(name for name, f in EXPORT_FORMATS.items() if f.write_table is not None)


@dataclasses.dataclass
class ExportCounts:
    orchestrations: int = 0
    executions: int = 0


def export(
    db: str | os.PathLike[str] | Database,
    out: IO[Any],
    format: str = "json",
    session_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportCounts:
    """Stream all data (or one session) to the open file ``out``; return what was written.

    :param format: one of :data:`SESSION_FORMATS` (``json``, ``jsonl``, ``otlp``,
      ``otlp-protobuf``: ``out`` opened in binary mode)
    :param progress: called with each session's number of executions as it is read
    :raises InvalidValue: not a session format
    :raises UnknownSession: ``session_id`` names no orchestration
    """
    if format not in SESSION_FORMATS:
        raise InvalidValue(
            f"Unknown export format {format!r}: use one of {', '.join(SESSION_FORMATS)}"
        )
    counts = ExportCounts()
    chosen = EXPORT_FORMATS[format]
    if chosen.encoded:
        sessions = iter_encoded_sessions(db, session_id, chosen.encoded)
    else:
        sessions = ((o, len(e), e) for o, e in iter_sessions(db, session_id))
    if session_id:
        # Fail before writing anything, so `-o FILE` is not left half-written.
        sessions = _prefetch(sessions)

    def counted() -> Iterator[Any]:
        for orchestration, n, executions in sessions:
            counts.orchestrations += orchestration is not None
            counts.executions += n
            if progress is not None:
                progress(n)
            yield (orchestration, n, executions) if chosen.encoded else (orchestration, executions)

    written = chosen.write(counted(), out, session_id is not None)
    # A format that leaves rows out (otlp: unfinished runs) reports what it wrote.
    return ExportCounts(*written) if written is not None else counts


def _prefetch(sessions: Iterator[Any]) -> Iterator[Any]:
    first = next(sessions)
    yield first
    yield from sessions


def export_tables(
    db: str | os.PathLike[str] | Database,
    directory: str | os.PathLike[str],
    format: str = "csv",
    progress: Progress = None,
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
        with using_database(db, create=False) as conn, contextlib.ExitStack() as files:
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
    db: str | os.PathLike[str] | Database,
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
    """The :data:`EXPORT_FORMATS` entry of a table format."""
    if format not in TABLE_FORMATS:
        raise InvalidValue(
            f"Unknown table format {format!r}: use one of {', '.join(TABLE_FORMATS)}"
        )
    if format == "parquet":
        require_pyarrow()  # fail before creating anything
    return EXPORT_FORMATS[format]


def _check_folder(target: Path, folder: Path) -> None:
    if not folder.is_dir():
        raise AgentMetricsError(f"Cannot write {target}: folder {folder} does not exist")
