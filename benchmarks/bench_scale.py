"""The reports at scale (10 million executions): rollups against the exact scan.

Builds a database with :func:`bench_reports.build` (or copies ``--db``: the file is
never written, the copy is), rolls it up with ``upgrade`` (timed), then times each
report of the scale goals through the rollups and with ``exact=True`` in the same
run (best of ``--runs``), and the tracking ratio of :mod:`bench_tracking`.

    python benchmarks/bench_scale.py --executions 1000000
    python benchmarks/bench_scale.py --db /work/data/bench10m.db

At 10M the copy and ``upgrade`` take minutes: ``--reuse`` works on ``--db`` itself (a
copy of your own, kept between runs), ``--only TEXT`` times only some reports.
``--retried`` first makes every other failed execution's next row its retry, and gives
failed executions varied messages (numbers, ids, paths, URLs), so the reasons retried
have work to do. Each run starts with no normalised message cached, as a command does.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_tracking  # noqa: E402
from bench_reports import DAYS, NOW, build  # noqa: E402

from agentmetrics import open_database, reports  # noqa: E402
from agentmetrics.reports.trend import normalize_error  # noqa: E402
from agentmetrics.store.db import upgrade  # noqa: E402

# (name, goal in seconds, report called with exact=...)
REPORTS: list[tuple[str, float, Callable]] = [
    (
        "system_health 24 h",
        0.020,
        lambda d, x: reports.system_health(d, hours=24, now=NOW, exact=x),
    ),
    (
        "system_health 90 days",
        0.300,
        lambda d, x: reports.system_health(d, hours=24 * DAYS, now=NOW, exact=x),
    ),
    ("performance_report, all time", 0.300, lambda d, x: reports.performance_report(d, exact=x)),
    (
        "trends daily over 90 days",
        0.300,
        lambda d, x: reports.trends(d, since=f"{DAYS}d", now=NOW, exact=x),
    ),
    (
        "trends daily over 90 days, by agent",
        0.300,
        lambda d, x: reports.trends(d, since=f"{DAYS}d", now=NOW, by_agent=True, exact=x),
    ),
    ("costs (by agent)", 0.300, lambda d, x: reports.costs(d, exact=x)),
    ("regressions", 0.300, lambda d, x: reports.regressions(d, now=NOW, exact=x)),
    # The reasons retried are read row by row: all time is for information, not a goal.
    (
        "retries 24 h (the command's default)",
        0.300,
        lambda d, x: reports.retries(d, since="24h", now=NOW, exact=x),
    ),
    ("retries 7 days", 0.300, lambda d, x: reports.retries(d, since="7d", now=NOW, exact=x)),
    ("retries, all time", 10.0, lambda d, x: reports.retries(d, exact=x)),
    (
        "agent_summary one agent",
        0.050,
        lambda d, x: reports.agent_summary(d, "security-agent", exact=x),
    ),
    ("failed_orchestrations(50)", 0.010, lambda d, x: reports.failed_orchestrations(d, limit=50)),
]


# Failed executions' messages: five kinds, each with parts that vary by row.
_MESSAGES = """CASE rowid % 5
  WHEN 0 THEN printf('Timeout after %d ms calling tool search-%x', rowid % 9973, rowid * 40503)
  WHEN 1 THEN printf('HTTP 429 from https://api.example.com/v1/jobs/%d: rate limited', rowid)
  WHEN 2 THEN printf('AssertionError: tests failed in tests/test_%d.py line %d', rowid % 50, rowid)
  WHEN 3 THEN printf('ValueError: invalid literal ''x%d'' for int() with base 10', rowid)
  ELSE printf('ConnectionResetError: peer 0x%x closed at 2025-06-%02dT10:%02d:00Z',
    rowid, rowid % 28 + 1, rowid % 60)
END"""


def add_retries(path: Path) -> None:
    """Every other failed execution (even rowids) retried by the next row (attempt 2 of
    its task, same agent), and varied messages for the failed ones. Before ``upgrade``."""
    db = open_database(path)
    with db.atomic():
        db.execute(
            "UPDATE agent_executions AS later SET first_attempt_id = failed.id, attempt = 2,"
            " agent_name = failed.agent_name FROM agent_executions AS failed"
            " WHERE later.rowid = failed.rowid + 1 AND failed.status = 'failed'"
            " AND failed.rowid % 2 = 0"
        )
        db.execute(
            f"UPDATE agent_executions SET error_message = {_MESSAGES} WHERE status = 'failed'"
        )
    retried = db.execute("SELECT count(*) FROM agent_executions WHERE attempt = 2").fetchone()[0]
    db.close()
    print(f"{retried:,} retries added")


def best(fn: Callable[[], object], runs: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def copy(source: Path, folder: Path) -> Path:
    target = folder / "scale.db"
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return target


def tracking_ratio(folder: Path, events: int, rounds: int) -> float:
    """api/bare per event on the original's schema, as bench_tracking measures it."""
    bare_path = bench_tracking.make_file(folder, "bare.db", "original")
    api_path = bench_tracking.make_file(folder, "api.db", "original")
    bare, api = [], []
    for _ in range(rounds):
        bare.append(bench_tracking.bare_events(bare_path, events))
        api.append(bench_tracking.api_events(api_path, events))
    return statistics.median(api) / statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000_000)
    parser.add_argument("--db", type=Path, help="a built database to copy (never written)")
    parser.add_argument("--runs", type=int, default=3, help="runs per report (best shown)")
    parser.add_argument("--exact-runs", type=int, default=1, help="runs of the exact path")
    parser.add_argument("--events", type=int, default=2000, help="tracking events per round")
    parser.add_argument(
        "--reuse", action="store_true", help="use --db itself (a copy of yours), not a copy"
    )
    parser.add_argument("--only", default="", help="only the reports whose name contains this")
    parser.add_argument(
        "--retried", action="store_true", help="add retries and varied messages first"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp)
        if args.db and args.reuse:
            path = args.db
        elif args.db:
            path = copy(args.db, folder)
        else:
            path = folder / "scale.db"
            seconds, _, _ = build(path, args.executions)
            print(f"built in {seconds:.0f} s")
        if args.retried:
            add_retries(path)
        started = time.perf_counter()
        upgrade(path, progress=None)
        db = open_database(path)
        n = db.execute("SELECT max(rowid) FROM agent_executions").fetchone()[0]
        took = time.perf_counter() - started
        print(f"{n:,} executions; upgrade (indexes and rollups): {took:.0f} s")
        header = f"{'report':<38} {'rollups':>10} {'exact':>10} {'ratio':>7} {'goal':>8}"
        print(header)
        print("-" * len(header))
        for name, goal, run in (r for r in REPORTS if args.only in r[0]):
            run(db, False)  # warm the cache
            # A command starts with no normalised message cached: so does each run.
            cold = normalize_error.cache_clear
            rolled = best(lambda r=run: r(db, False), args.runs, cold)
            exact = best(lambda r=run: r(db, True), args.exact_runs, cold)
            missed = "  MISSED" if rolled > goal else ""
            print(
                f"{name:<38} {rolled * 1000:7.1f} ms {exact * 1000:7.0f} ms"
                f" {rolled / exact:6.3f}x {goal * 1000:5.0f} ms{missed}"
            )
        db.close()
        ratio = tracking_ratio(folder, args.events, 5)
        print(f"tracking on the original's schema: {ratio:.2f}x the bare statements (goal 1.3x)")


if __name__ == "__main__":
    main()
