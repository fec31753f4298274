import csv
import datetime as dt
import io
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
    assert [entry["session_id"] for entry in data] == ["s-2", "s-1", None]
    assert [len(entry["executions"]) for entry in data] == [1, 2, 1]


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
        "orchestration",
        "execution",
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
    assert "Unknown format 'xml'" in fail("--db", filled, "export", "--format", "xml", exit_code=2)
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
    # The target did not exist: a rejected import does not create it.
    assert not list(tmp_path.glob("t.db*"))
    assert "Cannot read" in fail("--db", target, "import", tmp_path / "missing.json")
    assert "Missing argument" in invoke("--db", target, "import", exit_code=2).output
    assert "No database found" in fail("--db", target, "merge", tmp_path / "missing.db")
    assert not list(tmp_path.glob("t.db*"))


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
        ("-1", "Error: Invalid value for 'DAYS': -1.0 is not in the range x>=0."),
        ("abc", "Error: Invalid value for 'DAYS': 'abc' is not a valid number."),
        ("nan", "Error: Invalid value for 'DAYS': 'nan' is not a finite number."),
        ("inf", "Error: Invalid value for 'DAYS': 'inf' is not a finite number."),
    ],
)
def test_cleanup_bad_days(filled, value, message):
    """A bad option value is a usage error: one line (no usage text), exit 2."""
    result = invoke("--db", filled, "cleanup", "--", value, exit_code=2)
    assert result.output == message + "\n"


def test_cleanup_missing_database(tmp_path):
    missing = tmp_path / "none.db"
    assert fail("--db", missing, "cleanup", "3") == f"Error: No database found at {missing}"
    assert not missing.exists()


# -- reports ------------------------------------------------------------------------------

BASE = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)


@pytest.fixture
def recent(db_path):
    """Three orchestrations from the last hour (partial, failed, running) and a solo run.

    Finished durations: a-1 2000 ms (completed), a-2 6000 (failed), a-3 4000
    (completed), solo 8000 (failed); a-4 is still in progress.
    """
    clock = {"at": 0}
    m = agentmetrics.Monitor(db_path, clock=lambda: BASE + dt.timedelta(seconds=clock["at"]))

    def at(seconds, call, *args, **kwargs):
        clock["at"] = seconds
        return call(*args, **kwargs)

    r1 = at(0, m.start_orchestration, "r-1", "first")
    at(1, m.start_agent_execution, "a-1", "backend", orchestration_id=r1)
    at(3, m.complete_agent_execution, "a-1", "completed", files_created=2)
    at(4, m.start_agent_execution, "a-2", "tests", orchestration_id=r1, task_number=2)
    at(10, m.complete_agent_execution, "a-2", "failed", error_message="boom")
    at(11, m.complete_orchestration, "r-1", "partial", completed_tasks=1, failed_tasks=1)
    r2 = at(20, m.start_orchestration, "r-2", "second", total_tasks=1)
    at(21, m.start_agent_execution, "a-3", "backend", orchestration_id=r2)
    at(25, m.complete_agent_execution, "a-3", "completed", retry_count=2)
    at(30, m.complete_orchestration, "r-2", "failed", completed_tasks=0, failed_tasks=1)
    r3 = at(40, m.start_orchestration, "r-3", "third")
    at(41, m.start_agent_execution, "a-4", "backend", orchestration_id=r3)
    at(42, m.start_agent_execution, "solo", "linter")
    at(50, m.complete_agent_execution, "solo", "failed")
    m.close()
    return db_path


def as_json(*args):
    return json.loads(invoke(*args, "--json").stdout)


def as_csv(*args):
    return list(csv.DictReader(io.StringIO(invoke(*args, "--csv").stdout)))


def record_lines(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines())


EXPECTED_HEALTH = {
    "orchestrations": 3,
    "completed_orchestrations": 0,
    "failed_orchestrations": 1,
    "partial_orchestrations": 1,
    "running_orchestrations": 1,
    "executions": 5,
    "finished": 4,
    "completed": 2,
    "failed": 2,
    "in_progress": 1,
    "success_rate": 50.0,
    "avg_duration_ms": 5000.0,
    "p50_duration_ms": 5000.0,  # linear interpolation over 2000, 4000, 6000, 8000
    "p95_duration_ms": 7700.0,  # rank 2.85: 6000 + 0.85 * 2000
}


def test_health(recent):
    data = as_json("--db", recent, "health")
    assert {k: data[k] for k in EXPECTED_HEALTH} == pytest.approx(EXPECTED_HEALTH)
    (row,) = as_csv("--db", recent, "health", "24")
    assert {k: float(row[k]) for k in EXPECTED_HEALTH} == pytest.approx(EXPECTED_HEALTH)
    table = record_lines(invoke("health", "--db", recent).stdout)
    assert table["executions"] == "5"
    assert table["success_rate"] == "50.0%"
    assert table["avg_duration_ms"] == "5s"
    assert table["p95_duration_ms"] == "7s"


def test_health_window_excludes_older_rows(filled):
    # filled's rows are from 2024: nothing in the last 24 hours.
    data = as_json("--db", filled, "health", "24")
    assert data["orchestrations"] == 0 and data["success_rate"] is None
    hours = (dt.datetime.now(dt.timezone.utc) - T0).total_seconds() / 3600 + 24
    assert as_json("--db", filled, "health", f"{hours:.0f}")["orchestrations"] == 2


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--min-success-rate", "60"], "success_rate 50.0% < 60.0%"),
        (["--max-running", "0"], "running_orchestrations 1 > 0"),
        (["--max-failed", "1"], "failed_executions 2 > 1"),
        (["--max-failed-orchestrations", "0"], "failed_orchestrations 1 > 0"),
        # p95 is 7700 ms: shown unrounded where "7s > 7s" would say nothing.
        (["--max-p95", "7s"], "p95_duration_ms 7700ms > 7000ms"),
        (["--max-p95", "0.12m"], "p95_duration_ms 7700ms > 7200ms"),
        (["--max-p95", "5s"], "p95_duration_ms 7s > 5s"),
        (
            ["--min-success-rate", "51", "--max-running", "0"],
            "success_rate 50.0% < 51.0%; running_orchestrations 1 > 0",
        ),
    ],
)
def test_health_gate_fails(recent, options, reason):
    result = invoke("--db", recent, "health", *options, exit_code=1)
    assert result.stderr == f"Error: Unhealthy: {reason}\n"
    assert record_lines(result.stdout)["orchestrations"] == "3"


def test_health_gate_passes(recent):
    invoke(
        "--db",
        recent,
        "health",
        "--min-success-rate",
        "50",
        "--max-running",
        "1",
        "--max-failed",
        "2",
        "--max-failed-orchestrations",
        "1",
        "--max-p95",
        "8s",
    )


def test_health_stale_runs_gate(recent):
    # r-3 and its execution a-4 were last heard from ~59 minutes ago.
    assert as_json("--db", recent, "health")["stale_running"] == 0  # default: 6h
    assert as_json("--db", recent, "health", "--stale-after", "30m")["stale_running"] == 2
    invoke("--db", recent, "health", "--max-stale", "0")
    result = invoke(
        "--db", recent, "health", "--stale-after", "30m", "--max-stale", "1", exit_code=1
    )
    assert result.stderr == "Error: Unhealthy: stale_running 2 > 1\n"


def test_health_gate_without_data_passes_like_a_rule(filled):
    """No finished execution in the window: no data, which passes, as in `check`."""
    invoke("--db", filled, "health", "--min-success-rate", "90")
    invoke("--db", filled, "health", "--max-p95", "1s")


def test_health_gate_is_the_rules_engine(recent, tmp_path):
    """The same limits as [[rules]] give the same verdict and reasons in `check`."""
    rules_file = tmp_path / "gate.toml"
    rules_file.write_text(
        '[[rules]]\nname = "rate"\nmetric = "success_rate"\nalert = 60\n'
        '[[rules]]\nname = "running"\nmetric = "running_orchestrations"\nalert = 0\n'
        '[[rules]]\nname = "p95"\nmetric = "p95_duration_ms"\nalert = "7s"\n'
    )
    options = ["--min-success-rate", "60", "--max-running", "0", "--max-p95", "7s"]
    gate = invoke("--db", recent, "health", *options, exit_code=1)
    check = json.loads(
        invoke("--db", recent, "check", "--rules", rules_file, "--json", exit_code=1).stdout
    )
    reasons = "; ".join(f"{r['metric']} {r['detail']}" for r in check["rules"])
    assert gate.stderr == f"Error: Unhealthy: {reasons}\n"
    assert reasons == (
        "success_rate 50.0% < 60.0%; running_orchestrations 1 > 0; p95_duration_ms 7700ms > 7000ms"
    )


def test_health_now(recent):
    """--now moves the window: an hour after the runs started, a 30 minute window is empty."""
    later = (BASE + dt.timedelta(hours=2)).isoformat()
    data = as_json("--db", recent, "health", "0.5", "--now", later)
    assert data["orchestrations"] == 0
    invoke("--db", recent, "health", "0.5", "--now", later, "--max-running", "0")
    assert as_json("--db", recent, "health", "24", "--now", later)["orchestrations"] == 3


def test_health_since_until_window(recent):
    """--since/--until: [BASE+15s, BASE+45s) holds r-2 and r-3, a-3, a-4 and solo."""
    since, until = (BASE + dt.timedelta(seconds=s) for s in (15, 45))
    args = ["--db", recent, "health", "--since", since.isoformat(), "--until", until.isoformat()]
    data = as_json(*args)
    expected = {"orchestrations": 2, "failed_orchestrations": 1, "running_orchestrations": 1}
    expected |= {"executions": 3, "completed": 1, "failed": 1, "in_progress": 1}
    assert {k: data[k] for k in expected} == expected
    assert data["success_rate"] == 50.0 and data["p50_duration_ms"] == 6000.0  # 4000, 8000
    header = invoke(*args).stdout.splitlines()[0]
    assert header == (
        f"Health of {recent}: {since:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S} UTC"
    )
    # The gate judges the same window: one failed execution in it.
    result = invoke(*args, "--max-failed", "0", exit_code=1)
    assert result.stderr == "Error: Unhealthy: failed_executions 1 > 0\n"
    # HOURS before --until: [BASE+30s, BASE+45s) holds r-3, a-4 and solo.
    data = as_json("--db", recent, "health", str(15 / 3600), "--until", until.isoformat())
    assert (data["orchestrations"], data["executions"]) == (1, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["24", "--since", "2d"], "Give HOURS or --since, not both"),
        (["--since", "1h", "--until", "2h"], "is not before the window's end"),
    ],
)
def test_health_window_mistakes(recent, args, message):
    result = invoke("--db", recent, "health", *args, exit_code=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_health_table_says_what_it_describes(recent):
    """A header names the file and the window; counts print as integers, rates in %."""
    later = BASE + dt.timedelta(hours=2)
    lines = invoke("--db", recent, "health", "6", "--now", later.isoformat()).stdout.splitlines()
    start, end = later - dt.timedelta(hours=6), later
    assert lines[0] == (
        f"Health of {recent}, last 6 h: {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC"
    )
    rows = dict(line.split(maxsplit=1) for line in lines[1:])
    # r-1, r-2, r-3; a-1..a-4 and solo; a-1 and a-3 completed, a-2 and solo failed.
    assert rows["orchestrations"] == "3"
    assert rows["executions"] == "5"
    assert rows["finished"] == "4"
    assert rows["success_rate"] == "50.0%"
    assert rows["avg_duration_ms"] == "5s"  # (2000 + 6000 + 4000 + 8000) / 4


def test_readable_keeps_counts_whole_after_transposing(recent):
    from agentmetrics.formatting import readable

    health = agentmetrics.reports.system_health(recent, now=BASE + dt.timedelta(hours=2))
    assert health.T[0]["executions"] == 5.0  # the raw frame: one float column once transposed
    shown = readable(health).T[0]
    assert str(shown["executions"]) == "5"
    assert str(shown["completed_orchestrations"]) == "0"
    assert shown["success_rate"] == "50.0%"
    assert shown["p95_duration_ms"] == "7s"  # 6000 + 0.85 * (8000 - 6000) = 7700 ms
    assert health["executions"].dtype == "int64"  # the report itself is unchanged


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["health", "0"], "Error: Invalid value for '[HOURS]': 0.0 is not in the range x>0.", 2),
        (
            ["health", "--", "-3"],
            "Error: Invalid value for '[HOURS]': -3.0 is not in the range x>0.",
            2,
        ),
        (
            ["health", "soon"],
            "Error: Invalid value for '[HOURS]': 'soon' is not a valid number of hours.",
            2,
        ),
        (
            ["health", "--max-running", "-1"],
            "Error: Invalid value for '--max-running': -1 is not in the range x>=0.",
            2,
        ),
        (
            ["health", "--min-success-rate", "x"],
            "Error: Invalid value for '--min-success-rate': not a percent: 'x' (write 90 or 90%)",
            2,
        ),
        (
            ["health", "--stale-after", "0s"],
            "Error: Invalid value for '--stale-after': must be longer than zero, got '0s'",
            2,
        ),
        (
            ["health", "--max-p95", "fast"],
            "Error: Invalid value for '--max-p95': not a duration: 'fast'"
            " (use e.g. 90s, 15m, 1.5h, 3d, 2w)",
            2,
        ),
        (["failures", "0"], "Error: Invalid value for '[LIMIT]': 0 is not in the range x>=1.", 2),
        (
            ["failures", "2.5"],
            "Error: Invalid value for '[LIMIT]': '2.5' is not a valid whole number.",
            2,
        ),
        (
            ["list", "-n", "0"],
            "Error: Invalid value for '-n' / '--limit': 0 is not in the range x>=1.",
            2,
        ),
        (["agent", "backend", "-n", "3"], "Error: --limit only applies with --list", 2),
        (["show", "nope"], "Error: No orchestration with session id 'nope'", 1),
        (["executions", "nope"], "Error: No orchestration with session id 'nope'", 1),
        (["agent", "nobody"], "Error: No executions of agent 'nobody'", 1),
        (["agent", "nobody", "--list"], "Error: No executions of agent 'nobody'", 1),
        (
            ["performance", "--since", "tuesday"],
            "Error: Invalid value for '--since': not a time: 'tuesday'"
            " (use a timestamp such as 2026-11-01 or a span back such as 6h, 7d, 2w)",
            2,
        ),
    ],
)
def test_report_errors(recent, args, message, code):
    """Exit 2 for a bad option value (a usage error), 1 for a runtime or data error."""
    assert fail("--db", recent, *args, exit_code=code) == message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["health", "-24"], "Error: Invalid value for '[HOURS]': -24.0 is not in the range x>0."),
        (
            ["health", "-1.5", "--max-failed", "3"],
            "Error: Invalid value for '[HOURS]': -1.5 is not in the range x>0.",
        ),
        (
            ["health", "--max-failed", "1", "-24"],
            "Error: Invalid value for '[HOURS]': -24.0 is not in the range x>0.",
        ),
        (["failures", "-5"], "Error: Invalid value for '[LIMIT]': -5 is not in the range x>=1."),
        (
            ["cleanup", "-30", "--dry-run"],
            "Error: Invalid value for 'DAYS': -30.0 is not in the range x>=0.",
        ),
    ],
)
def test_negative_number_is_read_as_the_argument(recent, args, message):
    """Not "No such option '-2'": the message is about the number, a usage error (exit 2)."""
    result = invoke("--db", recent, *args, exit_code=2)
    assert result.output == message + "\n"


def test_unknown_options_are_still_unknown(recent):
    for option in ("-x", "--bogus"):
        result = invoke("--db", recent, "health", option, exit_code=2)
        # click 8.3 says "No such option: -x", later versions "No such option '-x'".
        error = result.stderr.splitlines()[-1]
        assert error.startswith("Error: No such option") and option in error
    # An option's own negative value is still the option's.
    message = "Error: Invalid value for '--max-failed': -3 is not in the range x>=0."
    assert fail("--db", recent, "health", "--max-failed", "-3", exit_code=2) == message


def test_json_and_csv_together_is_a_usage_error(recent):
    result = invoke("--db", recent, "list", "--json", "--csv", exit_code=2)
    assert result.output == "Error: Use just one of --json or --csv\n"


READ_COMMANDS = [
    ["list"],
    ["show", "r-1"],
    ["agent", "backend"],
    ["executions", "r-1"],
    ["health"],
    ["performance"],
    ["failures"],
    ["export"],
    ["cleanup", "30"],
]


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_missing_database_is_an_error_and_not_created(tmp_path, args):
    missing = tmp_path / "missing.db"
    assert fail(*args, "--db", missing) == f"Error: No database found at {missing}"
    assert not missing.exists()


@pytest.mark.parametrize("args", READ_COMMANDS[:7])
def test_db_option_after_the_command_and_env_var(recent, args, monkeypatch):
    after = invoke(*args, "--db", recent, "--json").stdout
    monkeypatch.setenv("AGENTMETRICS_DB", str(recent))
    assert invoke(*args, "--json").stdout == after
    assert json.loads(after)


def test_list(recent):
    rows = as_json("--db", recent, "list")
    assert [r["session_id"] for r in rows] == ["r-3", "r-2", "r-1"]
    assert [r["status"] for r in rows] == ["running", "failed", "partial"]
    assert [r["duration_ms"] for r in rows] == [None, 10000, 11000]
    assert [r["session_id"] for r in as_csv("--db", recent, "list", "-n", "2")] == ["r-3", "r-2"]
    lines = invoke("--db", recent, "list").stdout.splitlines()
    assert lines[0].split()[:4] == ["session_id", "status", "started_at", "duration_ms"]
    assert lines[1].split()[:2] == ["r-3", "running"]
    assert lines[3].split()[:2] == ["r-1", "partial"] and "11s" in lines[3].split()


def test_list_empty(db_path):
    agentmetrics.open_database(db_path).close()
    assert invoke("--db", db_path, "list").stdout == "No orchestrations recorded.\n"
    assert as_json("--db", db_path, "list") == []


def test_show(recent):
    data = as_json("--db", recent, "show", "r-1")
    expected = {
        "session_id": "r-1",
        "status": "partial",
        "duration_ms": 11000,
        "executions": 2,
        "completed": 1,
        "failed": 1,
        "success_rate": 50.0,
        "avg_duration_ms": 4000.0,  # (2000 + 6000) / 2
        "files_created": 2,
    }
    assert {k: data[k] for k in expected} == expected
    metrics, timeline = invoke("--db", recent, "show", "r-1").stdout.split("\n\n")
    table = record_lines(metrics)
    # Piped, the timeline is a table: a-1 then a-2, offsets from the start at 0 s.
    rows = [line.split() for line in timeline.splitlines()[1:]]
    assert [row[:8] for row in rows] == [
        ["0", "backend", "-", "1", "completed", "1s", "3s", "2s"],
        ["0", "tests", "2", "1", "failed", "4s", "10s", "6s"],
    ]
    assert (table["status"], table["duration_ms"], table["success_rate"]) == (
        "partial",
        "11s",
        "50.0%",
    )
    (row,) = as_csv("--db", recent, "show", "r-1")
    assert row["executions"] == "2"


def test_agent(recent):
    data = as_json("--db", recent, "agent", "backend")
    expected = {
        "agent_name": "backend",
        "executions": 3,
        "completed": 2,
        "failed": 0,
        "success_rate": 100.0,
        "avg_duration_ms": 3000.0,
        "retries": 2,
    }
    assert {k: data[k] for k in expected} == expected
    table = record_lines(invoke("--db", recent, "agent", "backend").stdout)
    assert (table["executions"], table["avg_duration_ms"]) == ("3", "3s")
    rows = as_json("--db", recent, "agent", "backend", "--list")
    assert [r["agent_session_id"] for r in rows] == ["a-4", "a-3", "a-1"]  # newest first
    rows = as_csv("--db", recent, "agent", "backend", "--list", "-n", "1")
    assert [r["agent_session_id"] for r in rows] == ["a-4"]


def test_executions(recent):
    rows = as_json("--db", recent, "executions", "r-1")
    assert [(r["agent_session_id"], r["status"], r["duration_ms"]) for r in rows] == [
        ("a-1", "completed", 2000),
        ("a-2", "failed", 6000),
    ]
    assert [r["error_message"] for r in as_csv("--db", recent, "executions", "r-1")] == ["", "boom"]
    lines = invoke("--db", recent, "executions", "r-1").stdout.splitlines()
    assert lines[1].split()[:2] == ["a-1", "backend"] and "2s" in lines[1].split()
    assert lines[2].split()[-1] == "boom"


def test_performance(recent):
    rows = as_json("--db", recent, "performance")
    assert [(r["agent_name"], r["executions"], r["completed"], r["failed"]) for r in rows] == [
        ("backend", 3, 2, 0),
        ("linter", 1, 0, 1),
        ("tests", 1, 0, 1),
    ]
    assert [r["success_rate"] for r in rows] == [100.0, 0.0, 0.0]
    assert [r["max_duration_ms"] for r in rows] == [4000.0, 8000.0, 6000.0]
    assert len(as_csv("--db", recent, "performance")) == 3
    lines = invoke("--db", recent, "performance").stdout.splitlines()
    assert lines[1].split()[:5] == ["backend", "3", "2", "0", "100.0%"]
    since = (BASE + dt.timedelta(seconds=30)).isoformat()
    rows = as_json("--db", recent, "performance", "--since", since)
    assert [(r["agent_name"], r["executions"]) for r in rows] == [("backend", 1), ("linter", 1)]


def test_failures(recent):
    assert [r["session_id"] for r in as_json("--db", recent, "failures")] == ["r-2"]
    rows = as_json("--db", recent, "failures", "--include-partial")
    assert [r["session_id"] for r in rows] == ["r-2", "r-1"]
    assert [r["task_completion_rate"] for r in rows] == [0.0, None]
    assert [
        r["session_id"] for r in as_csv("--db", recent, "failures", "1", "--include-partial")
    ] == ["r-2"]
    lines = invoke("--db", recent, "failures").stdout.splitlines()
    assert lines[1].split()[:2] == ["r-2", "failed"] and "0.0%" in lines[1].split()


def test_failures_none(filled):
    assert invoke("--db", filled, "failures").stdout == "No failed orchestrations.\n"


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


def test_root_help_lists_every_command_once_in_sections_with_whole_summaries():
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    commands_part = result.stdout.split("\n\n", 3)[3]  # after usage, description, options
    sections = {}
    for block in commands_part.strip().split("\n\n"):
        title, *rows = block.splitlines()
        sections[title] = [row.split(maxsplit=1) for row in rows]
    assert list(sections) == ["Tracking:", "Reports:", "Data in and out:", "Upkeep:", "Serving:"]
    listed = [name for rows in sections.values() for name, _ in rows]
    assert sorted(listed) == sorted(cli.commands)  # each command exactly once
    for rows in sections.values():
        for name, summary in rows:
            first_line = cli.commands[name].help.splitlines()[0]
            assert summary == first_line, name  # shown whole, on one line
            assert not summary.endswith("...")
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


# -- progress -----------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shown_only_on_a_terminal_outside_ci(monkeypatch):
    from agentmetrics.cli import progress_shown

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress_shown()
    for value, shown in (("true", False), ("1", False), ("false", True), ("", True)):
        monkeypatch.setenv("CI", value)
        assert progress_shown() is shown, value
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file
    assert not progress_shown()


LONG_WORK = [
    ("Building the demo", ["--db", "demo.db", "demo", "--orchestrations", "30"]),
    ("Exporting", ["--db", "demo.db", "export", "-o", "all.json"]),
    ("Exporting", ["--db", "demo.db", "export", "--format", "csv", "-o", "tables"]),
    (
        "Exporting",
        ["--db", "demo.db", "export", "--format", "csv", "--table", "executions", "-o", "e.csv"],
    ),
    ("Importing", ["--db", "imported.db", "import", "all.json"]),
    ("Merging", ["--db", "merged.db", "merge", "demo.db"]),
    ("Deleting", ["--db", "demo.db", "cleanup", "10"]),
]


@pytest.mark.parametrize("shown", [False, True], ids=["quiet", "terminal"])
def test_long_work_shows_progress_only_when_asked(tmp_path, monkeypatch, shown):
    import agentmetrics.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(agentmetrics.cli._Progress, "THRESHOLD", 1)
    monkeypatch.delenv("CI", raising=False)
    if shown:  # CliRunner's streams are never terminals: decide as on one
        monkeypatch.setattr(agentmetrics.cli, "progress_shown", lambda: True)
    for label, args in LONG_WORK:
        result = invoke(*args)
        # A bar on a stream that is not a terminal prints just its label.
        assert (label in result.stderr) is shown, (label, result.stderr)
        assert label not in result.stdout


# -- errors: one home for every exception, one exit code per kind ------------------------


def test_every_exception_and_warning_lives_in_errors():
    import importlib
    import inspect
    import pkgutil

    import agentmetrics.errors

    for info in pkgutil.walk_packages(agentmetrics.__path__, "agentmetrics."):
        if info.name == "agentmetrics.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                assert info.name == "agentmetrics.errors", f"{info.name}.{name}"
    for value in vars(agentmetrics.errors).values():
        if inspect.isclass(value) and value.__module__ == "agentmetrics.errors":
            base = UserWarning if issubclass(value, Warning) else agentmetrics.AgentMetricsError
            assert issubclass(value, base), value


def test_exit_codes(recent, tmp_path):
    """1: a runtime or data error, or a failed gate; 2: a usage or configuration error."""
    bad_rules = tmp_path / "bad.toml"
    bad_rules.write_text('[[rules]]\nname = "x"\nmetric = "nope"\nalert = 1\n')
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("[costs\n")
    cases = [
        (["--db", tmp_path / "missing.db", "list"], 1),
        (["--db", recent, "show", "nope"], 1),
        (["--db", recent, "health", "--max-running", "0"], 1),
        (["--db", recent, "list", "-n", "0"], 2),
        (["--db", recent, "list", "--no-such-option"], 2),
        (["--db", recent, "check", "--rules", bad_rules], 2),
        (["--db", recent, "check", "--rules", tmp_path / "none.toml"], 2),
        (["--db", recent, "costs", "--config", bad_toml], 2),
        (["--db", recent, "report", "--rules", bad_rules, "-o", tmp_path / "r.html"], 2),
        (["--db", recent, "trends", "--since", "tuesday"], 2),
        (["--db", recent, "performance", "--until", "7"], 2),
        (["--db", recent, "health", "--now", "soon"], 2),
    ]
    for args, code in cases:
        result = invoke(*args, exit_code=code)
        assert [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", ["performance", "costs", "trends", "plot", "report"])
def test_one_since_until_definition(command):
    """Every window says what it includes, in the same words (one option definition)."""
    text = " ".join(invoke(command, "--help").stdout.split())
    assert text.count("at or after SINCE, before UNTIL; a timestamp or a span like 7d") == 2


@pytest.mark.parametrize(
    "command", ["health", "reap", "regressions", "check", "trends", "report", "metrics", "cleanup"]
)
def test_now_option_is_shown(command):
    """Every command whose answer depends on the current time takes --now (reap's was hidden)."""
    assert "--now TIME" in invoke(command, "--help").stdout


def test_cleanup_and_metrics_now(filled):
    """filled's rows are from 2024-03-01: 30 days as of 2024-03-15 keeps them all."""
    result = invoke("--db", filled, "cleanup", "30", "--dry-run", "--now", "2024-03-15T00:00:00Z")
    assert result.stdout.startswith("Would delete 0 orchestrations with 0 executions")
    result = invoke("--db", filled, "cleanup", "30", "--dry-run", "--now", "2024-05-01T00:00:00Z")
    assert result.stdout.startswith("Would delete 2 orchestrations")
    # s-2 runs since 2024-03-01: stale a day later, not a minute later.
    soon = invoke("--db", filled, "metrics", "--now", "2024-03-01T12:01:00Z").stdout
    later = invoke("--db", filled, "metrics", "--now", "2024-03-02T12:00:00Z").stdout
    assert 'agentmetrics_stale{kind="orchestration"} 0\n' in soon
    assert 'agentmetrics_stale{kind="orchestration"} 1\n' in later


# -- limits beyond SQLite's integers -------------------------------------------------------


HUGE_LIMIT = "99999999999999999999"  # more than SQLite's largest integer


@pytest.mark.parametrize(
    "args",
    [
        ["list", "-n", HUGE_LIMIT, "--csv"],
        ["failures", HUGE_LIMIT, "--csv"],
        ["agent", "coder", "--list", "-n", HUGE_LIMIT, "--csv"],
    ],
)
def test_huge_limits_mean_everything(small, args):
    output = invoke("--db", small, *args).output
    assert len(output.splitlines()) - 1 == (2 if args[0] == "agent" else 1)
