"""Review pass over the integrations (issue 6): bad input and edge cases found by hand."""

import csv
import io
import json
import math

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
    import agentmetrics.tabular as tabular

    target = tmp_path / "executions.csv"
    target.write_text("yesterday's export\n")

    def broken(db, table, out, chunk_rows=0):
        out.write("half a row")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tabular, "write_csv", broken)
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
