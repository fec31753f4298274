"""Deleting old data in short batches, so trackers writing at the same time wait little.

Each batch is one ``BEGIN IMMEDIATE`` transaction that deletes whole orchestrations
together with their executions, so no reader ever sees an orphaned execution.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from collections.abc import Callable

from sqlite_utils import Database

from ..errors import DatabaseError, InvalidValue
from ..timestamps import before, to_iso
from ..window import resolve_now
from . import rollups
from .batching import BatchSize
from .db import using_database, write_transaction

DEFAULT_BATCH_SIZE = 100
# Batches grow from batch_size while each holds the write lock under half of this, so a
# tracker waiting behind one gets in within a fraction of a second even on a loaded
# machine (a 1.0 s target let batches reach 2 s with eight trackers on two cores).
# Fewer, larger batches would be faster in total, as they rewrite the random-key index
# pages fewer times: 1.0 s measured 1.7x a bare DELETE, 0.25 s 2.5x.
TARGET_LOCK_SECONDS = 0.25
# Pages an incremental vacuum frees in its first transaction (they grow like batches).
VACUUM_PAGES = 1000
_INCREMENTAL = 2  # PRAGMA auto_vacuum
# A batch touches pages all over the random-key indexes (id, agent_session_id);
# a bigger page cache for the duration keeps them in memory between batches.
CACHE_KIB = 128 * 1024

# Rows are compared as instants: julianday() reads every format SQLite knows
# (ISO with Z or an offset, "YYYY-MM-DD HH:MM:SS"), so rows imported in another
# format are judged by their time, not by how their text sorts. The text bound,
# two days past the cutoff, lets the started_at index narrow the scan first: no
# format with a UTC offset can place an instant before the cutoff and its date
# text two days after it.
_OLD = "started_at < :upper AND julianday(started_at) < julianday(:cutoff)"

_ORCHESTRATION_BATCH = f"SELECT id FROM orchestrations WHERE {_OLD} LIMIT :limit"
_STANDALONE_BATCH = (
    "SELECT rowid FROM agent_executions WHERE orchestration_id IS NULL AND "
    + _OLD
    + " LIMIT :limit"
)

_SPANS_BATCH = "SELECT trace_id, span_id FROM otel_spans WHERE start_ns < :cutoff_ns LIMIT :limit"


@dataclasses.dataclass
class CleanupResult:
    """What :func:`cleanup` deleted (or, with ``dry_run``, would delete)."""

    cutoff: str
    orchestrations: int = 0
    executions: int = 0
    standalone_executions: int = 0
    # OpenTelemetry spans kept to derive rows (agentmetrics.otel), started before the cutoff.
    spans: int = 0
    dry_run: bool = False


def cleanup(
    db: str | os.PathLike[str] | Database,
    days: float,
    now: str | dt.datetime | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> CleanupResult:
    """Delete orchestrations started more than ``days`` days before ``now``, with
    their executions, and executions without an orchestration of the same age.

    ``days=0`` deletes everything started before ``now``. ``executions`` counts the
    executions of deleted orchestrations; ``standalone_executions`` the others.
    ``progress(n)`` is called after each batch with the rows it removed.
    Batches start at ``batch_size`` orchestrations and grow while each one holds
    the write lock for less than ``TARGET_LOCK_SECONDS``.

    :raises InvalidValue: ``days`` is negative or not a number, ``batch_size`` < 1
    """
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days < math.inf:
        raise InvalidValue(f"days must be a number >= 0, got {days!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValue(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    cutoff = before(resolve_now(now), days * 24)  # clamped: 1e300 days keeps everything
    params = {
        "cutoff": to_iso(cutoff),
        "upper": to_iso(cutoff + dt.timedelta(days=2)),
        "cutoff_ns": _nanos(cutoff),
    }
    result = CleanupResult(cutoff=params["cutoff"], dry_run=dry_run)
    with using_database(db) as conn:
        if dry_run:
            _count(conn, params, result)
            return result
        cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        try:
            _delete(conn, params, batch_size, result, progress)
        finally:
            conn.execute(f"PRAGMA cache_size = {int(cache_size)}")
    return result


def _delete(
    db: Database,
    params: dict[str, str],
    batch_size: int,
    result: CleanupResult,
    progress: Callable[[int], None] | None,
) -> None:
    batches = BatchSize(batch_size, TARGET_LOCK_SECONDS, rests=True)
    while True:
        with batches.timed() as size, write_transaction(db):
            ids = [r[0] for r in db.execute(_ORCHESTRATION_BATCH, {**params, "limit": size})]
            if not ids:
                break
            marks = ", ".join("?" * len(ids))
            # Deleting the executions first is what ON DELETE CASCADE would do, but
            # it lets us count them; the cascade then finds nothing left to do.
            executions = db.execute(
                f"DELETE FROM agent_executions WHERE orchestration_id IN ({marks})", ids
            ).rowcount
            db.execute(f"DELETE FROM orchestrations WHERE id IN ({marks})", ids)
        result.orchestrations += len(ids)
        result.executions += executions
        if progress is not None:
            progress(len(ids) + executions)
    # ~ten executions each
    batches = BatchSize(batch_size * 10, TARGET_LOCK_SECONDS, rests=True)
    for statement, field in (
        (f"DELETE FROM agent_executions WHERE rowid IN ({_STANDALONE_BATCH})", "standalone"),
        (f"DELETE FROM otel_spans WHERE (trace_id, span_id) IN ({_SPANS_BATCH})", "spans"),
    ):
        while True:
            with batches.timed() as size, write_transaction(db):
                deleted = db.execute(statement, {**params, "limit": size}).rowcount
            if not deleted:
                break
            if field == "spans":
                result.spans += deleted
            else:
                result.standalone_executions += deleted
            if progress is not None:
                progress(deleted)


def _count(db: Database, params: dict[str, str], result: CleanupResult) -> None:
    old = f"SELECT id FROM orchestrations WHERE {_OLD}"
    result.orchestrations = db.execute(f"SELECT count(*) FROM ({old})", params).fetchone()[0]
    result.executions = db.execute(
        f"SELECT count(*) FROM agent_executions WHERE orchestration_id IN ({old})", params
    ).fetchone()[0]
    result.standalone_executions = db.execute(
        f"SELECT count(*) FROM agent_executions WHERE orchestration_id IS NULL AND {_OLD}",
        params,
    ).fetchone()[0]
    result.spans = db.execute(
        "SELECT count(*) FROM otel_spans WHERE start_ns < :cutoff_ns", params
    ).fetchone()[0]


def _nanos(moment: dt.datetime) -> int:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return max((moment - epoch) // dt.timedelta(microseconds=1) * 1000, 0)


def vacuum(db: str | os.PathLike[str] | Database) -> int:
    """Give the space of deleted rows back to the file system; return the bytes freed.

    A file agentmetrics created frees its pages in short write transactions (an
    incremental vacuum, sized like cleanup's batches), so writers wait little. Any
    other file gets one ``VACUUM``, which holds the write lock throughout (seconds on
    a large file) and turns the file into one whose later vacuums are short.
    """
    if isinstance(db, Database) and db.conn.in_transaction:
        raise DatabaseError("Cannot vacuum inside a transaction: commit it first")
    with using_database(db) as conn:
        before = _size(conn)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
            batches = BatchSize(VACUUM_PAGES, TARGET_LOCK_SECONDS, rests=True)
            while conn.execute("PRAGMA freelist_count").fetchone()[0]:
                with batches.timed() as pages:
                    _free_pages(conn, pages)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the file shrinks at a checkpoint
        else:
            conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
            conn.execute("VACUUM")
            if rollups.present(conn):
                rollups.reset(conn)  # VACUUM may renumber the rowids they track
        return max(before - _size(conn), 0)


def _free_pages(db: Database, pages: int) -> None:
    # One step of this pragma frees one page: executescript runs it to the end.
    try:
        db.conn.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(pages)}); COMMIT;")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise


def _size(db: Database) -> int:
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    return db.execute("PRAGMA page_count").fetchone()[0] * page_size
