"""Trackers writing while a large import and then a cleanup run: errors, lost rows, waits.

1. ``agentmetrics demo --orchestrations N --days 60`` builds a source database, and
   ``agentmetrics export --format jsonl`` writes it out;
2. baseline: ``--trackers`` processes each run ``--lifecycles`` lifecycles (start an
   orchestration, start and complete 2-3 agent executions, complete the
   orchestration, through :class:`agentmetrics.Monitor`) into a fresh database;
3. the same tracker load into another fresh database, once per ``--loads`` entry:
   ``import``: one process imports the export
   (:func:`agentmetrics.exchange.import_files`) and then deletes what is over 30 days
   old (:func:`agentmetrics.store.cleanup.cleanup`, about half the import); ``reports``: the
   export is imported first, then a report loop runs beside the trackers (aggregate
   reports, which bring the rollups up to date on read); ``both``: the import, the
   cleanup and the report loop together.

Reported: tracking errors (exceptions raised by tracker calls), rows lost (rows
expected against rows counted afterwards, for the trackers and for the import before
and after the cleanup), worst and p99 tracker call latency against the baseline,
and the import and cleanup wall times; for the report loop, its reports and the
longest write transaction of each writer in the background (rollup refresh, cleanup
batch). Goals: 0 errors, 0 rows lost, worst call under 1.5 s. Trackers pause
``--pause`` seconds between lifecycles so their calls span the import and the cleanup;
the report says how many calls overlapped each.

    python benchmarks/bench_trust.py                  # 40,000 orchestrations, 8 x 500
    python benchmarks/bench_trust.py --orchestrations 2000 --trackers 2 --lifecycles 50
    python benchmarks/bench_trust.py --loads import,reports,both
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentmetrics import open_database
from agentmetrics.exchange import import_files
from agentmetrics.timestamps import before, to_iso

DEMO_DAYS = 60
CLEANUP_DAYS = 30
# The trackers slow the import down (1.4x measured), and the cleanup comes after it.
SPREAD_MARGIN = 1.6
# The slowest tracker calls whose waits are attributed to the background writers.
WORST_CALLS = 20

TRACKER = """
import json, sys, time
from agentmetrics import Monitor

path, worker, lifecycles, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
calls, errors = [], []
monitor = Monitor(path)


def call(fn, *args, **kwargs):
    started, t0 = time.time(), time.perf_counter()
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        calls.append((started, time.perf_counter() - t0))


executions = 0
for i in range(lifecycles):
    session = f"bench-{worker}-{i}"
    orchestration = call(monitor.start_orchestration, session, "bench", total_tasks=3)
    agents = [f"{session}-{j}" for j in range(2 + i % 2)]
    for j, agent in enumerate(agents):
        call(monitor.start_agent_execution, agent, f"agent-{j}", orchestration_id=orchestration)
    for agent in agents:
        call(monitor.complete_agent_execution, agent, "completed", files_created=1)
    call(monitor.complete_orchestration, session, "completed", completed_tasks=len(agents))
    executions += len(agents)
    time.sleep(pause)
json.dump({"calls": calls, "errors": errors, "executions": executions}, sys.stdout)
"""

IMPORTER = """
import json, sys, time
import agentmetrics.store.cleanup, agentmetrics.exchange.writer
from agentmetrics.store.cleanup import cleanup
from agentmetrics.exchange import import_files

path, export, days, now, here = sys.argv[1], sys.argv[2], float(sys.argv[3]), *sys.argv[4:6]
sys.path.insert(0, here)
from bench_trust import imported_rows, timed_transactions

import_held = timed_transactions(agentmetrics.exchange.writer, "write_transaction")
t0 = time.time()
import_files(path, [export])
t1 = time.time()
imported = imported_rows(path)
t2 = time.time()
held = timed_transactions(agentmetrics.store.cleanup, "write_transaction")
deleted = cleanup(path, days, now=now)
t3 = time.time()
json.dump(
    {
        "import": [t0, t1],
        "cleanup": [t2, t3],
        "held": {"import": import_held, "cleanup": held},
        "imported": imported,
        "deleted": [deleted.orchestrations, deleted.executions + deleted.standalone_executions],
    },
    sys.stdout,
)
"""

REPORTER = """
import json, sys, time
from pathlib import Path
from agentmetrics.store import rollups
from agentmetrics.reports import costs, performance_report, system_health, trends

path, stop, here = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, here)
from bench_trust import timed_transactions

held = timed_transactions(rollups, "_write")
seconds = []
while not stop.exists():
    t0 = time.perf_counter()
    system_health(path, since="30d")
    performance_report(path, since="7d")
    trends(path, since="60d")
    costs(path, by="day")
    seconds.append(time.perf_counter() - t0)
json.dump({"reports": seconds, "held": {"rollups": held}}, sys.stdout)
"""


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "agentmetrics", *map(str, args)], check=True)


def python(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True
    )


def timed_transactions(module: object, name: str) -> list[tuple[float, float]]:
    """Wrap the context manager ``module.name`` (a write transaction) to record when each
    use held the lock; return the list the (start, end) times are appended to."""
    wrapped, held = getattr(module, name), []

    @contextlib.contextmanager
    def timed(*args, **kwargs):
        with wrapped(*args, **kwargs) as value:
            started = time.time()  # the lock is ours from here
            try:
                yield value
            finally:
                held.append((started, time.time()))

    setattr(module, name, timed)
    return held


def run_trackers(
    path: Path, args: argparse.Namespace, importer: tuple = (), reporter: bool = False
) -> tuple[list, dict, dict]:
    """Run the trackers (and the importer and the report loop, if given) to the end;
    return their reports."""
    open_database(path).close()  # the schema exists before anyone writes
    here, stop = Path(__file__).parent, Path(f"{path}.stop")
    stop.unlink(missing_ok=True)
    helper = python(IMPORTER, path, *importer, here) if importer else None
    reports_loop = python(REPORTER, path, stop, here) if reporter else None
    trackers = [
        python(TRACKER, path, f"t{n}", args.lifecycles, args.pause) for n in range(args.trackers)
    ]
    reports = [json.loads(p.communicate()[0]) for p in trackers]
    if any(p.returncode for p in trackers):
        sys.exit("a tracker process failed")
    imported = json.loads(helper.communicate()[0]) if helper else {}
    if helper and helper.returncode:
        sys.exit("the import/cleanup process failed")
    stop.touch()
    looped = json.loads(reports_loop.communicate()[0]) if reports_loop else {}
    if reports_loop and reports_loop.returncode:
        sys.exit("the report loop failed")
    return reports, imported, looped


def latencies(reports: list, window: list[float] | None = None) -> list[float]:
    calls = [c for r in reports for c in r["calls"]]
    if window is not None:
        calls = [c for c in calls if c[0] + c[1] >= window[0] and c[0] <= window[1]]
    return sorted(seconds for _, seconds in calls)


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")


def tracker_rows_lost(path: Path, reports: list, args: argparse.Namespace) -> int:
    conn = sqlite3.connect(path)
    orchestrations = conn.execute(
        "SELECT count(*) FROM orchestrations WHERE session_id LIKE 'bench-%'"
        " AND status = 'completed'"
    ).fetchone()[0]
    executions = conn.execute(
        "SELECT count(*) FROM agent_executions WHERE agent_session_id LIKE 'bench-%'"
        " AND status = 'completed'"
    ).fetchone()[0]
    conn.close()
    expected = args.trackers * args.lifecycles + sum(r["executions"] for r in reports)
    return expected - orchestrations - executions


def source_rows(source: Path, cutoff: str = "0000") -> tuple[int, int]:
    """Orchestrations and executions of the source that a cleanup at ``cutoff`` keeps:
    orchestrations started at the cutoff or later with all their executions, and
    standalone executions started at the cutoff or later."""
    conn = sqlite3.connect(source)
    kept = "julianday(started_at) >= julianday(:cutoff)"
    counts = conn.execute(
        f"SELECT (SELECT count(*) FROM orchestrations WHERE {kept}),"
        " (SELECT count(*) FROM agent_executions WHERE orchestration_id IN"
        f" (SELECT id FROM orchestrations WHERE {kept})"
        f" OR (orchestration_id IS NULL AND {kept}))",
        {"cutoff": cutoff},
    ).fetchone()
    conn.close()
    return counts


def estimate_pause(export: Path, folder: Path, lifecycles: int, sample_rows: int = 20_000) -> float:
    """A pause between lifecycles that spreads them over the import and the cleanup.

    Times the import of the export's first orchestrations into a scratch file and
    scales it to the whole export, with a margin for the trackers slowing it down.
    """
    sample, scratch = folder / "sample.jsonl", folder / "sample.db"
    for path in (scratch, Path(f"{scratch}-wal"), Path(f"{scratch}-shm")):
        path.unlink(missing_ok=True)
    total = sampled = 0
    with export.open() as lines, sample.open("w") as out:
        for line in lines:
            total += 1
            # Stop the sample where an orchestration starts: whole orchestrations only.
            if sampled == total - 1 and not (
                sampled >= sample_rows and line.startswith('{"type": "orchestration"')
            ):
                out.write(line)
                sampled += 1
    started = time.perf_counter()
    import_files(scratch, [sample])
    seconds = (time.perf_counter() - started) * total / sampled
    print(f"estimated import time: {seconds:.0f}s", flush=True)
    return seconds * SPREAD_MARGIN / lifecycles


def imported_rows(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM orchestrations WHERE session_id NOT LIKE 'bench-%'),"
        " (SELECT count(*) FROM agent_executions WHERE agent_session_id NOT LIKE 'bench-%')"
    ).fetchone()
    conn.close()
    return counts


def describe(
    load: str,
    args: argparse.Namespace,
    files: dict[str, Path],
    baseline: tuple[list, Path],
    run: tuple[list, dict, dict],
    now: str,
) -> list[str]:
    """The report lines of one contended run against the baseline."""
    (base_reports, base_path), (reports, imported, looped) = baseline, run
    base, loaded = latencies(base_reports), latencies(reports)
    errors = [e for r in reports for e in r["errors"]]
    base_errors = [e for r in base_reports for e in r["errors"]]
    lines = [
        "",
        f"{load}: {args.trackers} trackers x {args.lifecycles} lifecycles ({len(loaded)} calls),"
        f" {args.pause:.2f}s pause between lifecycles",
        f"tracking errors:   {len(errors)} (baseline {len(base_errors)})"
        + (f"; first: {errors[0]}" if errors else ""),
        f"tracker rows lost: {tracker_rows_lost(files[load], reports, args)}"
        f" (baseline {tracker_rows_lost(base_path, base_reports, args)})",
        f"worst call:        {max(loaded):.3f}s (baseline {max(base):.3f}s,"
        f" {max(loaded) / max(base):.1f}x); calls over 1 s: {sum(s > 1 for s in loaded)}"
        f" (baseline {sum(s > 1 for s in base)})",
        f"p99 call:          {p99(loaded) * 1000:.1f}ms (baseline {p99(base) * 1000:.1f}ms,"
        f" {p99(loaded) / p99(base):.1f}x)",
    ]
    if looped:
        rounds = sorted(looped["reports"])
        lines.append(
            f"report loop:       {len(rounds)} rounds of 4 reports, median"
            f" {rounds[len(rounds) // 2] if rounds else float('nan'):.2f}s"
        )
    if imported:
        lines += import_lines(files["source"], files[load], reports, imported, now)
    return lines + held_lines(reports, {**imported.get("held", {}), **looped.get("held", {})})


def held_lines(reports: list, held: dict[str, list]) -> list[str]:
    """The longest write transaction of each background writer, and what held the lock
    while the worst tracker calls waited."""
    if not held:
        return []
    longest = ", ".join(
        f"{name} {max((end - start for start, end in spans), default=0):.3f}s"
        for name, spans in held.items()
    )
    worst = sorted((c for r in reports for c in r["calls"]), key=lambda c: -c[1])[:WORST_CALLS]
    waited = sum(seconds for _, seconds in worst)
    shares = ", ".join(
        f"{name} {sum(overlap(call, spans) for call in worst) / waited:.0%}"
        for name, spans in held.items()
    )
    return [
        f"longest write transaction: {longest}",
        f"the {len(worst)} worst calls ({waited:.1f}s in all) spent their time behind: {shares}",
    ]


def overlap(call: tuple[float, float], spans: list) -> float:
    """Seconds of ``call`` (start, duration) during which one of ``spans`` held the lock."""
    start, end = call[0], call[0] + call[1]
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e in spans)


def import_lines(source: Path, path: Path, reports: list, imported: dict, now: str) -> list[str]:
    """The import and cleanup lines of a run that imported and cleaned up."""
    loaded = latencies(reports)
    during_import = latencies(reports, imported["import"])
    during_cleanup = latencies(reports, imported["cleanup"])
    cutoff = to_iso(
        before(dt.datetime.fromisoformat(now.replace("Z", "+00:00")), 24 * CLEANUP_DAYS)
    )
    expected_import = source_rows(source)
    lost_import = sum(expected_import) - sum(imported["imported"])
    lost_after = sum(source_rows(source, cutoff)) - sum(imported_rows(path))
    import_seconds = imported["import"][1] - imported["import"][0]
    cleanup_seconds = imported["cleanup"][1] - imported["cleanup"][0]
    deleted = imported["deleted"]
    worst = max((c for r in reports for c in r["calls"]), key=lambda c: c[1])
    return [
        f"import:            {expected_import[0]} orchestrations, {expected_import[1]}"
        f" executions in {import_seconds:.1f}s ({sum(expected_import) / import_seconds:,.0f}"
        f" rows/s), {len(during_import)} tracker calls during it, the worst"
        f" {max(during_import, default=0):.3f}s",
        f"cleanup:           {cleanup_seconds:.1f}s (deleted {deleted[0]} orchestrations,"
        f" {deleted[1]} executions), {len(during_cleanup)} tracker calls during it, the worst"
        f" {max(during_cleanup, default=0):.3f}s",
        f"import rows lost:  {lost_import} after the import, {lost_after} after the cleanup",
        f"p99 during import: {p99(during_import) * 1000:.1f}ms"
        f" (all calls {p99(loaded) * 1000:.1f}ms)",
        f"worst call started {worst[0] - imported['import'][0]:+.1f}s from the import's start"
        f" (import ended at {import_seconds:+.1f}s, cleanup at"
        f" {imported['cleanup'][1] - imported['import'][0]:+.1f}s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orchestrations", type=int, default=40_000)
    parser.add_argument("--trackers", type=int, default=8)
    parser.add_argument("--lifecycles", type=int, default=500)
    parser.add_argument(
        "--pause", type=float, help="seconds between lifecycles (default: spread over the import)"
    )
    parser.add_argument(
        "--loads",
        default="import",
        help="comma-separated runs beside the trackers: import, reports, both (default: import)",
    )
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    loads = args.loads.split(",")
    if not set(loads) <= {"import", "reports", "both"}:
        parser.error("--loads takes import, reports and both")
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-trust-"))
    folder.mkdir(parents=True, exist_ok=True)
    now = to_iso(dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0))

    source, export = folder / "source.db", folder / "source.jsonl"
    for path in (source, export):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    cli("--db", source, "demo", "--orchestrations", args.orchestrations, "--days", DEMO_DAYS,
        "--now", now)  # fmt: skip
    cli("--db", source, "export", "--format", "jsonl", "-o", export)
    print(f"source: {source_rows(source)} rows built and exported in "
          f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip

    files = {"source": source, "baseline": folder / "baseline.db"}
    files.update({load: folder / f"{load}.db" for load in loads})
    for name in ("baseline", *loads):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{files[name]}{suffix}").unlink(missing_ok=True)
    if args.pause is None:
        args.pause = estimate_pause(export, folder, args.lifecycles)
    baseline = (run_trackers(files["baseline"], args)[0], files["baseline"])
    for load in loads:
        if load == "reports":
            import_files(files[load], [export])  # reports over a full file, no import running
        importer = (export, CLEANUP_DAYS, now) if load != "reports" else ()
        run = run_trackers(files[load], args, importer, reporter=load != "import")
        print("\n".join(describe(load, args, files, baseline, run, now)), flush=True)


if __name__ == "__main__":
    main()
