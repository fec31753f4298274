"""The import writer: validated rows into a database, by the conflict rules.

Import matches rows by ``session_id`` / ``agent_session_id``: an incoming row replaces
the stored one only when it is further along (finished beats running; a later
``completed_at`` beats an earlier one), otherwise it is skipped. A row whose id is
another stored row's gets a new one; references to it (``orchestration_id``,
``parent_execution_id``, ``first_attempt_id``) follow it, or the stored id of its
session. Every source (:mod:`agentmetrics.exchange.sources`) is validated completely
before anything is written, so a malformed file imports nothing.
Rows are then written in short transactions, each holding whole orchestrations with
their executions; the matching rules make running an interrupted import again
complete it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import AgentMetricsError, InvalidExport, InvalidValue
from ..store.batching import BatchSize
from ..store.db import database_file, ensure_database, write_transaction
from ..timestamps import parse_timestamp, to_iso
from .sources import KINDS, DatabaseSource, Source, open_export


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


def _progress_rank(row: dict[str, Any]) -> tuple[int, str]:
    finished = row["status"] not in ("running", "in_progress")
    completed_at = row["completed_at"]
    if completed_at is not None:
        try:
            completed_at = to_iso(parse_timestamp(completed_at))
        except (ValueError, TypeError):
            completed_at = None
    return int(finished), completed_at or ""


def _validate(source: Source, db: Database | None) -> tuple[int, set[str]]:
    """Check every row of ``source``; raise InvalidExport on the first bad one.

    Returns the number of rows and the orchestration ids that executions refer to
    but that exist neither in the source nor in ``db`` (None: a database not created
    yet); those executions are imported without an orchestration rather than dropped.
    """
    orchestration_ids: set[str] = set()
    unresolved: dict[str, str] = {}
    count = 0
    for kind, row, where in source.rows():
        if kind == "orchestration" and row["id"] is not None:
            orchestration_ids.add(row["id"])
        elif kind == "execution" and row["orchestration_id"] is not None:
            parent = row["orchestration_id"]
            if parent not in orchestration_ids:
                unresolved.setdefault(parent, where)
        count += 1
    missing: set[str] = set()
    for orchestration_id, where in unresolved.items():
        if orchestration_id in orchestration_ids:
            raise InvalidExport(
                source.at(
                    where, f"orchestration {orchestration_id!r} must come before its executions"
                )
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
        table, key, columns = KINDS[kind]
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


def _groups(source: Source) -> Iterator[Group]:
    """The normalized rows of ``source``, one orchestration and its executions at a time.

    Executions without an orchestration, or listed away from theirs in JSON Lines,
    form groups of their own.
    """
    group: Group = []
    parent = None
    for kind, row, _ in source.rows():
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
    open_sources: Callable[[], list[Source]],
    progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
    lock_seconds: float,
) -> ImportResult:
    if isinstance(lock_seconds, bool) or not isinstance(lock_seconds, (int, float)):
        raise InvalidValue(f"lock_seconds must be a number, got {lock_seconds!r}")
    # A target file that does not exist yet is created only once every source is
    # valid, so a rejected import leaves nothing behind.
    target = _open_target(db)
    sources: list[Source] = []
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
        db, lambda: [open_export(Path(p)) for p in paths], progress, on_total, lock_seconds
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

    def open_sources() -> list[Source]:
        sources: list[Source] = []
        try:
            for p in paths:
                path = Path(p)
                if target_file is not None and path.exists() and path.resolve() == target_file:
                    raise InvalidExport(f"{path} is the database being merged into")
                try:
                    sources.append(DatabaseSource(path))
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
    file = database_file(db)
    return Path(file).resolve() if file else None
