"""`agentmetrics datasette-metadata`, checked through a real Datasette's JSON API."""

import datetime as dt
import json
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import pytest
from click.testing import CliRunner

import agentmetrics
from agentmetrics.cli import cli
from agentmetrics.store.migrations import COLUMN_TYPES
from agentmetrics.timestamps import to_iso

NOW = dt.datetime.now(dt.timezone.utc)

# (agent session, agent, orchestration, hours before now, status, duration s, self-healed)
RUNS = [
    ("a1", "coder", "o1", 2, "completed", 60, 0),
    ("a2", "coder", "o1", 3, "failed", 120, 0),
    ("a3", "reviewer", "o1", 1, "completed", 30, 1),
    ("a4", "reviewer", None, 0.5, "in_progress", None, 0),
    ("a5", "coder", "o2", 30, "completed", 600, 0),
]


@pytest.fixture
def data_path(tmp_path):
    path = tmp_path / "runs.db"
    db = agentmetrics.open_database(path)
    for id_, hours in (("o2", 30), ("o1", 3)):
        db["orchestrations"].insert(
            {"id": id_, "session_id": f"s-{id_}", "status": "completed",
             "started_at": to_iso(NOW - dt.timedelta(hours=hours))}
        )  # fmt: skip
    for session, agent, parent, hours, status, seconds, healed in RUNS:
        db["agent_executions"].insert(
            {"id": session, "orchestration_id": parent, "agent_session_id": session,
             "agent_name": agent, "status": status, "self_healed": healed,
             "started_at": to_iso(NOW - dt.timedelta(hours=hours)),
             "duration_ms": None if seconds is None else seconds * 1000,
             "error_message": "boom" if status == "failed" else None}
        )  # fmt: skip
    db.close()
    # What `agentmetrics demo` leaves in its files, to be hidden too.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE _agentmetrics_demo (now TEXT, seed INTEGER, version INTEGER)")
    conn.close()
    return path


def metadata(path):
    result = CliRunner().invoke(cli, ["--db", str(path), "datasette-metadata"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_column_is_described(data_path):
    tables = metadata(data_path)["databases"]["runs"]["tables"]
    for table in ("orchestrations", "agent_executions"):
        assert list(tables[table]["columns"]) == list(COLUMN_TYPES[table])
        assert tables[table]["units"] == {"duration_ms": "ms"}
    assert tables["_sqlite_migrations"] == tables["_agentmetrics_demo"] == {"hidden": True}


def test_canned_queries_bind_their_parameter(data_path):
    queries = metadata(data_path)["databases"]["runs"]["queries"]
    assert set(queries) == {"health", "failures", "slowest_agents"}
    for query in queries.values():
        assert query["params"] == ["hours"]
        assert ":hours" in query["sql"] and "{" not in query["sql"]


def test_a_missing_database_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "none.db"), "datasette-metadata"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found")
    assert not (tmp_path / "none.db").exists()


@pytest.fixture
def datasette(data_path, tmp_path):
    """A Datasette on 127.0.0.1 (a free port) serving the file with our metadata."""
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(metadata(data_path)))
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(data_path), "-m", str(meta),
         "-h", "127.0.0.1", "-p", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stderr], daemon=True).start()
    try:
        url = None
        while url is None:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                pytest.fail("Datasette did not start within 30 s")
            if match := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = match.group(1)

        def get(path):
            with urllib.request.urlopen(url + path, timeout=10) as response:
                return json.load(response)

        yield get
    finally:
        process.kill()
        process.wait(timeout=10)


def test_datasette_hides_internal_tables(datasette):
    tables = {t["name"]: t["hidden"] for t in datasette("/runs.json")["tables"]}
    assert tables == {
        "orchestrations": False,
        "agent_executions": False,
        "_sqlite_migrations": True,
        "_agentmetrics_demo": True,
        "otel_spans": True,
        # The rollups (agentmetrics.store.rollups) are internal too.
        "am_rollups": True,
        "am_rollup_sketches": True,
        "am_rollup_state": True,
        "am_rollup_open": True,
        "am_rollup_dirty": True,
    }


def test_datasette_lists_rows_newest_first(datasette):
    rows = datasette("/runs/agent_executions.json?_shape=objects")["rows"]
    assert [r["agent_session_id"] for r in rows] == ["a4", "a3", "a1", "a2", "a5"]
    rows = datasette("/runs/orchestrations.json?_shape=objects")["rows"]
    assert [r["id"] for r in rows] == ["o1", "o2"]


def test_datasette_health_query(datasette):
    # Last 24 h: a1-a4. Finished: a1, a2, a3 (60 + 120 + 30 s); a2 failed; a3 healed.
    last_day = {
        "executions": 4,
        "completed": 2,
        "failed": 1,
        "in_progress": 1,
        "success_rate_percent": 66.7,
        "avg_duration_s": 70.0,
        "self_healed_executions": 1,
    }
    assert datasette("/runs/health.json?_shape=array&hours=24") == [last_day]
    assert datasette("/runs/health.json?_shape=array") == [last_day]  # default 24
    # 48 h adds a5 (600 s): 810 s / 4.
    [two_days] = datasette("/runs/health.json?_shape=array&hours=48")
    assert (two_days["executions"], two_days["completed"]) == (5, 3)
    assert two_days["avg_duration_s"] == 202.5
    # A value that is no number is bound as text, never run as SQL: an empty window.
    [odd] = datasette("/runs/health.json?_shape=array&hours=1%27%3B%20DROP%20TABLE%20x")
    assert odd["executions"] == 0


def test_datasette_failures_and_slowest_agents(datasette):
    failures = datasette("/runs/failures.json?_shape=array&hours=24")
    assert [(f["agent_session_id"], f["error_message"], f["orchestration"]) for f in failures] == [
        ("a2", "boom", "s-o1")
    ]
    slowest = datasette("/runs/slowest_agents.json?_shape=array&hours=24")
    assert slowest == [
        {"agent_name": "coder", "executions": 2, "avg_duration_s": 90.0, "max_duration_s": 120.0},
        {"agent_name": "reviewer", "executions": 1, "avg_duration_s": 30.0, "max_duration_s": 30.0},
    ]
    slowest = datasette("/runs/slowest_agents.json?_shape=array&hours=48")
    assert [(s["agent_name"], s["avg_duration_s"]) for s in slowest] == [
        ("coder", 260.0),
        ("reviewer", 30.0),
    ]
