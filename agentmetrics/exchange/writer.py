"""Moving data between databases: streaming export, import of exports, merge of files.

An export is either JSON in the original tool's shape (a list of orchestrations, newest
first, each with an ``executions`` list in start order; ``self_healed`` as true/false; one
session as ``{"orchestration": ..., "executions": [...]}``) or JSON Lines: one object per
line with a ``type`` of ``orchestration`` or ``execution``, each orchestration followed
by its executions, in the same order. Executions without an orchestration come last: in
JSON as one entry whose orchestration fields are all null, in JSON Lines as
``execution`` lines with a null ``orchestration_id``.

Import matches rows by ``session_id`` / ``agent_session_id``: an incoming row replaces
the stored one only when it is further along (finished beats running; a later
``completed_at`` beats an earlier one), otherwise it is skipped. A row whose id is
another stored row's gets a new one; references to it (``orchestration_id``,
``parent_execution_id``, ``first_attempt_id``) follow it, or the stored id of its
session. Every file is validated completely before anything is written, so a malformed
file imports nothing.
Rows are then written in short transactions, each holding whole orchestrations with
their executions; the matching rules make running an interrupted import again
complete it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlite_utils import Database

from ..batching import BatchSize
from ..db import ensure_database, open_database, using_database, write_transaction
from ..errors import AgentMetricsError, InvalidExport, InvalidValue, UnknownSession
from ..migrations import COLUMN_TYPES, EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from ..monitor import EXECUTION_STATUSES, ORCHESTRATION_STATUSES
from ..otel.export import write_otlp, write_otlp_protobuf
from ..timestamps import parse_timestamp, to_iso, to_sqlite_datetime
from .tables import write_csv, write_parquet

Session = tuple[dict[str, Any] | None, list[dict[str, Any]]]
"""One orchestration (None for the executions that have none) and its executions."""


# -- reading ---------------------------------------------------------------------------


def _select(alias: str, columns: Iterable[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


# Newest first, as the original exports.
_ORCHESTRATIONS_SQL = f"""
SELECT {_select("o", ORCHESTRATION_COLUMNS)} FROM orchestrations o {{where}}
ORDER BY o.started_at DESC, o.rowid DESC
"""
# The same order, so one pass over both cursors pairs each orchestration with its
# executions without repeating the orchestration's columns on every row. Ordering by
# (started_at, rowid) is the started_at index's own order (read backwards), and CROSS
# JOIN keeps the orchestrations outside, each one's executions read in order from the
# (orchestration_id, started_at) index: no sort of the whole table (1.7x faster on a
# million executions).
_EXECUTIONS_SQL = f"""
SELECT o.id, {_select("e", EXECUTION_COLUMNS)}
FROM orchestrations o CROSS JOIN agent_executions e ON e.orchestration_id = o.id {{where}}
ORDER BY o.started_at DESC, o.rowid DESC, e.started_at, e.rowid
"""

# Executions with no orchestration, and (in files written without foreign keys)
# executions whose orchestration is gone: both are exported, never dropped.
_EXECUTION_COLUMNS = _select("e", EXECUTION_COLUMNS)
_STANDALONE_SQL = """
SELECT {columns} FROM agent_executions e
WHERE e.orchestration_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM orchestrations o WHERE o.id = e.orchestration_id)
ORDER BY e.started_at, e.agent_session_id
"""


def iter_sessions(
    db: str | os.PathLike[str] | Database, session_id: str | None = None
) -> Iterator[Session]:
    """Yield every orchestration with its executions, newest first, from one cursor.

    Executions come in start order, with ``self_healed`` as a bool (None if unset).

    The standalone executions come last, as ``(None, executions)``, in batches so
    memory stays flat. With ``session_id`` only that orchestration is yielded.

    :raises UnknownSession: ``session_id`` names no orchestration
    """
    with using_database(db, create=False) as opened:
        where, params = ("WHERE o.session_id = ?", [session_id]) if session_id else ("", [])
        orchestrations = opened.conn.execute(_ORCHESTRATIONS_SQL.format(where=where), params)
        rows = opened.conn.execute(_EXECUTIONS_SQL.format(where=where), params)

        def sessions() -> Iterator[Session]:
            row = next(rows, None)
            for values in orchestrations:
                executions = []
                while row is not None and row[0] == values[0]:
                    executions.append(_execution(row[1:]))
                    row = next(rows, None)
                yield dict(zip(ORCHESTRATION_COLUMNS, values, strict=True)), executions

        yield from _with_standalone(
            opened.conn,
            session_id,
            sessions(),
            _EXECUTION_COLUMNS,
            lambda batch: (None, [_execution(row) for row in batch]),
        )


def _with_standalone(
    conn: Any,
    session_id: str | None,
    sessions: Iterator[Any],
    columns: str,
    batch: Callable[[list[Any]], Any],
) -> Iterator[Any]:
    """``sessions``, then for a whole export the executions without an orchestration
    (``columns`` of them), ``batch`` making one item of each 10,000 rows.

    :raises UnknownSession: ``session_id`` is given and ``sessions`` is empty
    """
    found = False
    for session in sessions:
        found = True
        yield session
    if session_id:
        if not found:
            raise UnknownSession(f"No orchestration with session id {session_id!r}")
        return
    cursor = conn.execute(_STANDALONE_SQL.format(columns=columns))
    while rows := cursor.fetchmany(10_000):
        yield batch(rows)


class Encoding(NamedTuple):
    """How :func:`iter_encoded_sessions` encodes rows: ``separator`` joins a session's
    executions; ``typed`` starts each object with a ``type`` member (JSON Lines)."""

    separator: str = ", "
    typed: bool = False


EncodedSession = tuple[str | None, int, str]
"""An orchestration as JSON text (None for executions without one), its number of
executions, and those executions as JSON text joined by the separator."""

# Each orchestration with its executions already encoded and joined, in start order
# (the order of the (orchestration_id, started_at) index, read for each one).
_ENCODED_SQL = """
SELECT {orchestration}, (
  SELECT count(*) || ' ' || group_concat(row, :separator) FROM (
    SELECT {execution} AS row FROM agent_executions e WHERE e.orchestration_id = o.id
    ORDER BY e.started_at, e.rowid))
FROM orchestrations o {where}
ORDER BY o.started_at DESC, o.rowid DESC
"""


def iter_encoded_sessions(
    db: str | os.PathLike[str] | Database,
    session_id: str | None = None,
    encoding: Encoding | None = None,
) -> Iterator[EncodedSession]:
    """:func:`iter_sessions` with every row encoded by SQLite, byte for byte what
    ``_dumps`` writes for it as a dict, and each session's executions joined: no
    Python object per execution.

    :raises UnknownSession: ``session_id`` names no orchestration
    """
    encoding = encoding or Encoding()
    orchestration = _json_object("o", "orchestrations", "orchestration" if encoding.typed else None)
    execution = _json_object("e", "agent_executions", "execution" if encoding.typed else None)
    where = "WHERE o.session_id = :session" if session_id else ""
    params = {"separator": encoding.separator, "session": session_id}
    with using_database(db, create=False) as opened:
        opened.conn.create_function(_JSON_REAL, 1, _dumps, deterministic=True)
        sql = _ENCODED_SQL.format(orchestration=orchestration, execution=execution, where=where)

        def sessions() -> Iterator[EncodedSession]:
            for text, joined in opened.conn.execute(sql, params):
                count, _, executions = (joined or "0 ").partition(" ")
                yield _spaced(text), int(count), _spaced(executions)

        yield from _with_standalone(
            opened.conn,
            session_id,
            sessions(),
            execution,
            lambda batch: (
                None,
                len(batch),
                _spaced(encoding.separator.join(row[0] for row in batch)),
            ),
        )


_SELF_HEALED = EXECUTION_COLUMNS.index("self_healed")


def _execution(values: tuple) -> dict[str, Any]:
    row = dict(zip(EXECUTION_COLUMNS, values, strict=True))
    # Stored as 0/1; the original's exports write true/false.
    if values[_SELF_HEALED] is not None:
        row["self_healed"] = bool(values[_SELF_HEALED])
    return row


# Rows are encoded by SQLite's json_object: one C call per row. It writes text, integers
# and NULL as Python's encoder does (same escapes, UTF-8 kept) but compactly, which
# _spaced() turns into Python's separators, and floats with 15 digits: a float is
# written by printf when that round-trips and has Python's notation, else by Python.
_JSON_REAL = "agentmetrics_json_real"
_SHORT_REAL = "printf('%!.15g', {0})"


def _real(column: str) -> str:
    """A float as JSON text, exactly as ``repr``: from 1e-4 to 1e15 both write it in
    fixed notation with the shortest digits that round-trip."""
    short = _SHORT_REAL.format(column)
    return (
        f"iif(abs({column}) >= 1e-4 AND abs({column}) < 1e15 AND CAST({short} AS REAL) = {column},"
        f" {short}, {_JSON_REAL}({column}))"
    )


def _flag(column: str) -> str:
    """``self_healed`` as Python's bool() of what is stored: numbers by value, text by
    length; SQL text true/false, NULL for NULL."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN typeof({column}) IN ('integer', 'real')"
        f" THEN iif({column} != 0, 'true', 'false')"
        f" ELSE iif(length({column}) > 0, 'true', 'false') END"
    )


def _exact_value(column: str, sql_type: str) -> str:
    if column.endswith(".self_healed"):
        return f"ifnull({_flag(column)}, 'null')"
    if sql_type == "TEXT":  # text affinity stores numbers as text: no float here
        return f"json_quote({column})"
    return (
        f"CASE typeof({column}) WHEN 'integer' THEN {column} WHEN 'null' THEN 'null'"
        f" WHEN 'real' THEN {_real(column)} ELSE json_quote({column}) END"
    )


def _json_object(alias: str, table: str, kind: str | None = None) -> str:
    """SQL encoding each row of ``table`` as compact JSON (see :func:`_spaced`) in the
    member order of ``_dumps``, after a ``"type": kind`` member if ``kind`` is given.

    A row with a float in an integer column (rare: SQLite stores whole numbers as
    integers there) takes a slower exact printf; REAL columns are handled per value.
    """
    types = {f"{alias}.{c}": kind_ for c, kind_ in COLUMN_TYPES[table].items()}
    integers = [c for c, t in types.items() if t == "INTEGER" and not c.endswith(".self_healed")]
    fast, exact = [], []
    for column, sql_type in types.items():
        name = column.split(".")[1]
        if column.endswith(".self_healed"):
            value = f"json({_flag(column)})"
        elif sql_type == "REAL":
            value = f"iif(typeof({column}) = 'real', json({_real(column)}), {column})"
        else:
            value = column
        fast.append(f"'{name}', {value}")
        exact.append((f'"{name}":%s', _exact_value(column, sql_type)))
    if kind is not None:
        fast.insert(0, f"'type', '{kind}'")
        exact.insert(0, (f'"type":"{kind}"', None))
    # A float anywhere makes the sum a float (as does an integer overflow: exact too).
    any_float = " + ".join(f"ifnull({c}, 0)" for c in integers)
    template = ",".join(member for member, _ in exact)
    values = ", ".join(value for _, value in exact if value is not None)
    return (
        f"CASE WHEN typeof({any_float}) = 'real' THEN printf('{{{template}}}', {values})"
        f" ELSE json_object({', '.join(fast)}) END"
    )


def _spaced(text: str) -> str:
    """Compact JSON objects from :func:`_json_object` with Python's separators.

    Inside an encoded string every ``"`` is escaped, so ``,"`` is always a member
    separator; ``":`` ends a key, or is an escaped quote before a colon in a string
    (``\\":``), which the last replace restores.
    """
    text = text.replace(',"', ', "').replace('":', '": ')
    return text.replace('\\": ', '\\":') if '\\": ' in text else text


# -- writing exports -------------------------------------------------------------------

_NULL_ORCHESTRATION = dict.fromkeys(ORCHESTRATION_COLUMNS)


# One encoder, not one per call; rows from SQLite cannot be circular, and skipping
# that check makes encoding 1.6x faster.
_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _write_json(sessions: Iterable[EncodedSession], out: IO[str], single: bool) -> None:
    if single:
        for orchestration, _, executions in sessions:
            out.write(f'{{"orchestration": {orchestration}, "executions": [{executions}]}}\n')
        return
    out.write("[")
    first = True
    standalone_open = False
    for orchestration, _, executions in sessions:
        if orchestration is None:
            # The standalone executions form one final entry whose orchestration fields
            # are null; its list is streamed batch by batch, so memory stays flat.
            if not standalone_open:
                out.write("\n" if first else ",\n")
                out.write(_dumps(_NULL_ORCHESTRATION)[:-1] + ', "executions": [')
                standalone_open, first = True, False
            else:
                out.write(", ")
            out.write(executions)
            continue
        out.write("\n" if first else ",\n")
        # What _dumps writes for {**orchestration, "executions": executions}.
        out.write(f'{orchestration[:-1]}, "executions": [{executions}]}}')
        first = False
    if standalone_open:
        out.write("]}")
    out.write("]\n" if first else "\n]\n")


def _write_jsonl(sessions: Iterable[EncodedSession], out: IO[str], single: bool) -> None:
    for orchestration, count, executions in sessions:
        if orchestration is not None:
            out.write(orchestration + "\n")
        if count:
            out.write(executions + "\n")


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """How to write one export format.

    A session format (json, jsonl, otlp, otlp-protobuf) streams with ``write(sessions,
    out, single)``, ``single`` being True for a one-session export; one that writes only
    some rows returns ``(orchestrations, executions)`` written, None meaning all. A
    table format (csv, parquet) writes one whole table per file with
    ``write_table(db, table, out, progress=None)`` (``progress`` called with each chunk's
    number of rows); ``binary``: into a file opened in binary mode (else text);
    ``encoded``: ``write`` gets :data:`EncodedSession` items encoded so, instead of
    :data:`Session` ones.
    """

    write: Callable[[Iterable[Any], IO[str], bool], tuple[int, int] | None] | None = None
    write_table: Callable[..., int] | None = None
    binary: bool = False
    encoded: Encoding | None = None


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "json": ExportFormat(_write_json, encoded=Encoding()),
    "jsonl": ExportFormat(_write_jsonl, encoded=Encoding("\n", typed=True)),
    # OpenTelemetry traces: JSON Lines of ExportTraceServiceRequest, or one protobuf
    # ExportTraceServiceRequest (see agentmetrics.otel.export).
    "otlp": ExportFormat(write_otlp),
    "otlp-protobuf": ExportFormat(write_otlp_protobuf, binary=True),
    "csv": ExportFormat(write_table=write_csv),
    "parquet": ExportFormat(write_table=write_parquet, binary=True),
}
"""Every export format by name (:func:`export` writes the session formats,
:mod:`agentmetrics.exchange.tables` the table formats); add an entry to support another one."""
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


# -- validating incoming rows ----------------------------------------------------------


def _columns_of_type(sql_type: str) -> dict[str, tuple[str, ...]]:
    return {
        kind: tuple(name for name, type_ in COLUMN_TYPES[table].items() if type_ == sql_type)
        for kind, table in (("orchestration", "orchestrations"), ("execution", "agent_executions"))
    }


_INTS = _columns_of_type("INTEGER")
_TEXTS = _columns_of_type("TEXT")
_DEFAULT_ZERO = {
    "total_tasks",
    "completed_tasks",
    "failed_tasks",
    "retry_count",
    "self_healed",
    "files_created",
    "files_modified",
}
# SQLite stores 64-bit signed integers.
_MAX_INT = 2**63 - 1
# Years before 1000 would be stored with fewer than four digits by SQLite's and
# Python's date formatting, which sorts wrongly and breaks the reports that parse them.
_MIN_YEAR = 1000
# Lone surrogates (valid in JSON escapes) cannot be encoded as UTF-8 for SQLite.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _snake(name: str) -> str:
    # Accept camelCase keys as well (sessionId -> session_id).
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _normalize(raw: Any, columns: tuple[str, ...], kind: str) -> dict[str, Any]:
    """Validate one incoming row and return it in storage form; ValueError explains why."""
    if not isinstance(raw, dict):
        raise ValueError(f"{kind} must be an object, got {type(raw).__name__}")
    known = set(columns)
    row = dict.fromkeys(columns)
    for key, value in raw.items():
        name = key if key in known else _snake(key)
        if name in known:
            row[name] = value
    key = "session_id" if kind == "orchestration" else "agent_session_id"
    for name in (key, "agent_name") if kind == "execution" else (key,):
        if not isinstance(row[name], str) or not row[name]:
            raise ValueError(f"{kind} {name} must be a non-empty string, got {row[name]!r}")
    statuses = ORCHESTRATION_STATUSES if kind == "orchestration" else EXECUTION_STATUSES
    if row["status"] not in statuses:
        raise ValueError(
            f"{kind} {row[key]!r}: status must be one of {', '.join(statuses)},"
            f" got {row['status']!r}"
        )
    if row["metadata_json"] is not None and not isinstance(row["metadata_json"], str):
        try:
            row["metadata_json"] = json.dumps(row["metadata_json"], ensure_ascii=False)
        except RecursionError:
            raise ValueError(f"{kind} {row[key]!r}: metadata_json is nested too deeply") from None
    for name in _TEXTS[kind]:
        value = row[name]
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"{kind} {row[key]!r}: {name} must be a string, got {type(value).__name__}"
            )
        if value is not None and _SURROGATE.search(value):
            raise ValueError(f"{kind} {row[key]!r}: {name} holds a lone surrogate (not UTF-8)")
    if row["started_at"] is None:
        raise ValueError(f"{kind} {row[key]!r}: started_at is missing")
    moments = {}
    for name in ("started_at", "completed_at", "created_at"):
        if row[name] is not None:
            try:
                moment = parse_timestamp(row[name])
            except (ValueError, OverflowError):
                raise ValueError(
                    f"{kind} {row[key]!r}: {name} is not a timestamp: {row[name]!r}"
                ) from None
            if moment.year < _MIN_YEAR:
                raise ValueError(
                    f"{kind} {row[key]!r}: {name} is before the year {_MIN_YEAR}: {row[name]!r}"
                )
            moments[name] = moment
            row[name] = to_sqlite_datetime(moment) if name == "created_at" else to_iso(moment)
    if row["created_at"] is None:
        row["created_at"] = to_sqlite_datetime(moments["started_at"])
    for name in _INTS[kind]:
        value = row[name]
        if isinstance(value, bool):
            row[name] = value = int(value)
        if value is None:
            if name in _DEFAULT_ZERO:
                row[name] = 0
        elif not isinstance(value, int) or not 0 <= value <= _MAX_INT:
            raise ValueError(
                f"{kind} {row[key]!r}: {name} must be a whole number from 0 to {_MAX_INT},"
                f" got {value!r}"
            )
    if row["duration_ms"] is None and row["status"] in ("completed", "failed", "partial"):
        row["duration_ms"] = _duration_ms(moments)
    if kind == "execution":
        cost = row["cost_usd"]
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < math.inf
        ):
            raise ValueError(
                f"{kind} {row[key]!r}: cost_usd must be a finite number >= 0, got {cost!r}"
            )
    return row


def _duration_ms(moments: dict[str, dt.datetime]) -> int | None:
    """What the original stores for a finished row: completed_at - started_at."""
    if "completed_at" not in moments:
        return None
    elapsed = moments["completed_at"] - moments["started_at"]
    return elapsed // dt.timedelta(milliseconds=1) if elapsed >= dt.timedelta(0) else None


# -- sources: exports and databases as one stream of rows --------------------------------

Item = tuple[str, dict[str, Any], str]
"""``(kind, raw row, where)``: kind is ``orchestration`` or ``execution``."""


class _Source:
    """Something to import, readable twice: once to validate, once to write."""

    name: str

    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _JsonSource(_Source):
    """A JSON export: held in memory, or streamed when written one entry per line."""

    def __init__(self, path: Path, data: Any = None, streamed: bool = False) -> None:
        self.name = str(path)
        self.path = path
        self.data = data
        self.streamed = streamed

    def items(self) -> Iterator[Item]:
        data = _entries_by_line(self.path) if self.streamed else self.data
        if isinstance(data, dict):
            orchestration = data.get("orchestration", False)  # None: no orchestration
            if not isinstance(orchestration, (dict, type(None))) or not isinstance(
                data.get("executions"), list
            ):
                raise ValueError(
                    "expected an export: a list, or an object with orchestration and executions"
                )
            data = [{**(orchestration or {}), "executions": data["executions"]}]
        if not isinstance(data, (list, Iterator)):
            raise ValueError(f"expected a list of orchestrations, got {type(data).__name__}")
        for i, entry in enumerate(data, 1):
            where = f"entry {i}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
            executions = entry.get("executions", [])
            if not isinstance(executions, list):
                raise ValueError(f"{where}: executions must be a list")
            orchestration = {k: v for k, v in entry.items() if k != "executions"}
            parent = None
            if any(v is not None for v in orchestration.values()):
                if orchestration.get("id") is None:
                    orchestration["id"] = str(uuid.uuid4())
                yield "orchestration", orchestration, where
                parent = orchestration["id"]
            for j, execution in enumerate(executions, 1):
                if parent is not None and isinstance(execution, dict):
                    # Nesting is authoritative: an execution belongs to its entry.
                    execution = {**execution, "orchestration_id": parent}
                yield "execution", execution, f"{where}, execution {j}"


class _JsonlSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path

    def items(self) -> Iterator[Item]:
        with self.path.open(encoding="utf-8-sig") as f:
            preamble = True
            for i, line in enumerate(f, 1):
                if not line.strip() or (preamble and _is_npm_banner(line)):
                    continue
                preamble = False
                where = f"line {i}"
                try:
                    obj = _loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or obj.get("type") not in (
                    "orchestration",
                    "execution",
                ):
                    raise ValueError(
                        f"{where}: expected an object with type orchestration or execution"
                    )
                kind = obj.pop("type")
                yield kind, obj, where


class _DatabaseSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.db = open_database(path, read_only=True)

    def items(self) -> Iterator[Item]:
        for orchestration, executions in iter_sessions(self.db):
            if orchestration is not None:
                yield (
                    "orchestration",
                    orchestration,
                    f"orchestration {orchestration['session_id']!r}",
                )
            for execution in executions:
                yield "execution", execution, f"execution {execution['agent_session_id']!r}"

    def close(self) -> None:
        self.db.close()


def _loads(text: str) -> Any:
    """``json.loads``, failing only with JSONDecodeError: also on nesting too deep for
    Python's parser and on integers too long to convert."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        raise json.JSONDecodeError(str(e), text, 0) from None


def _is_npm_banner(line: str) -> bool:
    # `npm run monitor export > all-data.json`, the original's documented recipe,
    # puts npm's "> package@1.0.0 monitor" / "> tsx ..." lines before the JSON.
    return line.startswith("> ")


def _skip_preamble(f: IO[str]) -> tuple[str, int]:
    """Skip blank lines and npm's banner; return the first other line and lines skipped."""
    skipped = 0
    while (line := f.readline()) and (not line.strip() or _is_npm_banner(line)):
        skipped += 1
    return line, skipped


def _entries_by_line(path: Path) -> Iterator[Any]:
    """The entries of a JSON list written one per line, as ``export`` writes it.

    Streaming them keeps memory flat however large the file; :func:`_open_export`
    only picks this reader after checking that every line parses on its own.
    """
    with path.open(encoding="utf-8-sig") as f:
        _skip_preamble(f)  # the opening "["
        for line in f:
            text = line.strip()
            if text not in ("", "]"):
                yield _loads(text.removesuffix(","))


def _one_entry_per_line(path: Path) -> bool:
    try:
        return all(isinstance(entry, dict) for entry in _entries_by_line(path))
    except json.JSONDecodeError:
        return False


def _open_export(path: Path) -> _Source:
    try:
        # utf-8-sig: files saved by Windows tools often start with a byte order mark.
        with path.open(encoding="utf-8-sig") as f:
            first_line, skipped = _skip_preamble(f)
            if not first_line:
                raise InvalidExport(f"{path}: the file is empty")
            if first_line.lstrip().startswith("{"):
                try:
                    first = _loads(first_line)
                except json.JSONDecodeError:
                    first = None
                if isinstance(first, dict) and "type" in first:
                    return _JsonlSource(path)
            if first_line.strip() == "[" and _one_entry_per_line(path):
                return _JsonSource(path, streamed=True)
            try:
                return _JsonSource(path, _loads(first_line + f.read()))
            except json.JSONDecodeError as e:
                line = e.lineno + skipped
                raise InvalidExport(f"{path}: invalid JSON ({e.msg} at line {line})") from None
    except OSError as e:
        raise InvalidExport(f"Cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidExport(f"{path}: not a UTF-8 text file") from None


# -- importing -------------------------------------------------------------------------


@dataclasses.dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0


@dataclasses.dataclass
class ImportResult:
    """Rows inserted, updated and skipped, per table."""

    orchestrations: Counts = dataclasses.field(default_factory=Counts)
    executions: Counts = dataclasses.field(default_factory=Counts)

    def add(self, other: ImportResult) -> None:
        for table in ("orchestrations", "executions"):
            mine, theirs = getattr(self, table), getattr(other, table)
            for field in ("inserted", "updated", "skipped"):
                setattr(mine, field, getattr(mine, field) + getattr(theirs, field))


_TABLES = {
    "orchestration": ("orchestrations", "session_id", ORCHESTRATION_COLUMNS),
    "execution": ("agent_executions", "agent_session_id", EXECUTION_COLUMNS),
}


def _progress_rank(row: dict[str, Any]) -> tuple[int, str]:
    finished = row["status"] not in ("running", "in_progress")
    completed_at = row["completed_at"]
    if completed_at is not None:
        try:
            completed_at = to_iso(parse_timestamp(completed_at))
        except (ValueError, TypeError):
            completed_at = None
    return int(finished), completed_at or ""


def _validate(source: _Source, db: Database | None) -> tuple[int, set[str]]:
    """Check every row of ``source``; raise InvalidExport on the first bad one.

    Returns the number of rows and the orchestration ids that executions refer to
    but that exist neither in the source nor in ``db`` (None: a database not created
    yet); those executions are imported without an orchestration rather than dropped.
    """
    orchestration_ids: set[str] = set()
    unresolved: dict[str, str] = {}
    count = 0
    try:
        for kind, raw, where in source.items():
            try:
                row = _normalize(raw, _TABLES[kind][2], kind)
            except ValueError as e:
                raise InvalidExport(f"{source.name}: {where}: {e}") from None
            if kind == "orchestration" and row["id"] is not None:
                orchestration_ids.add(row["id"])
            elif kind == "execution" and row["orchestration_id"] is not None:
                parent = row["orchestration_id"]
                if parent not in orchestration_ids:
                    unresolved.setdefault(parent, where)
            count += 1
    except ValueError as e:
        raise InvalidExport(f"{source.name}: {e}") from None
    missing: set[str] = set()
    for orchestration_id, where in unresolved.items():
        if orchestration_id in orchestration_ids:
            raise InvalidExport(
                f"{source.name}: {where}: orchestration {orchestration_id!r} must come before"
                " its executions"
            )
        if (
            db is None
            or not db.execute(
                "SELECT 1 FROM orchestrations WHERE id = ?", [orchestration_id]
            ).fetchone()
        ):
            missing.add(orchestration_id)
    return count, missing


_RENAMED = "temp.agentmetrics_import_renamed"
_CHILDREN = "temp.agentmetrics_import_children"
# The columns of an execution that hold another execution's id.
EXECUTION_REFERENCES = ("parent_execution_id", "first_attempt_id")


class _ExecutionIds:
    """The execution ids an import changed, and the ids its rows referred to (their
    parent, their task's first attempt), so a reference follows a renamed execution
    whether the referring row comes before or after it, however far apart. Kept in
    temporary tables: a file may hold millions.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        for name, columns in (
            (_RENAMED, "old TEXT PRIMARY KEY, new TEXT NOT NULL"),
            (_CHILDREN, "col TEXT, parent TEXT, id TEXT, PRIMARY KEY (col, parent, id)"),
        ):
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(f"CREATE TABLE {name} ({columns}) WITHOUT ROWID")

    def follow(self, row: dict[str, Any]) -> dict[str, str]:
        """Point ``row``'s references at the ids they stand for in the database, in
        place; return the references it came with."""
        incoming = {col: row[col] for col in EXECUTION_REFERENCES if row.get(col) is not None}
        for col, old in incoming.items():
            found = self.db.execute(f"SELECT new FROM {_RENAMED} WHERE old = ?", [old]).fetchone()
            row[col] = old if found is None else found[0]
        return incoming

    def applied(
        self, incoming_id: str | None, incoming: dict[str, str], row: dict[str, Any]
    ) -> None:
        """Note an execution just written or skipped, ``row`` holding its final id."""
        for col, old in incoming.items():
            if row[col] == old:
                # It may be renamed later. Skipped rows too: re-running an import
                # killed between a reference and its renamed execution then completes it.
                self.db.execute(
                    f"INSERT OR IGNORE INTO {_CHILDREN} VALUES (?, ?, ?)", [col, old, row["id"]]
                )
        if incoming_id is None or row["id"] == incoming_id:
            return
        self.db.execute(
            f"INSERT OR REPLACE INTO {_RENAMED} VALUES (?, ?)", [incoming_id, row["id"]]
        )
        # Only the rows this import met that still hold the old id: a stored row
        # pointing at the stored execution that owns that id keeps pointing at it.
        for col in EXECUTION_REFERENCES:
            self.db.execute(
                f"UPDATE agent_executions SET {col} = :new WHERE {col} = :old AND id IN"
                f" (SELECT id FROM {_CHILDREN} WHERE col = :col AND parent = :old)",
                {"old": incoming_id, "new": row["id"], "col": col},
            )

    def close(self) -> None:
        for name in (_RENAMED, _CHILDREN):
            self.db.execute(f"DROP TABLE IF EXISTS {name}")


class _Writer:
    """Applies validated rows to a database, following the conflict rules."""

    def __init__(self, db: Database, missing: set[str]) -> None:
        self.db = db
        self.missing = missing
        self.result = ImportResult()
        self.id_map: dict[str, str] = {}
        self.executions = _ExecutionIds(db)

    def apply(self, kind: str, row: dict[str, Any]) -> None:
        table, key, columns = _TABLES[kind]
        counts = self.result.orchestrations if kind == "orchestration" else self.result.executions
        incoming_id = row["id"]
        parent = row.get("orchestration_id")
        if parent is not None:
            row["orchestration_id"] = (
                None if parent in self.missing else self.id_map.get(parent, parent)
            )
        references = self.executions.follow(row) if kind == "execution" else {}
        stored = self.db.execute(
            f"SELECT id, status, completed_at FROM {table} WHERE {key} = ?", [row[key]]
        ).fetchone()
        if stored is None:
            if (
                incoming_id is None
                or self.db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [incoming_id]).fetchone()
            ):
                row["id"] = str(uuid.uuid4())  # the id belongs to another session
            marks = ", ".join("?" * len(columns))
            self.db.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [row[c] for c in columns],
            )
            counts.inserted += 1
        else:
            row["id"] = stored[0]
            stored_row = {"status": stored[1], "completed_at": stored[2]}
            if _progress_rank(row) > _progress_rank(stored_row):
                names = [c for c in columns if c != "id"]
                self.db.execute(
                    f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in names)} WHERE id = ?",
                    [row[c] for c in names] + [row["id"]],
                )
                counts.updated += 1
            else:
                counts.skipped += 1
        if kind == "execution":
            self.executions.applied(incoming_id, references, row)
        elif incoming_id is not None:
            self.id_map[incoming_id] = row["id"]

    def close(self) -> None:
        self.executions.close()


# Import transactions are sized to hold the write lock about this long at most, so
# trackers writing at the same time wait little longer than that for it.
IMPORT_LOCK_SECONDS = 0.1
_FIRST_BATCH_ROWS = 100

Group = list[tuple[str, dict[str, Any]]]
"""Rows written in the same transaction: an orchestration and the executions after it."""


def _groups(source: _Source) -> Iterator[Group]:
    """The normalized rows of ``source``, one orchestration and its executions at a time.

    Executions without an orchestration, or listed away from theirs in JSON Lines,
    form groups of their own.
    """
    group: Group = []
    parent = None
    for kind, raw, _ in source.items():
        row = _normalize(raw, _TABLES[kind][2], kind)
        if kind == "orchestration" or parent is None or row["orchestration_id"] != parent:
            if group:
                yield group
            group = []
            parent = row["id"] if kind == "orchestration" else None
        group.append((kind, row))
    if group:
        yield group


def _batches(groups: Iterator[Group], size: BatchSize) -> Iterator[Group]:
    """Whole groups, joined until a batch holds ``size.size`` rows."""
    batch: Group = []
    for group in groups:
        batch.extend(group)
        if len(batch) >= size.size:
            yield batch
            batch = []
    if batch:
        yield batch


def _import_sources(
    db: str | os.PathLike[str] | Database,
    open_sources: Callable[[], list[_Source]],
    progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
    lock_seconds: float,
) -> ImportResult:
    if isinstance(lock_seconds, bool) or not isinstance(lock_seconds, (int, float)):
        raise InvalidValue(f"lock_seconds must be a number, got {lock_seconds!r}")
    # A target file that does not exist yet is created only once every source is
    # valid, so a rejected import leaves nothing behind.
    target = _open_target(db)
    sources: list[_Source] = []
    try:
        sources = open_sources()
        checked = [_validate(source, target) for source in sources]
        if on_total is not None:
            on_total(sum(count for count, _ in checked))
        if target is None:
            target = ensure_database(db)
        result = ImportResult()
        for source, (_, missing) in zip(sources, checked, strict=True):
            with contextlib.closing(_Writer(target, missing)) as writer:
                size = BatchSize(_FIRST_BATCH_ROWS, lock_seconds)
                for batch in _batches(_groups(source), size):
                    with size.timed(), write_transaction(target):
                        for kind, row in batch:
                            writer.apply(kind, row)
                    if progress is not None:
                        progress(len(batch))
            result.add(writer.result)
        return result
    finally:
        for source in sources:
            source.close()
        if target is not None and not isinstance(db, Database):
            target.close()


def _open_target(db: str | os.PathLike[str] | Database) -> Database | None:
    """``db`` opened for writing; None if it is a file that does not exist yet."""
    if not isinstance(db, Database) and os.fspath(db) != ":memory:" and not Path(db).exists():
        return None
    return ensure_database(db)


def import_files(
    db: str | os.PathLike[str] | Database,
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    lock_seconds: float = IMPORT_LOCK_SECONDS,
) -> ImportResult:
    """Import export files (ours or the original's, JSON or JSON Lines) into ``db``.

    Every file is validated before anything is written (a missing ``db`` file is
    not even created). Rows are then written in short transactions, each holding
    the write lock about ``lock_seconds`` at most and each holding whole
    orchestrations with their executions, so trackers writing at the same time
    barely wait. An interrupted import is completed by running it again.
    ``on_total(n)`` receives the number of rows to write and ``progress(k)`` is
    called as rows are written.

    :raises InvalidExport: a file is unreadable or malformed (nothing is imported)
    """
    return _import_sources(
        db, lambda: [_open_export(Path(p)) for p in paths], progress, on_total, lock_seconds
    )


def merge_databases(
    db: str | os.PathLike[str] | Database,
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    lock_seconds: float = IMPORT_LOCK_SECONDS,
) -> ImportResult:
    """Import every row of other agentmetrics or original-tool database files into ``db``.

    The other files are opened read-only; the rules are those of :func:`import_files`.

    :raises InvalidExport: a file is missing, not a database, or holds invalid rows
    """
    target_file = _main_file(db)

    def open_sources() -> list[_Source]:
        sources: list[_Source] = []
        try:
            for p in paths:
                path = Path(p)
                if target_file is not None and path.exists() and path.resolve() == target_file:
                    raise InvalidExport(f"{path} is the database being merged into")
                try:
                    sources.append(_DatabaseSource(path))
                except AgentMetricsError as e:
                    raise InvalidExport(str(e)) from None
        except BaseException:
            for source in sources:
                source.close()
            raise
        return sources

    return _import_sources(db, open_sources, progress, on_total, lock_seconds)


def _main_file(db: str | os.PathLike[str] | Database) -> Path | None:
    if not isinstance(db, Database):
        return None if os.fspath(db) == ":memory:" else Path(db).resolve()
    for _, name, file in db.conn.execute("PRAGMA database_list"):
        if name == "main" and file:
            return Path(file).resolve()
    return None
