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

``--attempts`` uses attempts and nesting: every execution runs inside a lead one
(``parent_execution_id``), and every other one is the retry of the one before, which
failed (``retry_agent_execution``: the next attempt started, the failed one ended).
The bare statements write the same rows as the original's: an INSERT and an UPDATE
per execution, the failed ones with their message.

    python benchmarks/bench_tracking.py [--events 5000] [--rounds 5] [--attempts]
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


def bare_events(path: Path, n: int, attempts: bool = False) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if attempts:  # the lead, as the api writes it
        now = to_iso(dt.datetime.now(dt.timezone.utc))
        lead = (str(uuid.uuid4()), None, str(uuid.uuid4()), "lead", None, None, now, None)
        conn.execute(BARE_INSERT, lead)
    start = time.perf_counter()
    for i in range(n):
        failed = attempts and i % 2 == 0 and i + 1 < n  # retried by the next one
        session = str(uuid.uuid4())
        started = dt.datetime.now(dt.timezone.utc)
        conn.execute(
            BARE_INSERT,
            (str(uuid.uuid4()), None, session, "bench-agent", None, 1, to_iso(started), None),
        )
        finished = dt.datetime.now(dt.timezone.utc)
        duration = int((finished - started).total_seconds() * 1000)
        status, error = ("failed", "boom") if failed else ("completed", None)
        conn.execute(
            BARE_UPDATE,
            (status, to_iso(finished), duration, 1, 2, 0, 0, error, None, session),
        )
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n


def api_events(path: Path, n: int, attempts: bool = False) -> float:
    monitor = Monitor(path)
    lead = monitor.start_agent_execution(str(uuid.uuid4()), "lead") if attempts else None
    start = time.perf_counter()
    for i in range(n):
        if attempts and i % 2 == 1:
            continue  # started by the retry of the one before
        session = str(uuid.uuid4())
        monitor.start_agent_execution(
            session, "bench-agent", task_number=1, parent_execution_id=lead
        )
        if attempts and i + 1 < n:
            session = monitor.retry_agent_execution(session, "boom")
        monitor.complete_agent_execution(session, "completed", files_created=1, files_modified=2)
    elapsed = time.perf_counter() - start
    monitor.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attempts", action="store_true", help="nested runs, every other retried")
    args = parser.parse_args()
    kind = " (nested, every other one retried)" if args.attempts else ""
    print(f"{args.events} events{kind} x {args.rounds} rounds per measurement (median shown)")
    print(f"{'schema':<10} {'bare us/event':>14} {'api us/event':>13} {'api/bare':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for schema in ("ours", "original"):
            bare_path = make_file(folder, f"bare-{schema}.db", schema)
            api_path = make_file(folder, f"api-{schema}.db", schema)
            bare, api = [], []
            for _ in range(args.rounds):
                bare.append(bare_events(bare_path, args.events, args.attempts))
                api.append(api_events(api_path, args.events, args.attempts))
            b, a = statistics.median(bare) * 1e6, statistics.median(api) * 1e6
            print(f"{schema:<10} {b:>14.1f} {a:>13.1f} {a / b:>8.2f}x")
    print("goal: api/bare <= 1.3x on the original schema (the original tool: 179 us/call)")


if __name__ == "__main__":
    main()
