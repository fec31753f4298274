"""`agentmetrics serve` under load while a tracker writes the same file, and the live
push's cost on a tracking call.

1. Requests are built first: traces shaped like an instrumented framework's (a workflow
   span, then per agent an ``invoke_agent`` span with two ``chat`` spans and an
   ``execute_tool`` span under it), as protobuf ``ExportTraceServiceRequest`` bodies of
   ``--batch`` spans each.
2. Baseline: ``agentmetrics serve`` (a subprocess) on a fresh file takes the requests
   from ``--clients`` concurrent keep-alive connections (threads of this process).
3. Load: the same into another fresh file while a tracker process runs Monitor
   lifecycles into that file the whole time.
4. Live push: one process times tracking calls (a lifecycle of start/complete calls)
   without a push, then with ``otlp_endpoint`` pointing at a running ``serve``.

Reported: spans/s, request latency p50/p99 (each run, and the loaded run against the
baseline), spans lost (sent against ``otel_spans`` rows, and executions and
orchestrations against those expected), tracker errors and rows, and the live push's
per-call overhead against no push. Goals: >= 10,000 spans/s, p99 < 100 ms, 0 lost.

``--abuse`` runs something else: ``serve`` under abusive clients (Linux, for /proc).
``--abusers`` connections (20) each declare a 32 MiB body, send 30 MiB of it and stall;
reported: serve's resident memory (RSS) and threads before, at their peak and after the
abusers leave, how many abusers were answered 503, whether a normal request is then
served, and the seconds from SIGTERM to exit with an idle keep-alive client and one
trickling a byte every 0.2 s. Goals: RSS under 300 MB, a normal request served after,
exit within 2 s.

    python benchmarks/bench_serve.py                       # 200 requests of 512 spans
    python benchmarks/bench_serve.py --requests 40 --calls 500
    python benchmarks/bench_serve.py --abuse
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

AGENTS_PER_TRACE = 3
SPANS_PER_AGENT = 4  # invoke_agent, two chat, one execute_tool
SPANS_PER_TRACE = 1 + AGENTS_PER_TRACE * SPANS_PER_AGENT

TRACKER = """
import json, sys, time
from agentmetrics import Monitor

path, stop_file = sys.argv[1], sys.argv[2]
monitor = Monitor(path)
errors, lifecycles, executions = [], 0, 0
import os
while not os.path.exists(stop_file):
    session = f"tracker-{lifecycles}"
    try:
        with monitor.orchestration(session, "tracked while serving") as orch:
            for j in range(2):
                with orch.agent(f"agent-{j}"):
                    executions += 1
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    lifecycles += 1
    time.sleep(0.01)
monitor.close()
json.dump({"errors": errors, "lifecycles": lifecycles, "executions": executions}, sys.stdout)
"""

PUSH_TIMING = """
import json, sys, time
from agentmetrics import Monitor

path, endpoint, calls = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
monitor = Monitor(path, otlp_endpoint=endpoint)
timings = []
for i in range(calls):
    monitor.start_agent_execution(f"a-{i}", "coder")
    started = time.perf_counter()
    monitor.complete_agent_execution(f"a-{i}", "completed", input_tokens=10)
    timings.append(time.perf_counter() - started)
monitor.close()
push = monitor.push
json.dump({"timings": timings, "sent": push.sent if push else None,
           "dropped": push.dropped if push else None}, sys.stdout)
"""


def build_bodies(requests: int, batch: int) -> tuple[list[bytes], int, int]:
    """Protobuf bodies of ``batch`` spans each; also the traces and agent spans in them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    def attrs(**values):
        out = []
        for key, value in values.items():
            key = key.replace("__", ".")
            typed = (
                AnyValue(int_value=value)
                if isinstance(value, int)
                else AnyValue(string_value=value)
            )
            out.append(KeyValue(key=key, value=typed))
        return out

    base = 1_772_359_200 * 10**9
    bodies, spans, traces, agents = [], [], 0, 0
    counter = 0

    def ident(size: int) -> bytes:
        nonlocal counter
        counter += 1
        return counter.to_bytes(size, "big")

    while len(bodies) < requests:
        trace = ident(16)
        traces += 1
        root = ident(8)
        start = base + traces * 10**9
        spans.append(
            Span(
                trace_id=trace,
                span_id=root,
                name="invoke_workflow bench",
                start_time_unix_nano=start,
                end_time_unix_nano=start + 60 * 10**9,
                attributes=attrs(
                    gen_ai__operation__name="invoke_workflow",
                    gen_ai__conversation__id=f"conv-{traces}",
                ),
                status=Status(code=1),
            )
        )
        for a in range(AGENTS_PER_TRACE):
            agent = ident(8)
            agents += 1
            t0 = start + a * 10**9
            spans.append(
                Span(
                    trace_id=trace,
                    span_id=agent,
                    parent_span_id=root,
                    name=f"invoke_agent agent-{a}",
                    start_time_unix_nano=t0,
                    end_time_unix_nano=t0 + 5 * 10**8,
                    attributes=attrs(
                        gen_ai__operation__name="invoke_agent", gen_ai__agent__name=f"agent-{a}"
                    ),
                    status=Status(code=1),
                )
            )
            for kind in ("chat", "chat", "execute_tool"):
                spans.append(
                    Span(
                        trace_id=trace,
                        span_id=ident(8),
                        parent_span_id=agent,
                        name=f"{kind} m",
                        start_time_unix_nano=t0 + 10**6,
                        end_time_unix_nano=t0 + 10**8,
                        attributes=attrs(
                            gen_ai__operation__name=kind,
                            gen_ai__request__model="m",
                            gen_ai__usage__input_tokens=100,
                            gen_ai__usage__output_tokens=20,
                        ),
                    )
                )
        while len(spans) >= batch and len(bodies) < requests:
            chunk, spans = spans[:batch], spans[batch:]
            message = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=chunk)])]
            )
            bodies.append(message.SerializeToString())
    return bodies, traces, agents


def start_serve(path: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmetrics", "--db", str(path), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stderr.readline()
    port = int(line.split()[3].removesuffix("/v1/traces").rsplit(":", 1)[1])
    return process, port


def stop_serve(process: subprocess.Popen) -> str:
    process.terminate()
    _, err = process.communicate(timeout=120)
    return err.strip()


def send(port: int, bodies: list[bytes], clients: int) -> tuple[float, list[float], int]:
    """Send the bodies from ``clients`` threads; wall seconds, latencies, non-200 count."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body in share:
            started = time.perf_counter()
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                failures[0] += response.status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, failures[0]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def serve_run(folder: Path, name: str, bodies, clients, expected, tracker: bool) -> dict:
    path = folder / f"{name}.db"
    process, port = start_serve(path)
    stop_file = folder / f"{name}.stop"
    tracking = None
    if tracker:
        tracking = subprocess.Popen(
            [sys.executable, "-c", TRACKER, str(path), str(stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # the tracker is writing before the load starts
    wall, latencies, failures = send(port, bodies, clients)
    tracked = {"errors": [], "lifecycles": 0, "executions": 0}
    if tracking is not None:
        stop_file.touch()
        tracked = json.loads(tracking.communicate(timeout=120)[0])
    summary = stop_serve(process)
    spans, traces, agents = expected
    stored = count(path, "SELECT count(*) FROM otel_spans")
    executions = count(path, "SELECT count(*) FROM agent_executions")
    orchestrations = count(path, "SELECT count(*) FROM orchestrations")
    tracker_rows = count(
        path, "SELECT count(*) FROM agent_executions WHERE agent_session_id NOT LIKE '%-%-%'"
    )
    return {
        "spans_per_s": spans / wall,
        "p50_ms": p(latencies, 0.5) * 1000,
        "p99_ms": p(latencies, 0.99) * 1000,
        "failed_requests": failures,
        "spans_lost": spans - stored,
        "executions_lost": agents + tracked["executions"] - executions,
        "orchestrations_lost": traces + tracked["lifecycles"] - orchestrations,
        "tracker_errors": len(tracked["errors"]),
        "tracker_lifecycles": tracked["lifecycles"],
        "serve": summary.splitlines()[-1] if summary else "",
        "_tracker_rows": tracker_rows,
    }


def push_run(folder: Path, calls: int) -> dict:
    timings = {}
    target = folder / "pushed.db"
    process, port = start_serve(target)
    try:
        for label, endpoint in (("no push", ""), ("push", f"http://127.0.0.1:{port}")):
            completed = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    PUSH_TIMING,
                    str(folder / f"{label}.db"),
                    endpoint,
                    str(calls),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            timings[label] = json.loads(completed.stdout)
    finally:
        stop_serve(process)
    base, pushed = timings["no push"]["timings"], timings["push"]["timings"]
    return {
        "calls": calls,
        "median_us": (statistics.median(base) * 1e6, statistics.median(pushed) * 1e6),
        "p99_us": (p(base, 0.99) * 1e6, p(pushed, 0.99) * 1e6),
        "sent": timings["push"]["sent"],
        "dropped": timings["push"]["dropped"],
        "received": count(target, "SELECT count(*) FROM agent_executions"),
    }


MIB = 1024 * 1024


def memory(pid: int) -> tuple[float, int]:
    """A process's resident memory (MB) and threads, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def abuser(port: int, leave: threading.Event, answers: list[bytes]) -> None:
    """Declare a 32 MiB body, send 30 MiB of it, stall until ``leave``; keep the answer."""
    chunk = b" " * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with contextlib.suppress(OSError):  # a refused client may be cut off mid-body
            sock.sendall(f"{head}Content-Length: {32 * MIB}\r\n\r\n".encode())
            for _ in range(30):
                sock.sendall(chunk)
        sock.settimeout(0.5)
        answer = b""
        with contextlib.suppress(OSError):
            answer = sock.recv(100)
        answers.append(answer)
        leave.wait()


def abuse_run(folder: Path, abusers: int) -> None:
    process, port = start_serve(folder / "abused.db")
    body = build_bodies(1, 512)[0][0]
    status = send(port, [body], 1)[2]
    before = memory(process.pid)
    leave, answers = threading.Event(), []
    threads = [
        threading.Thread(target=abuser, args=(port, leave, answers), daemon=True)
        for _ in range(abusers)
    ]
    for thread in threads:
        thread.start()
    peak = before
    deadline = time.monotonic() + 120
    while len(answers) < abusers and time.monotonic() < deadline:
        peak = max(peak, memory(process.pid))
        time.sleep(0.05)
    for _ in range(20):  # two more seconds of stalled clients
        peak = max(peak, memory(process.pid))
        time.sleep(0.1)
    refused = sum(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    leave.set()
    for thread in threads:
        thread.join()
    time.sleep(1.5)  # the server sees them go
    failed = send(port, [body], 1)[2]
    after = memory(process.pid)
    # SIGTERM with an idle keep-alive client and one trickling its headers.
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    idle.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    idle.getresponse().read()
    trickler = socket.create_connection(("127.0.0.1", port))
    trickler.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: ")
    stop = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            while not stop.wait(0.2):
                trickler.send(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(1)
    started = time.perf_counter()
    process.terminate()
    try:
        process.communicate(timeout=120)
        stopped = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        stopped = float("inf")
    stop.set()
    idle.close()
    trickler.close()
    print(
        f"{abusers} clients each sending 30 MiB of a 32 MiB body, then stalling:"
        f" serve RSS {before[0]:.0f} MB / {before[1]} threads before, peak"
        f" {peak[0]:.0f} MB / {peak[1]} threads, {after[0]:.0f} MB after they left;"
        f" {refused} of {abusers} answered 503"
    )
    print(
        f"a normal request before: {'served' if not status else 'FAILED'}, after:"
        f" {'served' if not failed else 'FAILED'}; SIGTERM with an idle and a trickling"
        f" client: exited in {stopped:.2f} s"
    )
    ok = peak[0] < 300 and not failed and stopped < 2
    print("goals (RSS < 300 MB, served after, exit < 2 s):", "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=2000, help="tracking calls timed")
    parser.add_argument("--abuse", action="store_true", help="serve under abusive clients")
    parser.add_argument("--abusers", type=int, default=20)
    args = parser.parse_args()
    if args.abuse:
        with tempfile.TemporaryDirectory() as tmp:
            abuse_run(Path(tmp), args.abusers)

    bodies, traces, agents = build_bodies(args.requests, args.batch)
    spans = args.requests * args.batch
    # The last trace may be cut at a batch boundary: count what was sent.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    sent_traces, sent_agents = set(), 0
    for body in bodies:
        message = ExportTraceServiceRequest.FromString(body)
        for span in message.resource_spans[0].scope_spans[0].spans:
            sent_traces.add(span.trace_id)
            sent_agents += span.name.startswith("invoke_agent")
    expected = (spans, len(sent_traces), sent_agents)
    print(
        f"{args.requests} protobuf requests of {args.batch} spans ({spans:,} spans,"
        f" {len(sent_traces):,} traces, {sent_agents:,} agent spans) from {args.clients} clients"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline = serve_run(folder, "baseline", bodies, args.clients, expected, tracker=False)
        loaded = serve_run(folder, "loaded", bodies, args.clients, expected, tracker=True)
        for name, run in (("baseline (serve alone)", baseline), ("with a tracker", loaded)):
            print(
                f"{name:24} {run['spans_per_s']:9,.0f} spans/s  p50 {run['p50_ms']:6.1f} ms"
                f"  p99 {run['p99_ms']:6.1f} ms  failed requests {run['failed_requests']}"
                f"  lost: spans {run['spans_lost']}, executions {run['executions_lost']},"
                f" orchestrations {run['orchestrations_lost']}"
            )
        speed = loaded["spans_per_s"] / baseline["spans_per_s"]
        print(
            f"tracker: {loaded['tracker_lifecycles']} lifecycles, {loaded['tracker_errors']}"
            f" errors; with it, serve runs at {speed:.2f}x the baseline's spans/s and"
            f" {loaded['p99_ms'] / baseline['p99_ms']:.2f}x its p99"
        )
        push = push_run(folder, args.calls)
        (base_median, push_median), (base_p99, push_p99) = push["median_us"], push["p99_us"]
        print(
            f"live push: complete_agent_execution median {base_median:.0f} us without,"
            f" {push_median:.0f} us with ({push_median / base_median:.2f}x); p99"
            f" {base_p99:.0f} us / {push_p99:.0f} us ({push_p99 / base_p99:.2f}x);"
            f" {push['sent']} spans sent, {push['dropped']} dropped,"
            f" {push['received']} executions received by serve"
        )
    ok = (
        loaded["spans_per_s"] >= 10_000
        and loaded["p99_ms"] < 100
        and loaded["spans_lost"] == loaded["executions_lost"] == 0
        and loaded["orchestrations_lost"] == 0
        and loaded["tracker_errors"] == 0
    )
    print("goals (>= 10,000 spans/s, p99 < 100 ms, 0 lost):", "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
