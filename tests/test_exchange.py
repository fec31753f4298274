import contextlib
import datetime as dt
import io
import json
import sqlite3

import pytest
from conftest import cli_result, make_original_db

import agentmetrics
from agentmetrics.errors import InvalidExport, UnknownSession
from agentmetrics.exchange import export, import_files, merge_databases
from agentmetrics.store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def ticking(start=T0, step=dt.timedelta(seconds=7)):
    moments = (start + i * step for i in range(10_000))
    return lambda: next(moments)


@pytest.fixture
def filled(db):
    """Two orchestrations (one still running), four executions, one standalone."""
    m = agentmetrics.Monitor(db, clock=ticking())
    with m.orchestration("s-1", "build", total_tasks=2) as o:
        with o.agent("backend", "a-1") as run:
            run.files_created, run.cost_usd = 3, 0.1 + 0.2
        with o.agent("tests", "a-2") as run:
            run.fail("boom")
    second = m.start_orchestration("s-2", "deploy")
    m.start_agent_execution("a-3", "backend", orchestration_id=second)
    m.start_agent_execution("a-4", "docs", orchestration_id=second)
    m.complete_agent_execution("a-4", "completed", retry_count=2, self_healed=True)
    m.start_agent_execution("solo", "linter")
    m.complete_agent_execution("solo", "completed")
    return db


def export_text(db, **kwargs) -> str:
    out = io.StringIO()
    export(db, out, **kwargs)
    return out.getvalue()


def table_rows(db, table):
    # By id: an import writes in the export's order (newest first), so rowids differ.
    return [dict(r) for r in db.query(f"SELECT * FROM {table} ORDER BY id")]


def write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_json_export_has_the_original_shape(filled):
    data = json.loads(export_text(filled))
    # Newest first, as the original; each one's executions in start order.
    assert [entry["session_id"] for entry in data] == ["s-2", "s-1", None]
    assert [[e["agent_session_id"] for e in entry["executions"]] for entry in data] == [
        ["a-3", "a-4"],
        ["a-1", "a-2"],
        ["solo"],
    ]
    for entry in data:
        assert list(entry) == [*ORCHESTRATION_COLUMNS, "executions"]
        for execution in entry["executions"]:
            assert list(execution) == list(EXECUTION_COLUMNS)
            assert execution["orchestration_id"] == entry["id"]
    assert all(data[2][c] is None for c in ORCHESTRATION_COLUMNS)
    stored = {r["agent_session_id"]: r for r in table_rows(filled, "agent_executions")}
    exported = {e["agent_session_id"]: e for entry in data for e in entry["executions"]}
    assert exported == stored  # True == 1: the booleans are checked below
    assert {k: e["self_healed"] for k, e in exported.items()} == {
        "a-1": False,
        "a-2": False,
        "a-3": False,
        "a-4": True,
        "solo": False,
    }
    assert all(type(e["self_healed"]) is bool for e in exported.values())
    assert exported["a-1"]["cost_usd"] == 0.1 + 0.2
    assert {o["session_id"]: o for o in data[:2]} == {
        r["session_id"]: {
            **r,
            "executions": [e for e in exported.values() if e["orchestration_id"] == r["id"]],
        }
        for r in table_rows(filled, "orchestrations")
    }


def dumps(value):
    return json.dumps(value, ensure_ascii=False)


def python_encoded(db, session_id=None):
    """The JSON export as the encoder before SQLite built the rows wrote it: each row
    as a dict through Python's json, one orchestration per line."""
    from agentmetrics.exchange import iter_sessions

    if session_id:
        [(orchestration, executions)] = iter_sessions(db, session_id)
        return dumps({"orchestration": orchestration, "executions": executions}) + "\n"
    entries = []
    for orchestration, executions in iter_sessions(db):
        if orchestration is None:
            orchestration = dict.fromkeys(ORCHESTRATION_COLUMNS)
            if entries and entries[-1]["session_id"] is None:
                entries[-1]["executions"].extend(executions)
                continue
        entries.append({**orchestration, "executions": executions})
    return "[\n" + ",\n".join(map(dumps, entries)) + "\n]\n" if entries else "[]\n"


def awkward_values(db):
    """Rows holding what the encoders could write differently: floats needing 17 digits
    or an exponent, infinity, escapes and non-ASCII text, odd types in typed columns."""
    texts = [
        'quote " back \\ slash / {"k": 1, "j":[2]} \\": ,"x" \\',
        "".join(map(chr, range(32))) + "\x7f",
        "é 中 🙂 \u2028",
    ]
    floats = [0.1 + 0.2, 1e-05, 1e20, 1e15, 123456789012345.6, 0.0, -2.5, float("inf"), 1 / 3]
    floats += [0.0001, 100.0, 12.25, 999999999999999.9, -1e-4, 5e-324]
    healed = [0, 1, 2, None, "yes", "", 0.5, -1, 1]
    conn = db.conn
    for i in range(9):
        conn.execute(
            "INSERT INTO orchestrations (id, session_id, task_description, status, started_at,"
            " duration_ms, total_tasks, metadata_json) VALUES (?, ?, ?, 'completed', ?, ?, ?, ?)",
            [
                f"o{i}",
                f"s{i}",
                texts[i % 3],
                f"2024-03-0{i + 1}T00:00:00.000Z",
                [1.5, 2**63 - 1, None][i % 3],
                ["x", -7, None][i % 3],
                texts[(i + 1) % 3],
            ],
        )
        for j in range(i % 3):
            conn.execute(
                "INSERT INTO agent_executions (id, orchestration_id, agent_session_id,"
                " agent_name, status, started_at, duration_ms, self_healed, cost_usd,"
                " error_message, retry_count) VALUES (?, ?, ?, ?, 'failed', ?, ?, ?, ?, ?, ?)",
                [
                    f"e{i}{j}",
                    f"o{i}" if i < 7 else None,
                    f"a{i}{j}",
                    texts[j],
                    f"2024-03-0{i + 1}T00:0{j}:00.000Z",
                    floats[(i + j) % 15],
                    healed[i],
                    floats[i + 6],
                    texts[(i + j) % 3],
                    ["3", 2.25, None][j],
                ],
            )
    conn.commit()
    return db


def test_sqlite_built_json_is_byte_identical_to_pythons(db):
    awkward_values(db)
    assert export_text(db) == python_encoded(db)
    assert export_text(db, session_id="s4") == python_encoded(db, "s4")
    from agentmetrics.exchange import iter_sessions

    expected = "".join(
        "".join(
            dumps({"type": kind, **row}) + "\n"
            for kind, row in [("orchestration", orchestration)] * (orchestration is not None)
            + [("execution", e) for e in executions]
        )
        for orchestration, executions in iter_sessions(db)
    )
    assert export_text(db, format="jsonl") == expected
    assert expected.count("\n") == 9 + 9
    # Values only Python's encoder writes this way survive the round trip.
    data = json.loads(export_text(db))
    costs = {e["agent_session_id"]: e["cost_usd"] for o in data for e in o["executions"]}
    assert (costs["a10"], costs["a40"], costs["a70"]) == (float("inf"), 100.0, -1e-4)


def test_json_export_of_the_fixtures_is_byte_identical_to_pythons(filled):
    assert export_text(filled) == python_encoded(filled)
    assert export_text(filled, session_id="s-1") == python_encoded(filled, "s-1")


def test_one_session_export(filled):
    data = json.loads(export_text(filled, session_id="s-2"))
    assert list(data) == ["orchestration", "executions"]
    assert data["orchestration"]["session_id"] == "s-2"
    assert [e["agent_session_id"] for e in data["executions"]] == ["a-3", "a-4"]
    with pytest.raises(UnknownSession):
        export_text(filled, session_id="nope")


def test_empty_database_exports_an_empty_list(db):
    assert json.loads(export_text(db)) == []
    assert export_text(db, format="jsonl") == ""


def test_jsonl_export_lines(filled):
    lines = [json.loads(line) for line in export_text(filled, format="jsonl").splitlines()]
    assert [(r["type"], r.get("session_id") or r["agent_session_id"]) for r in lines] == [
        ("orchestration", "s-2"),
        ("execution", "a-3"),
        ("execution", "a-4"),
        ("orchestration", "s-1"),
        ("execution", "a-1"),
        ("execution", "a-2"),
        ("execution", "solo"),
    ]
    assert lines[-1]["orchestration_id"] is None
    assert [r["self_healed"] for r in lines if r["type"] == "execution"] == [
        False,
        True,
        False,
        False,
        False,
    ]


def original_file_with_self_healing(path):
    """Three self-healed executions of five, in three orchestrations, as the original writes."""
    orchestrations, executions = [], []
    for i in range(3):
        started = f"2024-03-0{i + 1}T12:00:00.000Z"
        orchestrations.append(
            {"id": f"o{i}", "session_id": f"s{i}", "status": "completed", "started_at": started}
        )
        for j in range(2 if i < 2 else 1):
            executions.append(
                {
                    "id": f"e{i}{j}",
                    "orchestration_id": f"o{i}",
                    "agent_session_id": f"a{i}{j}",
                    "agent_name": "coder",
                    "status": "completed",
                    "started_at": f"2024-03-0{i + 1}T12:0{j}:00.000Z",
                    "self_healed": int(j == 0),
                }
            )
    return make_original_db(path, orchestrations, executions)


def test_json_export_answers_jq_scripts_written_for_the_original(tmp_path):
    db = agentmetrics.open_database(original_file_with_self_healing(tmp_path / "orig.db"))
    text = export_text(db)
    # jq '[.[].executions[] | select(.self_healed == true)] | length'
    data = json.loads(text)
    assert sum(e["self_healed"] is True for o in data for e in o["executions"]) == 3
    assert text.count('"self_healed": true') == 3 and text.count('"self_healed": false') == 2
    # jq '.[0].session_id': the newest orchestration.
    assert [o["session_id"] for o in data] == ["s2", "s1", "s0"]


def test_import_accepts_old_exports_oldest_first_with_0_and_1(tmp_path):
    old_style = [
        {
            "session_id": f"s{i}",
            "status": "completed",
            "started_at": f"2024-03-0{i + 1}T12:00:00.000Z",
            "executions": [
                {
                    "agent_session_id": f"a{i}",
                    "agent_name": "coder",
                    "status": "completed",
                    "started_at": f"2024-03-0{i + 1}T12:00:00.000Z",
                    "self_healed": flag,
                }
            ],
        }
        for i, flag in enumerate([1, 0, True, False])
    ]
    db = agentmetrics.open_database(tmp_path / "new.db")
    result = import_files(db, [write(tmp_path / "old.json", old_style)])
    assert (result.orchestrations.inserted, result.executions.inserted) == (4, 4)
    stored = db.execute("SELECT agent_session_id, self_healed FROM agent_executions").fetchall()
    assert sorted(stored) == [("a0", 1), ("a1", 0), ("a2", 1), ("a3", 0)]
    assert [o["session_id"] for o in json.loads(export_text(db))] == ["s3", "s2", "s1", "s0"]


def test_unknown_format(filled):
    with pytest.raises(ValueError, match="use one of json, jsonl"):
        export_text(filled, format="xml")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_export_import_export_round_trip(filled, tmp_path, fmt):
    filled.execute(
        "UPDATE agent_executions SET parent_execution_id = (SELECT id FROM agent_executions"
        " WHERE agent_session_id = 'a-1') WHERE agent_session_id IN ('a-2', 'solo')"
    )
    first = export_text(filled, format=fmt)
    path = write(tmp_path / f"export.{fmt}", first)
    fresh = agentmetrics.open_database(tmp_path / "fresh.db")
    result = import_files(fresh, [path])
    assert (result.orchestrations.inserted, result.executions.inserted) == (2, 5)
    assert export_text(fresh, format=fmt) == first
    for table in ("orchestrations", "agent_executions"):
        assert table_rows(fresh, table) == table_rows(filled, table)
    # A second import finds every row already there.
    again = import_files(fresh, [path])
    assert (again.orchestrations.skipped, again.executions.skipped) == (2, 5)
    assert again.orchestrations.inserted == again.executions.inserted == 0
    assert export_text(fresh, format=fmt) == first


def original_export():
    """What the original tool's `export` printed: raw rows, no extra columns."""
    return [
        {
            "id": "o-1",
            "session_id": "orig-1",
            "task_description": "Build",
            "status": "completed",
            "started_at": "2024-03-01T10:00:00.000Z",
            "completed_at": "2024-03-01T10:05:00+00:00",
            "duration_ms": 300000,
            "total_tasks": 1,
            "completed_tasks": 1,
            "failed_tasks": 0,
            "git_commit_hash": "abc",
            "plan_file_path": None,
            "progress_file_path": None,
            "created_at": "2024-03-01 10:00:00",
            "executions": [
                {
                    "id": "e-1",
                    "orchestration_id": "o-1",
                    "agent_session_id": "orig-a-1",
                    "agent_name": "backend-agent",
                    "task_id": "t1",
                    "task_number": 1,
                    "status": "completed",
                    "started_at": "2024-03-01T12:00:01+02:00",
                    "completed_at": "2024-03-01T10:04:00Z",
                    "duration_ms": 239000,
                    "retry_count": 0,
                    "self_healed": 0,
                    "files_created": 2,
                    "files_modified": 1,
                    "error_message": None,
                    "summary_report_path": None,
                    "session_log_path": None,
                    "created_at": "2024-03-01 10:00:01",
                }
            ],
        }
    ]


def test_import_original_export_normalises_timestamps(db, tmp_path):
    path = write(tmp_path / "all-data.json", original_export())
    result = import_files(db, [path])
    assert (result.orchestrations.inserted, result.executions.inserted) == (1, 1)
    orchestration = table_rows(db, "orchestrations")[0]
    assert orchestration["completed_at"] == "2024-03-01T10:05:00.000Z"
    assert orchestration["metadata_json"] is None
    execution = table_rows(db, "agent_executions")[0]
    assert execution["started_at"] == "2024-03-01T10:00:01.000Z"  # +02:00 moved to UTC
    assert execution["completed_at"] == "2024-03-01T10:04:00.000Z"
    assert (execution["orchestration_id"], execution["files_created"]) == ("o-1", 2)


def test_import_original_one_session_export(db, tmp_path):
    entry = original_export()[0]
    executions = entry.pop("executions")
    path = write(tmp_path / "s.json", {"orchestration": entry, "executions": executions})
    result = import_files(db, [path])
    assert (result.orchestrations.inserted, result.executions.inserted) == (1, 1)
    assert db.execute("SELECT orchestration_id FROM agent_executions").fetchone()[0] == "o-1"


def orchestration(session_id="s", status="completed", completed_at=None, id="o", **extra):
    return {
        "id": id,
        "session_id": session_id,
        "status": status,
        "started_at": "2024-03-01T10:00:00.000Z",
        "completed_at": completed_at,
        **extra,
    }


def execution(agent_session_id="a", status="completed", completed_at=None, **extra):
    return {
        "id": extra.pop("id", "e-" + agent_session_id),
        "agent_session_id": agent_session_id,
        "agent_name": "backend",
        "status": status,
        "started_at": "2024-03-01T10:00:01.000Z",
        "completed_at": completed_at,
        **extra,
    }


@pytest.mark.parametrize(
    ("stored", "incoming", "outcome"),
    [
        (("running", None), ("completed", "2024-03-01T11:00:00.000Z"), "updated"),
        (("completed", "2024-03-01T11:00:00.000Z"), ("running", None), "skipped"),
        (
            ("failed", "2024-03-01T11:00:00.000Z"),
            ("completed", "2024-03-01T11:00:01.000Z"),
            "updated",
        ),
        (
            ("completed", "2024-03-01T11:00:01.000Z"),
            ("failed", "2024-03-01T11:00:00.000Z"),
            "skipped",
        ),
        (
            ("completed", "2024-03-01T11:00:00.000Z"),
            ("completed", "2024-03-01T11:00:00.000Z"),
            "skipped",
        ),
        (("running", None), ("running", None), "skipped"),
    ],
)
def test_conflict_rules(db, tmp_path, stored, incoming, outcome):
    exec_status = {"running": "in_progress"}
    first = orchestration(status=stored[0], completed_at=stored[1], task_description="old")
    first["executions"] = [
        execution(
            status=exec_status.get(stored[0], stored[0]), completed_at=stored[1], task_id="old"
        )
    ]
    second = orchestration(status=incoming[0], completed_at=incoming[1], task_description="new")
    second["executions"] = [
        execution(
            status=exec_status.get(incoming[0], incoming[0]),
            completed_at=incoming[1],
            task_id="new",
        )
    ]
    import_files(db, [write(tmp_path / "1.json", [first])])
    result = import_files(db, [write(tmp_path / "2.json", [second])])
    assert getattr(result.orchestrations, outcome) == 1
    assert getattr(result.executions, outcome) == 1
    expected = "new" if outcome == "updated" else "old"
    assert db.execute("SELECT task_description FROM orchestrations").fetchall() == [(expected,)]
    assert db.execute("SELECT task_id FROM agent_executions").fetchall() == [(expected,)]


def test_conflict_within_one_jsonl_file(db, tmp_path):
    lines = [
        {"type": "orchestration", **orchestration(status="running")},
        {
            "type": "orchestration",
            **orchestration(status="partial", completed_at="2024-03-01T11:00:00Z"),
        },
        {"type": "orchestration", **orchestration(status="running")},
    ]
    path = write(tmp_path / "x.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    result = import_files(db, [path])
    assert (result.orchestrations.inserted, result.orchestrations.updated) == (1, 1)
    assert result.orchestrations.skipped == 1
    assert db.execute("SELECT status FROM orchestrations").fetchall() == [("partial",)]


def test_clashing_ids_are_remapped(db, tmp_path):
    import_files(
        db, [write(tmp_path / "1.json", [{**orchestration("s-1", id="X"), "executions": []}])]
    )
    incoming = {**orchestration("s-2", id="X"), "executions": [execution("a", id="E")]}
    incoming_exec_clash = {**orchestration("s-3", id="Y"), "executions": [execution("b", id="E")]}
    result = import_files(db, [write(tmp_path / "2.json", [incoming, incoming_exec_clash])])
    assert result.orchestrations.inserted == 2
    rows = dict(db.execute("SELECT session_id, id FROM orchestrations").fetchall())
    assert rows["s-1"] == "X" and rows["s-3"] == "Y"
    assert rows["s-2"] not in ("X", "Y")
    executions = {
        r[0]: r[1:]
        for r in db.execute("SELECT agent_session_id, id, orchestration_id FROM agent_executions")
    }
    assert executions["a"] == ("E", rows["s-2"])  # follows the remapped orchestration
    assert executions["b"][0] != "E" and executions["b"][1] == "Y"


def test_same_session_with_another_id_keeps_the_stored_id(db, tmp_path):
    import_files(
        db, [write(tmp_path / "1.json", [{**orchestration("s", id="X"), "executions": []}])]
    )
    again = {**orchestration("s", id="Z", status="running"), "executions": [execution("a")]}
    import_files(db, [write(tmp_path / "2.json", [again])])
    assert db.execute("SELECT id, status FROM orchestrations").fetchall() == [("X", "completed")]
    assert db.execute("SELECT orchestration_id FROM agent_executions").fetchall() == [("X",)]


# -- parent_execution_id follows renamed executions -----------------------------------


def jsonl_of(executions) -> str:
    return "".join(json.dumps({"type": "execution", **e}) + "\n" for e in executions)


def started_in_order(executions):
    """``executions`` with started_at one second apart, so a merge reads them in order."""
    for i, row in enumerate(executions):
        row["started_at"] = f"2024-03-01T10:{i // 60:02d}:{i % 60:02d}.000Z"
    return executions


def family(child_first, gap):
    """Executions whose parents are in the file (boss: id P, second: id R) or not (Q),
    children before or after their parents, ``gap`` other executions between them."""
    parents = [execution("boss", id="P"), execution("second", id="R")]
    children = [
        execution("helper", id="H", parent_execution_id="P"),
        execution("sibling", id="B", parent_execution_id="R"),
    ]
    filler = [execution(f"filler-{i}", id=f"F{i}") for i in range(gap)]
    first, last = (children, parents) if child_first else (parents, children)
    stray = execution("stray", id="T", parent_execution_id="Q")
    return started_in_order([stray, *first, *filler, *last])


def parents_and_ids(db):
    rows = db.execute(
        "SELECT agent_session_id, parent_execution_id, id FROM agent_executions"
        " WHERE agent_session_id NOT LIKE 'filler-%'"
    ).fetchall()
    return {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}


def import_family(db, tmp_path, how, rows, name="family"):
    """Import ``rows`` as JSON Lines, as JSON or by merging a database holding them;
    return the batch sizes (one per transaction)."""
    batches = []
    options = {"progress": batches.append, "lock_seconds": 0}  # batches of about 100 rows
    if how == "merge":
        source = tmp_path / f"{name}.db"
        if not source.exists():
            import_files(source, [write(tmp_path / f"{name}.jsonl", jsonl_of(rows))])
        merge_databases(db, [source], **options)
    elif how == "json":
        import_files(db, [write(tmp_path / f"{name}.json", [{"executions": rows}])], **options)
    else:
        import_files(db, [write(tmp_path / f"{name}.jsonl", jsonl_of(rows))], **options)
    return batches


@pytest.mark.parametrize("gap", [0, 150])
@pytest.mark.parametrize("child_first", [True, False])
@pytest.mark.parametrize("how", ["jsonl", "json", "merge"])
def test_children_follow_a_renamed_parent_execution(db, tmp_path, how, child_first, gap):
    # Stored: "old" owns the id P, and "kid" is its child.
    stored = [execution("old", id="P"), execution("kid", id="K", parent_execution_id="P")]
    import_files(db, [write(tmp_path / "stored.jsonl", jsonl_of(stored))])
    batches = import_family(db, tmp_path, how, family(child_first, gap))
    assert len(batches) == (1 if gap == 0 else 2)  # child and parent in other transactions
    parents, ids = parents_and_ids(db)
    assert ids["old"] == "P" and ids["boss"] not in ("P", None)  # boss is renamed
    assert (ids["helper"], ids["second"], ids["sibling"]) == ("H", "R", "B")
    assert parents == {
        "old": None,
        "kid": "P",  # a stored child keeps its stored parent
        "boss": None,
        "helper": ids["boss"],  # follows its renamed parent
        "second": None,
        "sibling": "R",  # parent not renamed: unchanged
        "stray": "Q",  # parent outside the file: unchanged
    }
    assert db.execute("SELECT name FROM temp.sqlite_master").fetchall() == []  # cleaned up
    before = table_rows(db, "agent_executions")
    import_family(db, tmp_path, how, family(child_first, gap))
    assert table_rows(db, "agent_executions") == before


@pytest.mark.parametrize("retry_first", [True, False])
@pytest.mark.parametrize("how", ["jsonl", "json", "merge"])
def test_later_attempts_follow_a_renamed_first_attempt(db, tmp_path, how, retry_first):
    # Stored: "old" owns the id P. The file's first attempt P is renamed on import.
    import_files(db, [write(tmp_path / "stored.jsonl", jsonl_of([execution("old", id="P")]))])
    rows = [
        execution("coder", id="P", status="failed"),
        execution("coder#2", id="A", attempt=2, first_attempt_id="P", parent_execution_id="P"),
    ]
    import_family(db, tmp_path, how, started_in_order(rows[::-1] if retry_first else rows))
    got = dict(
        db.execute(
            "SELECT agent_session_id, id || ' ' || ifnull(first_attempt_id, '-') || ' '"
            " || ifnull(parent_execution_id, '-') || ' ' || ifnull(attempt, '-')"
            " FROM agent_executions"
        ).fetchall()
    )
    renamed = got["coder"].split()[0]
    assert renamed not in ("P", "A")
    assert got == {
        "old": "P - - -",
        "coder": f"{renamed} - - -",
        "coder#2": f"A {renamed} {renamed} 2",
    }


@pytest.mark.parametrize("child_first", [True, False])
def test_children_follow_a_parent_stored_under_another_id(db, tmp_path, child_first):
    # "boss" is already stored as S: the file's id P for it stands for S.
    import_files(db, [write(tmp_path / "stored.jsonl", jsonl_of([execution("boss", id="S")]))])
    rows = [execution("boss", id="P"), execution("helper", id="H", parent_execution_id="P")]
    import_family(db, tmp_path, "jsonl", started_in_order(rows[::-1] if child_first else rows))
    parents, ids = parents_and_ids(db)
    assert ids == {"boss": "S", "helper": "H"}
    assert parents == {"boss": None, "helper": "S"}


def test_child_imported_before_an_interruption_follows_its_renamed_parent(db, tmp_path):
    import_files(db, [write(tmp_path / "stored.jsonl", jsonl_of([execution("old", id="P")]))])
    rows = family(child_first=True, gap=150)
    # Killed after the first transactions: the children are stored, their parents not.
    import_family(db, tmp_path, "jsonl", rows[:100], name="part")
    assert parents_and_ids(db)[0]["helper"] == "P"
    import_family(db, tmp_path, "jsonl", rows)
    parents, ids = parents_and_ids(db)
    assert ids["boss"] not in ("P", None)
    assert (parents["helper"], parents["sibling"], parents["stray"]) == (ids["boss"], "R", "Q")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("[{", "invalid JSON"),
        ('{"a": 1}', "expected an export"),
        ("[1]", "entry 1: expected an object"),
        ([{**orchestration(), "status": "done"}], "status must be one of"),
        ([{**orchestration(), "session_id": None}], "session_id must be a non-empty string"),
        ([{**orchestration(), "started_at": "yesterday"}], "started_at is not a timestamp"),
        ([{**orchestration(), "total_tasks": -1}], "total_tasks must not be negative"),
        ([{**orchestration(), "executions": [execution(agent_name="")]}], "agent_name"),
        ([{**orchestration(), "executions": [execution(cost_usd="1$")]}], "cost_usd"),
        ([{**orchestration(), "executions": [execution(cost_usd=-0.5)]}], "cost_usd"),
        ([{**orchestration(), "total_tasks": 2**63}], "total_tasks is too large to store"),
        ('[{"session_id": "s", "duration_ms": ' + "9" * 5000 + "}]", "Exceeds the limit"),
        ([{**orchestration(), "total_tasks": "5"}], "total_tasks must be a whole number"),
        ([{**orchestration(), "task_description": {"a": 1}}], "task_description must be a str"),
        ([{**orchestration(), "executions": [execution(error_message=[1])]}], "error_message"),
        ([{**orchestration(), "git_commit_hash": 2**64}], "git_commit_hash must be a string"),
        ([{**orchestration(), "started_at": "0999-10-30T10:00:00Z"}], "before the year 1000"),
        ([{**orchestration(), "created_at": "999-10-30 10:00:00"}], "created_at is not a time"),
        ([{**orchestration(), "started_at": "9999-12-31T23:00:00-05:00"}], "not a timestamp"),
        ([{**orchestration(), "task_description": "\ud800"}], "lone surrogate"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"type": "execution", "metadata_json": ' + "[" * 100_000 + "\n", "nested too deeply"),
        ('{"orchestration": [1], "executions": []}', "expected an export"),
        (
            '{"type": "orchestration", "session_id": "s", "status": "running",'
            ' "started_at": "2024-01-01T00:00:00Z"}\nnot json\n',
            "line 2: invalid JSON",
        ),
        (
            '{"type": "execution", "agent_session_id": "a", "agent_name": "x",'
            ' "status": "completed",'
            ' "started_at": "2024-01-01T00:00:00Z", "orchestration_id": "o"}\n'
            '{"type": "orchestration", "id": "o", "session_id": "s", "status": "running",'
            ' "started_at": "2024-01-01T00:00:00Z"}\n',
            "must come before its executions",
        ),
    ],
)
def test_malformed_file_imports_nothing(db, tmp_path, content, message):
    good = write(tmp_path / "good.json", [{**orchestration("fine"), "executions": [execution()]}])
    bad = write(tmp_path / "bad.json", content)
    with pytest.raises(InvalidExport, match=message) as info:
        import_files(db, [good, bad])
    assert str(info.value).startswith(bad)
    assert db.execute("SELECT count(*) FROM orchestrations").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM agent_executions").fetchone()[0] == 0


def test_unreadable_file(db, tmp_path):
    with pytest.raises(InvalidExport, match="Cannot read"):
        import_files(db, [str(tmp_path / "missing.json")])
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00[")
    with pytest.raises(InvalidExport, match="not a UTF-8 text file"):
        import_files(db, [str(tmp_path / "binary.json")])


def test_orphan_executions_are_exported_and_imported_standalone(tmp_path):
    path = make_original_db(
        tmp_path / "orphans.db",
        executions=[
            {
                "id": "e",
                "orchestration_id": "gone",
                "agent_session_id": "orphan",
                "agent_name": "x",
                "status": "completed",
                "started_at": "2024-03-01T10:00:00.000Z",
            }
        ],
    )
    data = json.loads(export_text(agentmetrics.open_database(path, read_only=True)))
    assert data[0]["session_id"] is None
    assert data[0]["executions"][0]["orchestration_id"] == "gone"
    fresh = agentmetrics.open_database(tmp_path / "fresh.db")
    result = import_files(fresh, [write(tmp_path / "o.json", data)])
    assert result.executions.inserted == 1
    assert fresh.execute("SELECT orchestration_id FROM agent_executions").fetchall() == [(None,)]


def original_file_written_in_one_second(path):
    """Several writers of the original within one second: o-a and o-b created in the
    same millisecond, o-c created last though its run started first, and o-b's
    executions written out of start order (created_at is the second of each insert)."""
    second, ms = "2024-03-01 12:00:00", "2024-03-01T12:00:00.{:03d}Z"
    orchestrations = [
        {"id": f"o-{s}", "session_id": s, "status": "running", "started_at": ms.format(started)}
        for s, started in (("d", 100), ("a", 500), ("b", 500), ("c", 200))
    ]
    executions = [
        {
            "id": f"e-{name}",
            "orchestration_id": "o-b",
            "agent_session_id": name,
            "agent_name": "coder",
            "status": "in_progress",
            "started_at": ms.format(started),
        }
        for name, started in (("x", 900), ("y", 700), ("z", 700))
    ]
    for row in (*orchestrations, *executions):
        row["created_at"] = second
    orchestrations[0]["created_at"] = "2024-03-01 11:59:59"
    return make_original_db(path, orchestrations, executions)


def test_json_export_order_is_the_originals_query_order_with_its_ties(tmp_path):
    path = original_file_written_in_one_second(tmp_path / "orig.db")
    # What the original's export runs, on its own file, before we open it.
    conn = sqlite3.connect(path)
    original = [
        (session, [row[0] for row in conn.execute(
            "SELECT agent_session_id FROM agent_executions WHERE orchestration_id = ?"
            " ORDER BY created_at", [orchestration_id])])
        for orchestration_id, session in conn.execute(
            "SELECT id, session_id FROM orchestrations ORDER BY created_at DESC LIMIT ?", [1000])
    ]  # fmt: skip
    conn.close()
    # Newest second first; in one second, the last written first (executions: as written).
    expected = [("c", []), ("b", ["x", "y", "z"]), ("a", []), ("d", [])]
    assert original == expected
    db = agentmetrics.open_database(path)
    data = json.loads(export_text(db))
    assert [(o["session_id"], [e["agent_session_id"] for e in o["executions"]]) for o in data] == (
        expected
    )
    lines = [json.loads(line) for line in export_text(db, format="jsonl").splitlines()]
    db.close()
    in_order = [row.get("session_id") or row["agent_session_id"] for row in lines]
    assert in_order == ["c", "b", "x", "y", "z", "a", "d"]
    one = json.loads(cli_result("--db", path, "export", "b").stdout)
    assert [e["agent_session_id"] for e in one["executions"]] == ["x", "y", "z"]


def original_rows():
    orchestrations = [
        {
            "id": "o-1",
            "session_id": "m-1",
            "status": "completed",
            "started_at": "2024-03-01T10:00:00.000Z",
            "completed_at": "2024-03-01T10:10:00.000Z",
            "duration_ms": 600000,
            "created_at": "2024-03-01 10:00:00",
        },
        {
            "id": "o-2",
            "session_id": "m-2",
            "status": "running",
            "started_at": "2024-03-02T10:00:00.000Z",
        },
    ]
    executions = [
        {
            "id": "e-1",
            "orchestration_id": "o-1",
            "agent_session_id": "m-a-1",
            "agent_name": "backend",
            "status": "completed",
            "started_at": "2024-03-01T10:00:01.000Z",
            "completed_at": "2024-03-01T10:05:00.000Z",
            "duration_ms": 299000,
            "files_created": 4,
        },
        {
            "id": "e-2",
            "orchestration_id": "o-2",
            "agent_session_id": "m-a-2",
            "agent_name": "tests",
            "status": "in_progress",
            "started_at": "2024-03-02T10:00:01.000Z",
        },
        {
            "id": "e-3",
            "orchestration_id": None,
            "agent_session_id": "m-a-3",
            "agent_name": "solo",
            "status": "failed",
            "started_at": "2024-03-03T10:00:01.000Z",
            "completed_at": "2024-03-03T10:00:02.000Z",
            "duration_ms": 1000,
            "error_message": "x",
        },
    ]
    return orchestrations, executions


def test_merge_original_database(db, tmp_path):
    orchestrations, executions = original_rows()
    source = make_original_db(tmp_path / "original.db", orchestrations, executions)
    before = source.read_bytes()
    result = merge_databases(db, [source])
    assert (result.orchestrations.inserted, result.executions.inserted) == (2, 3)
    assert source.read_bytes() == before  # read-only
    conn = sqlite3.connect(source)
    columns = "id, session_id, status, started_at, completed_at, duration_ms"
    assert (
        db.execute(f"SELECT {columns} FROM orchestrations ORDER BY id").fetchall()
        == conn.execute(f"SELECT {columns} FROM orchestrations ORDER BY id").fetchall()
    )
    columns = (
        "id, orchestration_id, agent_session_id, status, duration_ms, files_created, error_message"
    )
    assert (
        db.execute(f"SELECT {columns} FROM agent_executions ORDER BY id").fetchall()
        == conn.execute(f"SELECT {columns} FROM agent_executions ORDER BY id").fetchall()
    )
    conn.close()
    # Merging again changes nothing; a newer copy where m-2 finished updates it.
    again = merge_databases(db, [source])
    assert again.orchestrations.skipped == 2 and again.executions.skipped == 3
    orchestrations[1].update(status="failed", completed_at="2024-03-02T11:00:00.000Z")
    newer = make_original_db(tmp_path / "newer.db", orchestrations, executions)
    result = merge_databases(db, [newer])
    assert (result.orchestrations.updated, result.orchestrations.skipped) == (1, 1)
    assert db.execute("SELECT status FROM orchestrations WHERE session_id = 'm-2'").fetchone() == (
        "failed",
    )


def test_merge_errors(db, tmp_path, db_path):
    with pytest.raises(InvalidExport, match="No database found"):
        merge_databases(db, [tmp_path / "missing.db"])
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(InvalidExport, match="not an SQLite database"):
        merge_databases(db, [tmp_path / "text.db"])
    with pytest.raises(InvalidExport, match="the database being merged into"):
        merge_databases(db, [db_path])


def wal_source(folder):
    """An agentmetrics file (WAL mode) alone in ``folder``, closed: no -wal, no -shm."""
    folder.mkdir()
    source = folder / "source.db"
    monitor = agentmetrics.Monitor(source)
    monitor.start_orchestration("s1")
    monitor.close()
    with contextlib.closing(sqlite3.connect(source)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert sorted(p.name for p in folder.iterdir()) == ["source.db"]
    return source


def test_merge_creates_nothing_beside_the_source(tmp_path):
    """A read-only connection left an empty -wal and a 32 KB -shm beside the source."""
    source = wal_source(tmp_path / "sources")
    before = source.read_bytes()
    result = cli_result("--db", tmp_path / "target.db", "merge", source)
    assert result.exit_code == 0, result.output
    assert "Orchestrations: 1 inserted" in result.output
    assert sorted(p.name for p in source.parent.iterdir()) == ["source.db"]
    assert source.read_bytes() == before


def test_merge_leaves_a_live_writers_files(tmp_path):
    """The -wal and -shm of a writer that has the source open are its own: they stay,
    and its later writes are not lost."""
    source = wal_source(tmp_path / "sources")
    writer = agentmetrics.Monitor(source)
    writer.start_orchestration("s2")
    merge_databases(tmp_path / "target.db", [source])
    assert sorted(p.name for p in source.parent.iterdir()) == [
        "source.db",
        "source.db-shm",
        "source.db-wal",
    ]
    writer.start_orchestration("s3")
    writer.close()
    conn = sqlite3.connect(source)
    assert conn.execute("SELECT session_id FROM orchestrations ORDER BY 1").fetchall() == [
        ("s1",),
        ("s2",),
        ("s3",),
    ]
    conn.close()


def test_read_only_database_refuses_writes(tmp_path):
    source = wal_source(tmp_path / "sources")
    db = agentmetrics.open_database(source, read_only=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("DELETE FROM orchestrations")
    db.close()
    assert sorted(p.name for p in source.parent.iterdir()) == ["source.db"]


def test_progress_callbacks(filled, tmp_path):
    path = write(tmp_path / "e.json", export_text(filled))
    seen = []
    totals = []
    import_files(tmp_path / "new.db", [path], progress=seen.append, on_total=totals.append)
    assert totals == [7] and sum(seen) == 7


@pytest.mark.parametrize("indent", [None, 2])
def test_json_layouts_other_than_ours_import_the_same(filled, tmp_path, indent):
    # Our export puts one entry per line and is streamed; a list on one line or
    # pretty-printed (JSON.stringify(data, null, 2)) is parsed whole: same rows.
    entries = json.loads(export_text(filled))
    reformatted = write(tmp_path / "other.json", json.dumps(entries, indent=indent))
    ours = write(tmp_path / "ours.json", export_text(filled))
    for path in (reformatted, ours):
        fresh = agentmetrics.open_database(tmp_path / f"fresh-{indent}-{len(path)}.db")
        result = import_files(fresh, [path])
        assert (result.orchestrations.inserted, result.executions.inserted) == (2, 5)
        for table in ("orchestrations", "agent_executions"):
            assert table_rows(fresh, table) == table_rows(filled, table)


def test_one_entry_per_line_with_a_multiline_entry_falls_back(filled, tmp_path):
    lines = export_text(filled).splitlines()
    # Spread the second entry over several lines: still valid JSON, not line-per-entry.
    lines[2] = json.dumps(json.loads(lines[2].rstrip(",")), indent=1) + ","
    path = write(tmp_path / "mixed.json", "\n".join(lines))
    result = import_files(agentmetrics.open_database(tmp_path / "mixed.db"), [path])
    assert (result.orchestrations.inserted, result.executions.inserted) == (2, 5)


def test_one_registry_for_every_export_format(db, tmp_path):
    """json/jsonl/otlp/otlp-protobuf and csv/parquet are all in EXPORT_FORMATS; each writer refuses
    the other kind with the library's own error."""
    from agentmetrics.errors import InvalidValue
    from agentmetrics.exchange import EXPORT_FORMATS, export_table

    assert list(EXPORT_FORMATS) == ["json", "jsonl", "otlp", "otlp-protobuf", "csv", "parquet"]
    with pytest.raises(InvalidValue, match="use one of json, jsonl, otlp, otlp-protobuf$"):
        export(db, io.StringIO(), "csv")
    with pytest.raises(InvalidValue, match="use one of csv, parquet$"):
        export_table(db, "executions", tmp_path / "x.json", "json")
    assert not (tmp_path / "x.json").exists()


# -- importing what the original's documented recipe writes --------------------------------


# `npm run monitor export > all-data.json` (MONITORING.md): npm's banner, then the
# original's rows as better-sqlite3 returns them (snake_case, self_healed 0/1).
NPM_BANNER = "\n> orchestrator@1.0.0 monitor\n> tsx src/monitoring/cli.ts export\n\n"

ORIGINAL_EXPORT = """[
  {
    "id": "0b8f6c1e-8a8e-4d5c-9a43-3f0e2f1d7a10",
    "session_id": "s-orig",
    "task_description": "Build and deploy",
    "status": "completed",
    "started_at": "2026-11-01T10:00:00.000Z",
    "completed_at": "2026-11-01T10:05:00.000Z",
    "duration_ms": 300000,
    "total_tasks": 1,
    "completed_tasks": 1,
    "failed_tasks": 0,
    "git_commit_hash": null,
    "plan_file_path": null,
    "progress_file_path": null,
    "created_at": "2026-11-01 10:00:00",
    "executions": [
      {
        "id": "5d1c2b7a-9f3e-4e21-8c4b-2a6d0e9f8b31",
        "orchestration_id": "0b8f6c1e-8a8e-4d5c-9a43-3f0e2f1d7a10",
        "agent_session_id": "a-orig",
        "agent_name": "backend-agent",
        "task_id": null,
        "task_number": 1,
        "status": "completed",
        "started_at": "2026-11-01T10:00:01.000Z",
        "completed_at": "2026-11-01T10:01:01.000Z",
        "duration_ms": 60000,
        "retry_count": 1,
        "self_healed": 1,
        "files_created": 3,
        "files_modified": 5,
        "error_message": null,
        "summary_report_path": null,
        "session_log_path": null,
        "created_at": "2026-11-01 10:00:01"
      }
    ]
  }
]
"""


@pytest.mark.parametrize(
    ("bom", "banner"), [("", NPM_BANNER), ("\ufeff", ""), ("\ufeff", NPM_BANNER)]
)
def test_import_the_originals_export_as_redirected_by_npm(tmp_path, db_path, bom, banner):
    path = tmp_path / "all-data.json"
    path.write_text(bom + banner + ORIGINAL_EXPORT, encoding="utf-8")
    result = cli_result("--db", db_path, "import", path)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Orchestrations: 1 inserted, 0 updated, 0 skipped\n"
        "Executions: 1 inserted, 0 updated, 0 skipped\n"
    )
    with sqlite3.connect(db_path) as raw:
        row = raw.execute(
            "SELECT e.self_healed, e.retry_count, e.files_modified, e.created_at, o.session_id"
            " FROM agent_executions e JOIN orchestrations o ON o.id = e.orchestration_id"
        ).fetchone()
    assert row == (1, 1, 5, "2026-11-01 10:00:01", "s-orig")


def test_import_jsonl_after_npm_banner_and_error_line_numbers(tmp_path, db_path):
    good = tmp_path / "all.jsonl"
    line = (
        '{"type": "execution", "agent_session_id": "a", "agent_name": "x",'
        ' "status": "completed", "started_at": "2026-11-01T10:00:00.000Z"}\n'
    )
    good.write_text(NPM_BANNER + line, encoding="utf-8")
    assert "Executions: 1 inserted" in cli_result("--db", db_path, "import", good).output
    bad = tmp_path / "bad.json"
    bad.write_text(NPM_BANNER + "[\n{,\n]\n", encoding="utf-8")
    result = cli_result("--db", db_path, "import", bad)
    assert result.exit_code == 1 and "Traceback" not in result.output
    # The banner is four lines, so the "{," of the JSON is line 6 of the file.
    assert result.output.strip().endswith("at line 6)")


def test_finished_rows_without_duration_get_it_from_their_timestamps(db, tmp_path):
    path = write(
        tmp_path / "no-duration.json",
        [
            {
                **orchestration(completed_at="2024-03-01T11:00:00Z"),
                "executions": [
                    execution("a", completed_at="2024-03-01T10:00:31.5Z"),
                    execution("b", status="failed", agent_name="never-finished"),
                    execution("c", status="in_progress", agent_name="x"),
                ],
            }
        ],
    )
    import_files(db, [path])
    # Started at 10:00:00 (orchestration) and 10:00:01 (executions): 1 h and 30.5 s.
    assert db.execute("SELECT duration_ms FROM orchestrations").fetchall() == [(3_600_000,)]
    assert db.execute(
        "SELECT agent_session_id, duration_ms FROM agent_executions ORDER BY 1"
    ).fetchall() == [("a", 30_500), ("b", None), ("c", None)]


def test_costs_after_importing_finished_executions_without_duration(tmp_path):
    from click.testing import CliRunner

    from agentmetrics.cli import cli

    path = write(
        tmp_path / "no-duration.json",
        [
            {
                **orchestration(),
                "executions": [
                    execution("a", completed_at="2024-03-01T10:00:31Z"),
                    execution("b", status="failed", agent_name="never-finished"),
                ],
            }
        ],
    )
    target = str(tmp_path / "costs.db")
    assert CliRunner().invoke(cli, ["--db", target, "import", path]).exit_code == 0
    # By hand: a ran 30 s (10:00:01 to 10:00:31), priced by time at the default
    # $1/hour: 30 / 3600 = $0.008333; b failed without an end: no duration, $0.
    # (--json rounds to 10 significant digits.)
    for by in ("agent", "day", "orchestration"):
        result = CliRunner().invoke(cli, ["--db", target, "costs", "--by", by, "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert sum(row["finished"] for row in rows) == 2
        assert sum(row["total_duration_ms"] or 0 for row in rows) == 30_000
        assert sum(row["cost_usd"] for row in rows) == pytest.approx(30 / 3600, rel=1e-8)
        if by == "agent":
            costs = {row["agent_name"]: row["cost_usd"] for row in rows}
            assert costs == {"backend": pytest.approx(30 / 3600, rel=1e-8), "never-finished": 0}
    table = CliRunner().invoke(cli, ["--db", target, "costs"])
    assert table.output.endswith("\nTotal: $0.01 over 2 finished executions\n")


@pytest.mark.parametrize("merge", [False, True])
def test_rejected_import_into_a_new_file_leaves_nothing(tmp_path, merge):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"session_id": "x", "status": "nope"}]')
    target = tmp_path / "new.db"
    with pytest.raises(InvalidExport):
        if merge:
            merge_databases(target, [tmp_path / "missing.db"])
        else:
            import_files(target, [bad])
    assert not list(tmp_path.glob("new.db*"))


def test_import_into_an_existing_file_keeps_it(db_path, tmp_path):
    agentmetrics.Monitor(db_path).start_orchestration("kept")
    with pytest.raises(InvalidExport):
        import_files(db_path, [write(tmp_path / "bad.json", "[1]")])
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT session_id FROM orchestrations").fetchall() == [("kept",)]
    conn.close()


def test_deep_metadata_is_stored_or_refused_cleanly(db, tmp_path):
    # Somewhere below Python's recursion limit, json.loads still parses what
    # json.dumps, called deeper in the stack, can no longer write.
    for depth in range(900, 1001, 4):
        line = json.dumps({"type": "execution", **execution(f"a{depth}")})[:-1]
        path = tmp_path / "deep.jsonl"
        path.write_text(f'{line}, "metadata_json": {"[" * depth}{"]" * depth}}}\n')
        try:
            import_files(db, [path])
        except InvalidExport as e:
            assert "nested too deeply" in str(e)


# -- short transactions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_source(tmp_path_factory):
    """A demo database of 150 orchestrations (about ten executions each)."""
    from agentmetrics.demo import build_demo

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    build_demo(path, orchestrations=150, now="2024-06-01T00:00:00Z")
    return path


def expected_executions(path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    counts = dict(
        conn.execute(
            "SELECT o.id, count(e.id) FROM orchestrations o"
            " LEFT JOIN agent_executions e ON e.orchestration_id = o.id GROUP BY o.id"
        )
    )
    conn.close()
    return counts


def stored_executions(path) -> dict[str, int]:
    return expected_executions(path)


@pytest.mark.parametrize("kind", ["json", "jsonl", "merge"])
def test_each_transaction_holds_whole_orchestrations(demo_source, tmp_path, monkeypatch, kind):
    import agentmetrics.exchange.writer as writer

    expected = expected_executions(demo_source)
    target = tmp_path / "target.db"
    commits = []
    real = writer.write_transaction

    @contextlib.contextmanager
    def checked(db):
        with real(db):
            yield db
        # Committed: another connection sees each orchestration with all its executions.
        stored = stored_executions(target)
        assert all(stored[o] == expected[o] for o in stored)
        commits.append(len(stored))

    monkeypatch.setattr(writer, "write_transaction", checked)
    if kind == "merge":
        merge_databases(target, [demo_source], lock_seconds=0)
    else:
        path = tmp_path / f"demo.{kind}"
        with path.open("w") as out:
            export(agentmetrics.open_database(demo_source, read_only=True), out, kind)
        import_files(target, [path], lock_seconds=0)
    # lock_seconds=0: every batch stays at its first size, about 100 rows.
    rows = len(expected) + sum(expected.values())
    assert len(commits) >= rows // 110
    assert commits[-1] == len(expected)
    assert stored_executions(target) == expected


WRITER = """
import sqlite3, sys, time
path, stop = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
done = errors = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        conn.execute(
            "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at)"
            " VALUES (?, ?, 'writer', 'in_progress', '2024-01-01T00:00:00.000Z')",
            [f"w-{done}", f"w-{done}"],
        )
        done += 1
    except sqlite3.OperationalError as e:
        errors += 1
        print(e, file=sys.stderr, flush=True)
    try:
        open(stop).close()
        break
    except FileNotFoundError:
        time.sleep(0.005)
print(done, errors, flush=True)
"""


@pytest.fixture
def copies(demo_source, tmp_path):
    """The demo as JSON Lines five times over, under other ids: about 8,000 rows."""
    path = tmp_path / "demo.jsonl"
    with path.open("w") as out:
        export(agentmetrics.open_database(demo_source, read_only=True), out, "jsonl")
    big = tmp_path / "big.jsonl"
    keys = ("id", "orchestration_id", "session_id", "agent_session_id")
    with big.open("w") as out:
        for i in range(5):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                row.update({k: f"{i}-{row[k]}" for k in keys if row.get(k) is not None})
                out.write(json.dumps(row) + "\n")
    return big


def test_a_writer_with_a_short_busy_timeout_is_never_locked_out(copies, tmp_path):
    import subprocess
    import sys

    # The writer's 1 s busy timeout is far below what importing the whole file in
    # one transaction takes, and far above one short transaction.
    target = tmp_path / "target.db"
    agentmetrics.open_database(target).close()
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = import_files(target, [copies], lock_seconds=0.05)
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
    done, errors = map(int, out.split())
    assert (errors, err) == (0, "")
    assert done > 0
    assert result.orchestrations.inserted == 5 * 150


def test_import_killed_midway_is_completed_by_running_it_again(copies, demo_source, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "target.db"
    code = (
        "import sys; from agentmetrics.exchange import import_files;"
        " import_files(sys.argv[1], [sys.argv[2]], lock_seconds=0.01)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(copies)])
    stored: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 30
        while not stored and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            if target.exists():
                with contextlib.suppress(sqlite3.DatabaseError):  # not created yet
                    stored = stored_executions(target)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Killed between transactions: whole orchestrations only, and not all of them.
    expected = {
        f"{i}-{o}": n for i in range(5) for o, n in expected_executions(demo_source).items()
    }
    stored = stored_executions(target)
    assert 0 < len(stored) < len(expected)
    assert all(stored[o] == expected[o] for o in stored)
    result = import_files(target, [copies])
    assert result.orchestrations.inserted == len(expected) - len(stored)
    assert result.orchestrations.updated == result.executions.updated == 0
    assert stored_executions(target) == expected
    clean = tmp_path / "clean.db"
    import_files(clean, [copies])
    resumed, uninterrupted = agentmetrics.open_database(target), agentmetrics.open_database(clean)
    for table in ("orchestrations", "agent_executions"):
        order = "session_id" if table == "orchestrations" else "agent_session_id"
        query = f"SELECT * FROM {table} ORDER BY {order}"
        assert resumed.execute(query).fetchall() == uninterrupted.execute(query).fetchall()
