"""Loading rows and exporting on a large database, against baselines of the same run.

* rows of one agent (``execution_rows(db, agent=...)``, the agent with about 12% of the
  executions: 125,000 rows at 1M) and of a 7-day window, through Arrow (the ``arrow``
  extra) and through sqlite3; goal: 1,000,000 rows/s. Baseline: the same query's rows
  fetched by sqlite3 as tuples, with no DataFrame;
* ``agentmetrics export -o FILE`` (JSON) as its own process: executions/s and peak RSS
  (goal: 250,000/s, under 300 MB). Baseline: the previous exporter, which encoded each
  row as a dict with Python's json, in this process.

    python benchmarks/bench_io.py --db /work/data/bench1m.db     # a copy of a built file
    python benchmarks/bench_io.py --executions 1000000 --schema ours
    python benchmarks/bench_io.py --quick                         # 100,000 executions
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_exchange import CLI, _run_measured  # noqa: E402
from bench_reports import NOW, build, median_time  # noqa: E402

from agentmetrics import execution_rows, open_database  # noqa: E402
from agentmetrics.exchange import export, iter_sessions  # noqa: E402
from agentmetrics.exchange.sessions import _NULL_ORCHESTRATION, _dumps  # noqa: E402
from agentmetrics.reports import _arrow, _common, rows  # noqa: E402

ROWS_GOAL = 1_000_000
EXPORT_GOAL = 250_000
RSS_GOAL_MB = 300
WINDOW = dt.timedelta(days=7)


def agent_near(conn: sqlite3.Connection, share: float = 0.125) -> tuple[str, int]:
    """The agent whose share of the executions is closest to ``share``."""
    counts = conn.execute("SELECT agent_name, count(*) FROM agent_executions GROUP BY 1").fetchall()
    total = sum(n for _, n in counts)
    return min(counts, key=lambda row: abs(row[1] / total - share))


def bare_fetch(path: Path, **window) -> int:
    """The rows execution_rows reads, fetched by sqlite3 as tuples: no DataFrame."""
    where, params = _common.window(
        window.get("since"), window.get("until"), NOW, agent=window.get("agent")
    )
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return len(conn.execute(rows._ROWS.format(where=where), params).fetchall())
    finally:
        conn.close()


def load(path: Path, arrow: bool, **window) -> int:
    if arrow:
        return len(execution_rows(path, now=NOW, **window))
    saved, _arrow.adbc = _arrow.adbc, None
    try:
        return len(execution_rows(path, now=NOW, **window))
    finally:
        _arrow.adbc = saved


def python_export(path: Path, out: IO[str]) -> None:
    """The previous exporter: each session as dicts, encoded by Python's json."""
    for orchestration, executions in iter_sessions(path):
        out.write(_dumps({**(orchestration or _NULL_ORCHESTRATION), "executions": executions}))
        out.write(",\n")


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``: this machine is shared, CPU time varies less."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_rows(path: Path, runs: int) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    agent, _ = agent_near(conn)
    conn.close()
    lines = [
        f"{'rows':<34} {'rows':>10} {'bare fetch':>11} {'sqlite3':>9} {'arrow':>9}"
        f" {'arrow rows/s':>13} {'x bare':>7} {'x sqlite3':>9}"
    ]
    cases = [
        (f"one agent ({agent})", {"agent": agent}),
        ("7-day window", {"since": NOW - WINDOW, "until": NOW}),
    ]
    for name, window in cases:
        base, n = median_time(lambda w=window: bare_fetch(path, **w), runs)
        plain, _ = median_time(lambda w=window: load(path, False, **w), runs)
        arrow, _ = median_time(lambda w=window: load(path, True, **w), runs)
        missed = "  MISSED" if n / arrow < ROWS_GOAL else ""
        lines.append(
            f"{name:<34} {n:>10,} {base:>9.2f} s {plain:>7.2f} s {arrow:>7.2f} s"
            f" {n / arrow:>13,.0f} {arrow / base:>6.2f}x {arrow / plain:>8.2f}x{missed}"
        )
    return lines


def bench_export(path: Path, folder: Path) -> list[str]:
    out = folder / "export.json"
    n = sqlite3.connect(path).execute("SELECT count(*) FROM agent_executions").fetchone()[0]
    seconds, rss = _run_measured([*CLI, "--db", str(path), "export", "-o", str(out)])
    with out.open("w") as f:
        new = timed(lambda: export(path, f))
    with out.open("w") as f:
        previous = timed(lambda: python_export(path, f))
    out.unlink()
    missed = "  MISSED" if n / seconds < EXPORT_GOAL or rss / 1e6 > RSS_GOAL_MB else ""
    return [
        f"export JSON, {n:,} executions, as a process: {seconds:.1f} s,"
        f" {n / seconds:,.0f} executions/s, peak RSS {rss / 1e6:.0f} MB"
        f" (goal {EXPORT_GOAL:,}/s, {RSS_GOAL_MB} MB){missed}",
        f"  in this process: {new[0]:.1f} s ({new[1]:.1f} s CPU), {n / new[0]:,.0f} executions/s;"
        f" previous exporter (Python's json per row) {previous[0]:.1f} s ({previous[1]:.1f} s CPU):"
        f" new/previous {new[0] / previous[0]:.2f}x wall, {new[1] / previous[1]:.2f}x CPU",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a built file (measured on a copy)")
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 executions")
    parser.add_argument("--schema", choices=("original", "ours"), default="original")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        if args.db:
            # Opening a file, even to read, may add -wal/-shm files or migrations beside
            # it: only the copy is opened.
            for suffix in ("", "-wal"):
                if Path(f"{args.db}{suffix}").exists():
                    shutil.copyfile(f"{args.db}{suffix}", f"{path}{suffix}")
            open_database(path, read_only=True).close()  # a clear error if not ours
            print(f"measuring a copy of {args.db}")
        else:
            executions = 100_000 if args.quick else args.executions
            seconds, n_orch, n_exec = build(path, executions, schema=args.schema)
            print(f"built {n_orch:,} orchestrations, {n_exec:,} executions in {seconds:.1f} s")
        print(f"Arrow path: {'adbc-driver-sqlite' if _arrow.available() else 'not installed'}")
        print("\n".join(bench_rows(path, args.runs)))
        print("\n".join(bench_export(path, Path(tmp))))


if __name__ == "__main__":
    main()
