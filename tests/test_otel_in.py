"""OpenTelemetry in: spans become orchestrations and executions (agentmetrics.otel).

Spans are written by hand here as OTLP/JSON, and every expected number is read off
the spans themselves (durations, tokens), not from the code under test.
"""

import datetime as dt
import gzip
import json
import random
import sqlite3
import subprocess
import sys
import uuid

import pytest
from conftest import cli_result, no_traceback
from dashboard_data import T0, Clock, build

import agentmetrics
from agentmetrics.demo import build_demo
from agentmetrics.errors import InvalidExport, InvalidValue
from agentmetrics.exchange import export
from agentmetrics.otel.ingest import ingest_files, ingest_request, ingest_spans
from agentmetrics.otel.spans import decode_json
from agentmetrics.store.tasks import TASK_COUNTS_SQL, orchestration_status

T = 1_780_000_000_000_000_000  # 2026-05-28T20:26:40Z, in nanoseconds
MS = 1_000_000
TRACE = "0af7651916cd43dd8448eb211c80319c"


def value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


def span(number, parent, name, start_ms, end_ms, attributes=(), status=None, events=()):
    """An OTLP/JSON span of :data:`TRACE`; span ids are numbers (0x...01 for 1)."""
    raw = {
        "traceId": TRACE,
        "spanId": f"{number:016x}",
        "name": name,
        "startTimeUnixNano": str(T + start_ms * MS),
        "endTimeUnixNano": str(T + end_ms * MS),
        "attributes": [{"key": k, "value": value(v)} for k, v in dict(attributes).items()],
        "events": [
            {"name": n, "attributes": [{"key": k, "value": value(v)} for k, v in a.items()]}
            for n, a in events
        ],
    }
    if parent:
        raw["parentSpanId"] = f"{parent:016x}"
    if status:
        raw["status"] = status
    return raw


def oi(kind, **attributes):
    """OpenInference attributes (dots spelled as underscores)."""
    dotted = {k.replace("_", "."): v for k, v in attributes.items()}
    return {"openinference.span.kind": kind} | dotted


def llm(model, prompt, completion):
    return oi("LLM") | {
        "llm.model_name": model,
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
    }


def genai(operation, **attributes):
    return {"gen_ai.operation.name": operation} | {f"gen_ai.{k}": v for k, v in attributes.items()}


def request(*spans):
    return {
        "resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": list(spans)}]}]
    }


def rows(path, table, skip=()):
    """Every row of ``table`` by id, as dicts without the ``skip`` columns."""
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        found = [dict(zip(names, values, strict=True)) for values in cursor]
    finally:
        conn.close()
    return {r["id"]: {k: v for k, v in r.items() if k not in skip} for r in found}


def executions_by_name(path):
    return {r["agent_name"]: r for r in rows(path, "agent_executions").values()}


# An OpenInference trace: a LangGraph-like root chain, agent A with an LLM call and a
# tool call, and agent B handed off to from inside A, with its own LLM call.
OPENINFERENCE = [
    span(1, None, "LangGraph", 0, 1000, oi("CHAIN", session_id="chat-7")),
    span(2, 1, "researcher_agent", 10, 600, oi("AGENT")),
    span(3, 2, "ChatModel", 20, 120, llm("m-1", 5, 2)),
    span(4, 2, "search", 130, 180, oi("TOOL", tool_name="search")),
    span(5, 2, "handoff", 200, 590, oi("CHAIN")),
    span(6, 5, "writer_agent", 210, 580, oi("AGENT")),
    span(7, 6, "ChatModel", 220, 560, llm("m-2", 3, 1)),
]


def test_openinference_trace_maps_to_one_orchestration_with_nested_agents(db_path):
    result = ingest_request(
        db_path, json.dumps(request(*OPENINFERENCE)).encode(), "application/json"
    )
    assert (result.accepted, result.rejected) == (7, 0)
    [orchestration] = rows(db_path, "orchestrations").values()
    assert orchestration["id"] == str(uuid.UUID(TRACE))
    assert orchestration["session_id"] == "chat-7"
    assert orchestration["task_description"] == "LangGraph"
    assert orchestration["status"] == "completed"
    assert orchestration["started_at"] == "2026-05-28T20:26:40.000Z"
    assert orchestration["completed_at"] == "2026-05-28T20:26:41.000Z"
    assert orchestration["duration_ms"] == 1000
    assert (orchestration["total_tasks"], orchestration["completed_tasks"]) == (2, 2)
    runs = executions_by_name(db_path)
    assert set(runs) == {"researcher_agent", "writer_agent"}
    researcher, writer = runs["researcher_agent"], runs["writer_agent"]
    assert researcher["orchestration_id"] == writer["orchestration_id"] == orchestration["id"]
    assert (researcher["input_tokens"], researcher["output_tokens"]) == (5, 2)
    assert (writer["input_tokens"], writer["output_tokens"]) == (3, 1)
    assert (researcher["model"], writer["model"]) == ("m-1", "m-2")
    assert (researcher["duration_ms"], writer["duration_ms"]) == (590, 370)
    assert researcher["parent_execution_id"] is None
    assert writer["parent_execution_id"] == researcher["id"]
    assert json.loads(researcher["metadata_json"])["tool_calls"] == 1
    assert "tool_calls" not in json.loads(writer["metadata_json"])


def test_spans_in_any_order_end_in_the_same_rows(tmp_path):
    in_order = tmp_path / "in_order.db"
    ingest_spans(in_order, decode_json(request(*OPENINFERENCE)))
    expected = {t: rows(in_order, t) for t in ("orchestrations", "agent_executions")}
    for seed in range(4):
        shuffled = (
            OPENINFERENCE[::-1] if seed == 0 else random.Random(seed).sample(OPENINFERENCE, 7)
        )
        path = tmp_path / f"order{seed}.db"
        for raw in shuffled:  # one span per request, as a live receiver may get them
            ingest_spans(path, decode_json(request(raw)))
        for table in ("orchestrations", "agent_executions"):
            assert rows(path, table) == expected[table], (seed, table)


@pytest.mark.parametrize("seed", range(3))
def test_spans_sent_again_with_later_ends_in_any_order_end_in_the_final_rows(tmp_path, seed):
    # A span re-sent with a later end replaces the stored one: the rows are derived again
    # from the stored spans whenever any span of the trace arrives, so a stored first
    # version would bring the old end back as soon as a later span came in.
    rng = random.Random(seed)
    final = [
        {**raw, "endTimeUnixNano": str(int(raw["endTimeUnixNano"]) + (i + 1) * 7 * MS)}
        for i, raw in enumerate(OPENINFERENCE)
    ]
    once = tmp_path / "once.db"
    ingest_spans(once, decode_json(request(*final)))
    resent = tmp_path / "resent.db"
    # Every span as first sent, then every span in its final version, each round in a
    # random order, one span per request (as a live receiver gets them).
    for raw in rng.sample(OPENINFERENCE, len(OPENINFERENCE)) + rng.sample(final, len(final)):
        ingest_spans(resent, decode_json(request(raw)))
    for table in ("orchestrations", "agent_executions"):
        assert rows(resent, table) == rows(once, table), table
    # The final ends, read off the spans: the root 1000 + 7 ms, writer_agent 580 + 42 ms.
    [orchestration] = rows(once, "orchestrations").values()
    assert orchestration["duration_ms"] == 1007
    assert executions_by_name(once)["writer_agent"]["duration_ms"] == 622 - 210


def test_trace_without_its_root_yet_is_a_running_orchestration(db_path):
    # The LLM span first, then its agent: the root chain has not arrived.
    ingest_spans(db_path, decode_json(request(OPENINFERENCE[6])))
    assert rows(db_path, "agent_executions") == {}
    ingest_spans(db_path, decode_json(request(OPENINFERENCE[5])))
    [orchestration] = rows(db_path, "orchestrations").values()
    assert orchestration["status"] == "running"
    assert orchestration["completed_at"] is None
    [writer] = rows(db_path, "agent_executions").values()
    assert (writer["input_tokens"], writer["parent_execution_id"]) == (3, None)
    ingest_spans(db_path, decode_json(request(*OPENINFERENCE[:5])))
    [orchestration] = rows(db_path, "orchestrations").values()
    assert (orchestration["status"], orchestration["session_id"]) == ("completed", "chat-7")
    assert executions_by_name(db_path)["writer_agent"]["parent_execution_id"] is not None


def test_sending_the_same_spans_again_changes_nothing(db_path):
    body = json.dumps(request(*OPENINFERENCE)).encode()
    ingest_request(db_path, body, "application/json")
    before = {t: rows(db_path, t) for t in ("orchestrations", "agent_executions")}
    ingest_request(db_path, body, "application/json; charset=utf-8")
    assert {t: rows(db_path, t) for t in ("orchestrations", "agent_executions")} == before


def test_spans_sent_again_update_no_row(db_path):
    # An UPDATE that changes nothing still costs every index and marks its hour for
    # the rollups to recompute.
    db = agentmetrics.open_database(db_path)
    body = json.dumps(request(*OPENINFERENCE)).encode()
    ingest_request(db, body, "application/json")
    db.conn.execute("CREATE TEMP TABLE updated (name TEXT)")
    for table in ("orchestrations", "agent_executions"):
        db.conn.execute(
            f"CREATE TEMP TRIGGER count_{table} AFTER UPDATE ON main.{table}"
            f" BEGIN INSERT INTO updated VALUES ('{table}'); END"
        )
    ingest_request(db, body, "application/json")
    assert db.execute("SELECT count(*) FROM updated").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM am_rollup_dirty").fetchone()[0] == 0
    # The writer ending 10 ms later changes its execution only.
    later = {**OPENINFERENCE[5], "endTimeUnixNano": str(T + 590 * MS)}
    ingest_request(db, json.dumps(request(later)).encode(), "application/json")
    assert db.execute("SELECT name FROM updated").fetchall() == [("agent_executions",)]
    assert executions_by_name(db_path)["writer_agent"]["duration_ms"] == 380
    assert db.execute("SELECT hour FROM am_rollup_dirty").fetchall() == [("2026-05-28T20",)]
    db.close()


def chat(tokens_in, tokens_out):
    usage = {"usage.input_tokens": tokens_in, "usage.output_tokens": tokens_out}
    return genai("chat", **{"request.model": "gpt-x"}, **usage)


GENAI_FAILED = [
    span(
        1,
        None,
        "invoke_agent support",
        0,
        300,
        genai("invoke_agent", **{"agent.name": "support", "conversation.id": "conv-1"}),
        {"code": 2, "message": "long traceback..."},
        [("exception", {"exception.type": "KeyError", "exception.message": "'order'"})],
    ),
    span(2, 1, "chat gpt-x", 10, 100, chat(40, 9)),
    span(
        3,
        1,
        "execute_tool lookup",
        110,
        290,
        genai("execute_tool", **{"tool.name": "lookup"}) | {"error.type": "KeyError"},
        {"code": "STATUS_CODE_ERROR"},
    ),
    span(4, 1, "chat gpt-x", 120, 130, chat(60, 1)),
]


def test_genai_agent_failing_in_a_tool(db_path):
    ingest_spans(db_path, decode_json(request(*GENAI_FAILED)))
    [orchestration] = rows(db_path, "orchestrations").values()
    assert (orchestration["status"], orchestration["session_id"]) == ("failed", "conv-1")
    assert json.loads(orchestration["metadata_json"])["error_message"] == "KeyError: 'order'"
    [run] = rows(db_path, "agent_executions").values()
    assert run["agent_name"] == "support"
    assert run["status"] == "failed"
    assert run["error_message"] == "KeyError: 'order'"  # the exception event, not the traceback
    assert (run["input_tokens"], run["output_tokens"], run["model"]) == (100, 10, "gpt-x")
    assert run["duration_ms"] == 300
    metadata = json.loads(run["metadata_json"])
    assert (metadata["llm_calls"], metadata["tool_calls"], metadata["tool_errors"]) == (2, 1, 1)


def test_error_message_from_status_or_error_type():
    def failed(status, attributes, path):
        raw = span(1, None, "invoke_agent x", 0, 5, genai("invoke_agent") | attributes, status)
        ingest_spans(path, decode_json(request(raw)))
        return next(iter(rows(path, "agent_executions").values()))

    assert failed({"code": 2, "message": "quota"}, {}, "a.db")["error_message"] == "quota"
    assert failed({"code": 2}, {"error.type": "timeout"}, "b.db")["error_message"] == "timeout"
    assert failed({"code": 2}, {"error.type": "_OTHER"}, "c.db")["error_message"] is None
    ok = failed({"code": 1, "message": "ignored"}, {}, "d.db")
    assert (ok["status"], ok["error_message"]) == ("completed", None)


def test_two_traces_of_one_conversation_keep_unique_session_ids(db_path):
    other = "1" * 32
    attributes = genai("invoke_agent", **{"conversation.id": "conv"})
    first = span(1, None, "invoke_agent a", 0, 5, attributes)
    second = dict(first, traceId=other)
    ingest_spans(db_path, decode_json(request(first, second)))
    sessions = sorted(r["session_id"] for r in rows(db_path, "orchestrations").values())
    assert sessions == ["conv", f"conv/{other}"]


def test_partial_success_counts_rejected_spans(db_path):
    good = OPENINFERENCE[0]
    bad_ids = dict(good, traceId="xyz", spanId="a000000000000009")
    bad_times = dict(good, spanId="a000000000000008", endTimeUnixNano="5")
    result = ingest_request(
        db_path, json.dumps(request(good, bad_ids, bad_times)), "application/json"
    )
    assert (result.accepted, result.rejected) == (1, 2)
    assert "traceId must be 32 hex digits" in result.error_message
    assert "end not before the start" in result.error_message
    assert "\n" not in result.error_message


@pytest.mark.parametrize(
    "body, content_type, error",
    [
        (b"{not json", "application/json", InvalidExport),
        (b'{"resourceSpans": 3}', "application/json", InvalidExport),
        (b"[1, 2]", "application/json", InvalidExport),
        (b"\xff\xfe garbage", "application/x-protobuf", InvalidExport),
        (b"{}", "text/plain", InvalidValue),
    ],
)
def test_malformed_requests_raise_one_line_and_write_nothing(db_path, body, content_type, error):
    with pytest.raises(error) as raised:
        ingest_request(db_path, body, content_type)
    assert "\n" not in str(raised.value)
    assert not db_path.exists()


# -- our own export, re-imported -----------------------------------------------------

# Not exported: created_at (when the row was written) and metadata_json.
NOT_EXPORTED = ("created_at", "metadata_json", "parent_execution_id")


def finished_rows(path):
    """The rows an OTLP export carries: finished ones, and executions whose
    orchestration has finished too (or that have none)."""
    orchestrations = {
        k: v
        for k, v in rows(path, "orchestrations", NOT_EXPORTED).items()
        if v["status"] != "running"
    }
    executions = {
        k: v
        for k, v in rows(path, "agent_executions", NOT_EXPORTED).items()
        if v["status"] != "in_progress"
        and (v["orchestration_id"] is None or v["orchestration_id"] in orchestrations)
    }
    return orchestrations, executions


def retried(path):
    """``build``'s file where the second finished execution of each orchestration is a
    second attempt of its first one."""
    build(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE agent_executions AS e SET attempt = 2, first_attempt_id = ("
            "  SELECT f.id FROM agent_executions f WHERE f.orchestration_id = e.orchestration_id"
            "  ORDER BY f.started_at, f.id LIMIT 1)"
            " WHERE e.id IN (SELECT x.id FROM agent_executions x"
            "  WHERE x.orchestration_id = e.orchestration_id ORDER BY x.started_at, x.id"
            "  LIMIT 1 OFFSET 1)"
        )
        assert conn.execute("SELECT count(*) FROM agent_executions WHERE attempt = 2").fetchone()[0]
    conn.close()


@pytest.mark.parametrize("source", ["dashboard", "demo", "attempts"])
def test_our_otlp_export_reimported_gives_back_the_same_rows(tmp_path, source):
    original = tmp_path / "original.db"
    if source == "dashboard":
        build(original)
    elif source == "attempts":
        retried(original)
    else:
        build_demo(original, orchestrations=40)
    traces = tmp_path / "traces.jsonl"
    with traces.open("w") as out:
        export(original, out, "otlp")
    copy = tmp_path / "copy.db"
    ingest_files(copy, [traces])
    expected = finished_rows(original)
    got = (rows(copy, "orchestrations", NOT_EXPORTED), rows(copy, "agent_executions", NOT_EXPORTED))
    # A finished execution of a running orchestration is exported (otel-out): its
    # orchestration arrives as running, under its own id and session.
    running = {k: v for k, v in got[0].items() if v["status"] == "running"}
    with sqlite3.connect(original) as conn:
        assert {k: v["session_id"] for k, v in running.items()} == dict(
            conn.execute(
                "SELECT o.id, o.session_id FROM orchestrations o WHERE o.status = 'running'"
                " AND EXISTS (SELECT 1 FROM agent_executions e WHERE e.orchestration_id = o.id"
                " AND e.status != 'in_progress')"
            )
        )
    assert {k: v for k, v in got[0].items() if k not in running} == expected[0]
    # Executions of a running orchestration are exported by newer releases only.
    assert {k: v for k, v in got[1].items() if k in expected[1]} == expected[1]
    assert len(expected[1]) > 0


def test_our_export_reimported_into_its_own_database_changes_no_column(tmp_path):
    original = tmp_path / "original.db"
    build(original)
    traces = tmp_path / "traces.jsonl"
    with traces.open("w") as out:
        export(original, out, "otlp")
    skip = ("metadata_json",)  # gains the trace and span ids
    before = {t: rows(original, t, skip) for t in ("orchestrations", "agent_executions")}
    ingest_files(original, [traces])
    assert {t: rows(original, t, skip) for t in ("orchestrations", "agent_executions")} == before


UTC = dt.timezone.utc
# Stored times around what OTLP's time fields carry (1 to 2^63-1 ns: 1970-01-01 just
# after midnight to 2262-04-11T23:47:16.854775807Z), the ISO text a test writes them as.
EDGE_TIMES = {
    dt.datetime(1500, 1, 1, tzinfo=UTC): "1500-01-01T00:00:00.000Z",
    dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC): "1969-12-31T23:59:59.999Z",
    dt.datetime(1970, 1, 1, tzinfo=UTC): "1970-01-01T00:00:00.000Z",  # 0 ns: "unset"
    dt.datetime(2262, 4, 11, 23, 45, 16, 854000, tzinfo=UTC): "2262-04-11T23:45:16.854Z",
    dt.datetime(2262, 4, 11, 23, 47, 16, 855000, tzinfo=UTC): "2262-04-11T23:47:16.855Z",
    dt.datetime(9000, 1, 1, tzinfo=UTC): "9000-01-01T00:00:00.000Z",
    dt.datetime(9999, 12, 31, 23, 50, tzinfo=UTC): "9999-12-31T23:50:00.000Z",
}


def edge_times_db(path):
    """Per edge time: an orchestration from it with an execution of 90 s (its end 2 min
    later), and a standalone execution of 1 s."""
    clock = Clock(T0)
    monitor = agentmetrics.Monitor(path, clock=clock)
    for number, moment in enumerate(EDGE_TIMES):
        clock.moment = moment
        orchestration = monitor.start_orchestration(f"s-{number}", "edge")
        monitor.start_agent_execution(f"a-{number}", "coder", orchestration_id=orchestration)
        monitor.start_agent_execution(f"alone-{number}", "solo")
        clock.moment = moment + dt.timedelta(seconds=1)
        monitor.complete_agent_execution(f"alone-{number}", "completed")
        clock.moment = moment + dt.timedelta(seconds=90)
        monitor.complete_agent_execution(f"a-{number}", "completed")
        clock.moment = moment + dt.timedelta(seconds=120)
        monitor.complete_orchestration(f"s-{number}", "completed")
    monitor.close()


@pytest.mark.parametrize("fmt", ["otlp", "otlp-protobuf"])
def test_every_stored_time_goes_out_and_back_through_otlp(tmp_path, fmt):
    original = tmp_path / "original.db"
    edge_times_db(original)
    traces = tmp_path / "traces"
    with traces.open("wb" if fmt == "otlp-protobuf" else "w") as out:
        counts = export(original, out, fmt)
    assert (counts.orchestrations, counts.executions) == (7, 14)
    copy = tmp_path / "copy.db"
    ingest_files(copy, [traces])
    assert rows(copy, "orchestrations", NOT_EXPORTED) == rows(
        original, "orchestrations", NOT_EXPORTED
    )
    assert rows(copy, "agent_executions", NOT_EXPORTED) == rows(
        original, "agent_executions", NOT_EXPORTED
    )
    with sqlite3.connect(copy) as conn:
        started = {r[0] for r in conn.execute("SELECT started_at FROM orchestrations")}
        durations = {r[0] for r in conn.execute("SELECT duration_ms FROM agent_executions")}
    assert started == set(EDGE_TIMES.values())
    assert durations == {1000, 90000}


def test_times_otlp_cannot_hold_are_clamped_and_carried_in_attributes(tmp_path):
    original = tmp_path / "original.db"
    edge_times_db(original)
    text = tmp_path / "traces.jsonl"
    with text.open("w") as out:
        export(original, out, "otlp")
    spans = [
        span
        for line in text.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    carried = []
    for span in spans:
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        assert 1 <= start <= end <= 2**63 - 1
        if span["name"] == "invoke_workflow edge":
            attributes = {a["key"]: a["value"] for a in span["attributes"]}
            exact = attributes.get("agentmetrics.start_time_unix_nano", {}).get("stringValue")
            carried.append((start, exact))
    # 1500 and 9000: the figures; the others counted in days of 86,400 s.
    last = 2**63 - 1
    assert sorted(carried, key=repr) == sorted(
        [
            (1, "-14831769600000000000"),
            (1, "-1000000"),
            (1, "0"),
            ((106_751 * 86_400 + 23 * 3600 + 45 * 60 + 16) * 10**9 + 854 * MS, None),
            (last, str((106_751 * 86_400 + 23 * 3600 + 47 * 60 + 16) * 10**9 + 855 * MS)),
            (last, "221845392000000000000"),
            (last, str((2_932_897 * 86_400 - 600) * 10**9)),
        ],
        key=repr,
    )


def test_a_carried_time_that_is_not_one_is_ignored(db_path):
    ours = {"agentmetrics.status": "completed", "gen_ai.operation.name": "invoke_agent"}
    spans = [
        span(i + 1, None, "invoke_agent x", 0, 1000, ours | {attribute: value})
        for i, (attribute, value) in enumerate(
            [
                ("agentmetrics.start_time_unix_nano", "99999999999999999999999"),  # year > 9999
                ("agentmetrics.start_time_unix_nano", "soon"),
                ("agentmetrics.end_time_unix_nano", 5),  # not a string
            ]
        )
    ]
    ingest_spans(db_path, decode_json(request(*spans)))
    found = {
        (r["started_at"], r["duration_ms"]) for r in rows(db_path, "agent_executions").values()
    }
    assert found == {("2026-05-28T20:26:40.000Z", 1000)}


# -- files and the command line ------------------------------------------------------


def write_lines(path, *requests, compress=False):
    text = "".join(json.dumps(r) + "\n" for r in requests)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_cli_imports_otlp_json_lines(tmp_path, db_path, compress):
    traces = write_lines(
        tmp_path / "t.jsonl",
        request(*OPENINFERENCE[:3]),
        request(*OPENINFERENCE[3:]),
        compress=compress,
    )
    result = cli_result("--db", db_path, "import", "--format", "otlp", traces)
    assert result.exit_code == 0, result.output
    assert result.output == "Spans: 7 imported; orchestrations: 1 new, executions: 2 new\n"
    again = cli_result("--db", db_path, "import", "--format", "otlp", traces)
    assert again.output == "Spans: 7 imported; orchestrations: 0 new, executions: 0 new\n"


@pytest.mark.parametrize(
    "second_line, message",
    [
        ("{oops\n", "t.jsonl: line 2: invalid JSON"),
        ('{"resourceSpans": {}}\n', "t.jsonl: line 2: expected an ExportTraceServiceRequest"),
        (
            json.dumps(request(dict(OPENINFERENCE[1], spanId="0" * 16))) + "\n",
            "t.jsonl: line 2: span 'researcher_agent': spanId must be 16 hex digits",
        ),
    ],
)
def test_cli_refuses_a_bad_otlp_file_whole(tmp_path, db_path, second_line, message):
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps(request(OPENINFERENCE[0])) + "\n" + second_line)
    result = cli_result("--db", db_path, "import", "--format", "otlp", traces)
    no_traceback(result, 1)
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.splitlines()) == 1
    assert not db_path.exists()


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_cli_refuses_our_row_exports_as_otlp(tmp_path, db_path, fmt):
    build(tmp_path / "source.db")
    exported = tmp_path / f"export.{fmt}"
    with exported.open("w") as out:
        export(tmp_path / "source.db", out, fmt)
    result = cli_result("--db", db_path, "import", "--format", "otlp", exported)
    no_traceback(result, 1)
    assert "import it without --format otlp" in result.output
    assert len(result.output.splitlines()) == 1
    assert not db_path.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x08\x96\x01 not protobuf of traces", "not an OTLP protobuf ExportTraceServiceRequest"),
        (b"\x0a\x80\x01 truncated", "the file ends inside a protobuf message"),
        (gzip.compress(json.dumps(request(*OPENINFERENCE)).encode() * 9)[:300], "Cannot read"),
        (gzip.compress(b"{}")[:10] + b"\xff" * 20, "Cannot read"),
        (b"", "the file is empty"),
    ],
)
def test_cli_refuses_a_file_that_is_not_otlp(tmp_path, db_path, content, message):
    junk = tmp_path / "junk.pb"
    junk.write_bytes(content)
    result = cli_result("--db", db_path, "import", "--format", "otlp", junk, tmp_path / "missing")
    no_traceback(result, 1)
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.splitlines()) == 1
    assert not db_path.exists()


def test_otel_package_imports_without_opentelemetry(tmp_path):
    # Blocking the opentelemetry package: JSON still works, protobuf says what to install.
    code = f"""
import sys
sys.modules["opentelemetry"] = None
import agentmetrics.otel
from agentmetrics.errors import MissingDependency
from agentmetrics.otel.ingest import ingest_request
body = {json.dumps(request(OPENINFERENCE[0]))!r}
print(ingest_request({str(tmp_path / "x.db")!r}, body, "application/json").accepted)
try:
    ingest_request(":memory:", b"", "application/x-protobuf")
except MissingDependency as e:
    print(e)
try:
    agentmetrics.otel.SQLiteSpanExporter
except MissingDependency as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1"
    assert "agentmetrics-sqlite[otel]" in lines[1] and "agentmetrics-sqlite[otel]" in lines[2]


# -- protobuf and the in-process exporter --------------------------------------------


def sdk_spans():
    """A small agent trace made with the SDK: a workflow, two agents, a chat, a tool."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    usage = {"usage.input_tokens": 7, "usage.output_tokens": 2}
    chat = genai("chat", **{"request.model": "m"}, **usage)
    workflow = genai("invoke_workflow", **{"workflow.name": "release"})
    with tracer.start_as_current_span("invoke_workflow release", attributes=workflow):
        planner = genai("invoke_agent", **{"agent.name": "planner"})
        with (
            tracer.start_as_current_span("invoke_agent planner", attributes=planner),
            tracer.start_as_current_span("chat m", attributes=chat),
        ):
            pass
        coder = genai("invoke_agent", **{"agent.name": "coder"}) | {"tags": ("a", "b")}
        with tracer.start_as_current_span("invoke_agent coder", attributes=coder) as run:
            with tracer.start_as_current_span("execute_tool run", attributes=genai("execute_tool")):
                pass
            run.set_status(Status(StatusCode.ERROR, "exit 1"))
    provider.shutdown()
    return memory.get_finished_spans()


def test_protobuf_file_and_exporter_give_the_same_rows(tmp_path):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from agentmetrics.otel import SQLiteSpanExporter

    spans = sdk_spans()
    exported = tmp_path / "exporter.db"
    exporter = SQLiteSpanExporter(exported)
    exporter.export(spans[:2])
    exporter.export(spans[2:])
    exporter.shutdown()
    assert (exporter.exported, exporter.dropped) == (5, 0)
    # Two requests written one after the other make one protobuf file.
    pb = tmp_path / "spans.pb"
    pb.write_bytes(
        encode_spans(spans[:3]).SerializeToString() + encode_spans(spans[3:]).SerializeToString()
    )
    imported = tmp_path / "imported.db"
    result = cli_result("--db", imported, "import", "--format", "otlp", pb)
    assert result.output == "Spans: 5 imported; orchestrations: 1 new, executions: 2 new\n"
    for table in ("orchestrations", "agent_executions"):
        assert rows(imported, table) == rows(exported, table)
    runs = executions_by_name(imported)
    planner, coder = runs["planner"], runs["coder"]
    assert (planner["status"], planner["input_tokens"], planner["model"]) == ("completed", 7, "m")
    assert (coder["status"], coder["error_message"]) == ("failed", "exit 1")
    by_name = {s.name: s for s in spans}
    for run, name in ((planner, "invoke_agent planner"), (coder, "invoke_agent coder")):
        s = by_name[name]
        assert run["duration_ms"] == round((s.end_time - s.start_time) / 1e6)
    [orchestration] = rows(imported, "orchestrations").values()
    assert (orchestration["task_description"], orchestration["status"]) == ("release", "partial")
    body = encode_spans(spans).SerializeToString()
    again = ingest_request(imported, body, "application/x-protobuf")
    assert (again.accepted, again.rejected) == (5, 0)
    assert rows(imported, "agent_executions") == rows(exported, "agent_executions")


def test_cli_refuses_a_protobuf_file_with_a_bad_span_whole(tmp_path, db_path):
    # The first pass reads protobuf spans without their attributes: it still checks
    # ids and times, so nothing of the file is imported.
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    good = encode_spans(sdk_spans()).SerializeToString()
    bad = encode_spans(sdk_spans()[:1])
    bad.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 0
    pb = tmp_path / "spans.pb"
    pb.write_bytes(good + bad.SerializeToString())
    result = cli_result("--db", db_path, "import", "--format", "otlp", pb)
    no_traceback(result, 1)
    assert result.output == (
        f"Error: {pb}: protobuf: span 'chat m': needs start and end times,"
        " the end not before the start\n"
    )
    assert not db_path.exists()


def test_exporter_never_raises(tmp_path, caplog):
    from opentelemetry.sdk.trace.export import SpanExportResult

    from agentmetrics.otel import SQLiteSpanExporter

    spans = sdk_spans()
    exporter = SQLiteSpanExporter(tmp_path)  # a directory, not a database
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert (exporter.exported, exporter.dropped) == (0, 5)
    assert "5 spans not stored" in caplog.text
    read_only = agentmetrics.open_database(tmp_path / "ro.db")
    read_only.conn.execute("PRAGMA query_only = 1")
    exporter = SQLiteSpanExporter(read_only)
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.force_flush() is True
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.dropped == 10


def test_cleanup_deletes_old_spans_with_their_rows(db_path):
    from agentmetrics.store.cleanup import cleanup

    ingest_spans(db_path, decode_json(request(*OPENINFERENCE)))
    # The trace started 2026-05-28T20:26:40Z: 30 days before 2026-06-28 it is kept.
    kept = cleanup(db_path, 30, now="2026-06-27T20:00:00Z")
    assert (kept.orchestrations, kept.spans) == (0, 0)
    counted = cleanup(db_path, 30, now="2026-06-28T00:00:00Z", dry_run=True)
    assert (counted.orchestrations, counted.executions, counted.spans) == (1, 2, 7)
    done = cleanup(db_path, 30, now="2026-06-28T00:00:00Z")
    assert (done.orchestrations, done.executions, done.spans) == (1, 2, 7)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM otel_spans").fetchone()[0] == 0
    conn.close()


def test_values_sqlite_cannot_hold_are_left_out_or_rejected(db_path):
    agent = span(1, None, "invoke_agent x", 0, 5, genai("invoke_agent", **{"usage.cost": 1.0}))
    chat = span(2, 1, "chat", 1, 2, genai("chat", **{"usage.input_tokens": 2**64}))
    chat["attributes"].append({"key": "gen_ai.usage.cost", "value": {"doubleValue": "Infinity"}})
    # A lone surrogate is valid in a JSON escape, not in UTF-8: that span is rejected.
    text = json.dumps(request(agent, chat)).replace("invoke_agent x", "invoke_agent x\\ud800")
    result = ingest_request(db_path, text.encode(), "application/json")
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.error_message == "span 'invoke_agent x\\ud800': holds text that is not UTF-8"
    ingest_request(db_path, json.dumps(request(agent)), "application/json")
    [run] = rows(db_path, "agent_executions").values()
    # The chat span's values do not fit: none stored, the agent span's own cost stays.
    assert (run["agent_name"], run["input_tokens"], run["cost_usd"]) == ("x", None, 1.0)


def test_our_execution_session_from_its_own_attribute(db_path):
    # An export that gives executions their orchestration's session (for backends that
    # group by session) carries the execution's own in agentmetrics.agent_session_id.
    attributes = genai("invoke_agent", **{"agent.name": "coder", "conversation.id": "orch-s"})
    ours = {"agentmetrics.status": "completed", "agentmetrics.agent_session_id": "a-9"}
    ingest_spans(
        db_path, decode_json(request(span(1, None, "invoke_agent coder", 0, 5, attributes | ours)))
    )
    [run] = rows(db_path, "agent_executions").values()
    assert (run["agent_session_id"], run["orchestration_id"]) == ("a-9", None)


def test_spans_of_a_running_workflow_never_undo_a_finished_orchestration(db_path):
    monitor = agentmetrics.Monitor(db_path)
    orchestration_id = monitor.start_orchestration("s-1", "task", total_tasks=3)
    monitor.complete_orchestration("s-1", "completed")
    before = rows(db_path, "orchestrations")
    # An execution exported while its orchestration still ran: its parent never comes.
    ours = {
        "agentmetrics.status": "completed",
        "agentmetrics.orchestration.id": orchestration_id,
        "gen_ai.conversation.id": "a-1",
    }
    attributes = genai("invoke_agent", **{"agent.name": "coder"}) | ours
    ingest_spans(db_path, decode_json(request(span(2, 1, "invoke_agent coder", 0, 5, attributes))))
    assert rows(db_path, "orchestrations") == before
    [run] = rows(db_path, "agent_executions").values()
    assert (run["agent_session_id"], run["orchestration_id"]) == ("a-1", orchestration_id)


# -- attempts, in-run retries and the status rule -------------------------------------

ERROR = {"code": 2}


def agent(number, parent, name, start_ms, end_ms, failed=False):
    attributes = genai("invoke_agent", **{"agent.name": name})
    return span(
        number, parent, f"invoke_agent {name}", start_ms, end_ms, attributes, failed and ERROR
    )


def tool(number, parent, name, start_ms, end_ms, failed=False):
    attributes = genai("execute_tool", **{"tool.name": name})
    return span(
        number, parent, f"execute_tool {name}", start_ms, end_ms, attributes, failed and ERROR
    )


def http(number, parent, start_ms, end_ms, resend_count):
    attributes = {"http.request.method": "POST", "http.request.resend_count": resend_count}
    return span(number, parent, "POST", start_ms, end_ms, attributes)


def workflow(number=1, end_ms=1000, failed=False):
    attributes = genai("invoke_workflow", **{"workflow.name": "release"})
    return span(number, None, "invoke_workflow release", 0, end_ms, attributes, failed and ERROR)


def by_span(path):
    """Executions by the number of the agent span they come from."""
    found = rows(path, "agent_executions").values()
    return {int(json.loads(r["metadata_json"])["span_id"], 16): r for r in found}


def tasks_of(orchestration):
    return tuple(orchestration[k] for k in ("total_tasks", "completed_tasks", "failed_tasks"))


IN_RUN = [
    workflow(),
    agent(2, 1, "fixer", 10, 500),
    tool(3, 2, "lookup", 20, 40, failed=True),
    tool(4, 2, "lookup", 50, 60),  # the same tool after the failure: a retry
    tool(5, 2, "search", 70, 90, failed=True),  # no search after it: not retried
    tool(6, 2, "fetch", 100, 150, failed=True),
    tool(7, 2, "fetch", 120, 160),  # started while 6 ran: parallel, not a retry
    span(8, 2, "chat gpt-x", 200, 300, chat(5, 1)),
    http(9, 8, 210, 220, 0),  # the first request
    http(10, 8, 230, 240, 1),  # sent again: a retry
    agent(11, 1, "breaker", 510, 900, failed=True),
    tool(12, 11, "run", 520, 530, failed=True),
    tool(13, 11, "run", 540, 550, failed=True),  # retries 12, then fails itself
]


def test_in_run_retries_from_tool_calls_and_http_resends(db_path):
    ingest_spans(db_path, decode_json(request(*IN_RUN)))
    runs = by_span(db_path)
    fixer, breaker = runs[2], runs[11]
    # fixer: lookup retried once, one HTTP resend; recovered.
    assert (fixer["status"], fixer["retry_count"], fixer["self_healed"]) == ("completed", 2, 1)
    # breaker: run retried once, the run failed anyway.
    assert (breaker["status"], breaker["retry_count"], breaker["self_healed"]) == ("failed", 1, 0)
    for run in (fixer, breaker):  # retried inside one run: each is its task's only attempt
        assert (run["attempt"], run["first_attempt_id"]) == (1, None)
    assert json.loads(fixer["metadata_json"])["tool_errors"] == 3
    [orchestration] = rows(db_path, "orchestrations").values()
    assert (orchestration["status"], tasks_of(orchestration)) == ("partial", (2, 1, 1))


ATTEMPTS = [
    workflow(),
    agent(2, 1, "coder", 10, 100, failed=True),  # task A, attempt 1
    agent(3, 1, "coder", 110, 200, failed=True),  # A, 2
    agent(4, 1, "coder", 210, 300),  # A, 3: completed
    agent(5, 1, "coder", 310, 400, failed=True),  # task B: A had completed
    agent(6, 1, "coder", 350, 420),  # task C: started while B ran (parallel)
    agent(7, 1, "tester", 110, 150),  # another agent: its own task
    agent(8, 1, "lead", 430, 900),
    tool(9, 8, "delegate", 440, 800),
    agent(10, 9, "coder", 450, 500, failed=True),  # task D under another parent, 1
    agent(11, 9, "coder", 510, 600),  # D, 2: the tool ran its sub-agent again
    tool(12, 11, "edit", 520, 530, failed=True),
    tool(13, 11, "edit", 540, 550),  # and D's second attempt retried a tool once
]
# span: (attempt, span of the first attempt or None, retry_count)
EXPECTED_ATTEMPTS = {
    2: (1, None, 0),
    3: (2, 2, 0),
    4: (3, 2, 2),
    5: (1, None, 0),
    6: (1, None, 0),
    7: (1, None, 0),
    8: (1, None, 0),
    10: (1, None, 0),
    11: (2, 10, 1 + 1),
}


def attempts_of(path):
    runs = by_span(path)
    ids = {run["id"]: number for number, run in runs.items()}
    return {
        number: (run["attempt"], ids.get(run["first_attempt_id"]), run["retry_count"])
        for number, run in runs.items()
    }


def test_sibling_agent_spans_after_a_failure_are_attempts_of_one_task(db_path):
    ingest_spans(db_path, decode_json(request(*ATTEMPTS)))
    assert attempts_of(db_path) == EXPECTED_ATTEMPTS
    runs = by_span(db_path)
    assert runs[11]["self_healed"] == 1 and runs[4]["self_healed"] == 0
    assert runs[10]["parent_execution_id"] == runs[11]["parent_execution_id"] == runs[8]["id"]
    [orchestration] = rows(db_path, "orchestrations").values()
    # Tasks A, C, tester, lead, D completed; B failed.
    assert (orchestration["status"], tasks_of(orchestration)) == ("partial", (6, 5, 1))


def test_attempts_are_the_same_whatever_order_the_spans_arrive_in(tmp_path):
    expected = None
    for seed in range(5):
        path = tmp_path / f"order{seed}.db"
        shuffled = random.Random(seed).sample(ATTEMPTS, len(ATTEMPTS))
        for raw in shuffled:  # one span per request
            ingest_spans(path, decode_json(request(raw)))
        got = {t: rows(path, t) for t in ("orchestrations", "agent_executions")}
        assert attempts_of(path) == EXPECTED_ATTEMPTS, seed
        assert got == (expected := expected or got), seed
    for half in (5, 9):  # two batches, each sent twice
        path = tmp_path / f"batches{half}.db"
        shuffled = random.Random(half).sample(ATTEMPTS, len(ATTEMPTS))
        for batch in (shuffled[half:], shuffled[:half], shuffled[half:], shuffled[:half]):
            ingest_spans(path, decode_json(request(*batch)))
        got = {t: rows(path, t) for t in ("orchestrations", "agent_executions")}
        assert got == expected, half


def tracked(path, tasks):
    """``tasks`` tracked from Python: attempts as the tracking API records them (until
    it lands here: executions, then their attempt columns set by hand)."""
    monitor = agentmetrics.Monitor(path)
    orchestration_id = monitor.start_orchestration("tracked", "release")
    for t, outcomes in enumerate(tasks):
        first = None
        for a, outcome in enumerate(outcomes, 1):
            session = f"task{t}-attempt{a}"
            execution_id = monitor.start_agent_execution(session, f"agent{t}", orchestration_id)
            monitor.complete_agent_execution(session, outcome)
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "UPDATE agent_executions SET attempt = ?, first_attempt_id = ? WHERE id = ?",
                    (a, first, execution_id),
                )
            first = first or execution_id
    monitor.close()
    with sqlite3.connect(path) as conn:
        counts = conn.execute(TASK_COUNTS_SQL, {"id": orchestration_id}).fetchone()
    total, completed, failed = counts
    return orchestration_status(completed, failed, total - completed - failed), counts


def traced(path, tasks):
    """The same tasks as spans: each attempt an agent span after the one that failed."""
    spans, number, clock = [workflow(end_ms=10_000)], 2, 0
    for t, outcomes in enumerate(tasks):
        for outcome in outcomes:
            spans.append(agent(number, 1, f"agent{t}", clock, clock + 50, outcome == "failed"))
            number, clock = number + 1, clock + 100
    ingest_spans(path, decode_json(request(*spans)))
    [orchestration] = rows(path, "orchestrations").values()
    return orchestration["status"], tasks_of(orchestration)


@pytest.mark.parametrize(
    "tasks, expected",
    [
        # The case: one task rescued by a second attempt, one failure caught.
        ([["completed"], ["failed", "completed"], ["failed"]], ("partial", (3, 2, 1))),
        ([["failed", "failed", "completed"], ["completed"]], ("completed", (2, 2, 0))),
        ([["failed"], ["failed", "failed"]], ("failed", (2, 0, 2))),
    ],
)
def test_one_status_rule_from_python_and_from_spans(tmp_path, tasks, expected):
    assert tracked(tmp_path / "tracked.db", tasks) == expected
    assert traced(tmp_path / "traced.db", tasks) == expected


def test_a_failed_workflow_span_fails_its_orchestration(db_path):
    spans = [workflow(failed=True), agent(2, 1, "coder", 10, 20)]
    ingest_spans(db_path, decode_json(request(*spans)))
    [orchestration] = rows(db_path, "orchestrations").values()
    assert (orchestration["status"], tasks_of(orchestration)) == ("failed", (1, 1, 0))


def test_our_spans_carry_their_own_attempts(db_path):
    def ours(number, name, status, **more):
        attributes = genai("invoke_agent", **{"agent.name": name, "conversation.id": f"s{number}"})
        am = {f"agentmetrics.{k}": v for k, v in {"status": status, **more}.items()}
        return span(number, None, f"invoke_agent {name}", 0, 5, attributes | am)

    spans = [
        ours(1, "coder", "failed"),
        ours(2, "coder", "completed", attempt=2, first_attempt_id="first-id", retry_count=1),
    ]
    ingest_spans(db_path, decode_json(request(*spans)))
    runs = {r["agent_session_id"]: r for r in rows(db_path, "agent_executions").values()}
    assert (runs["s1"]["attempt"], runs["s1"]["first_attempt_id"]) == (None, None)
    assert (runs["s2"]["attempt"], runs["s2"]["first_attempt_id"]) == (2, "first-id")
    assert runs["s2"]["retry_count"] == 1
