"""Timing of one orchestration's timeline on a large database.

Copies a large file (default: 1,000,000 executions from ``bench_reports.py``), adds one
orchestration of 1,000 executions (nested, some retried) whose trace holds 50,000
spans stored as OpenTelemetry ingestion stores them, then times ``reports.timeline``
(with and without spans, with spans also without the ``arrow`` extra) against a bare
SELECT of the same rows, and ``plots.plot_timeline`` of 500 executions against drawing
500 bars with matplotlib.

    python benchmarks/bench_timeline.py --db /work/data/bench1m.db
    python benchmarks/bench_timeline.py            # a fresh file of 100,000 executions
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentmetrics import open_database, plots, reports  # noqa: E402
from agentmetrics.errors import MissingIndexesWarning  # noqa: E402
from agentmetrics.reports import _arrow  # noqa: E402
from agentmetrics.reports.run import fold  # noqa: E402
from agentmetrics.store.db import upgrade  # noqa: E402

SESSION = "bench-timeline"
EXECUTIONS = 1_000
SPANS = 50_000
START_NS = 1_780_000_000_000_000_000
TRACE = "5f" * 16
GOALS = {"timeline spans=True": 150, "plot_timeline 500": 1000}


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{moment}.{rest // 1_000_000:03d}Z"


def add_orchestration(path: Path) -> None:
    """One orchestration: a lead, 999 workers under it (every tenth retried once), each
    with 49 LLM and tool spans, and the spans as ingestion stores them."""
    db = open_database(path)
    step = 1_000_000_000  # 1 s per execution
    executions, spans = [], []
    lead_span = f"{0:016x}"
    spans.append((TRACE, lead_span, None, "agent", START_NS, START_NS + EXECUTIONS * step, "{}"))
    calls_each = (SPANS - EXECUTIONS) // (EXECUTIONS - 1)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(EXECUTIONS)]
    for i in range(EXECUTIONS):
        start = START_NS + i * step
        end = START_NS + EXECUTIONS * step if i == 0 else start + step - 1000
        span_id = f"{i:016x}"
        retried = i > 0 and i % 10 == 0
        failed = i > 0 and i % 10 == 9
        executions.append(
            {
                "id": ids[i],
                "orchestration_id": SESSION,
                "agent_session_id": f"{SESSION}-{i}",
                "agent_name": "lead" if i == 0 else f"worker-{i % 7}",
                "task_number": i,
                "status": "failed" if failed else "completed",
                "started_at": _iso(start),
                "completed_at": _iso(end),
                "duration_ms": (end - start) // 1_000_000,
                "error_message": "boom" if failed else None,
                "parent_execution_id": None if i == 0 else ids[0],
                "attempt": 2 if retried else 1,
                "first_attempt_id": ids[i - 1] if retried else None,
                "metadata_json": json.dumps({"span_id": span_id, "trace_id": TRACE}),
            }
        )
        if i:
            spans.append((TRACE, span_id, lead_span, "agent", start, end, '{"name":"worker"}'))
            for k in range(calls_each):
                role = "llm" if k % 2 else "tool"
                data = {"name": f"{role}-{k}"}
                if role == "llm":
                    data.update(model="m-1", input_tokens=100, output_tokens=20)
                call = start + k * (step // (calls_each + 1))
                spans.append(
                    (TRACE, f"{i:08x}{k:08x}", span_id, role, call, call + 1000, json.dumps(data))
                )
    with db.atomic():
        db["orchestrations"].insert(
            {
                "id": SESSION,
                "session_id": SESSION,
                "status": "partial",
                "started_at": _iso(START_NS),
                "completed_at": _iso(START_NS + EXECUTIONS * step),
                "duration_ms": EXECUTIONS * 1000,
                "total_tasks": EXECUTIONS,
            }
        )
        db["agent_executions"].insert_all(executions, batch_size=500)
        db.conn.executemany(
            "INSERT INTO otel_spans (trace_id, span_id, parent_span_id, role, start_ns, end_ns,"
            " data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            spans,
        )
    print(f"added {len(executions):,} executions and {len(spans):,} spans")
    db.close()


def median_ms(fn, repeat: int = 7) -> float:
    fn()  # warm the page cache
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def bare_select(path: Path) -> None:
    """The baseline: the same execution and span rows, fetched and nothing more."""
    db = open_database(path, create=False)
    db.conn.execute(
        "SELECT * FROM agent_executions WHERE orchestration_id = ?", [SESSION]
    ).fetchall()
    db.conn.execute("SELECT * FROM otel_spans WHERE trace_id = ?", [TRACE]).fetchall()
    db.close()


def bare_bars(count: int) -> None:
    """The baseline for the chart: ``count`` bars on one axes, drawn to PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.6 + 0.16 * count))
    ax = fig.subplots()
    ax.barh(range(count), [1] * count, left=range(count))
    fig.savefig(io.BytesIO(), format="png")


def plain(path: Path) -> None:
    """The timeline with spans read through sqlite3, as without the ``arrow`` extra."""
    saved, _arrow.adbc = _arrow.adbc, None
    try:
        reports.timeline(path, SESSION, spans=True)
    finally:
        _arrow.adbc = saved


def drawn(frame) -> None:
    plots.plot_timeline(frame).savefig(io.BytesIO(), format="png")


def main() -> None:
    warnings.simplefilter("ignore", MissingIndexesWarning)  # a timeline reads no rollup
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a large file to copy (never written)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.db"
        if args.db:
            began = time.perf_counter()
            shutil.copyfile(args.db, path)
            print(f"copied {args.db} in {time.perf_counter() - began:.1f} s")
        else:
            from bench_reports import build  # type: ignore[import-not-found]

            build(path, 100_000)
            upgrade(path, progress=None)
        add_orchestration(path)
        frame = reports.timeline(path, SESSION, spans=True)
        half, _ = fold(frame[frame["kind"] == "execution"], 500)
        print(f"timeline: {len(frame):,} rows; chart of {len(half):,} executions")
        results = [
            ("baseline: bare SELECT of the rows", median_ms(lambda: bare_select(path)), None),
            ("timeline spans=False", median_ms(lambda: reports.timeline(path, SESSION)), None),
            (
                "timeline spans=True",
                median_ms(lambda: reports.timeline(path, SESSION, spans=True)),
                "select",
            ),
            ("timeline spans=True, without Arrow", median_ms(lambda: plain(path)), "select"),
            ("baseline: 500 bare bars to PNG", median_ms(lambda: bare_bars(len(half)), 3), None),
            ("plot_timeline 500", median_ms(lambda: plots.plot_timeline(half), 3), "bars"),
            ("plot_timeline 500 to PNG", median_ms(lambda: drawn(half), 3), "bars"),
        ]
    baselines = {"select": results[0][1], "bars": results[4][1]}
    print(f"{'operation':<38}{'median':>10}{'goal':>9}{'x base':>9}")
    for name, ms, base in results:
        goal = f"{GOALS[name]} ms" if name in GOALS else ""
        ratio = f"{ms / baselines[base]:.2f}x" if base else ""
        print(f"{name:<38}{ms:>8.1f} ms{goal:>9}{ratio:>9}")


if __name__ == "__main__":
    main()
