"""How long opening a large original-tool file, and `agentmetrics upgrade`, block writers.

Builds a file in the original tool's schema (its ten indexes, WAL) with N executions
by bulk SQL, then, while a writer process inserts one execution every 20 ms exactly as
the original tool does (plain sqlite3, 5 s busy timeout), measures:

* first open: `agentmetrics health` on the untouched file (adds our nullable columns);
* the old implicit upgrade, for comparison: the same report indexes built in one
  transaction, as migration m003 did on first open until this release (run on a copy);
* `agentmetrics upgrade`: one index per transaction.

For each: elapsed time and the writer's worst wait for one insert, and how many of its
inserts failed with "database is locked". Also times the build of the indexes on
small files, which opening builds implicitly (IMPLICIT_INDEX_ROWS).

    python benchmarks/bench_open.py                      # 10,000,000 executions
    python benchmarks/bench_open.py --executions 3000000 --db /tmp/open.db
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlite_utils import Database

from agentmetrics import open_database
from agentmetrics.store.db import IMPLICIT_INDEX_ROWS
from agentmetrics.store.migrations import INDEXES, missing_indexes

ORIGINAL_SCHEMA = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "original_schema.sql"
).read_text()
ORIGINAL_BUSY_TIMEOUT_S = 5
START = 1_780_000_000  # epoch seconds; executions are 30 s apart from here

# Ten executions per orchestration, statuses and durations varied by the row number.
ORCHESTRATIONS_SQL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
INSERT INTO orchestrations (id, session_id, task_description, status, started_at,
  completed_at, duration_ms, total_tasks, completed_tasks, failed_tasks, created_at)
SELECT printf('o%010d', i), printf('s%010d', i), 'task ' || i,
  CASE WHEN i % 17 = 0 THEN 'failed' WHEN i % 29 = 0 THEN 'partial' ELSE 'completed' END,
  strftime('%Y-%m-%dT%H:%M:%fZ', :start + i * 300, 'unixepoch'),
  strftime('%Y-%m-%dT%H:%M:%fZ', :start + i * 300 + 290, 'unixepoch'),
  290000, 10, 10 - (i % 17 = 0), i % 17 = 0,
  datetime(:start + i * 300, 'unixepoch')
FROM n
"""
EXECUTIONS_SQL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name, task_id,
  task_number, status, started_at, completed_at, duration_ms, retry_count, self_healed,
  files_created, files_modified, error_message, created_at)
SELECT printf('e%010d', i), printf('o%010d', i / 10), printf('a%010d', i),
  'agent-' || (i * 7 % 8), 'task-' || (i % 10), i % 10,
  CASE WHEN i % 23 = 0 THEN 'failed' ELSE 'completed' END,
  strftime('%Y-%m-%dT%H:%M:%fZ', :start + i * 30, 'unixepoch'),
  strftime('%Y-%m-%dT%H:%M:%fZ', :start + i * 30 + 1 + i * 7919 % 28, 'unixepoch'),
  1000 + i * 7919 % 28000, i % 7 = 0, i % 11 = 0, i % 5, i % 9,
  CASE WHEN i % 23 = 0 THEN 'error ' || (i % 5) END,
  datetime(:start + i * 30, 'unixepoch')
FROM n
"""


def build_original(path: Path, executions: int) -> float:
    """Write an original-schema file with ``executions`` rows; return the seconds taken."""
    started = time.perf_counter()
    path.unlink(missing_ok=True)
    split = ORIGINAL_SCHEMA.index("CREATE INDEX")
    tables, indexes = ORIGINAL_SCHEMA[:split], ORIGINAL_SCHEMA[split:]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(tables)
    conn.execute("PRAGMA cache_size = -1000000")
    conn.execute("BEGIN")
    params = {"start": START}
    conn.execute(ORCHESTRATIONS_SQL, {**params, "count": max(1, executions // 10)})
    conn.execute(EXECUTIONS_SQL, {**params, "count": executions})
    conn.execute("COMMIT")
    conn.executescript(indexes)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def _writer(path: str, stop, results) -> None:
    """Insert one execution every 20 ms as the original tool does; report the waits."""
    conn = sqlite3.connect(path, timeout=ORIGINAL_BUSY_TIMEOUT_S, isolation_level=None)
    worst = 0.0
    failed = written = 0
    i = 0
    while not stop.is_set():
        i += 1
        started = time.perf_counter()
        try:
            conn.execute(
                "INSERT INTO agent_executions (id, agent_session_id, agent_name, status,"
                " started_at) VALUES (?, ?, 'writer', 'in_progress', '2026-06-01T00:00:00.000Z')",
                [f"w{time.time_ns()}-{i}", f"w{time.time_ns()}-{i}"],
            )
            written += 1
        except sqlite3.OperationalError:
            failed += 1
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.02)
    conn.close()
    results.put((worst, written, failed))


def with_writer(path: Path, action) -> tuple[float, float, int, int]:
    """Run ``action()`` while a writer inserts: (elapsed, worst wait, written, failed)."""
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(path), stop, results))
    writer.start()
    time.sleep(1.0)  # the writer is running
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    worst, written, failed = results.get(timeout=60)
    writer.join()
    return elapsed, worst, written, failed


def cli(path: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "agentmetrics", "--db", str(path), *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def old_implicit_upgrade(path: Path) -> None:
    """What first open did until this release: every missing index in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for _, _, sql in missing_indexes(Database(conn)):
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()


def small_file_builds(folder: Path) -> list[tuple[int, float]]:
    """Seconds to build every report index on a file of our schema with N executions."""
    timings = []
    for rows in (10_000, IMPLICIT_INDEX_ROWS, 200_000):
        path = folder / f"small-{rows}.db"
        build_original(path, rows)
        db = open_database(path)  # small files get the indexes here; drop and rebuild
        for sql, _ in INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {sql.split()[5]}")
        started = time.perf_counter()
        with db.conn:
            for _, _, sql in missing_indexes(db):
                db.execute(sql)
        timings.append((rows, time.perf_counter() - started))
        db.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=10_000_000)
    parser.add_argument("--db", type=Path, help="where to build the file (default: a temp dir)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-open-"))
    path = args.db or folder / "original.db"
    try:
        print(f"SQLite {sqlite3.sqlite_version}")
        for rows, seconds in small_file_builds(folder):
            print(f"implicit index build, {rows:>9,} executions: {seconds * 1000:7.1f} ms")
        print(f"building {args.executions:,} executions...", flush=True)
        print(f"  built in {build_original(path, args.executions):.0f}s")
        copy = folder / "old.db"
        shutil.copyfile(path, copy)
        rows = [
            ("first open (`health`)", path, lambda: cli(path, "health")),
            ("old implicit upgrade (m003)", copy, lambda: old_implicit_upgrade(copy)),
            ("`agentmetrics upgrade`", path, lambda: cli(path, "upgrade")),
            ("`health` after upgrade", path, lambda: cli(path, "health")),
        ]
        print(f"{'step':<30} {'elapsed':>9} {'worst writer wait':>18} {'writes':>7} {'failed':>7}")
        for name, file, action in rows:
            elapsed, worst, written, failed = with_writer(file, action)
            print(f"{name:<30} {elapsed:>8.2f}s {worst:>17.3f}s {written:>7} {failed:>7}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
