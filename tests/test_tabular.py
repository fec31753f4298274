import builtins
import csv
import io

import pytest
from click.testing import CliRunner
from conftest import cli_result
from dashboard_data import build

from agentmetrics.cli import cli
from agentmetrics.exchange import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS
from agentmetrics.tabular import write_csv


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def invoke(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), "export", *args])


def stored(db, table, columns):
    return db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid").fetchall()


def test_csv_to_stdout(data_path, db):
    result = invoke(data_path, "--format", "csv", "--table", "executions")
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == list(EXECUTION_COLUMNS)
    expected = [
        ["" if v is None else str(v) for v in row]
        for row in stored(db, "agent_executions", EXECUTION_COLUMNS)
    ]
    assert rows[1:] == expected
    assert len(expected) == 7


def test_csv_chunks_give_the_same_file(data_path):
    whole, chunked = io.StringIO(), io.StringIO()
    assert write_csv(data_path, "orchestrations", whole) == 3
    assert write_csv(data_path, "orchestrations", chunked, chunk_rows=1) == 3
    assert whole.getvalue() == chunked.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_both_tables_into_a_directory(data_path, db, tmp_path, fmt):
    result = invoke(data_path, "--format", fmt, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"executions.{fmt}",
        f"orchestrations.{fmt}",
    ]
    for name, table, columns in (
        ("executions", "agent_executions", EXECUTION_COLUMNS),
        ("orchestrations", "orchestrations", ORCHESTRATION_COLUMNS),
    ):
        path = tmp_path / "out" / f"{name}.{fmt}"
        if fmt == "csv":
            rows = list(csv.reader(path.open()))
            assert rows[0] == list(columns)
            assert len(rows) - 1 == len(stored(db, table, columns))
        else:
            import pyarrow.parquet as pq

            read = pq.read_table(path)
            assert read.column_names == list(columns)
            values = [tuple(r.values()) for r in read.to_pylist()]
            assert values == stored(db, table, columns)


def test_parquet_types(data_path, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "e.parquet"
    result = invoke(data_path, "--format", "parquet", "--table", "executions", "-o", str(out))
    assert result.exit_code == 0
    assert "Exported 7 executions" in result.output
    schema = pq.read_schema(out)
    assert schema.field("duration_ms").type == pa.int64()
    assert schema.field("cost_usd").type == pa.float64()
    assert schema.field("agent_name").type == pa.string()


def test_parquet_without_pyarrow(data_path, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    result = invoke(data_path, "--format", "parquet", "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output == (
        "Error: Parquet export needs pyarrow: pip install 'agentmetrics[parquet]'\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "csv"], "Error: --format csv needs --table executions|orchestrations"),
        (["--format", "parquet", "--table", "executions"], "Error: --format parquet needs -o"),
        (["s-1", "--format", "csv", "--table", "executions"], "Error: --format csv exports"),
        (["--format", "json", "--table", "executions"], "Error: --table only applies"),
    ],
)
def test_errors(data_path, args, message):
    """Options that do not go together are usage errors: one line, exit 2."""
    result = invoke(data_path, *args)
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(message)


def test_directory_target_is_a_file(data_path, tmp_path):
    (tmp_path / "file").write_text("x")
    result = invoke(data_path, "--format", "csv", "-o", str(tmp_path / "file"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "is a file" in result.output


def test_bad_table_choice(data_path):
    result = invoke(data_path, "--format", "csv", "--table", "users")
    assert result.exit_code == 2


# -- export --format csv/parquet --table ... -o FILE: odd targets --------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_export_into_a_missing_folder(data_path, tmp_path, fmt):
    target = tmp_path / "nowhere" / f"executions.{fmt}"
    result = cli_result(
        "--db", data_path, "export", "--format", fmt, "--table", "executions", "-o", target
    )
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
    result = cli_result(
        "--db", data_path, "export", "--format", fmt, "--table", "executions", "-o", folder
    )
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
    result = cli_result(
        "--db", data_path, "export", "--format", "csv", "--table", "executions", "-o", target
    )
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot write {target}: No space left on device\n"
    assert target.read_text() == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("executions")] == [
        "executions.csv"
    ]


def test_table_export_replaces_the_file(data_path, tmp_path):
    target = tmp_path / "orchestrations.csv"
    target.write_text("old\n")
    result = cli_result(
        "--db", data_path, "export", "--format", "csv", "--table", "orchestrations", "-o", target
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0][0] == "id"
    assert len(rows) == 1 + 3  # dashboard_data has three orchestrations
