"""`agentmetrics serve`: the OTLP/HTTP receiver, checked against the OTLP/HTTP spec.

Responses are decoded with opentelemetry-proto's messages and a google.rpc.Status built
from its published definition here, not with the receiver's own encoder.
"""

import contextlib
import datetime as dt
import gzip
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from dashboard_data import T0, Clock
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from test_push import track_runs

from agentmetrics import Monitor
from agentmetrics.cli import cli
from agentmetrics.errors import InvalidValue
from agentmetrics.otel.receiver import Receiver

JSON, PROTOBUF = "application/json", "application/x-protobuf"


def _status_class():
    """google.rpc.Status (google/rpc/status.proto: int32 code = 1; string message = 2)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="test_status.proto", package="test.google.rpc", syntax="proto3"
    )
    message = proto.message_type.add(name="Status")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    message.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.google.rpc.Status"))


Status = _status_class()


@contextlib.contextmanager
def running(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def receiver(db_path):
    with running(Receiver(db_path, port=0, max_body=64 * 1024)) as server:
        yield server


def post(server, body, content_type=JSON, path="/v1/traces", method="POST", headers=(), timeout=30):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": content_type, **dict(headers)}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def span(
    trace="5b8efff798038103d269b633813fc60c",
    span_id="eee19b7ec3c1b174",
    name="invoke_agent coder",
    **extra,
):
    return {
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": "1772359200000000000",  # 2026-03-01T10:00:00Z
        "endTimeUnixNano": "1772359260000000000",  # one minute later
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
            {"key": "gen_ai.agent.name", "value": {"stringValue": "coder"}},
        ],
        "status": {"code": 1},
        **extra,
    }


def request(*spans):
    return {
        "resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": list(spans)}]}]
    }


def as_protobuf(payload):
    """The OTLP/JSON request as protobuf, via opentelemetry-proto (hex ids to bytes)."""
    import base64

    from google.protobuf import json_format

    converted = json.loads(json.dumps(payload))
    for resource_spans in converted["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for item in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in item:
                        item[key] = base64.b64encode(bytes.fromhex(item[key])).decode()
    return json_format.ParseDict(
        converted, trace_service.ExportTraceServiceRequest()
    ).SerializeToString()


def executions(db_path):
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT agent_name, status, started_at, duration_ms FROM agent_executions"
        ).fetchall()


ONE_MINUTE_RUN = [("coder", "completed", "2026-03-01T10:00:00.000Z", 60000)]


def test_json_request(receiver, db_path):
    status, headers, body = post(receiver, json.dumps(request(span())).encode())
    assert status == 200
    assert headers["Content-Type"] == JSON
    # An ExportTraceServiceResponse with no partial_success: the empty message.
    assert json.loads(body) == {}
    assert executions(db_path) == ONE_MINUTE_RUN


def test_protobuf_request(receiver, db_path):
    status, headers, body = post(receiver, as_protobuf(request(span())), PROTOBUF)
    assert status == 200
    assert headers["Content-Type"] == PROTOBUF
    response = trace_service.ExportTraceServiceResponse.FromString(body)
    assert not response.HasField("partial_success")
    assert executions(db_path) == ONE_MINUTE_RUN


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_gzip_request(receiver, db_path, content_type):
    payload = request(span())
    raw = as_protobuf(payload) if content_type == PROTOBUF else json.dumps(payload).encode()
    status, _, _ = post(
        receiver, gzip.compress(raw), content_type, headers={"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert executions(db_path) == ONE_MINUTE_RUN


def test_partial_success_json(receiver, db_path):
    bad = span(trace="0" * 32, span_id="1111111111111111", name="bad")
    status, _, body = post(receiver, json.dumps(request(span(), bad)).encode())
    assert status == 200
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1"  # int64: a string in the JSON mapping
    assert "traceId" in partial["errorMessage"]
    assert executions(db_path) == ONE_MINUTE_RUN


def test_partial_success_protobuf(receiver, db_path):
    bad = span(span_id="0" * 16, name="bad")
    good = span(trace="6b8efff798038103d269b633813fc60c")
    status, _, body = post(receiver, as_protobuf(request(good, bad)), PROTOBUF)
    assert status == 200
    response = trace_service.ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "spanId" in response.partial_success.error_message
    assert executions(db_path) == ONE_MINUTE_RUN


@pytest.mark.parametrize(
    "body, content_type",
    [(b"{not json", JSON), (b'{"resourceSpans": 5}', JSON), (b"\xff\xff\xff garbage", PROTOBUF)],
)
def test_bad_request(receiver, db_path, body, content_type):
    status, headers, raw = post(receiver, body, content_type)
    assert status == 400
    assert headers["Content-Type"] == content_type
    if content_type == PROTOBUF:
        reply = Status.FromString(raw)
        message = reply.message
    else:
        message = json.loads(raw)["message"]
    assert message
    assert executions(db_path) == []
    # The server carries on.
    assert post(receiver, json.dumps(request(span())).encode())[0] == 200


def test_bad_gzip(receiver):
    status, _, raw = post(receiver, b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert "gzip" in json.loads(raw)["message"]


def test_unsupported_content_type_and_encoding(receiver):
    status, _, raw = post(receiver, b"hello", "text/plain")
    assert status == 415
    assert "text/plain" in json.loads(raw)["message"]
    status, _, _ = post(receiver, b"x", headers={"Content-Encoding": "br"})
    assert status == 415


def test_requests_after_a_quick_one_are_one_transaction_each(db_path, monkeypatch):
    # The batch size learnt on one request carries to the next: a 600-span request
    # after a quick one is one transaction, not 500 spans and then 100.
    import types

    from agentmetrics.otel import ingest
    from agentmetrics.store import batching

    written = []
    write = ingest._write
    monkeypatch.setattr(ingest, "_write", lambda db, spans, result: (
        written.append(len(spans)), write(db, spans, result)
    ))  # fmt: skip
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    server = Receiver(db_path, port=0)
    try:
        for r in range(2):
            spans = [span(trace=f"{r + 1:032x}", span_id=f"{s + 1:016x}") for s in range(600)]
            assert server.ingest(json.dumps(request(*spans)).encode(), JSON) == (0, "")
    finally:
        server.server_close()
    assert written == [500, 100, 600]
    assert len(executions(db_path)) == 1200


def test_other_paths_and_methods(receiver):
    assert post(receiver, b"{}", path="/v1/metrics")[0] == 404
    status, headers, _ = post(receiver, None, method="GET")
    assert status == 405
    assert headers["Allow"] == "POST"
    assert post(receiver, None, method="PUT")[0] == 405


def test_body_over_the_limit(receiver, db_path):
    status, _, raw = post(receiver, b" " * (64 * 1024 + 1))
    assert status == 413
    # Small compressed, over the limit once decompressed.
    bomb = gzip.compress(json.dumps(request(span())).encode() + b" " * (200 * 1024))
    assert len(bomb) < 64 * 1024
    status, _, _ = post(receiver, bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert executions(db_path) == []


def test_a_locked_database_asks_the_client_to_retry(db_path):
    # busy_timeout_ms, not a patched module constant: the receiver binds its own default.
    with running(Receiver(db_path, port=0, busy_timeout_ms=100)) as receiver:
        # The write waits 100 ms for the lock, not serve's default 2 s.
        assert receiver.db.execute("PRAGMA busy_timeout").fetchone() == (100,)
        blocker = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, headers, raw = post(receiver, json.dumps(request(span())).encode())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert status == 503
        assert int(headers["Retry-After"]) > 0
        assert json.loads(raw)["code"] == 14  # UNAVAILABLE
        assert post(receiver, json.dumps(request(span())).encode())[0] == 200


def test_a_locked_database_is_answered_before_the_client_gives_up(db_path, receiver):
    # No shortened busy timeout here: serve's own must answer 503 well before the
    # 10 s an OTLP exporter waits (the default 30 s would time this client out).
    blocker = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        body = as_protobuf(request(span()))
        status, headers, raw = post(receiver, body, PROTOBUF, timeout=8)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert Status.FromString(raw).code == 14  # UNAVAILABLE
    assert executions(db_path) == []
    assert post(receiver, body, PROTOBUF)[0] == 200
    assert executions(db_path) == ONE_MINUTE_RUN


# -- a full server: caps on connections and on the bytes requests hold ------------------


def until(condition, seconds=10):
    """Poll ``condition`` until it holds (a bounded wait for another thread, not a timing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def stalled(server, declared, sent):
    """A client that declares a ``declared``-byte body, sends ``sent`` bytes of it and stalls."""
    sock = socket.create_connection(server.server_address[:2], timeout=30)
    head = f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\n"
    sock.sendall(f"{head}Content-Length: {declared}\r\n\r\n".encode() + b" " * sent)
    return sock


def assert_retry_later(status, headers, raw):
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert json.loads(raw)["code"] == 14  # UNAVAILABLE


def test_connections_over_the_cap_are_asked_to_retry(db_path):
    body = json.dumps(request(span())).encode()
    with running(Receiver(db_path, port=0, max_connections=2)) as server:
        idle = []
        for _ in range(2):  # keep-alive clients, idle after one request
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
            conn.request("POST", "/v1/traces", body, {"Content-Type": JSON})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            idle.append(conn)
        assert_retry_later(*post(server, body))
        for conn in idle:
            conn.close()
        # Once the server has seen them go, a client is served again.
        until(lambda: post(server, body)[0] == 200)
    assert server.totals.failed_requests >= 1


def test_bodies_over_the_buffered_cap_are_asked_to_retry(db_path):
    body = json.dumps(request(span())).encode().ljust(10 * 1024)  # spaces: still JSON
    limits = {"max_body": 64 * 1024, "max_buffered": 128 * 1024}
    with running(Receiver(db_path, port=0, **limits)) as server:
        # Two clients hold 120 KiB of the 128 KiB, sending slowly: no room for 10 KiB more.
        abusers = [stalled(server, 60 * 1024, 50 * 1024) for _ in range(2)]
        until(lambda: server.budget.held == 120 * 1024)
        assert_retry_later(*post(server, body))
        assert executions(db_path) == []
        for sock in abusers:
            sock.close()
        until(lambda: post(server, body)[0] == 200)
        until(lambda: server.budget.held == 0)  # all given back
    assert executions(db_path) == ONE_MINUTE_RUN


def test_a_decompressed_body_counts_against_the_buffered_cap(db_path):
    # 40 KiB held by a stalled client, a gzip body of a few hundred bytes that inflates
    # to 30 KiB: together over 64 KiB only when the decompressed bytes count.
    payload = json.dumps(request(span())).encode().ljust(30 * 1024)
    compressed = gzip.compress(payload)
    limits = {"max_body": 64 * 1024, "max_buffered": 64 * 1024}
    with running(Receiver(db_path, port=0, **limits)) as server:
        abuser = stalled(server, 40 * 1024, 1024)
        until(lambda: server.budget.held == 40 * 1024)
        assert len(compressed) + 40 * 1024 < 64 * 1024
        gzipped = {"Content-Encoding": "gzip"}
        assert_retry_later(*post(server, compressed, headers=gzipped))
        abuser.close()
        until(lambda: post(server, compressed, headers=gzipped)[0] == 200)
    assert executions(db_path) == ONE_MINUTE_RUN


def test_a_request_being_stored_when_the_server_stops_is_asked_to_retry(db_path, monkeypatch):
    from agentmetrics.otel import ingest

    spans = [span(trace=f"{s + 1:032x}", span_id=f"{s + 1:016x}") for s in range(600)]
    body = json.dumps(request(*spans)).encode()
    write = ingest._write
    with running(Receiver(db_path, port=0)) as server:

        def stop_after_one_transaction(db, batch, result):
            write(db, batch, result)
            server._stopping.set()  # what server_close does first

        monkeypatch.setattr(ingest, "_write", stop_after_one_transaction)
        assert_retry_later(*post(server, body))
    assert len(executions(db_path)) == 500  # the first transaction; the rest was not begun
    monkeypatch.setattr(ingest, "_write", write)
    with running(Receiver(db_path, port=0)) as server:  # the client sends it again
        assert post(server, body)[0] == 200
    assert len(executions(db_path)) == 600


def test_the_buffered_cap_holds_at_least_one_body(db_path):
    with pytest.raises(InvalidValue, match="max_buffered"):
        Receiver(db_path, port=0, max_body=1024, max_buffered=1000)


# -- the command, and the live push end to end -----------------------------------------


def start_serve(db_path, *args):
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmetrics", "--db", str(db_path), "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A shell starts background jobs with SIGINT ignored, which the child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = process.stderr.readline()
    assert line.startswith("Receiving traces on http://127.0.0.1:"), line
    url = line.split()[3].removesuffix("/v1/traces")
    return process, url


def stop_serve(process, signum):
    """Send ``signum`` and wait for the server to exit; return its stderr (killed if it hangs)."""
    process.send_signal(signum)
    try:
        return process.communicate(timeout=30)[1]
    finally:
        process.kill()  # a no-op once it has exited
        process.wait()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_cleanly(tmp_path, stop):
    target = tmp_path / "received.db"
    process, url = start_serve(target)
    try:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/v1/traces", json.dumps(request(span())), {"Content-Type": JSON})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        err = stop_serve(process, stop)
    assert process.returncode == 0, err
    assert err.splitlines() == ["Stopped: 1 spans stored, 0 rejected, in 1 requests (0 refused)"]
    assert executions(target) == ONE_MINUTE_RUN


@pytest.mark.parametrize("client", ["idle keep-alive", "trickling headers", "trickling body"])
def test_sigterm_stops_serve_whatever_its_clients_do(tmp_path, client):
    process, url = start_serve(tmp_path / "received.db")
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    stop = threading.Event()
    try:
        if client == "idle keep-alive":
            conn.request("POST", "/v1/traces", json.dumps(request(span())), {"Content-Type": JSON})
            response = conn.getresponse()
            response.read()
            assert response.status == 200  # and the connection stays open, idle
        else:
            conn.connect()
            head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
            if client == "trickling body":
                head += f"Content-Type: {JSON}\r\nContent-Length: 100000\r\n\r\n"
            conn.sock.sendall(head.encode())

            def trickle():
                with contextlib.suppress(OSError):
                    while not stop.wait(0.2):
                        conn.sock.send(b"x")

            threading.Thread(target=trickle, daemon=True).start()
            time.sleep(0.5)  # a few bytes arrived: the server is reading them
        process.send_signal(signal.SIGTERM)
        # The target is 2 s; before the fix this took the 60 s idle timeout (or never
        # ended while a client trickled). 10 s leaves room for a loaded machine.
        err = process.communicate(timeout=10)[1]
    finally:
        stop.set()
        conn.close()
        process.kill()  # a no-op once it has exited
        process.wait()
    assert process.returncode == 0, err
    assert err.splitlines()[-1].startswith("Stopped: ")


def test_serve_command_buffered_cap_under_the_body_limit(tmp_path):
    args = ["--db", str(tmp_path / "a.db"), "serve", "--max-body-mib", "8"]
    result = CliRunner().invoke(cli, [*args, "--max-buffered-mib", "4"])
    assert result.exit_code == 2
    assert "Invalid value for --max-buffered-mib: 4 is under --max-body-mib (8)" in result.output
    assert not (tmp_path / "a.db").exists()


def test_serve_command_bad_port(tmp_path):
    blocker = Receiver(tmp_path / "a.db", port=0)
    try:
        port = blocker.server_address[1]
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentmetrics",
                "--db",
                str(tmp_path / "b.db"),
                "serve",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        blocker.server_close()
    assert completed.returncode == 1
    assert completed.stderr.startswith(f"Error: Cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in completed.stderr


ROW_COLUMNS = {
    "orchestrations": "session_id, task_description, status, started_at, completed_at,"
    " duration_ms, total_tasks, completed_tasks, failed_tasks",
    "agent_executions": "agent_session_id, agent_name, status, started_at, completed_at,"
    " duration_ms, error_message, model, input_tokens, output_tokens, cost_usd,"
    " (SELECT session_id FROM orchestrations o WHERE o.id = orchestration_id)",
}


def rows(path, table, where):
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(f"SELECT {ROW_COLUMNS[table]} FROM {table} WHERE {where}"))


def test_live_push_into_serve_end_to_end(tmp_path):
    source, target = tmp_path / "tracked.db", tmp_path / "received.db"
    process, url = start_serve(target)
    try:
        clock = Clock(T0)
        monitor = Monitor(source, clock=clock, otlp_endpoint=url)
        track_runs(monitor, clock)
        clock.moment = T0 + dt.timedelta(seconds=200)
        monitor.complete_agent_execution("a-6", "completed", output_tokens=7)
        monitor.complete_orchestration("s-3", "partial")
        monitor.close()
        assert (monitor.push.sent, monitor.push.dropped) == (9, 0)
    finally:
        stop_serve(process, signal.SIGTERM)
    assert process.returncode == 0
    # Everything finished arrives: the same orchestrations and executions.
    finished = "status != 'running' AND status != 'in_progress'"
    assert len(rows(source, "orchestrations", finished)) == 3
    assert rows(target, "orchestrations", "1") == rows(source, "orchestrations", finished)
    assert len(rows(source, "agent_executions", finished)) == 6
    assert rows(target, "agent_executions", "1") == rows(source, "agent_executions", finished)
