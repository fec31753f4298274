"""Timing of the reports on a large database, next to the original tool's figures.

Builds a database of 100,000 orchestrations and 1,000,000 agent executions spread
over 90 days (bulk inserts in one transaction, then `upgrade` creates the
indexes), then times each report: the median of several runs, the goal, what the
original tool measured on the same data shape, and the ratio to a baseline measured
in the same run (a bare full scan of ``agent_executions``).

    python benchmarks/bench_reports.py            # full size (about a minute to build)
    python benchmarks/bench_reports.py --quick    # 100,000 executions
    python benchmarks/bench_reports.py --executions 300000 --db /tmp/bench.db

Other benchmark modules add their operations by exposing ``benchmarks(ctx)`` (see
``Bench``); ``main()`` imports ``bench_exchange`` when it is present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlite_utils import Database  # noqa: E402

from agentmetrics import open_database, reports  # noqa: E402
from agentmetrics.store.db import upgrade  # noqa: E402
from agentmetrics.store.migrations import AGENT_EXECUTIONS_SQL, ORCHESTRATIONS_SQL  # noqa: E402
from agentmetrics.timestamps import to_iso, to_sqlite_datetime  # noqa: E402

NOW = dt.datetime(2025, 6, 30, 12, 0, tzinfo=dt.timezone.utc)
DAYS = 90
EXECUTIONS_PER_ORCHESTRATION = 10
# (agent, share of executions, median duration in seconds, failure rate)
AGENTS = [
    ("backend-agent", 0.24, 95, 0.05),
    ("frontend-agent", 0.20, 70, 0.04),
    ("test-agent", 0.16, 140, 0.07),
    ("review-agent", 0.12, 35, 0.02),
    ("docs-agent", 0.09, 25, 0.01),
    ("db-agent", 0.08, 60, 0.06),
    ("devops-agent", 0.07, 180, 0.08),
    ("security-agent", 0.04, 120, 0.03),
]
MODELS = ["claude-sonnet-4", "claude-haiku-3.5", "gpt-4.1", None]


# -- building the database ------------------------------------------------------------


def _orchestration_rows(
    rng: random.Random, n: int, start: dt.datetime, span: float, ours: bool = False
):
    """Yield (orchestration row, its executions) in start order; ``ours`` adds the
    values of our columns (tokens, cost, metadata) to each execution."""
    names = [a[0] for a in AGENTS]
    weights = [a[1] for a in AGENTS]
    profile = {a[0]: a for a in AGENTS}
    step = span / n
    for i in range(n):
        started = start + dt.timedelta(seconds=i * step + rng.random() * step)
        age = (NOW - started).total_seconds()
        orch_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        count = max(1, round(rng.gauss(EXECUTIONS_PER_ORCHESTRATION, 2)))
        executions = []
        at = started
        failed = 0
        running = False
        for number in range(1, count + 1):
            if at > NOW:
                break
            name = rng.choices(names, weights)[0]
            _, _, median_s, failure_rate = profile[name]
            duration = int(rng.lognormvariate(np.log(median_s * 1000), 0.6))
            # Executions near "now" may still be running (and a few old ones stale).
            in_progress = (at + dt.timedelta(milliseconds=duration) > NOW) or rng.random() < 0.002
            if in_progress:
                status, finished, duration_ms = "in_progress", None, None
                running = True
            else:
                status = "failed" if rng.random() < failure_rate else "completed"
                finished = to_iso(at + dt.timedelta(milliseconds=duration))
                duration_ms = duration
                failed += status == "failed"
            executions.append(
                (
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    orch_id,
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    name,
                    f"task-{number}",
                    number,
                    status,
                    to_iso(at),
                    finished,
                    duration_ms,
                    int(rng.random() < 0.1) + int(rng.random() < 0.02),
                    int(rng.random() < 0.03),
                    rng.randint(0, 6),
                    rng.randint(0, 12),
                    "AssertionError: tests failed" if status == "failed" else None,
                    to_sqlite_datetime(at),
                    rng.choice(MODELS),
                )
            )
            if ours:
                tokens_in, tokens_out = rng.randint(500, 60_000), rng.randint(100, 8_000)
                executions[-1] += (
                    tokens_in,
                    tokens_out,
                    round((tokens_in * 3 + tokens_out * 15) / 1e6, 6),
                    f'{{"attempt": {number}, "tool_calls": {rng.randint(0, 40)}}}',
                )
            at += dt.timedelta(milliseconds=duration + rng.randint(200, 3000))
        if running and age < 6 * 3600:
            status, completed_at, duration_ms = "running", None, None
        else:
            status = "completed" if failed == 0 else ("failed" if failed > 1 else "partial")
            if failed == 1 and rng.random() < 0.6:
                status = "completed"
            if running:
                status = "failed"
            completed_at = to_iso(at)
            duration_ms = int((at - started).total_seconds() * 1000)
        orchestration = (
            orch_id,
            f"session-{i:07d}",
            f"Task {i}",
            status,
            to_iso(started),
            completed_at,
            duration_ms,
            count,
            len(executions) - failed,
            failed,
            f"{rng.getrandbits(160):040x}",
            to_sqlite_datetime(started),
        )
        yield orchestration, executions


# Our columns after the original's (and `model`), filled with schema="ours".
OUR_COLUMNS = ("input_tokens", "output_tokens", "cost_usd", "metadata_json")


def build(
    path: Path, executions: int, seed: int = 42, schema: str = "original"
) -> tuple[float, int, int]:
    """Bulk-insert a database with about ``executions`` executions; return seconds and counts.

    ``schema="original"`` fills the original tool's columns (and ``model``); ``"ours"``
    fills tokens, cost and metadata too."""
    if schema not in ("original", "ours"):
        raise ValueError(f"schema must be 'original' or 'ours', got {schema!r}")
    ours = schema == "ours"
    started = time.perf_counter()
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(ORCHESTRATIONS_SQL)
    conn.execute(AGENT_EXECUTIONS_SQL)
    added = [("model", "TEXT")]
    if ours:
        added += list(zip(OUR_COLUMNS, ("INTEGER", "INTEGER", "REAL", "TEXT"), strict=True))
    for column, kind in added:
        conn.execute(f"ALTER TABLE agent_executions ADD COLUMN {column} {kind}")
    extra = "".join(f", {column}" for column in OUR_COLUMNS) if ours else ""
    n_orch = max(1, executions // EXECUTIONS_PER_ORCHESTRATION)
    span = DAYS * 86400.0
    first = NOW - dt.timedelta(seconds=span)
    conn.execute("BEGIN")
    orch_batch, exec_batch = [], []
    n_exec = 0

    def flush():
        conn.executemany(
            "INSERT INTO orchestrations (id, session_id, task_description, status, started_at,"
            " completed_at, duration_ms, total_tasks, completed_tasks, failed_tasks,"
            " git_commit_hash, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            orch_batch,
        )
        conn.executemany(
            "INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name,"
            " task_id, task_number, status, started_at, completed_at, duration_ms, retry_count,"
            f" self_healed, files_created, files_modified, error_message, created_at, model{extra})"
            f" VALUES ({', '.join('?' * (17 + len(OUR_COLUMNS) * ours))})",
            exec_batch,
        )
        orch_batch.clear()
        exec_batch.clear()

    for orchestration, rows in _orchestration_rows(rng, n_orch, first, span, ours):
        orch_batch.append(orchestration)
        exec_batch.extend(rows)
        n_exec += len(rows)
        if len(exec_batch) >= 50_000:
            flush()
    flush()
    conn.execute("COMMIT")
    conn.close()
    # Our migrations add the remaining columns; upgrade creates the report indexes.
    upgrade(path, progress=None)
    return time.perf_counter() - started, n_orch, n_exec


# -- timing -----------------------------------------------------------------------------


@dataclass
class Bench:
    """One timed operation: ``run(db)`` returns the rows it returned or aggregated."""

    name: str
    run: Callable[[Database], int]
    goal_s: float | None = None
    original: str = ""


def median_time(fn: Callable[[], int], runs: int) -> tuple[float, int]:
    fn()  # warm the page cache and pandas' first-call costs
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def report_benchmarks(db: Database) -> list[Bench]:
    busiest, typical = _agents(db)
    return [
        Bench(
            "system_health 24 h",
            lambda d: _read(reports.system_health(d, hours=24, now=NOW), "executions"),
            0.010,
            "4-8 ms",
        ),
        Bench(
            "system_health 90 days",
            lambda d: _read(reports.system_health(d, hours=24 * DAYS, now=NOW), "executions"),
            0.5,
            "507-569 ms",
        ),
        Bench(
            "performance_report (p50/p95/p99)",
            lambda d: _read(reports.performance_report(d), "executions"),
            1.0,
            "1.25-1.36 s, no percentiles",
        ),
        Bench(
            "failed_orchestrations(50)",
            lambda d: len(reports.failed_orchestrations(d, limit=50)),
            0.010,
            "19-21 ms",
        ),
        Bench(
            "failed_orchestrations(50, partial)",
            lambda d: len(reports.failed_orchestrations(d, limit=50, include_partial=True)),
            0.010,
        ),
        Bench("list_orchestrations(50)", lambda d: len(reports.list_orchestrations(d, limit=50))),
        Bench(
            f"agent_summary {typical} (all rows)",
            lambda d: _read(reports.agent_summary(d, typical), "executions"),
            0.1,
            "445 ms, capped at 1,000 rows",
        ),
        Bench(
            f"agent_summary {busiest} (all rows)",
            lambda d: _read(reports.agent_summary(d, busiest), "executions"),
            0.1,
            "445 ms, capped at 1,000 rows",
        ),
        Bench(
            f"agent_stats {busiest} limit 1000",
            lambda d: len(reports.agent_stats(d, busiest, limit=1000)),
            0.1,
            "445 ms",
        ),
        Bench(f"agent_stats {typical} every row", lambda d: len(reports.agent_stats(d, typical))),
        Bench(f"agent_stats {busiest} every row", lambda d: len(reports.agent_stats(d, busiest))),
        Bench(
            "orchestration_summary",
            lambda d: _read(reports.orchestration_summary(d, "session-0000500"), "executions"),
        ),
        Bench("executions(session)", lambda d: len(reports.executions(d, "session-0000500"))),
    ]


def _read(frame, column: str) -> int:
    """Executions aggregated by a report (for rows/s)."""
    return int(frame[column].sum())


def _agents(db: Database) -> tuple[str, str]:
    """The agent with most executions, and the median one."""
    counts = db.execute(
        "SELECT agent_name, count(*) FROM agent_executions GROUP BY agent_name ORDER BY 2 DESC"
    ).fetchall()
    return counts[0][0], counts[len(counts) // 2][0]


def baseline(db: Database) -> float:
    """A bare full scan of agent_executions (every row read from the table)."""
    seconds, _ = median_time(
        lambda: db.execute("SELECT sum(retry_count) FROM agent_executions").fetchone()[0] or 0, 5
    )
    return seconds


def run_benchmarks(db: Database, benches: list[Bench], runs: int) -> None:
    base = baseline(db)
    n = db.execute("SELECT count(*) FROM agent_executions").fetchone()[0]
    print(f"baseline: full scan of agent_executions ({n:,} rows) {base * 1000:.1f} ms")
    header = f"{'operation':<42} {'median':>10} {'goal':>8} {'x scan':>7} {'rows/s':>12}  original"
    print(header)
    print("-" * len(header))
    for bench in benches:
        seconds, rows = median_time(lambda b=bench: b.run(db), runs)
        goal = f"{bench.goal_s * 1000:.0f} ms" if bench.goal_s else ""
        missed = "  MISSED" if bench.goal_s and seconds > bench.goal_s else ""
        rate = f"{rows / seconds:,.0f}" if rows > 1 else ""
        print(
            f"{bench.name:<42} {seconds * 1000:8.1f} ms {goal:>8} {seconds / base:6.2f}x"
            f" {rate:>12}  {bench.original}{missed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 executions")
    parser.add_argument("--runs", type=int, default=7, help="runs per operation (median)")
    parser.add_argument("--db", type=Path, help="build here, or reuse the file if it exists")
    parser.add_argument("--reports-only", action="store_true", help="skip export/cleanup/CLI")
    args = parser.parse_args()
    executions = 100_000 if args.quick else args.executions
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        if path.exists():
            print(f"reusing {path}")
        else:
            seconds, n_orch, n_exec = build(path, executions)
            print(f"built {n_orch:,} orchestrations, {n_exec:,} executions in {seconds:.1f} s")
        db = open_database(path, read_only=True)
        try:
            run_benchmarks(db, report_benchmarks(db), args.runs)
        finally:
            db.close()
        if not args.reports_only:
            try:
                exchange = importlib.import_module("bench_exchange")
            except ImportError:
                return
            print(exchange.report(exchange.run(path, NOW)))


if __name__ == "__main__":
    main()
