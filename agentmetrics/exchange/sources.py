"""Import sources: export files and database files, each one stream of validated rows.

:func:`open_export` reads our exports and the original tool's (JSON, or JSON Lines;
npm's banner and a byte order mark before them are skipped), streaming a JSON list
written one entry per line; :class:`DatabaseSource` reads another database file,
read-only. A source can be read twice (once to validate, once to write), and
:meth:`Source.rows` is where every incoming row is validated and put in storage form:
the one call of :func:`_normalize`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidExport, InvalidValue
from ..store.db import open_database
from ..store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from ..store.schema import COLUMNS
from ..timestamps import parse_timestamp, to_sqlite_datetime
from .sessions import iter_sessions

KINDS = {
    "orchestration": ("orchestrations", "session_id", ORCHESTRATION_COLUMNS),
    "execution": ("agent_executions", "agent_session_id", EXECUTION_COLUMNS),
}
"""Each kind of row: its table, the column matching rows across databases, its columns."""


# -- validating incoming rows ----------------------------------------------------------


def _snake(name: str) -> str:
    # Accept camelCase keys as well (sessionId -> session_id).
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _normalize(raw: Any, columns: tuple[str, ...], kind: str) -> dict[str, Any]:
    """Validate one incoming row by the column rules (:mod:`agentmetrics.store.schema`) and
    return it in storage form; ValueError explains why."""
    if not isinstance(raw, dict):
        raise ValueError(f"{kind} must be an object, got {type(raw).__name__}")
    known = set(columns)
    row = dict.fromkeys(columns)
    for key, value in raw.items():
        name = key if key in known else _snake(key)
        if name in known:
            row[name] = value
    table, key, _ = KINDS[kind]
    rules = COLUMNS[table]
    try:
        row[key] = rules[key].check(key, row[key])
    except InvalidValue as e:
        raise ValueError(f"{kind} {e}") from None
    if row["metadata_json"] is not None and not isinstance(row["metadata_json"], str):
        try:
            row["metadata_json"] = json.dumps(row["metadata_json"], ensure_ascii=False)
        except RecursionError:
            raise ValueError(f"{kind} {row[key]!r}: metadata_json is nested too deeply") from None
    for name, rule in rules.items():
        try:
            row[name] = rule.check(name, row[name])
        except InvalidValue as e:
            raise ValueError(f"{kind} {row[key]!r}: {e}") from None
    if row["created_at"] is None:
        row["created_at"] = to_sqlite_datetime(parse_timestamp(row["started_at"]))
    if row["duration_ms"] is None and row["status"] in ("completed", "failed", "partial"):
        row["duration_ms"] = _duration_ms(row)
    return row


def _duration_ms(row: dict[str, Any]) -> int | None:
    """What the original stores for a finished row: completed_at - started_at."""
    if row["completed_at"] is None:
        return None
    elapsed = parse_timestamp(row["completed_at"]) - parse_timestamp(row["started_at"])
    return elapsed // dt.timedelta(milliseconds=1) if elapsed >= dt.timedelta(0) else None


# -- sources: exports and databases as one stream of rows --------------------------------

Item = tuple[str, dict[str, Any], str]
"""``(kind, raw row, where)``: kind is ``orchestration`` or ``execution``."""


class Source:
    """Something to import, readable twice: once to validate, once to write."""

    name: str

    def items(self) -> Iterator[Item]:
        """The raw rows, as the source holds them; ValueError says what is malformed."""
        raise NotImplementedError

    def rows(self) -> Iterator[Item]:
        """The rows validated and in storage form.

        :raises InvalidExport: a malformed source or row, the first one met
        """
        try:
            for kind, raw, where in self.items():
                try:
                    row = _normalize(raw, KINDS[kind][2], kind)
                except ValueError as e:
                    raise InvalidExport(self.at(where, e)) from None
                yield kind, row, where
        except ValueError as e:
            raise InvalidExport(f"{self.name}: {e}") from None

    def at(self, where: str, error: Any) -> str:
        """An error's message, prefixed with this source and the place in it (if any)."""
        return f"{self.name}: {where}: {error}" if where else f"{self.name}: {error}"

    def close(self) -> None:
        pass


class _JsonSource(Source):
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


class _JsonlSource(Source):
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


class DatabaseSource(Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.db = open_database(path, read_only=True)

    def items(self) -> Iterator[Item]:
        for orchestration, executions in iter_sessions(self.db):
            # No place to name: a row's error names it by its session id.
            if orchestration is not None:
                yield "orchestration", orchestration, ""
            for execution in executions:
                yield "execution", execution, ""

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

    Streaming them keeps memory flat however large the file; :func:`open_export`
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


def open_export(path: Path) -> Source:
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
