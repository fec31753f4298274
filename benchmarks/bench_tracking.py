"""Per-event cost of the tracking API against bare sqlite3 statements.

An event is one execution's start + complete. For each schema (ours, and the
original tool's with its ten indexes) the same number of events is written:

* bare: plain ``sqlite3`` in autocommit, one INSERT and one UPDATE per event with
  values computed in Python, on a pristine file of that schema;
* api: ``Monitor.start_agent_execution`` + ``complete_agent_execution`` on a file of
  that schema as agentmetrics leaves it (the original's file gets our migrations).

Both use the same pragmas (WAL, synchronous=NORMAL, foreign_keys=ON). Rounds
alternate bare/api to share the machine's noise; the median per-event time of each
is reported with the ratio api/bare. Goal: at most 1.3x on the original's schema.

    python benchmarks/bench_tracking.py [--events 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from agentmetrics import Monitor, open_database
from agentmetrics.timestamps import to_iso

ORIGINAL_SCHEMA = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "original_schema.sql"
).read_text()

BARE_INSERT = """INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name,
  task_id, task_number, status, started_at, retry_count, self_healed, files_created,
  files_modified, session_log_path) VALUES (?, ?, ?, ?, ?, ?, 'in_progress', ?, 0, 0, 0, 0, ?)"""
BARE_UPDATE = """UPDATE agent_executions SET status = ?, completed_at = ?, duration_ms = ?,
  files_created = ?, files_modified = ?, retry_count = ?, self_healed = ?, error_message = ?,
  summary_report_path = ? WHERE agent_session_id = ?"""


def make_file(folder: Path, name: str, schema: str) -> Path:
    path = folder / name
    if schema == "original":
        conn = sqlite3.connect(path)
        conn.executescript(ORIGINAL_SCHEMA)
        conn.close()
    else:
        open_database(path).close()
    return path


def bare_events(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    start = time.perf_counter()
    for _ in range(n):
        session = str(uuid.uuid4())
        started = dt.datetime.now(dt.timezone.utc)
        conn.execute(
            BARE_INSERT,
            (str(uuid.uuid4()), None, session, "bench-agent", None, 1, to_iso(started), None),
        )
        finished = dt.datetime.now(dt.timezone.utc)
        duration = int((finished - started).total_seconds() * 1000)
        conn.execute(
            BARE_UPDATE,
            ("completed", to_iso(finished), duration, 1, 2, 0, 0, None, None, session),
        )
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n


def api_events(path: Path, n: int) -> float:
    monitor = Monitor(path)
    start = time.perf_counter()
    for _ in range(n):
        session = str(uuid.uuid4())
        monitor.start_agent_execution(session, "bench-agent", task_number=1)
        monitor.complete_agent_execution(session, "completed", files_created=1, files_modified=2)
    elapsed = time.perf_counter() - start
    monitor.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.events} events x {args.rounds} rounds per measurement (median shown)")
    print(f"{'schema':<10} {'bare us/event':>14} {'api us/event':>13} {'api/bare':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for schema in ("ours", "original"):
            bare_path = make_file(folder, f"bare-{schema}.db", schema)
            api_path = make_file(folder, f"api-{schema}.db", schema)
            bare, api = [], []
            for _ in range(args.rounds):
                bare.append(bare_events(bare_path, args.events))
                api.append(api_events(api_path, args.events))
            b, a = statistics.median(bare) * 1e6, statistics.median(api) * 1e6
            print(f"{schema:<10} {b:>14.1f} {a:>13.1f} {a / b:>8.2f}x")
    print("goal: api/bare <= 1.3x on the original schema (the original tool: 179 us/call)")


if __name__ == "__main__":
    main()
