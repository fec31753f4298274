"""Getting a monitoring database and reading it consistently: the store's access layer.

- :func:`open_database`: a path to a new ``sqlite_utils.Database`` (checks, pragmas,
  migrations); :func:`ensure_database` takes a path or a Database (:data:`DbArg`), and
  :func:`using_database` is that for a ``with`` block, closing what it opened.
- :func:`reading`: ``using_database(db, create=False)`` in one read transaction
  (:func:`snapshot`), what reports and views read through.
- :func:`database_file`: which file a Database reads.

Part of the store: it knows no analysis and no CLI; anything may import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import struct
import sys
import tempfile
import time
import urllib.parse
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlite_utils import Database

from ..errors import (
    DatabaseError,
    ForeignDatabase,
    MissingIndexesWarning,
    NotADatabase,
    PendingWritesWarning,
    ReadOnlyDatabase,
)
from . import rollups
from .migrations import EXTRA_COLUMNS, migrations, missing_indexes
from .pending import SUFFIX, count_kept

DEFAULT_PATH = "monitoring.db"
ENV_VAR = "AGENTMETRICS_DB"
BUSY_TIMEOUT_MS = 30_000
# Below this many rows in each table the report indexes are built implicitly, when a
# file is opened: far below 1 s (measured, see benchmarks/bench_open.py). A larger
# file gets them from `agentmetrics upgrade`.
IMPLICIT_INDEX_ROWS = 25_000
# How fast one report index is built, to estimate what `upgrade` will take (measured
# on the benchmark machine; a slow disk or a cold cache takes longer).
INDEX_ROWS_PER_SECOND = 300_000
# Pause between two index builds of `upgrade`, so waiting writers get the lock.
WRITER_GAP_S = 0.25
_SQLITE_HEADER = b"SQLite format 3\x00"
_SHARED_FIRST = 0x40000002  # SQLite's PENDING_BYTE + 2: where its shared locks start


DbArg = str | os.PathLike[str] | Database
"""A database: a path (opened, and closed after) or a ``sqlite_utils.Database`` (the
caller's: used as it is and left open)."""


def default_path() -> str:
    """The database path used when none is given: ``$AGENTMETRICS_DB`` or ``./monitoring.db``."""
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def _stderr(message: str) -> None:
    print(f"agentmetrics: {message}", file=sys.stderr, flush=True)


def open_database(
    path: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    create: bool = True,
    allow_foreign: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
) -> Database:
    """Open (or create) a monitoring database and return a ``sqlite_utils.Database``.

    The connection uses WAL, ``foreign_keys=ON``, a busy timeout and
    ``synchronous=NORMAL``; pending migrations (instant: nullable columns) are
    applied. The report indexes are built too when the file is new or small; on a
    larger file that lacks them or the rollups, opening with ``create=False`` (as the
    report functions do with a path) warns with
    :class:`~agentmetrics.errors.MissingIndexesWarning`, and :func:`upgrade` builds them.
    A file that cannot be written (read-only file or folder) is opened read-only: reports
    work, nothing is written.

    :param path: file path, ``":memory:"``, or None for :func:`default_path`
    :param read_only: open for reading only, never writing to the file
    :param create: create the file if it is missing (False: open for reading, a
      missing or empty file is an error)
    :param allow_foreign: add our tables to a file that holds other tables
    :param busy_timeout_ms: how long a statement waits for another writer's lock
    :raises DatabaseError: the path is a directory or not a regular file, not SQLite,
      corrupt or missing, or (:class:`ForeignDatabase`) another application's database
    """
    path = os.fspath(path) if path is not None else default_path()
    if path == ":memory:":
        db = Database(_connect(path, busy_timeout_ms))
        configure(db, busy_timeout_ms=busy_timeout_ms)
        _upgrade_implicitly(db)
        return db
    file = Path(path)
    reading = read_only or not create
    _check_file(file, path, reading)
    if not read_only and file.exists():
        if _writable(file):
            _reclaim_leftovers(file)
        else:
            read_only = True
    db = None
    try:
        db = _open_read_only(file, path) if read_only else Database(_connect(path, busy_timeout_ms))
        _check_readable(db, path)
        _check_ours(db, path, reading=reading, allow_foreign=allow_foreign)
        if read_only:
            configure(db, writable=False, busy_timeout_ms=busy_timeout_ms)
            _shim_missing_columns(db)
            db.conn.execute("PRAGMA query_only = ON")
        else:
            configure(db, busy_timeout_ms=busy_timeout_ms)
            _upgrade_implicitly(db)
    except BaseException as e:
        if db is not None:
            db.close()
        if not isinstance(e, sqlite3.DatabaseError):
            raise
        if not read_only and (refused_write(e) or "unable to open" in str(e)):
            return open_database(
                path, read_only=True, allow_foreign=allow_foreign, busy_timeout_ms=busy_timeout_ms
            )
        raise DatabaseError(f"Cannot open {path}: {e}") from None
    if not create and not read_only:  # read commands, on a file they could upgrade
        _warn_if_upgrade_needed(db, path)
    if reading:
        _warn_if_writes_pending(path)
    return db


def refused_write(error: BaseException) -> bool:
    """Whether SQLite refused a write because the database is read-only: the file or
    connection, or the read-only shim of an original file (:func:`_shim_missing_columns`,
    whose views say "is a view")."""
    message = str(error)
    return "readonly" in message or "because it is a view" in message


def ensure_database(db: DbArg, **kwargs) -> Database:
    """``db`` as a Database: a path is opened (:func:`open_database` with ``kwargs``), a
    Database is returned itself.

    A Database given for writing (not ``create=False`` or ``read_only=True``) is
    configured for us and gets the schema, as a path would: a plain
    ``sqlite_utils.Database("new.db")`` has no tables yet. One that cannot be written
    is left as it is; one holding another application's tables is refused unless
    ``allow_foreign=True``. One given for reading is used as it is.
    """
    if not isinstance(db, Database):
        return open_database(db, **kwargs)
    if kwargs.get("create", True) and not kwargs.get("read_only", False):
        configure(db, writable=None, busy_timeout_ms=kwargs.get("busy_timeout_ms", BUSY_TIMEOUT_MS))
        if migrations.pending(db):
            name = _file_name(db)
            _check_ours(db, name, reading=False, allow_foreign=kwargs.get("allow_foreign", False))
            try:
                _upgrade_implicitly(db)
            except sqlite3.OperationalError as e:
                if not refused_write(e):
                    raise DatabaseError(f"Cannot upgrade the schema of {name}: {e}") from None
    return db


@contextlib.contextmanager
def using_database(db: DbArg, **kwargs) -> Iterator[Database]:
    """:func:`ensure_database` for a ``with`` block: a path is opened and closed at its
    end; a Database given is used and left open (it is the caller's). Reading is
    ``using_database(db, create=False)``: a missing file is an error, not created."""
    database = ensure_database(db, **kwargs)
    try:
        yield database
    finally:
        if database is not db:
            database.close()


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[Database]:
    """Run a reader's statements in one read transaction.

    Each statement alone sees a consistent database, but a tracker committing
    between two of them would make a report disagree with itself (an execution
    counted neither finished nor in progress). In WAL mode a read transaction
    never blocks writers. Inside a caller's transaction, that one is used.
    """
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN")
    try:
        yield db
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


@contextlib.contextmanager
def reading(db: DbArg) -> Iterator[Database]:
    """``using_database(db, create=False)`` in a :func:`snapshot`: what every report,
    view and check that reads several statements reads through."""
    with using_database(db, create=False) as conn, snapshot(conn):
        yield conn


def database_file(db: Database) -> str | None:
    """The file ``db`` reads, or None for an in-memory or temporary database."""
    for _, name, file in db.conn.execute("PRAGMA database_list"):
        if name == "main":
            return file or None
    return None


def upgrade(
    db: str | os.PathLike[str] | Database,
    *,
    progress: Callable[[str], None] | None = _stderr,
) -> dict[str, float]:
    """Build the report indexes ``db`` lacks and its rollups (:mod:`agentmetrics.store.rollups`);
    return the seconds each step took (``"rollups"``: rolling every row up).

    Each index is built in its own transaction and writers get the lock between
    two of them, but each build holds the write lock for its whole duration: on a
    file with millions of executions, seconds. ``progress`` gets an estimate first,
    then one message per index.

    :raises DatabaseError: the file is missing, not ours, or (:class:`ReadOnlyDatabase`)
      cannot be written
    """
    database = db if isinstance(db, Database) else _open_for_upgrade(db)
    try:
        name = _file_name(database) if database is db else os.fspath(db)
        if database.conn.execute("PRAGMA query_only").fetchone()[0]:
            raise ReadOnlyDatabase(f"{name} is read-only: cannot build the report indexes")
        ensure_database(database)
        missing = missing_indexes(database)
        timings = _build_indexes(database, name, missing, progress) if missing else {}
        timings |= _build_rollups(database, name, progress)
        if not timings and progress:
            progress(f"{name}: every report index is present, nothing to do")
        return timings
    finally:
        if database is not db:
            database.close()


def _build_indexes(
    database: Database,
    name: str,
    missing: list[tuple[str, str, str]],
    progress: Callable[[str], None] | None,
) -> dict[str, float]:
    rows = _table_rows(database)
    if progress:
        longest = max(_build_seconds(rows[table]) for _, table, _ in missing)
        total = sum(_build_seconds(rows[table]) for _, table, _ in missing)
        progress(
            f"building {len(missing)} report indexes on {name} "
            f"({rows['agent_executions']:,} executions): about {total:.0f}s in all; "
            f"writers wait up to about {longest:.0f}s at a time"
        )
    timings = {}
    for i, (index, table, sql) in enumerate(missing):
        if i:
            # A writer waiting on the busy timeout polls every few ms to 100 ms:
            # leave the lock free long enough for it to get in.
            time.sleep(WRITER_GAP_S)
        if progress:
            progress(f"  {index} ({i + 1}/{len(missing)}, {rows[table]:,} rows)...")
        started = time.perf_counter()
        try:
            with write_transaction(database), _big_cache(database):
                database.execute(sql)
        except sqlite3.OperationalError as e:
            if refused_write(e):
                raise ReadOnlyDatabase(
                    f"{name} is read-only: cannot build the report indexes"
                ) from None
            raise DatabaseError(f"Cannot build {index} in {name}: {e}") from None
        timings[index] = time.perf_counter() - started
        if progress:
            progress(f"  {index} built in {timings[index]:.1f}s")
    return timings


def _build_rollups(
    database: Database, name: str, progress: Callable[[str], None] | None
) -> dict[str, float]:
    """Create the rollups and roll every finished execution up, in short batches."""
    started = time.perf_counter()
    if not rollups.present(database):
        with write_transaction(database):
            rollups.create(database)
    elif not rollups.backlog(database):
        return {}
    if progress:
        progress(f"  rolling up the executions of {name} (writers wait milliseconds at a time)...")

    def step(done: int, last: int) -> None:
        if done == last or done % 1_000_000 < rollups.BATCH_ROWS:
            progress(f"  rollups: {done:,} of {last:,} rows")

    rollups.refresh(database, progress=step if progress else None)
    return {"rollups": time.perf_counter() - started}


@contextlib.contextmanager
def _big_cache(db: Database) -> Iterator[None]:
    """A 256 MB page cache for an index build: a quarter less time holding the lock."""
    cache = db.conn.execute("PRAGMA cache_size").fetchone()[0]
    db.conn.execute("PRAGMA cache_size = -262144")
    try:
        yield
    finally:
        db.conn.execute(f"PRAGMA cache_size = {int(cache)}")


def _open_for_upgrade(path: str | os.PathLike[str]) -> Database:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIndexesWarning)
        return open_database(path, create=False)


def configure(
    db: Database, writable: bool | None = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> None:
    """Set the connection pragmas for a many-writer monitoring workload."""
    conn = db.conn
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if writable is False:
        return
    # NORMAL is safe in WAL mode: a crashed process (even SIGKILL) never loses a
    # committed transaction and never corrupts the file; only a power cut can lose
    # the last commits. FULL would add an fsync to every tracking call.
    conn.execute("PRAGMA synchronous = NORMAL")
    if writable and not conn.execute("PRAGMA page_count").fetchone()[0]:
        # A new file: only now can it keep the page map that lets cleanup.vacuum give
        # space back in short steps (after the first table, only a VACUUM can).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if writable and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() not in (
        "wal",
        "memory",
    ):
        conn.execute("PRAGMA journal_mode = WAL")


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """A transaction that takes the write lock up front (``BEGIN IMMEDIATE``).

    A deferred transaction that reads and then writes can fail at once with
    "database is locked" when another process wrote in between; taking the lock
    first lets the busy timeout do its job. Nested use becomes a savepoint.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def _connect(path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    # isolation_level=None: each tracking statement commits on its own, with no
    # implicit BEGIN/COMMIT round trips; multi-statement work uses write_transaction.
    return sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )


def _open_read_only(file: Path, path: str) -> Database:
    uri = "file:" + urllib.parse.quote(str(file.resolve()))
    # A WAL database gets -wal and -shm files beside it while it is open, and only the
    # last read-write connection to close removes them: a read-only one leaves them
    # behind. So read through a read-write connection where we could write (no
    # statement can write through it: open_database sets query_only).
    mode = "rw" if _writable(file) else "ro"
    conn = sqlite3.connect(
        f"{uri}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return Database(conn)
    except sqlite3.OperationalError:
        conn.close()
    # A WAL file in a read-only folder without its -shm file cannot be opened in
    # place. Committed rows may still be in the -wal file, which immutable=1 would
    # ignore: read those from a private copy.
    wal = file.with_name(file.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return _private_copy(file, wal, path)
    return Database(
        sqlite3.connect(
            uri + "?immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
    )


class _PrivateCopy(Database):
    """A database read from a copy in a temporary folder, removed on close."""

    def __init__(self, conn: sqlite3.Connection, folder: str) -> None:
        super().__init__(conn)
        self._remove = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)

    def close(self) -> None:
        super().close()
        self._remove()


def _private_copy(file: Path, wal: Path, path: str) -> Database:
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="agentmetrics-")
        copy = Path(folder) / "copy.db"
        shutil.copyfile(file, copy)
        shutil.copyfile(wal, copy.with_name("copy.db-wal"))
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(str(copy))}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
    except (OSError, sqlite3.Error) as e:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise DatabaseError(
            f"Cannot read {path}: its last commits are in {wal.name}, which cannot be read"
            f" in this read-only folder, and copying them failed ({e})"
        ) from None
    return _PrivateCopy(conn, folder)


def _writable(file: Path) -> bool:
    if not os.access(file, os.W_OK):
        return False
    # WAL needs to create -wal and -shm files beside the database.
    return os.access(file.parent, os.W_OK)


def _reclaim_leftovers(file: Path) -> None:
    """Make the ``-wal`` and ``-shm`` files a read-only open left behind writable again.

    SQLite creates both with the mode (and, when it can, the owner) the database file
    has then: a read-only open of a file made read-only (``chmod 444``), or by another
    user, leaves files that would keep every later connection read-only once the file
    is writable. Ours get the file's own mode; another user's are removed when that
    loses nothing: the ``-wal`` holds no commit and no process has the database open.
    """
    mode = stat.S_IMODE(file.stat().st_mode)
    leftovers = [file.with_name(file.name + suffix) for suffix in ("-wal", "-shm")]
    theirs = False
    for leftover in leftovers:
        try:
            if not os.access(leftover, os.W_OK):
                os.chmod(leftover, mode)
        except PermissionError:
            theirs = True
        except OSError:
            pass  # there is none
    if theirs and _unused(file, leftovers[0]):
        for leftover in leftovers:
            with contextlib.suppress(OSError):  # SQLite then says the file is read-only
                leftover.unlink()


def _unused(file: Path, wal: Path) -> bool:
    """Whether the WAL file is empty and no other process has the database open (each
    connection holds a read lock on SQLite's shared byte range; 64-bit Linux only)."""
    if not (sys.platform.startswith("linux") and struct.calcsize("P") == 8):
        return False
    layout = "hh4xqqi4x"  # struct flock: type, whence, start, length, pid
    try:
        if wal.exists() and wal.stat().st_size:
            return False
        with open(file, "rb") as f:
            probe = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, _SHARED_FIRST, 510, 0)
            held = struct.unpack(layout, fcntl.fcntl(f, fcntl.F_GETLK, probe))[0]
    except OSError:
        return False
    return held == fcntl.F_UNLCK


def _check_file(file: Path, path: str, reading: bool) -> None:
    if not file.exists():
        if reading:
            raise DatabaseError(f"No database found at {path}")
        if not file.parent.exists():
            raise DatabaseError(f"Folder {file.parent} does not exist")
        return
    mode = file.stat().st_mode
    if stat.S_ISDIR(mode):
        raise NotADatabase(f"{path} is a directory, not a database file")
    if not stat.S_ISREG(mode):
        # Reading a FIFO or a device would block or never end.
        raise NotADatabase(f"{path} is not a regular file (a FIFO, socket or device)")
    try:
        with file.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as e:
        raise DatabaseError(f"Cannot read {path}: {e.strerror}") from None
    if not header and reading:
        raise DatabaseError(f"No database found at {path}: the file is empty")
    if header and header != _SQLITE_HEADER:
        raise NotADatabase(f"{path} is not an SQLite database")


def _check_ours(db: Database, path: str, *, reading: bool, allow_foreign: bool) -> None:
    """Refuse a file that is neither ours nor the original tool's, before any write.

    An SQLite file without tables is empty: fine to write into, nothing to read.
    """
    sql = "SELECT name FROM main.sqlite_master WHERE type = 'table'"
    tables = {row[0] for row in db.conn.execute(sql) if not row[0].startswith("sqlite_")}
    if {"orchestrations", "agent_executions"} <= tables or (allow_foreign and not reading):
        return
    if not tables:
        if reading:
            raise DatabaseError(
                f"{path} has no agentmetrics tables: nothing has been tracked into it yet"
            )
        return
    names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise ForeignDatabase(
        f"{path} is not an agentmetrics database: it has no agentmetrics tables but other"
        f" tables ({names}); it is left unchanged"
    )


def _check_readable(db: Database, path: str) -> None:
    try:
        db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"{path} is not a usable SQLite database ({e})") from None


def _upgrade_implicitly(db: Database) -> None:
    """Apply pending migrations, and build missing report indexes if the file is small."""
    lacking = missing_indexes(db) or not rollups.present(db)
    if not migrations.pending(db) and not (lacking and _small(db)):
        return
    with write_transaction(db):
        migrations.apply(db)  # applies nothing if another process just did
        if _small(db):
            for _, _, sql in missing_indexes(db):
                db.execute(sql)
            rollups.create(db)  # empty: the first report rolls the rows up


def _small(db: Database) -> bool:
    return max(_table_rows(db).values()) < IMPLICIT_INDEX_ROWS


def _warn_if_upgrade_needed(db: Database, path: str) -> None:
    missing = missing_indexes(db)
    if (not missing and rollups.present(db)) or _small(db):
        return
    if missing:
        rows = _table_rows(db)
        seconds = sum(_build_seconds(rows[table]) for _, table, _ in missing)
        lacking, cost = "report indexes", f"about {max(seconds, 1):.0f}s, writers wait"
    else:
        lacking, cost = "report rollups", "short batches, writers wait milliseconds"
    warnings.warn(
        f"{lacking} missing on {path}, so reports are slower; run `agentmetrics upgrade` ({cost})",
        MissingIndexesWarning,
        stacklevel=3,
    )


def _warn_if_writes_pending(path: str) -> None:
    kept = count_kept(path)
    if kept:
        warnings.warn(
            f"{kept:,} tracking writes wait in {path}{SUFFIX} and are not in these numbers;"
            " `agentmetrics flush` applies them",
            PendingWritesWarning,
            stacklevel=3,
        )


def _table_rows(db: Database) -> dict[str, int]:
    """Rows per table, from the largest rowid: exact enough, and instant on any size."""
    rows = {}
    for table in ("orchestrations", "agent_executions"):
        exists = db.conn.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
        sql = f"SELECT max(rowid) FROM main.{table}"
        rows[table] = (db.conn.execute(sql).fetchone()[0] or 0) if exists else 0
    return rows


def _build_seconds(rows: int) -> float:
    return rows / INDEX_ROWS_PER_SECOND


def _file_name(db: Database) -> str:
    return database_file(db) or ":memory:"


def _shim_missing_columns(db: Database) -> None:
    """Give a read-only file of the original tool our extra columns, as NULLs.

    Temporary views shadow the main tables for this connection only (the temp schema
    is searched first), so reports see one schema and the file is not touched.
    """
    for table_name, columns in EXTRA_COLUMNS.items():
        if not db.table(table_name).exists():
            continue
        existing = set(db.table(table_name).columns_dict)
        missing = [name for name in columns if name not in existing]
        if missing:
            extra = ", ".join(f"NULL AS {name}" for name in missing)
            db.conn.execute(
                f"CREATE TEMP VIEW {table_name} AS SELECT *, {extra} FROM main.{table_name}"
            )
