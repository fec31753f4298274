"""OpenTelemetry in: ``import --format otlp`` speed and memory, and the in-process
exporter's overhead, each against a baseline of the same run.

* import: N spans written as OTLP/JSON Lines (100 traces per line, as our export
  writes) and as one OTLP protobuf file; each trace is what an agent framework
  emits for one run: a workflow span, 3 agent spans each with a chat span (tokens) and
  a tool span. ``agentmetrics import --format otlp`` runs as its own process: spans/s
  and peak RSS at N and N/10 spans (flat memory: the same peak). Baseline: reading
  the same file only (every line through ``json.loads``, or the protobuf parsed), the
  floor any Python importer pays (goal: 50,000 spans/s);
* exporter overhead: a program that makes spans (the same trace shape, with
  ``--work-ms`` of simulated model latency per chat span, as agents await their
  model): with OTel's no-op tracer (T0, no tracing), and under an SDK
  ``TracerProvider`` + ``BatchSpanProcessor`` exporting to the SDK's
  ``InMemorySpanExporter`` (T1) or to ``SQLiteSpanExporter`` (T2), each timed to the end
  of ``force_flush`` so every span is stored. The program's own OTel overhead is
  T1 - T0; ours adds T2 - T1 to it: overhead ratio = (T2 - T0) / (T1 - T0) (goal <= 1.2).

    python benchmarks/bench_otel_in.py                 # 1,000,000 spans
    python benchmarks/bench_otel_in.py --spans 100000 --runs 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_exchange import CLI, _run_measured  # noqa: E402

SPANS_PER_TRACE = 10
TRACES_PER_LINE = 100
T0_NS = 1_780_000_000_000_000_000


def _kv(key: str, value) -> dict:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def trace_spans(n: int) -> list[dict]:
    """The OTLP/JSON spans of trace number ``n``: a workflow, 3 agents, chats, tools."""
    trace = f"{n + 1:032x}"
    start = T0_NS + n * 10_000_000_000
    root = f"{n * 16 + 1:016x}"

    def span(number, parent, name, offset_ms, length_ms, attributes, error=False):
        raw = {
            "traceId": trace,
            "spanId": f"{n * 16 + number:016x}",
            "name": name,
            "kind": 1,
            "startTimeUnixNano": str(start + offset_ms * 1_000_000),
            "endTimeUnixNano": str(start + (offset_ms + length_ms) * 1_000_000),
            "attributes": [_kv(k, v) for k, v in attributes.items()],
            "status": {"code": 2, "message": "tool failed"} if error else {"code": 1},
        }
        if parent:
            raw["parentSpanId"] = parent
        return raw

    spans = [
        span(1, None, "invoke_workflow release", 0, 9000, {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": "release",
            "gen_ai.conversation.id": f"conv-{n}",
        }),
    ]  # fmt: skip
    for a, agent in enumerate(("planner", "coder", "reviewer")):
        agent_id = f"{n * 16 + 2 + a * 3:016x}"
        base = a * 3000
        spans.append(span(2 + a * 3, root, f"invoke_agent {agent}", base, 2900, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
        }))  # fmt: skip
        spans.append(span(3 + a * 3, agent_id, "chat model-x", base + 10, 2000, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "model-x",
            "gen_ai.usage.input_tokens": 1000 + n % 100, "gen_ai.usage.output_tokens": 200,
        }))  # fmt: skip
        spans.append(span(4 + a * 3, agent_id, "execute_tool search", base + 2100, 500, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
        }, error=(n % 50 == 0 and a == 2)))  # fmt: skip
    return spans


def write_json_lines(path: Path, traces: int) -> None:
    with path.open("w") as out:
        for first in range(0, traces, TRACES_PER_LINE):
            spans = [
                s
                for n in range(first, min(first + TRACES_PER_LINE, traces))
                for s in trace_spans(n)
            ]
            request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}
            out.write(json.dumps(request, separators=(",", ":")) + "\n")


def write_protobuf(json_lines: Path, path: Path) -> None:
    """The same spans as one protobuf ExportTraceServiceRequest (appended requests)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from agentmetrics.otel.spans import Span, read_file

    with path.open("wb") as out:
        batch: list[Span] = []
        for _, span in read_file(json_lines):
            batch.append(span)
            if len(batch) == SPANS_PER_TRACE * TRACES_PER_LINE:
                out.write(_request(batch, ExportTraceServiceRequest).SerializeToString())
                batch = []
        if batch:
            out.write(_request(batch, ExportTraceServiceRequest).SerializeToString())


def _request(spans, request_type):
    request = request_type()
    scope = request.resource_spans.add().scope_spans.add()
    for s in spans:
        raw = scope.spans.add()
        raw.trace_id = bytes.fromhex(s.trace_id)
        raw.span_id = bytes.fromhex(s.span_id)
        if s.parent_span_id:
            raw.parent_span_id = bytes.fromhex(s.parent_span_id)
        raw.name = s.name
        raw.start_time_unix_nano, raw.end_time_unix_nano = s.start_ns, s.end_ns
        raw.status.code, raw.status.message = s.status_code, s.status_message
        for key, value in s.attributes.items():
            kv = raw.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return request


def read_only_seconds(path: Path, protobuf: bool) -> float:
    """The baseline: the file read and parsed, nothing else."""
    started = time.perf_counter()
    if protobuf:
        from agentmetrics.otel.spans import _protobuf_stream

        with path.open("rb") as f:
            for _ in _protobuf_stream(f):
                pass
    else:
        with path.open("rb") as f:
            for line in f:
                json.loads(line)
    return time.perf_counter() - started


def bench_import(folder: Path, spans: int) -> dict:
    results = {}
    for label, count in (("full", spans), ("tenth", spans // 10)):
        traces = count // SPANS_PER_TRACE
        source = folder / f"{label}.jsonl"
        write_json_lines(source, traces)
        files = {"json": source}
        if label == "full":
            files["protobuf"] = folder / f"{label}.pb"
            write_protobuf(source, files["protobuf"])
        for encoding, path in files.items():
            db = folder / f"{label}-{encoding}.db"
            seconds, rss = _run_measured(
                [*CLI, "--db", str(db), "import", "--format", "otlp", str(path)]
            )
            baseline = read_only_seconds(path, encoding == "protobuf")
            results[f"{label}-{encoding}"] = {
                "spans": traces * SPANS_PER_TRACE,
                "seconds": seconds,
                "spans_per_s": traces * SPANS_PER_TRACE / seconds,
                "peak_rss_mb": rss / 1e6,
                "read_only_s": baseline,
                "file_mb": path.stat().st_size / 1e6,
            }
            db.unlink()
    return results


# -- exporter overhead -----------------------------------------------------------------


def program(tracer, runs: int, work_s: float) -> None:
    """The traced program: one workflow of 3 agents per run, each with a chat and a tool."""
    for _ in range(runs):
        with tracer.start_as_current_span(
            "invoke_workflow release", attributes={"gen_ai.operation.name": "invoke_workflow"}
        ):
            for agent in ("planner", "coder", "reviewer"):
                attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
                with tracer.start_as_current_span(f"invoke_agent {agent}", attributes=attributes):
                    with tracer.start_as_current_span(
                        "chat model-x",
                        attributes={
                            "gen_ai.operation.name": "chat",
                            "gen_ai.usage.input_tokens": 1000,
                            "gen_ai.usage.output_tokens": 200,
                        },
                    ):
                        time.sleep(work_s)
                    with tracer.start_as_current_span(
                        "execute_tool search", attributes={"gen_ai.operation.name": "execute_tool"}
                    ):
                        pass


def timed_program(exporter, runs: int, work_s: float) -> float:
    """Seconds to run the program and flush its spans; no exporter: OTel's no-op tracer."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import NoOpTracer

    if exporter is None:
        started = time.perf_counter()
        program(NoOpTracer(), runs, work_s)
        return time.perf_counter() - started
    provider = TracerProvider()
    # A queue for every span: the SDK drops spans from a full queue (2,048 by default).
    queue = runs * SPANS_PER_TRACE
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    program(tracer, runs, work_s)
    provider.force_flush()
    elapsed = time.perf_counter() - started
    provider.shutdown()
    return elapsed


def bench_exporter(folder: Path, runs: int, work_ms: float, repeats: int = 3) -> dict:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentmetrics.otel import SQLiteSpanExporter

    work_s = work_ms / 1000
    timings: dict[str, list[float]] = {"none": [], "memory": [], "sqlite": []}
    for i in range(repeats):  # interleaved, so load changes hit all three alike
        timings["none"].append(timed_program(None, runs, work_s))
        timings["memory"].append(timed_program(InMemorySpanExporter(), runs, work_s))
        exporter = SQLiteSpanExporter(folder / f"exporter{i}.db")
        timings["sqlite"].append(timed_program(exporter, runs, work_s))
        assert exporter.dropped == 0 and exporter.exported == runs * SPANS_PER_TRACE
    best = {name: min(values) for name, values in timings.items()}
    return {
        "runs": runs,
        "spans": runs * SPANS_PER_TRACE,
        "work_ms": work_ms,
        **{f"{name}_s": seconds for name, seconds in best.items()},
        "ratio": (best["sqlite"] - best["none"]) / (best["memory"] - best["none"]),
    }


def report(imports: dict, exporter: dict) -> str:
    lines = ["import --format otlp (goal: 50,000 spans/s, memory flat):"]
    for name, r in imports.items():
        lines.append(
            f"  {name:15} {r['spans']:>9,} spans  {r['seconds']:7.1f} s  "
            f"{r['spans_per_s']:8,.0f} spans/s  peak RSS {r['peak_rss_mb']:5.0f} MB  "
            f"({r['file_mb']:.0f} MB file; reading it alone {r['read_only_s']:.1f} s: "
            f"import = {r['seconds'] / r['read_only_s']:.1f}x reading)"
        )
    e = exporter
    lines.append(
        f"SQLiteSpanExporter overhead ({e['spans']:,} spans, {e['work_ms']} ms model latency"
        f" per chat span; best of 3): no exporter {e['none_s']:.2f} s, InMemorySpanExporter"
        f" {e['memory_s']:.2f} s, SQLiteSpanExporter {e['sqlite_s']:.2f} s: OTel overhead"
        f" ratio {e['ratio']:.2f} (goal <= 1.2)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2000, help="exporter benchmark: runs")
    parser.add_argument("--work-ms", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        exporter = bench_exporter(folder, args.runs, args.work_ms)
        imports = bench_import(folder, args.spans)
    print(report(imports, exporter))


if __name__ == "__main__":
    main()
