"""Sessions: the store read as orchestrations with their executions, and written as JSON.

:func:`iter_sessions` yields rows as dicts; :func:`iter_encoded_sessions` yields them
already encoded as JSON by SQLite (no Python object per execution), which
:func:`write_json` and :func:`write_jsonl` stream into an export. Both read from one
cursor, newest orchestration first, so memory stays flat however large the database.

An export is either JSON in the original tool's shape (a list of orchestrations, newest
first, each with an ``executions`` list oldest first, in the original's order: by
``created_at``, rows of the same second as written; ``self_healed`` as true/false; one
session as ``{"orchestration": ..., "executions": [...]}``) or JSON Lines: one object per
line with a ``type`` of ``orchestration`` or ``execution``, each orchestration followed
by its executions, in the same order. Executions without an orchestration come last: in
JSON as one entry whose orchestration fields are all null, in JSON Lines as
``execution`` lines with a null ``orchestration_id``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NamedTuple

from sqlite_utils import Database

from ..errors import UnknownSession
from ..store.db import using_database
from ..store.migrations import COLUMN_TYPES, EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS

Session = tuple[dict[str, Any] | None, list[dict[str, Any]]]
"""One orchestration (None for the executions that have none) and its executions."""


# -- reading ---------------------------------------------------------------------------


def _select(alias: str, columns: Iterable[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


# Newest first, in the order the original's export query (``ORDER BY created_at DESC``,
# each one's executions ``ORDER BY created_at``) returns rows on its files, ties of the
# same second included: its plan reads the created_at index backwards (rowid DESC) and
# sorts each one's executions read in rowid order.
_ORCHESTRATIONS_ORDER = "o.created_at DESC, o.rowid DESC"
_EXECUTIONS_ORDER = "e.created_at, e.rowid"
_ORCHESTRATIONS_SQL = f"""
SELECT {_select("o", ORCHESTRATION_COLUMNS)} FROM orchestrations o {{where}}
ORDER BY {_ORCHESTRATIONS_ORDER}
"""
# The same order, so one pass over both cursors pairs each orchestration with its
# executions without repeating the orchestration's columns on every row. Ordering by
# (created_at, rowid) is the created_at index's own order (read backwards), and CROSS
# JOIN keeps the orchestrations outside, each one's few executions sorted apart: no
# sort of the whole table (1.7x faster on a million executions).
_EXECUTIONS_SQL = f"""
SELECT o.id, {_select("e", EXECUTION_COLUMNS)}
FROM orchestrations o CROSS JOIN agent_executions e ON e.orchestration_id = o.id {{where}}
ORDER BY {_ORCHESTRATIONS_ORDER}, {_EXECUTIONS_ORDER}
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

    Executions come oldest first, with ``self_healed`` as a bool (None if unset).

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

# Each orchestration with its executions already encoded and joined, in the same order.
_ENCODED_SQL = f"""
SELECT {{orchestration}}, (
  SELECT count(*) || ' ' || group_concat(row, :separator) FROM (
    SELECT {{execution}} AS row FROM agent_executions e WHERE e.orchestration_id = o.id
    ORDER BY {_EXECUTIONS_ORDER}))
FROM orchestrations o {{where}}
ORDER BY {_ORCHESTRATIONS_ORDER}
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


# -- writing JSON and JSON Lines -------------------------------------------------------

_NULL_ORCHESTRATION = dict.fromkeys(ORCHESTRATION_COLUMNS)


# One encoder, not one per call; rows from SQLite cannot be circular, and skipping
# that check makes encoding 1.6x faster.
_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def write_json(sessions: Iterable[EncodedSession], out: IO[str], single: bool) -> None:
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


def write_jsonl(sessions: Iterable[EncodedSession], out: IO[str], single: bool) -> None:
    for orchestration, count, executions in sessions:
        if orchestration is not None:
            out.write(orchestration + "\n")
        if count:
            out.write(executions + "\n")
