"""The reports at scale (10 million executions): rollups against the exact scan.

Builds a database with :func:`bench_reports.build` (or copies ``--db``: the file is
never written, the copy is), rolls it up with ``upgrade`` (timed), then times each
report of the scale goals through the rollups and with ``exact=True`` in the same
run (best of ``--runs``), and the tracking ratio of :mod:`bench_tracking`.

    python benchmarks/bench_scale.py --executions 1000000
    python benchmarks/bench_scale.py --db /work/data/bench10m.db

At 10M the copy and ``upgrade`` take minutes: ``--reuse`` works on ``--db`` itself (a
copy of your own, kept between runs), ``--only TEXT`` times only some reports.
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


def best(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
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
            rolled = best(lambda r=run: r(db, False), args.runs)
            exact = best(lambda r=run: r(db, True), args.exact_runs)
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
