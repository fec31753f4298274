"""Opening a monitoring database: checks, connection pragmas and migrations."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlite_utils import Database

from .errors import DatabaseError
from .migrations import EXTRA_COLUMNS, migrations

DEFAULT_PATH = "monitoring.db"
ENV_VAR = "AGENTMETRICS_DB"
BUSY_TIMEOUT_MS = 30_000
# Above this many rows, schema upgrades of an existing file report their progress.
LARGE_TABLE_ROWS = 100_000
_SQLITE_HEADER = b"SQLite format 3\x00"


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
    progress: Callable[[str], None] | None = _stderr,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
) -> Database:
    """Open (or create) a monitoring database and return a ``sqlite_utils.Database``.

    The connection uses WAL, ``foreign_keys=ON``, a busy timeout and
    ``synchronous=NORMAL``; pending migrations are applied. A file that cannot be
    written (read-only file or folder) is opened read-only: reports work, migrations
    are skipped.

    :param path: file path, ``":memory:"``, or None for :func:`default_path`
    :param read_only: open for reading only, never writing to the file
    :param create: create the file if it is missing (False: raise DatabaseError)
    :param progress: called with a message per step of a slow schema upgrade
    :param busy_timeout_ms: how long a statement waits for another writer's lock
    :raises DatabaseError: the path is a directory, not SQLite, corrupt or missing
    """
    path = os.fspath(path) if path is not None else default_path()
    if path == ":memory:":
        db = Database(_connect(path, busy_timeout_ms))
        configure(db, busy_timeout_ms=busy_timeout_ms)
        _migrate(db, progress)
        return db
    file = Path(path)
    if file.is_dir():
        raise DatabaseError(f"{path} is a directory, not a database file")
    if not file.exists():
        if read_only or not create:
            raise DatabaseError(f"No database found at {path}")
        if not file.parent.exists():
            raise DatabaseError(f"Folder {file.parent} does not exist")
    else:
        _check_header(file)
    if not read_only and file.exists() and not _writable(file):
        read_only = True
    if read_only:
        db = Database(_connect_read_only(file))
        configure(db, writable=False, busy_timeout_ms=busy_timeout_ms)
        _check_readable(db, path)
        if not all(db.table(t).exists() for t in EXTRA_COLUMNS):
            db.close()
            # Read-only: the schema cannot be added, so there is nothing to read.
            raise DatabaseError(
                f"{path} has no agentmetrics tables: nothing has been tracked into it yet"
            )
        _shim_missing_columns(db)
        return db
    try:
        db = Database(_connect(path, busy_timeout_ms))
        _check_readable(db, path)
        configure(db, busy_timeout_ms=busy_timeout_ms)
    except sqlite3.OperationalError as e:
        if "readonly" in str(e) or "unable to open" in str(e):
            return open_database(
                path, read_only=True, progress=progress, busy_timeout_ms=busy_timeout_ms
            )
        raise DatabaseError(f"Cannot open {path}: {e}") from None
    try:
        _migrate(db, progress)
    except sqlite3.DatabaseError as e:
        db.close()
        raise DatabaseError(f"Cannot upgrade the schema of {path}: {e}") from None
    return db


def ensure_database(db: str | os.PathLike[str] | Database, **kwargs) -> Database:
    """Return ``db`` itself if it is a Database (configured for us), else open the path.

    A Database given for writing (not ``create=False`` or ``read_only=True``) gets
    the schema too, as a path would: a plain ``sqlite_utils.Database("new.db")`` has
    no tables yet. One that cannot be written is left as it is.
    """
    if isinstance(db, Database):
        configure(db, writable=None, busy_timeout_ms=kwargs.get("busy_timeout_ms", BUSY_TIMEOUT_MS))
        writing = kwargs.get("create", True) and not kwargs.get("read_only", False)
        if writing and migrations.pending(db):
            try:
                _migrate(db, kwargs.get("progress", _stderr))
            except sqlite3.OperationalError as e:
                if "readonly" not in str(e):
                    raise DatabaseError(f"Cannot upgrade the schema: {e}") from None
        return db
    return open_database(db, **kwargs)


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


def _connect_read_only(file: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(file.resolve()))
    conn = sqlite3.connect(
        uri + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        # A WAL file in a read-only folder without its -shm file cannot be opened
        # in mode=ro; immutable=1 reads the main file as it is.
        conn.close()
        return sqlite3.connect(
            uri + "?immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )


def _writable(file: Path) -> bool:
    if not os.access(file, os.W_OK):
        return False
    # WAL needs to create -wal and -shm files beside the database.
    return os.access(file.parent, os.W_OK)


def _check_header(file: Path) -> None:
    try:
        with file.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as e:
        raise DatabaseError(f"Cannot read {file}: {e.strerror}") from None
    if header and header != _SQLITE_HEADER:
        raise DatabaseError(f"{file} is not an SQLite database")


def _check_readable(db: Database, path: str) -> None:
    try:
        db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        db.close()
        raise DatabaseError(f"{path} is not a usable SQLite database ({e})") from None


def _migrate(db: Database, progress: Callable[[str], None] | None) -> None:
    if not migrations.pending(db):
        return
    with write_transaction(db):
        pending = [m.name for m in migrations.pending(db)]
        if not pending:  # another process migrated while we waited for the lock
            return
        noisy = progress is not None and _largest_table(db) >= LARGE_TABLE_ROWS
        for i, name in enumerate(pending):
            started = time.perf_counter()
            if noisy:
                progress(f"upgrading schema: {name} ({i + 1}/{len(pending)})...")
            migrations.apply(db, stop_before=pending[i + 1 :])
            if noisy:
                progress(f"  {name} done in {time.perf_counter() - started:.1f}s")


def _largest_table(db: Database) -> int:
    sizes = [0]
    for table in ("orchestrations", "agent_executions"):
        if db.table(table).exists():
            sizes.append(db.conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    return max(sizes)


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
