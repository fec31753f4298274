"""The pending-writes journal keeps its promise whatever its lines hold.

Tracking never raises in default mode; every valid kept write is applied exactly once;
what is skipped is reported with its line number and kept in
``<db>.pending.rejected.jsonl``, never silently deleted.
"""

import json
import logging
import random
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentmetrics import Monitor
from agentmetrics.cli import cli
from agentmetrics.monitor import _STATEMENTS
from agentmetrics.store import pending

BIG = 2**63  # one more than SQLite's largest INTEGER


def rows(path, sql):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def start_line(session, **changes):
    """A start_orchestration line as the tracker writes it, with ``changes`` made."""
    params = {
        "id": f"id-{session}",
        "session_id": session,
        "task_description": "build",
        "total_tasks": 2,
        "git_commit_hash": None,
        "plan_file_path": None,
        "progress_file_path": None,
        "now": "2026-03-01T12:00:00.000Z",
        "created": "2026-03-01 12:00:00",
    }
    return json.dumps({"kind": "start_orchestration", "params": params | changes})


def complete_line(session, **changes):
    params = {
        "session_id": session,
        "status": "completed",
        "completed_tasks": 2,
        "failed_tasks": 0,
        "error_message": None,
        "now": "2026-03-01T12:00:01.500Z",
        "created": "2026-03-01 12:00:01",
    }
    return json.dumps({"kind": "complete_orchestration", "params": params | changes})


def journal_of(db_path, lines):
    Monitor(db_path).close()  # the schema
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    Path(f"{db_path}.pending.jsonl").write_bytes(data)


def rejected_records(db_path):
    path = Path(f"{db_path}.pending.rejected.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "bad, reason",
    [
        # the lines: OverflowError and UnicodeEncodeError into the caller before
        (start_line("bad", total_tasks=2**64), "total_tasks is too large to store"),
        (start_line("bad", task_description="\ud800"), "task_description is not valid text"),
    ],
)
def test_a_value_the_database_cannot_take_is_rejected_and_the_next_line_applied(
    db_path, bad, reason, caplog
):
    journal_of(db_path, [bad, start_line("good")])
    Monitor(db_path).start_orchestration("x")  # default mode: raised before
    sessions = rows(db_path, "SELECT session_id FROM orchestrations ORDER BY session_id")
    assert sessions == [("good",), ("x",)]
    [record] = rejected_records(db_path)
    assert (record["line"], record["kind"]) == (1, "start_orchestration")
    assert record["params"] == json.loads(bad)["params"]  # kept exactly, to mend and replay
    assert record["reason"].startswith(f"start_orchestration: {reason}")
    assert f"line 1 of {db_path}.pending.jsonl cannot be applied" in caplog.text
    assert Path(f"{db_path}.pending.jsonl").read_bytes() == b""


# Values the tracking API refuses, by the kind of parameter (from its documentation:
# counts are whole numbers from 0 to 2**63 - 1, session ids non-empty text, statuses one
# of the finished ones, times in the tracker's own format).
COUNT_BAD = [BIG, 2**64, -1, -(2**70), 1.5, "3", True, [], {}]
TEXT_BAD = [5, 2.5, "\ud800", "a\udfffb", [], {"a": 1}, False]
REQUIRED_TEXT_BAD = TEXT_BAD + ["", None]
STATUS_BAD = ["running", "bogus", 1, None]
TIME_BAD = ["yesterday", "2026-13-01T00:00:00.000Z", "2026-03-01T12:00:00Z", 5, "2026-03-01"]
BAD_VALUES = {
    "total_tasks": COUNT_BAD,
    "completed_tasks": COUNT_BAD,
    "failed_tasks": COUNT_BAD,
    "session_id": REQUIRED_TEXT_BAD,
    "id": REQUIRED_TEXT_BAD,
    "task_description": TEXT_BAD,
    "error_message": TEXT_BAD,
    "status": STATUS_BAD,
    "now": TIME_BAD,
}
GARBAGE = [
    b"\xff\xfe not utf-8",
    b"hello",
    b"[1, 2]",
    b'"just a string"',
    b"42",
    b"null",
    b"[" * 100_000,  # nested beyond Python's parser
    b'{"kind": "drop_table", "params": {}}',
    b'{"kind": "start_orchestration", "params": [1]}',
    b'{"kind": ["start_orchestration"], "params": {}}',
    b'{"params": {}}',
]


def invalid_line(rng, n):
    """A line the journal must reject, of a session no valid line uses."""
    choice = rng.randrange(6)
    session = f"bad{n}"
    if choice == 0:  # a valid line torn by a process killed while writing it
        line = rng.choice([start_line, complete_line])(session)
        return line[: rng.randrange(1, len(line) - 1)].encode()
    if choice == 1:
        return rng.choice(GARBAGE)
    if choice == 2:  # a parameter missing, or one the tracker never writes
        params = json.loads(start_line(session))["params"]
        if rng.random() < 0.5:
            del params[rng.choice(sorted(params))]
        else:
            params["extra"] = 1
        return json.dumps({"kind": "start_orchestration", "params": params}).encode()
    make = start_line if choice in (3, 4) else complete_line
    keys = [key for key in json.loads(make(session))["params"] if key in BAD_VALUES]
    key = rng.choice(keys)
    return make(session, **{key: rng.choice(BAD_VALUES[key])}).encode()


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_journal_keeps_every_promise(db_path, seed, monkeypatch, caplog):
    rng = random.Random(seed)
    monkeypatch.setattr(pending, "BATCH", rng.choice([3, 7, 500]))  # across batch ends
    lines, good, bad = [], {}, set()
    for n in range(rng.randrange(20, 120)):
        if rng.random() < 0.4:
            lines.append(invalid_line(rng, n))
            bad.add(len(lines))
        else:
            session, completed = f"s{n}", rng.random() < 0.5
            lines.append(start_line(session, total_tasks=n))
            if completed:
                lines.append(complete_line(session, completed_tasks=n))
            good[session] = (n, "completed" if completed else "running")
    journal_of(db_path, lines)

    for strict in (False, True):  # a bad line is no storage failure: neither mode raises
        Monitor(db_path, strict=strict).start_orchestration(f"after-{strict}")

    stored = rows(db_path, "SELECT session_id, total_tasks, status FROM orchestrations")
    expected = {s: (n, status) for s, (n, status) in good.items()}
    expected |= {"after-False": (0, "running"), "after-True": (0, "running")}
    assert {s: (total, status) for s, total, status in stored} == expected
    completed = rows(db_path, "SELECT session_id, completed_tasks FROM orchestrations")
    assert all(
        c == (good[s][0] if s in good and good[s][1] == "completed" else 0) for s, c in completed
    )
    records = rejected_records(db_path)
    assert sorted(r["line"] for r in records) == sorted(bad)
    for record in records:  # each kept exactly as it was
        original = lines[record["line"] - 1]
        if "text" in record:
            assert record["text"].encode("utf-8", "surrogateescape") == original
        else:
            assert record["params"] == json.loads(original)["params"]
        assert f"line {record['line']} of " in caplog.text
    assert Path(f"{db_path}.pending.jsonl").read_bytes() == b""


def test_every_write_the_tracker_keeps_is_applied(db_path):
    """Each kind of write, as the tracker keeps it, passes the replay's checks."""
    Monitor(db_path).close()
    monitor = Monitor(db_path, busy_timeout=0.01)
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    with monitor.orchestration("s1", total_tasks=2) as orch:  # start, recount, complete
        orch.update_tasks(total_tasks=3)
        with orch.agent("coder", "a1") as run:  # start, complete
            run.retry("flaky")  # start the next attempt, fail this one
            run.cost_usd, run.model, run.self_healed = 0.5, "m", True
    lock.execute("ROLLBACK")
    kept = [json.loads(line) for line in Path(f"{db_path}.pending.jsonl").read_text().splitlines()]
    assert {k["kind"] for k in kept} == set(_STATEMENTS)
    for k in kept:  # every parameter its statement names, and only the call time besides
        named = set(re.findall(r":(\w+)", _STATEMENTS[k["kind"]]))
        assert named <= set(k["params"]) <= named | {"now", "created"}
    assert monitor.flush() == 0 and monitor.rejected == 0
    # One task of three planned ran (twice) and completed: partial.
    assert rows(db_path, "SELECT status, total_tasks, completed_tasks FROM orchestrations") == [
        ("partial", 3, 1)
    ]
    assert rows(
        db_path,
        "SELECT agent_session_id, status, attempt, cost_usd, model, self_healed, error_message"
        " FROM agent_executions ORDER BY rowid",
    ) == [
        ("a1", "failed", None, None, None, 0, "flaky"),
        ("a1#2", "completed", 2, 0.5, "m", 1, None),
    ]


def test_a_torn_start_then_its_completion_names_both_lines(db_path, caplog):
    torn = start_line("s1")[:40]
    journal_of(db_path, [start_line("s0"), torn, complete_line("s1"), complete_line("s0")])
    Monitor(db_path).flush()
    assert rows(db_path, "SELECT session_id, status FROM orchestrations") == [("s0", "completed")]
    records = rejected_records(db_path)
    assert [(r["line"], r.get("kind")) for r in records] == [
        (2, None),
        (3, "complete_orchestration"),
    ]
    assert records[0]["text"] == torn
    warnings = [r.getMessage() for r in caplog.records]
    moved = (
        f"of {db_path}.pending.jsonl cannot be applied, moved to {db_path}.pending.rejected.jsonl"
    )
    assert warnings == [
        f"agentmetrics: line 2 {moved}: not JSON (torn by a killed process?)",
        f"agentmetrics: line 3 {moved}: complete_orchestration: there is no running"
        " orchestration 's1' (was its start rejected?)",
    ]


def test_a_flush_that_fails_changes_nothing(db_path, lock_down):
    journal_of(db_path, [start_line("s0"), b"garbage", start_line("s1")[:30]])
    before = Path(f"{db_path}.pending.jsonl").read_bytes()
    lock_down(db_path)
    result = CliRunner().invoke(cli, ["--db", str(db_path), "flush"])
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: The database is open read-only\n")
    assert Path(f"{db_path}.pending.jsonl").read_bytes() == before
    assert rejected_records(db_path) == []


def test_flush_reports_what_it_applied_and_what_it_rejected(db_path, caplog):
    """The issue's journal: 80 good lines, 7 garbage, 2 torn."""
    lines = [start_line(f"s{n}") for n in range(40)] + [complete_line(f"s{n}") for n in range(40)]
    for n, where in enumerate(range(5, 75, 10)):  # 7 garbage lines in between
        lines.insert(where, f"garbage {n}")
    lines.insert(30, start_line("t1")[:25])
    lines.append(complete_line("t2")[:50])  # the last line, torn
    journal_of(db_path, lines)
    bad_lines = [
        i for i, line in enumerate(lines, 1) if "garbage" in line or not line.endswith("}")
    ]
    assert len(lines) == 89 and len(bad_lines) == 9

    result = CliRunner().invoke(cli, ["--db", str(db_path), "flush"])
    assert result.exit_code == 0, result.output
    rejected = f"{db_path}.pending.rejected.jsonl"
    assert result.stdout == (
        f"Applied 80 tracking writes to {db_path}; rejected 9, kept in {rejected}\n"
    )
    assert [r["line"] for r in rejected_records(db_path)] == bad_lines
    for line in bad_lines:
        assert f"line {line} of " in caplog.text
    assert rows(db_path, "SELECT count(*) FROM orchestrations WHERE status = 'completed'") == [
        (40,)
    ]


def test_replaying_after_a_crash_applies_nothing_twice(db_path):
    lines = [start_line("s0"), complete_line("s0", completed_tasks=1)]
    journal_of(db_path, lines)
    Monitor(db_path).flush()
    before = rows(db_path, "SELECT * FROM orchestrations")
    # As if a process died after applying them and before emptying the journal.
    journal_of(db_path, lines)
    Monitor(db_path).flush()
    assert rows(db_path, "SELECT * FROM orchestrations") == before
    reasons = [r["reason"] for r in rejected_records(db_path)]
    assert reasons[0].startswith("start_orchestration: UNIQUE constraint failed")
    assert reasons[1] == (
        "complete_orchestration: there is no running orchestration 's0' (was its start rejected?)"
    )


def test_close_counts_what_it_loses_in_dropped(tmp_path, lock_down, caplog):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "t.db"
    Monitor(path).close()
    lock_down(folder)
    monitor = Monitor(path)
    for n in range(3):
        monitor.start_orchestration(f"s{n}")
    assert (monitor.pending, monitor.dropped) == (3, 0)
    with caplog.at_level(logging.WARNING, logger="agentmetrics"):
        monitor.close()
    assert "3 tracking writes could not be stored and are lost (Monitor.dropped: 3" in caplog.text
    assert (monitor.pending, monitor.dropped) == (0, 3)
