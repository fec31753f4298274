"""Export, cleanup and CLI start-up on a large database, against baselines of the same run.

* export everything: ``agentmetrics export -o FILE`` as its own process; executions
  per second and the process's peak RSS (goal: 100,000+ executions/s, under 300 MB);
* cleanup 30: :func:`agentmetrics.store.cleanup.cleanup` on one copy of the file, against
  one bare ``DELETE`` of the same rows (cascade included) on another copy, each
  while a tracker process writes (start + complete an orchestration and an
  execution, in a loop) and records its worst wait (goal: cleanup at most 2x the
  bare DELETE; the tracker never waits over 1.5 s and never fails);
* ``agentmetrics health`` as a whole process (goal: under 0.8 s; original 1.26 s),
  next to ``python -c pass`` as the interpreter's own start-up.

    python benchmarks/bench_exchange.py                 # 1,000,000 executions
    python benchmarks/bench_exchange.py --executions 100000
    python benchmarks/bench_exchange.py --db /tmp/bench.db   # reuse a built file

``bench_reports.py`` calls :func:`run` on the database it built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from agentmetrics import Monitor  # noqa: E402
from agentmetrics.store.cleanup import cleanup  # noqa: E402
from agentmetrics.timestamps import to_iso  # noqa: E402

CLI = [sys.executable, "-m", "agentmetrics"]
CLEANUP_DAYS = 30


# A forked child starts with its parent's resident pages counted in its peak RSS until
# it execs, and this script holds hundreds of MB: a tiny launcher runs the measured
# command and reports its child's peak, so only the command itself is counted.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _run_measured(args: list[str], **kwargs) -> tuple[float, int]:
    """Run a process to the end; return (seconds, its peak RSS in bytes)."""
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], stderr=subprocess.PIPE, text=True, **kwargs
    )
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {process.returncode}")
    return elapsed, int(process.stderr.splitlines()[-1]) * 1024  # Linux reports kilobytes


def bench_export(db_path: Path, folder: Path) -> dict:
    conn = sqlite3.connect(db_path)
    executions = conn.execute("SELECT count(*) FROM agent_executions").fetchone()[0]
    orchestrations = conn.execute("SELECT count(*) FROM orchestrations").fetchone()[0]
    conn.close()
    results = {}
    for fmt in ("json", "jsonl"):
        out = folder / f"export.{fmt}"
        seconds, rss = _run_measured(
            [*CLI, "--db", str(db_path), "export", "--format", fmt, "-o", str(out)]
        )
        results[fmt] = {
            "seconds": seconds,
            "executions_per_s": executions / seconds,
            "peak_rss_mb": rss / 1e6,
            "file_mb": out.stat().st_size / 1e6,
        }
        out.unlink()
    return {"orchestrations": orchestrations, "executions": executions, **results}


# -- cleanup against a bare DELETE, with a tracker writing ---------------------------------


def tracker(db_path: str, stop_file: str) -> None:
    """Write tracking events until ``stop_file`` exists; print the worst wait as JSON."""
    monitor = Monitor(db_path)
    worst = 0.0
    events = failures = 0
    while not os.path.exists(stop_file):
        session = f"bench-{uuid.uuid4()}"
        try:
            for call, args in (
                (monitor.start_orchestration, (session,)),
                (monitor.start_agent_execution, (session + "-a", "bench-agent")),
                (monitor.complete_agent_execution, (session + "-a", "completed")),
                (monitor.complete_orchestration, (session, "completed")),
            ):
                started = time.perf_counter()
                call(*args)
                worst = max(worst, time.perf_counter() - started)
                events += 1
        except Exception as e:  # a failure is a result here, not a crash
            failures += 1
            print(f"tracker: {e}", file=sys.stderr)
        time.sleep(0.01)
    print(json.dumps({"worst_wait_s": worst, "events": events, "failures": failures}))


class _Tracker:
    def __init__(self, db_path: Path) -> None:
        self.stop_file = Path(f"{db_path}.stop")
        self.stop_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--tracker", str(db_path), str(self.stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # let it open the file and start writing

    def stop(self) -> dict:
        self.stop_file.touch()
        out, _ = self.process.communicate(timeout=120)
        self.stop_file.unlink()
        return json.loads(out)


def bare_delete(db_path: Path, cutoff: str) -> dict:
    """The same rows in one transaction: orchestrations (cascade) and standalone ones."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    before = conn.execute("SELECT count(*) FROM agent_executions").fetchone()[0]
    orchestrations = conn.execute(
        "DELETE FROM orchestrations WHERE started_at < ?", [cutoff]
    ).rowcount
    conn.execute(
        "DELETE FROM agent_executions WHERE orchestration_id IS NULL AND started_at < ?",
        [cutoff],
    )
    executions = before - conn.execute("SELECT count(*) FROM agent_executions").fetchone()[0]
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "orchestrations": orchestrations, "executions": executions}


def bench_cleanup(db_path: Path, folder: Path, now: dt.datetime) -> dict:
    cutoff = to_iso(now - dt.timedelta(days=CLEANUP_DAYS))
    results = {}
    for name in ("bare", "cleanup"):
        copy = folder / f"{name}.db"
        shutil.copy(db_path, copy)
        tracker_process = _Tracker(copy)
        if name == "bare":
            result = bare_delete(copy, cutoff)
        else:
            started = time.perf_counter()
            counts = cleanup(str(copy), CLEANUP_DAYS, now=now)
            result = {
                "seconds": time.perf_counter() - started,
                "orchestrations": counts.orchestrations,
                "executions": counts.executions + counts.standalone_executions,
            }
        result["tracker"] = tracker_process.stop()
        results[name] = result
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    results["ratio"] = results["cleanup"]["seconds"] / results["bare"]["seconds"]
    return results


def bench_health(db_path: Path, runs: int = 7) -> dict:
    def median_run(args: list[str]) -> float:
        return statistics.median(
            _run_measured(args, stdout=subprocess.DEVNULL)[0] for _ in range(runs)
        )

    return {
        "health_s": median_run([*CLI, "--db", str(db_path), "health"]),
        "python_s": median_run([sys.executable, "-c", "pass"]),
    }


def run(db_path: Path, now: dt.datetime) -> dict:
    """Every measurement above on the built file ``db_path`` (which is left unchanged)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        return {
            "export": bench_export(db_path, folder),
            "cleanup": bench_cleanup(db_path, folder, now),
            "health": bench_health(db_path),
        }


def report(results: dict) -> str:
    e, c, h = results["export"], results["cleanup"], results["health"]
    lines = [
        f"export everything ({e['orchestrations']:,} orchestrations,"
        f" {e['executions']:,} executions); goal 100,000+ executions/s, peak RSS < 300 MB:"
    ]
    for fmt in ("json", "jsonl"):
        r = e[fmt]
        lines.append(
            f"  {fmt:<5} {r['seconds']:6.2f} s  {r['executions_per_s']:>9,.0f} executions/s"
            f"  peak RSS {r['peak_rss_mb']:.0f} MB  ({r['file_mb']:.0f} MB file)"
        )
    lines.append(
        f"cleanup {CLEANUP_DAYS} with a tracker writing; goal <= 2x bare DELETE,"
        " tracker wait < 1.5 s, no failure:"
    )
    for name in ("bare", "cleanup"):
        r = c[name]
        t = r["tracker"]
        lines.append(
            f"  {name:<7} {r['seconds']:6.2f} s  {r['orchestrations']:,} orchestrations,"
            f" {r['executions']:,} executions; tracker worst wait {t['worst_wait_s']:.3f} s"
            f" over {t['events']:,} calls, {t['failures']} failures"
        )
    lines.append(f"  ratio cleanup / bare DELETE: {c['ratio']:.2f}x")
    lines.append(
        f"CLI health as a process: {h['health_s']:.2f} s (python -c pass: {h['python_s']:.2f} s);"
        " goal < 0.8 s, original 1.26 s"
    )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--tracker":
        tracker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="Build here, or reuse if it exists.")
    args = parser.parse_args()
    from bench_reports import NOW, build

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        if not path.exists():
            seconds, n_orch, n_exec = build(path, args.executions)
            print(f"built {n_orch:,} orchestrations, {n_exec:,} executions in {seconds:.1f} s")
        print(report(run(path, NOW)))


if __name__ == "__main__":
    main()
