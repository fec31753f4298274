import datetime as dt
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import make_original_db

import agentmetrics
from agentmetrics.cli import cli

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def invoke(*args, exit_code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    if exit_code:
        assert "Traceback" not in result.output
    return result


def fail(*args, exit_code=1) -> str:
    """Run a command that must fail; return its one error line."""
    result = invoke(*args, exit_code=exit_code)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def filled(db_path):
    """s-1: completed, 2 executions (one failed); s-2: running, 1 execution; 1 standalone."""
    moments = (T0 + i * dt.timedelta(seconds=5) for i in range(100))
    m = agentmetrics.Monitor(db_path, clock=lambda: next(moments))
    with m.orchestration("s-1", "build") as o:
        with o.agent("backend", "a-1") as run:
            run.files_created = 2
        with o.agent("tests", "a-2") as run:
            run.fail("boom")
    second = m.start_orchestration("s-2", "deploy")
    m.start_agent_execution("a-3", "backend", orchestration_id=second)
    m.start_agent_execution("solo", "linter")
    m.close()
    return db_path


def counts(orchestrations, executions) -> str:
    """What import and merge print: (inserted, updated, skipped) per table."""
    return "".join(
        f"{label}: {i} inserted, {u} updated, {s} skipped\n"
        for label, (i, u, s) in (("Orchestrations", orchestrations), ("Executions", executions))
    )


# -- export -----------------------------------------------------------------------------


def test_export_json_to_stdout(filled):
    data = json.loads(invoke("--db", filled, "export").stdout)
    assert [entry["session_id"] for entry in data] == ["s-1", "s-2", None]
    assert [len(entry["executions"]) for entry in data] == [2, 1, 1]


def test_export_db_option_after_the_command(filled):
    assert invoke("export", "s-1", "--db", filled).stdout.startswith('{"orchestration": ')


def test_export_one_session_to_file(filled, tmp_path):
    out = tmp_path / "s.json"
    result = invoke("--db", filled, "export", "s-1", "-o", out)
    assert "Exported 1 orchestrations and 2 executions" in result.stderr
    data = json.loads(out.read_text())
    assert data["orchestration"]["session_id"] == "s-1"
    assert [e["agent_session_id"] for e in data["executions"]] == ["a-1", "a-2"]


def test_export_jsonl(filled):
    lines = invoke("--db", filled, "export", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines] == [
        "orchestration",
        "execution",
        "execution",
        "orchestration",
        "execution",
        "execution",
    ]


def test_export_errors(filled, tmp_path):
    assert (
        fail("--db", filled, "export", "nope") == "Error: No orchestration with session id 'nope'"
    )
    assert not (tmp_path / "x.json").exists()
    fail("--db", filled, "export", "nope", "-o", tmp_path / "x.json")
    assert list(tmp_path.glob("x.json*")) == []
    assert "Unknown format 'xml'" in fail("--db", filled, "export", "--format", "xml")
    missing = tmp_path / "missing.db"
    assert fail("--db", missing, "export") == f"Error: No database found at {missing}"
    assert not missing.exists()
    assert "Cannot write" in fail("--db", filled, "export", "-o", tmp_path / "no" / "x.json")


# -- import and merge ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_export_import_export(filled, tmp_path, fmt):
    out = tmp_path / f"all.{fmt}"
    invoke("--db", filled, "export", "--format", fmt, "-o", out)
    fresh = tmp_path / "fresh.db"
    result = invoke("import", out, "--db", fresh)
    assert result.stdout == counts((2, 0, 0), (4, 0, 0))
    assert invoke("--db", fresh, "export", "--format", fmt).stdout == out.read_text()
    result = invoke("--db", fresh, "import", out, out)
    assert result.stdout == counts((0, 0, 4), (0, 0, 8))


def test_import_updates_rows_further_along(filled, tmp_path):
    early = tmp_path / "early.json"
    invoke("--db", filled, "export", "-o", early)
    m = agentmetrics.Monitor(filled)
    m.complete_agent_execution("a-3", "completed")
    m.complete_orchestration("s-2", "completed")
    m.close()
    late = tmp_path / "late.json"
    invoke("--db", filled, "export", "-o", late)
    target = tmp_path / "t.db"
    invoke("--db", target, "import", early)
    result = invoke("--db", target, "import", late, early)
    assert result.stdout == counts((0, 1, 3), (0, 1, 7))


def test_import_errors(filled, tmp_path):
    good = tmp_path / "good.json"
    invoke("--db", filled, "export", "-o", good)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"session_id": "x", "status": "nope", "started_at": "2024-01-01"}]')
    target = tmp_path / "t.db"
    line = fail("--db", target, "import", good, bad)
    assert line == (
        f"Error: {bad}: entry 1: orchestration 'x': status must be one of running, completed,"
        " failed, partial, got 'nope'"
    )
    counts = invoke("--db", target, "export").stdout
    assert json.loads(counts) == []
    assert "Cannot read" in fail("--db", target, "import", tmp_path / "missing.json")
    assert "Missing argument" in invoke("--db", target, "import", exit_code=2).output


def test_merge_original_database(tmp_path):
    source = make_original_db(
        tmp_path / "orig.db",
        [
            {
                "id": "o",
                "session_id": "orig",
                "status": "completed",
                "started_at": "2024-03-01T10:00:00.000Z",
            }
        ],
        [
            {
                "id": "e",
                "orchestration_id": "o",
                "agent_session_id": "orig-a",
                "agent_name": "x",
                "status": "completed",
                "started_at": "2024-03-01T10:00:01.000Z",
            }
        ],
    )
    target = tmp_path / "t.db"
    result = invoke("--db", target, "merge", source)
    assert result.stdout == counts((1, 0, 0), (1, 0, 0))
    data = json.loads(invoke("--db", target, "export").stdout)
    assert [(d["session_id"], [e["agent_session_id"] for e in d["executions"]]) for d in data] == [
        ("orig", ["orig-a"])
    ]
    assert "No database found" in fail("--db", target, "merge", tmp_path / "nope.db")
    assert "being merged into" in fail("--db", target, "merge", target)


# -- cleanup ------------------------------------------------------------------------------


def test_cleanup(filled):
    # Everything was started in March 2024: more than 30 days ago.
    result = invoke("cleanup", "30", "--dry-run", "--db", filled)
    assert result.stdout.startswith(
        "Would delete 2 orchestrations with 3 executions, and 1 standalone executions"
    )
    assert len(json.loads(invoke("--db", filled, "export").stdout)) == 3
    result = invoke("--db", filled, "cleanup", "0", "--vacuum")
    assert result.stdout.startswith(
        "Deleted 2 orchestrations with 3 executions, and 1 standalone executions (started before"
    )
    assert "Vacuumed:" in result.stdout
    assert json.loads(invoke("--db", filled, "export").stdout) == []


def test_cleanup_keeps_recent_data(filled):
    result = invoke("--db", filled, "cleanup", "100000")
    assert result.stdout.startswith("Deleted 0 orchestrations with 0 executions")
    assert len(json.loads(invoke("--db", filled, "export").stdout)) == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "Error: DAYS must be a number >= 0, got -1"),
        ("abc", "Error: DAYS must be a number >= 0, got 'abc'"),
        ("nan", "Error: DAYS must be a number >= 0, got 'nan'"),
    ],
)
def test_cleanup_bad_days(filled, value, message):
    assert fail("--db", filled, "cleanup", "--", value) == message


def test_cleanup_missing_database(tmp_path):
    missing = tmp_path / "none.db"
    assert fail("--db", missing, "cleanup", "3") == f"Error: No database found at {missing}"
    assert not missing.exists()


# -- start-up -------------------------------------------------------------------------------


def test_cli_import_does_not_load_matplotlib():
    code = "import agentmetrics.cli, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "command",
    [
        "list",
        "show",
        "agent",
        "executions",
        "health",
        "performance",
        "failures",
        "export",
        "import",
        "merge",
        "cleanup",
    ],
)
def test_help(command):
    result = invoke(command, "--help")
    assert result.stdout.startswith(f"Usage: cli {command}")
    assert "--db" in result.stdout
