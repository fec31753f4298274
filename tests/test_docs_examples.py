"""The framework examples the docs include (docs/examples/*.py) run as written, offline.

Each runs as its own process (as a reader runs it; the frameworks' instrumentation is
global), into a fresh file. Expected rows follow from the programs: four tickets, ticket
3 with search down, and the token counts the LangGraph example's fake models report.
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
FAILED = "ConnectionError: search backend unreachable"


def run_example(name, db):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TRACING_V2"))}
    env.update(OTEL_TRACES_EXPORTER="none", LANGSMITH_TRACING="false")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ticket-3 failed: search backend unreachable" in result.stdout
    return sqlite3.connect(db)


def orchestrations(conn):
    return conn.execute(
        "SELECT session_id, status, total_tasks, completed_tasks, failed_tasks"
        " FROM orchestrations ORDER BY session_id"
    ).fetchall()


def executions(conn, session):
    return conn.execute(
        "SELECT e.agent_name, e.status, e.input_tokens, e.output_tokens, e.error_message"
        " FROM agent_executions e JOIN orchestrations o ON o.id = e.orchestration_id"
        " WHERE o.session_id = ? ORDER BY e.started_at",
        [session],
    ).fetchall()


def test_pydantic_ai_example(tmp_path):
    pytest.importorskip("pydantic_ai")
    conn = run_example("pydantic_ai_example.py", tmp_path / "monitoring.db")
    assert orchestrations(conn) == [
        ("ticket-1", "completed", 3, 3, 0),
        ("ticket-2", "completed", 3, 3, 0),
        ("ticket-3", "failed", 2, 0, 2),  # the writer never ran
        ("ticket-4", "completed", 3, 3, 0),
    ]
    assert [row[:2] for row in executions(conn, "ticket-1")] == [
        ("coordinator", "completed"),
        ("researcher", "completed"),
        ("writer", "completed"),
    ]
    assert [(row[0], row[1], row[4]) for row in executions(conn, "ticket-3")] == [
        ("coordinator", "failed", FAILED),
        ("researcher", "failed", FAILED),
    ]
    # The sub-agents ran inside the coordinator's tool call.
    parents = conn.execute(
        "SELECT e.agent_name, p.agent_name FROM agent_executions e"
        " JOIN agent_executions p ON p.id = e.parent_execution_id"
    ).fetchall()
    assert sorted(set(parents)) == [("researcher", "coordinator"), ("writer", "coordinator")]


def test_langgraph_example(tmp_path):
    pytest.importorskip("langgraph")
    pytest.importorskip("openinference.instrumentation.langchain")
    conn = run_example("langgraph_example.py", tmp_path / "monitoring.db")
    assert orchestrations(conn) == [
        ("ticket-1", "completed", 2, 2, 0),
        ("ticket-2", "completed", 2, 2, 0),
        ("ticket-3", "failed", 1, 0, 1),
        ("ticket-4", "completed", 2, 2, 0),
    ]
    researched = ("researcher_agent", "completed", 12, 4, None)
    written = ("writer_agent", "completed", 30, 9, None)
    for session in ("ticket-1", "ticket-2", "ticket-4"):
        assert executions(conn, session) == [researched, written]
    assert executions(conn, "ticket-3") == [("researcher_agent", "failed", 12, 4, FAILED)]
