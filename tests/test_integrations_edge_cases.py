"""Edge cases of the integrations (issue 6): bad input and odd data found by hand."""

import csv
import io
import json

import pytest
from click.testing import CliRunner
from dashboard_data import build

from agentmetrics.cli import cli


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def run(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args])


# -- export --format csv/parquet --table ... -o FILE ------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_export_into_a_missing_folder(data_path, tmp_path, fmt):
    target = tmp_path / "nowhere" / f"executions.{fmt}"
    result = run(data_path, "export", "--format", fmt, "--table", "executions", "-o", target)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: Cannot write {target}: folder {target.parent} does not exist\n"
    )
    assert not target.parent.exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_export_onto_a_directory(data_path, tmp_path, fmt):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    result = run(data_path, "export", "--format", fmt, "--table", "executions", "-o", folder)
    assert result.exit_code == 1
    assert result.output == f"Error: {folder} is a directory: give a file name for one table\n"
    assert (folder / "keep.txt").read_text() == "kept"


def test_failed_table_export_keeps_the_existing_file(data_path, tmp_path, monkeypatch):
    from agentmetrics.exchange import EXPORT_FORMATS, ExportFormat

    target = tmp_path / "executions.csv"
    target.write_text("yesterday's export\n")

    def broken(db, table, out, chunk_rows=0):
        out.write("half a row")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(EXPORT_FORMATS, "csv", ExportFormat(write_table=broken))
    result = run(data_path, "export", "--format", "csv", "--table", "executions", "-o", target)
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot write {target}: No space left on device\n"
    assert target.read_text() == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("executions")] == [
        "executions.csv"
    ]


def test_table_export_replaces_the_file(data_path, tmp_path):
    target = tmp_path / "orchestrations.csv"
    target.write_text("old\n")
    result = run(data_path, "export", "--format", "csv", "--table", "orchestrations", "-o", target)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0][0] == "id"
    assert len(rows) == 1 + 3  # dashboard_data has three orchestrations


# -- watch ---------------------------------------------------------------------------------


def test_watch_on_a_database_without_our_tables(tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    result = run(other, "watch", "--once")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {other} is not an agentmetrics database: it has no agentmetrics tables"
        " but other tables (notes); it is left unchanged\n"
    )
    assert other.read_bytes() == before  # watching never creates the schema


def test_watch_refreshes_in_place_within_the_terminal_height(data_path):
    from agentmetrics.watch import render, snapshot, watch

    total = len(render(snapshot(data_path), 60).splitlines())
    assert total > 7
    out = io.StringIO()
    watch(data_path, iterations=2, out=out, sleep=lambda s: None, width=60, height=8)
    first, second = out.getvalue().split("\x1b[H")[1:]
    assert first.startswith("\x1b[2J") and not second.startswith("\x1b[2J")
    for frame in (first, second):
        lines = frame.removeprefix("\x1b[2J").removesuffix("\x1b[J").split("\n")
        assert lines[-1] == ""  # every line ends with a newline, the cursor row stays free
        shown = lines[:-1]
        assert len(shown) == 7  # an 8-row terminal never scrolls
        assert all(line.endswith("\x1b[K") for line in shown)
        assert shown[0].startswith("agentmetrics watch  ")
        # 6 lines of the view, then the count of those left out
        assert shown[-1] == f"… {total - 6} more lines: enlarge the terminal\x1b[K"


def test_watch_view_fits_without_cutting(data_path):
    from agentmetrics.watch import render, snapshot, watch

    out = io.StringIO()
    watch(data_path, iterations=1, out=out, sleep=lambda s: None, width=60, height=100)
    frame = out.getvalue().removeprefix("\x1b[H\x1b[2J").removesuffix("\x1b[J")
    expected = render(snapshot(data_path), 60)
    assert frame.replace("\x1b[K", "") == expected


# -- costs -----------------------------------------------------------------------------


def test_costs_since_after_until_is_an_error(data_path):
    from agentmetrics.reports import costs

    with pytest.raises(ValueError, match=r"since \(2026-03-02.*\) is after until \(2026-03-01"):
        costs(data_path, {}, since="2026-03-02", until="2026-03-01")
    result = run(data_path, "costs", "--since", "2026-03-02", "--until", "2026-03-01")
    assert result.exit_code == 1
    assert result.output == (
        "Error: since (2026-03-02T00:00:00.000Z) is after until (2026-03-01T00:00:00.000Z)\n"
    )


def test_costs_misspelt_model_price_is_an_error(data_path, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(
        '[costs.models."m-small"]\ninput_per_milion = 3.0\noutput_per_million = 15.0\n'
    )
    result = run(data_path, "costs", "--config", config)
    assert result.exit_code == 2  # a configuration error
    assert result.output == (
        "Error: Unknown setting 'input_per_milion' in [costs.models.'m-small']:"
        " use input_per_million and output_per_million\n"
    )


def test_costs_model_price_with_one_side_only(data_path):
    from agentmetrics.reports import costs

    # dashboard_data: a-3 (coder, model m-small) used 1000 input and 500 output tokens.
    df = costs(data_path, {"models": {"m-small": {"output_per_million": 10.0}}})
    coder = df.set_index("agent_name").loc["coder"]
    assert coder["token_cost_usd"] == pytest.approx(500 * 10.0 / 1e6)


# -- OTLP ------------------------------------------------------------------------------


def _strict_json(line):
    def reject(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(line, parse_constant=reject)


def test_otlp_non_finite_double_is_still_json(monitor, db_path):
    # The tracking API refuses cost_usd=inf, but another writer can store it.
    monitor.start_agent_execution("a-inf", "coder")
    monitor.complete_agent_execution("a-inf", "completed", cost_usd=1.0)
    monitor.db.execute("UPDATE agent_executions SET cost_usd = 9e999")  # inf
    result = run(db_path, "export", "--format", "otlp")
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    (span,) = _strict_json(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    values = {a["key"]: a["value"] for a in span["attributes"]}
    assert values["agentmetrics.cost_usd"] == {"doubleValue": "Infinity"}


def test_otlp_export_message_counts_what_was_written(data_path, tmp_path, db):
    # Running orchestrations and executions in progress have no end time and are left
    # out, with everything inside a running orchestration.
    finished_orchestrations = db.execute(
        "SELECT count(*) FROM orchestrations WHERE status != 'running'"
    ).fetchone()[0]
    finished_executions = db.execute(
        "SELECT count(*) FROM agent_executions e LEFT JOIN orchestrations o"
        " ON o.id = e.orchestration_id"
        " WHERE e.status != 'in_progress' AND (o.id IS NULL OR o.status != 'running')"
    ).fetchone()[0]
    all_rows = db.execute(
        "SELECT (SELECT count(*) FROM orchestrations), (SELECT count(*) FROM agent_executions)"
    ).fetchone()
    assert all_rows != (finished_orchestrations, finished_executions)  # the data has both
    target = tmp_path / "traces.jsonl"
    result = run(data_path, "export", "--format", "otlp", "-o", target)
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


@pytest.mark.parametrize(
    "args, message",
    [
        # Finished executions are looked up over the last day only: more minutes would
        # be accepted and silently cut to a day (and 1e308 overflowed).
        (
            ["--minutes", "1441"],
            "Error: Invalid value for '--minutes': 1441.0 is not in the range 0<x<=1440.\n",
        ),
        (
            ["--minutes", "1e308"],
            "Error: Invalid value for '--minutes': 1e+308 is not in the range 0<x<=1440.\n",
        ),
        (
            ["--interval", "1e308"],
            "Error: Invalid value for '-n' / '--interval': 1e+308 is not in the range"
            " 0<x<=86400.\n",
        ),
    ],
)
def test_watch_bounds(data_path, args, message):
    result = run(data_path, "watch", "--iterations", "2", *args)
    assert result.exit_code == 2  # a bad option value is a usage error
    assert result.output == message


def test_watch_snapshot_rejects_minutes_beyond_the_lookback(data_path):
    from agentmetrics.watch import snapshot

    with pytest.raises(ValueError, match="recent_minutes must be over 0 and at most 1440"):
        snapshot(data_path, recent_minutes=2000)
    assert snapshot(data_path, recent_minutes=1440).recent_minutes == 1440
