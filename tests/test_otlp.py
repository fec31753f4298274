import datetime as dt
import hashlib
import json
import re
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import cli_result
from dashboard_data import T0, Clock, build
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service

from agentmetrics import Monitor
from agentmetrics.cli import cli
from agentmetrics.exchange import iter_sessions
from agentmetrics.otel.export import error_type, iter_requests

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
SPAN_FIELDS = {
    "traceId",
    "spanId",
    "parentSpanId",
    "flags",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "status",
}
VALUE_KINDS = {"stringValue", "intValue", "boolValue", "doubleValue"}


def nanos(moment: dt.datetime) -> str:
    return str(int(moment.timestamp()) * 10**9)


def export_lines(db_path, *args):
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "export", "--format", "otlp", *args], catch_exceptions=False
    )
    assert result.exit_code == 0
    return [json.loads(line) for line in result.stdout.splitlines()]


def all_spans(requests):
    spans = []
    for request in requests:
        assert set(request) == {"resourceSpans"}
        for resource_spans in request["resourceSpans"]:
            assert set(resource_spans) == {"resource", "scopeSpans"}
            assert resource_spans["resource"]["attributes"] == [
                {"key": "service.name", "value": {"stringValue": "agentmetrics"}}
            ]
            for scope_spans in resource_spans["scopeSpans"]:
                assert set(scope_spans) == {"scope", "spans"}
                assert scope_spans["scope"]["name"] == "agentmetrics"
                spans.extend(scope_spans["spans"])
    return spans


def attrs(span):
    out = {}
    for item in span["attributes"]:
        assert set(item) == {"key", "value"}
        ((kind, value),) = item["value"].items()
        assert kind in VALUE_KINDS
        if kind == "intValue":
            assert isinstance(value, str) and value.lstrip("-").isdigit()
            value = int(value)
        out[item["key"]] = value
    return out


def by_session(spans):
    """Spans by session: the agent session of an execution, the session of a workflow."""
    out = {}
    for span in spans:
        a = attrs(span)
        out[a.get("agentmetrics.agent_session_id", a["session.id"])] = span
    return out


@pytest.fixture
def exported(db_path):
    ids = build(db_path)
    return ids, all_spans(export_lines(db_path))


def test_structure_and_encoding(exported):
    ids, spans = exported
    for span in spans:
        assert set(span) <= SPAN_FIELDS
        assert HEX32.match(span["traceId"]) and span["traceId"] != "0" * 32
        assert HEX16.match(span["spanId"])
        assert "parentSpanId" not in span or HEX16.match(span["parentSpanId"])
        assert span["kind"] == 1
        assert span["flags"] == 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: a local parent
        start, end = span["startTimeUnixNano"], span["endTimeUnixNano"]
        assert isinstance(start, str) and isinstance(end, str)
        assert int(start) <= int(end)
        assert span["status"]["code"] in (0, 1, 2)
    assert len({s["spanId"] for s in spans}) == len(spans)


def test_traces_and_parent_links(exported):
    ids, spans = exported
    by_conversation = by_session(spans)
    # Finished only: s-3 (running), a-6 and a-7 (in progress) are left out.
    assert sorted(by_conversation) == ["a-1", "a-2", "a-3", "a-4", "a-5", "s-1", "s-2"]
    s1, s2 = by_conversation["s-1"], by_conversation["s-2"]
    assert s1["traceId"] != s2["traceId"]
    for child, parent in (("a-1", s1), ("a-2", s1), ("a-3", s2), ("a-4", s2)):
        assert by_conversation[child]["traceId"] == parent["traceId"]
        assert by_conversation[child]["parentSpanId"] == parent["spanId"]
    assert "parentSpanId" not in s1
    standalone = by_conversation["a-5"]
    assert "parentSpanId" not in standalone
    assert standalone["traceId"] not in (s1["traceId"], s2["traceId"])
    # Deterministic ids derived from ours.
    assert (
        s1["traceId"]
        == hashlib.sha256(f"agentmetrics/trace/{ids['s-1']}".encode()).hexdigest()[:32]
    )


def test_workflow_span(exported):
    ids, spans = exported
    span = by_session(spans)["s-1"]
    assert span["name"] == "invoke_workflow Build feature"
    assert span["startTimeUnixNano"] == nanos(T0)
    assert span["endTimeUnixNano"] == nanos(T0 + dt.timedelta(seconds=300))
    assert span["status"] == {"code": 1}
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "invoke_workflow"
    assert a["gen_ai.workflow.name"] == "Build feature"
    assert a["agentmetrics.orchestration.id"] == ids["s-1"]
    assert (a["agentmetrics.completed_tasks"], a["agentmetrics.failed_tasks"]) == (1, 1)
    failed = by_session(spans)["s-2"]
    assert failed["status"]["code"] == 2
    assert attrs(failed)["error.type"] == "orchestration_failed"


def test_agent_spans(exported):
    ids, spans = exported
    by_conversation = by_session(spans)
    ok = by_conversation["a-1"]
    assert ok["name"] == "invoke_agent coder"
    assert ok["startTimeUnixNano"] == nanos(T0)
    assert ok["endTimeUnixNano"] == nanos(T0 + dt.timedelta(seconds=60))
    assert ok["status"] == {"code": 1}
    a = attrs(ok)
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "coder"
    assert a["gen_ai.agent.id"] == ids["a-1"]
    assert (a["agentmetrics.files_created"], a["agentmetrics.files_modified"]) == (2, 3)
    assert a["agentmetrics.self_healed"] is False
    assert "error.type" not in a

    failed = by_conversation["a-2"]
    assert failed["status"] == {"code": 2, "message": "TimeoutError: too slow"}
    a = attrs(failed)
    assert a["error.type"] == "TimeoutError"
    assert a["agentmetrics.retry_count"] == 2
    assert a["agentmetrics.self_healed"] is True

    tokens = attrs(by_conversation["a-3"])
    assert tokens["gen_ai.request.model"] == "m-small"
    assert (tokens["gen_ai.usage.input_tokens"], tokens["gen_ai.usage.output_tokens"]) == (
        1000,
        500,
    )
    assert attrs(by_conversation["a-4"])["agentmetrics.cost_usd"] == 0.25


def test_export_is_deterministic(db_path, tmp_path):
    build(db_path)
    out = tmp_path / "traces.jsonl"
    CliRunner().invoke(cli, ["--db", str(db_path), "export", "-f", "otlp", "-o", str(out)])
    first = out.read_text()
    assert (
        first
        == "\n".join(json.dumps(r, separators=(",", ":")) for r in export_lines(db_path)) + "\n"
    )
    assert export_lines(db_path) == [json.loads(line) for line in first.splitlines()]


def test_batches(db_path):
    build(db_path)
    requests = list(iter_requests(iter_sessions(db_path), batch_size=1))
    # s-1 (3 spans), s-2 (3 spans), s-3 (running: nothing), then the standalone a-5
    # alone (a-7 is in progress).
    assert [len(all_spans([r])) for r in requests] == [3, 3, 1]
    with pytest.raises(ValueError):
        list(iter_requests([], batch_size=0))


def test_empty_database(db):
    assert export_lines(db.conn.execute("PRAGMA database_list").fetchone()[2]) == []


@pytest.mark.parametrize(
    "message, expected",
    [
        ("TimeoutError: too slow", "TimeoutError"),
        ("subprocess.CalledProcessError: exit 1", "subprocess.CalledProcessError"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("the agent gave up", "_OTHER"),
        (None, "_OTHER"),
    ],
)
def test_error_type(message, expected):
    assert error_type(message) == expected


# -- OTLP: non-finite values and what the export message counts ----------------------------


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def _strict_json(line):
    def reject(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(line, parse_constant=reject)


def test_otlp_non_finite_double_is_still_json(monitor, db_path):
    # The tracking API refuses cost_usd=inf, but another writer can store it.
    monitor.start_agent_execution("a-inf", "coder")
    monitor.complete_agent_execution("a-inf", "completed", cost_usd=1.0)
    monitor.db.execute("UPDATE agent_executions SET cost_usd = 9e999")  # inf
    result = cli_result("--db", db_path, "export", "--format", "otlp")
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    (span,) = _strict_json(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    values = {a["key"]: a["value"] for a in span["attributes"]}
    assert values["agentmetrics.cost_usd"] == {"doubleValue": "Infinity"}


def test_otlp_export_message_counts_what_was_written(data_path, tmp_path, db):
    # Running orchestrations and executions in progress have no end time and are left
    # out; a finished execution of a running orchestration is written.
    running = db.execute("SELECT id FROM orchestrations WHERE status = 'running'").fetchone()[0]
    Monitor(db).start_agent_execution("a-8", "coder", orchestration_id=running)
    Monitor(db).complete_agent_execution("a-8", "completed")
    finished_orchestrations = db.execute(
        "SELECT count(*) FROM orchestrations WHERE status != 'running'"
    ).fetchone()[0]
    finished_executions = db.execute(
        "SELECT count(*) FROM agent_executions e LEFT JOIN orchestrations o"
        " ON o.id = e.orchestration_id WHERE e.status != 'in_progress'"
    ).fetchone()[0]
    all_rows = db.execute(
        "SELECT (SELECT count(*) FROM orchestrations), (SELECT count(*) FROM agent_executions)"
    ).fetchone()
    assert all_rows != (finished_orchestrations, finished_executions)  # the data has both
    target = tmp_path / "traces.jsonl"
    result = cli_result("--db", data_path, "export", "--format", "otlp", "-o", target)
    assert result.exit_code == 0, result.output
    spans = [
        span
        for line in target.read_text().splitlines()
        for span in json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    ]
    workflows = sum(span["name"].startswith("invoke_workflow") for span in spans)
    assert (workflows, len(spans) - workflows) == (finished_orchestrations, finished_executions)
    assert result.output == (
        f"Exported {finished_orchestrations} orchestrations and {finished_executions}"
        f" executions to {target}\n"
    )


# -- what backends need: span kinds, sessions, running orchestrations, protobuf ------------


def test_openinference_span_kinds(exported):
    _, spans = exported
    kinds = {
        agent: attrs(span)["openinference.span.kind"] for agent, span in by_session(spans).items()
    }
    assert kinds == {
        "s-1": "CHAIN",
        "s-2": "CHAIN",
        **dict.fromkeys(["a-1", "a-2", "a-3", "a-4", "a-5"], "AGENT"),
    }


def test_executions_carry_their_orchestrations_session(exported):
    _, spans = exported
    sessions = {
        agent: (attrs(span)["session.id"], attrs(span)["gen_ai.conversation.id"])
        for agent, span in by_session(spans).items()
        if agent.startswith("a-")
    }
    assert sessions == {
        "a-1": ("s-1", "s-1"),
        "a-2": ("s-1", "s-1"),
        "a-3": ("s-2", "s-2"),
        "a-4": ("s-2", "s-2"),
        "a-5": ("a-5", "a-5"),  # no orchestration: its own session
    }
    workflow = attrs(by_session(spans)["s-1"])
    assert (workflow["session.id"], workflow["gen_ai.conversation.id"]) == ("s-1", "s-1")


def test_finished_execution_of_running_orchestration(db_path):
    clock = Clock(T0)
    monitor = Monitor(db_path, clock=clock)
    orchestration_id = monitor.start_orchestration("s-run", "Long job")
    monitor.start_agent_execution("a-done", "coder", orchestration_id=orchestration_id)
    monitor.start_agent_execution("a-busy", "tester", orchestration_id=orchestration_id)
    clock.moment = T0 + dt.timedelta(seconds=30)
    monitor.complete_agent_execution("a-done", "completed")
    trace = hashlib.sha256(f"agentmetrics/trace/{orchestration_id}".encode()).hexdigest()[:32]
    parent = hashlib.sha256(f"agentmetrics/orchestration/{orchestration_id}".encode()).hexdigest()
    (span,) = all_spans(export_lines(db_path))
    assert attrs(span)["agentmetrics.agent_session_id"] == "a-done"
    assert (span["traceId"], span["parentSpanId"]) == (trace, parent[:16])
    assert attrs(span)["session.id"] == "s-run"
    # When the workflow finishes, its span is the parent the execution already named.
    clock.moment = T0 + dt.timedelta(seconds=60)
    monitor.complete_agent_execution("a-busy", "completed")
    monitor.complete_orchestration("s-run", "completed")
    monitor.close()
    spans = by_session(all_spans(export_lines(db_path)))
    assert spans["s-run"]["spanId"] == parent[:16]
    assert spans["s-run"]["traceId"] == trace
    assert spans["a-done"] == span


def test_demo_exports_every_finished_execution(tmp_path):
    path = tmp_path / "demo.db"
    assert cli_result("--db", path, "demo").exit_code == 0
    with sqlite3.connect(path) as conn:
        finished = conn.execute(
            "SELECT count(*) FROM agent_executions WHERE status != 'in_progress'"
        ).fetchone()[0]
        in_running = conn.execute(
            "SELECT count(*) FROM agent_executions e JOIN orchestrations o"
            " ON o.id = e.orchestration_id"
            " WHERE e.status != 'in_progress' AND o.status = 'running'"
        ).fetchone()[0]
    assert in_running > 0  # the case the export used to leave out
    spans = all_spans(export_lines(path))
    assert sum("agentmetrics.agent_session_id" in attrs(s) for s in spans) == finished


def _hex(raw: bytes) -> str:
    return raw.hex()


def _value_from_protobuf(value):
    kind = value.WhichOneof("value")
    raw = getattr(value, kind)
    if kind == "string_value":
        return {"stringValue": raw}
    if kind == "int_value":
        return {"intValue": str(raw)}
    if kind == "bool_value":
        return {"boolValue": raw}
    assert kind == "double_value"
    return {"doubleValue": raw}


def _span_from_protobuf(span):
    """A decoded protobuf span in the OTLP/JSON mapping (spec: hex ids, int64 as strings)."""
    out = {"traceId": _hex(span.trace_id), "spanId": _hex(span.span_id)}
    if span.parent_span_id:
        out["parentSpanId"] = _hex(span.parent_span_id)
    status = {"code": span.status.code}
    if span.status.message:
        status["message"] = span.status.message
    out.update(
        flags=span.flags,
        name=span.name,
        kind=span.kind,
        startTimeUnixNano=str(span.start_time_unix_nano),
        endTimeUnixNano=str(span.end_time_unix_nano),
        attributes=[
            {"key": a.key, "value": _value_from_protobuf(a.value)} for a in span.attributes
        ],
        status=status,
    )
    return out


def test_protobuf_export_is_the_json_export(data_path, tmp_path):
    Monitor(data_path).start_agent_execution("a-8", "coder")  # in progress: left out of both
    target = tmp_path / "traces.pb"
    result = cli_result("--db", data_path, "export", "--format", "otlp-protobuf", "-o", target)
    assert result.exit_code == 0, result.output
    message = trace_service.ExportTraceServiceRequest()
    message.ParseFromString(target.read_bytes())  # the whole file is one message
    spans = []
    for resource_spans in message.resource_spans:
        (resource,) = resource_spans.resource.attributes
        assert (resource.key, resource.value.string_value) == ("service.name", "agentmetrics")
        for scope_spans in resource_spans.scope_spans:
            assert scope_spans.scope.name == "agentmetrics"
            spans.extend(_span_from_protobuf(span) for span in scope_spans.spans)
    assert spans == all_spans(export_lines(data_path))
    assert len(spans) == 7
    assert result.output == f"Exported 2 orchestrations and 5 executions to {target}\n"


def test_protobuf_export_to_a_pipe(data_path, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentmetrics",
            "--db",
            str(data_path),
            "export",
            "-f",
            "otlp-protobuf",
            "s-1",
        ],
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    message = trace_service.ExportTraceServiceRequest.FromString(completed.stdout)
    names = [s.name for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == ["invoke_workflow Build feature", "invoke_agent coder", "invoke_agent reviewer"]


def test_protobuf_export_without_the_otel_extra(data_path, tmp_path, monkeypatch):
    from agentmetrics.otel import export as otlp

    otlp._sdk.cache_clear()
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    target = tmp_path / "traces.pb"
    try:
        result = cli_result("--db", data_path, "export", "-f", "otlp-protobuf", "-o", target)
    finally:
        otlp._sdk.cache_clear()
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: OTLP protobuf and the live push need the otel extra (opentelemetry.sdk.trace is"
        " missing): pip install 'agentmetrics-sqlite[otel]'"
    ]
    assert not target.exists() and list(tmp_path.glob(".traces.pb*")) == []
