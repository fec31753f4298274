"""The live push: Monitor(otlp_endpoint=...) sends finished runs as OTLP/HTTP protobuf."""

import datetime as dt
import http.server
import json
import logging
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest
from click.testing import CliRunner
from dashboard_data import T0, Clock
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from test_otlp import _span_from_protobuf, all_spans

from agentmetrics import Monitor
from agentmetrics.cli import cli
from agentmetrics.errors import InvalidValue, MissingDependency


class Collector(http.server.ThreadingHTTPServer):
    """A stand-in OTLP/HTTP receiver that keeps every request (or hangs until released)."""

    daemon_threads = True

    def __init__(self, hang: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.hang = hang
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[dict]:
        out = []
        for _, _, body in self.requests:
            message = trace_service.ExportTraceServiceRequest.FromString(body)
            for resource_spans in message.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    out.extend(_span_from_protobuf(span) for span in scope_spans.spans)
        return out


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.hang:
            self.server.release.wait(30)
            return
        self.server.requests.append(
            (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _serve(collector: Collector):
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    yield collector
    collector.release.set()
    collector.shutdown()
    collector.server_close()


@pytest.fixture
def collector():
    yield from _serve(Collector())


@pytest.fixture
def hanging():
    yield from _serve(Collector(hang=True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def track_runs(monitor: Monitor, clock: Clock) -> None:
    """A completed and a failed orchestration, a standalone execution, and a running
    orchestration with one finished and one running execution."""
    clock.moment = T0
    done = monitor.start_orchestration("s-1", "Build feature", total_tasks=2)
    with monitor.orchestration("s-2", "Fix bug") as failing:
        pass
    failing_id = failing.id
    running = monitor.start_orchestration("s-3", "Long job")
    for agent_session, orchestration_id, status in [
        ("a-1", done, "completed"),
        ("a-2", done, "failed"),
        ("a-3", failing_id, "completed"),
        ("a-4", None, "completed"),
        ("a-5", running, "completed"),
    ]:
        clock.moment = T0
        monitor.start_agent_execution(agent_session, "coder", orchestration_id=orchestration_id)
        clock.moment = T0 + dt.timedelta(seconds=90)
        extra = {"error_message": "TimeoutError: slow"} if status == "failed" else {}
        monitor.complete_agent_execution(
            agent_session, status, model="m", input_tokens=10, cost_usd=0.5, **extra
        )
    monitor.start_agent_execution("a-6", "tester", orchestration_id=running)
    clock.moment = T0 + dt.timedelta(seconds=120)
    monitor.complete_orchestration("s-1", "completed", completed_tasks=1, failed_tasks=1)


def exported_spans(db_path) -> list[dict]:
    result = CliRunner().invoke(cli, ["--db", str(db_path), "export", "-f", "otlp"])
    assert result.exit_code == 0, result.output
    return all_spans([json.loads(line) for line in result.output.splitlines()])


def test_pushed_spans_are_the_exported_spans(db_path, collector):
    clock = Clock(T0)
    monitor = Monitor(db_path, clock=clock, otlp_endpoint=collector.url)
    track_runs(monitor, clock)
    monitor.close()
    assert {path for path, _, _ in collector.requests} == {"/v1/traces"}
    assert {h["content-type"] for _, h, _ in collector.requests} == {"application/x-protobuf"}
    # s-1 and s-2 (s-3 runs on), a-1..a-5 (a-6 runs on): the export's spans, byte for byte.
    pushed = sorted(collector.spans(), key=lambda s: s["spanId"])
    assert len(pushed) == 7
    assert pushed == sorted(exported_spans(db_path), key=lambda s: s["spanId"])
    assert (monitor.push.sent, monitor.push.dropped, monitor.push.waiting) == (7, 0, 0)


def test_endpoint_and_headers_from_the_environment(db_path, collector, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc,x-team=ml")
    monitor = Monitor(db_path, otlp_endpoint=True)
    with monitor.agent("coder"):
        pass
    monitor.close()
    ((path, headers, _),) = collector.requests
    assert path == "/v1/traces"
    assert (headers["authorization"], headers["x-team"]) == ("Bearer abc", "ml")


@pytest.mark.parametrize("suffix", ["", "/", "/v1/traces", "/v1/traces/"])
def test_a_base_url_or_the_full_traces_url(db_path, collector, suffix):
    # Phoenix's docs and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT write the full URL: it must
    # not become /v1/traces/v1/traces (every span dropped with a 405).
    monitor = Monitor(db_path, otlp_endpoint=collector.url + suffix)
    with monitor.agent("coder"):
        pass
    monitor.close()
    assert [path for path, _, _ in collector.requests] == ["/v1/traces"]
    assert (monitor.push.sent, monitor.push.dropped) == (1, 0)


def test_a_dead_endpoint_never_blocks_or_raises(db_path, caplog, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds a send may retry
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monitor = Monitor(db_path, otlp_endpoint=url)
    done = threading.Event()

    def track():
        for number in range(20):
            with monitor.orchestration(f"s-{number}") as orchestration, orchestration.agent("c"):
                pass
        done.set()

    thread = threading.Thread(target=track, daemon=True)
    thread.start()
    thread.join(30)
    assert done.is_set()
    with caplog.at_level(logging.WARNING, logger="agentmetrics"):
        monitor.push.close(timeout=1)
    assert (monitor.push.sent, monitor.push.dropped, monitor.push.waiting) == (0, 40, 0)
    assert f"40 spans could not be sent to {url}/v1/traces" in caplog.text
    monitor.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM agent_executions").fetchone() == (20,)


def test_the_queue_is_bounded_and_what_it_drops_is_counted(db_path, hanging):
    from agentmetrics.otel.push import LivePush

    monitor = Monitor(db_path)
    for number in range(30):
        with monitor.agent("coder", f"a-{number}"):
            pass
    push = LivePush(hanging.url, max_queue_size=8, timeout=1)
    for number in range(30):
        push.execution_finished(monitor.db, f"a-{number}")
    # The endpoint takes nothing: 8 wait (queued, or in a send that hangs), 22 dropped.
    assert (push.waiting, push.dropped, push.sent) == (8, 22, 0)
    push.close(timeout=0.5)
    assert (push.waiting, push.dropped, push.sent) == (0, 30, 0)
    monitor.close()


def test_a_run_kept_for_later_is_counted_as_dropped(db_path, collector):
    monitor = Monitor(db_path, busy_timeout=0.1, otlp_endpoint=collector.url)
    monitor.start_agent_execution("a-1", "coder")
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        monitor.complete_agent_execution("a-1", "completed")  # kept in the journal
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert monitor.pending == 1
    assert monitor.push.dropped == 1
    monitor.close()
    assert collector.requests == []


def test_spans_are_sent_at_exit(db_path, collector):
    script = textwrap.dedent(
        f"""
        import agentmetrics
        monitor = agentmetrics.Monitor({str(db_path)!r}, otlp_endpoint={collector.url!r})
        with monitor.orchestration("s-1") as orchestration:
            with orchestration.agent("coder"):
                pass
        # no close(): the exit sends what is queued
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    names = sorted(span["name"] for span in collector.spans())
    assert names == ["invoke_agent coder", "invoke_workflow"]


@pytest.mark.parametrize("endpoint", ["localhost:4318", "ftp://host", "", 4318])
def test_a_bad_endpoint_is_a_mistake(db_path, endpoint):
    with pytest.raises(InvalidValue, match="otlp_endpoint must be an http:// or https:// URL"):
        Monitor(db_path, otlp_endpoint=endpoint)


def test_without_the_otel_extra(db_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(MissingDependency, match=r"pip install 'agentmetrics-sqlite\[otel\]'"):
        Monitor(db_path, otlp_endpoint="http://127.0.0.1:4318")


def test_tracking_and_the_otel_modules_load_no_opentelemetry():
    """Importing tracking, the push, the export or the exchange loads no opentelemetry or
    protobuf module: the push loads them when a Monitor asks for one."""
    code = (
        "import sys, agentmetrics.monitor, agentmetrics.otel.push, agentmetrics.otel.export,"
        " agentmetrics.exchange;"
        " print(sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'google')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "[]\n"
