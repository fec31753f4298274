import builtins
import csv
import datetime as dt
import io

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import cli_result, make_original_db
from dashboard_data import build

from agentmetrics.cli import cli
from agentmetrics.exchange import write_csv
from agentmetrics.store.migrations import EXECUTION_COLUMNS, ORCHESTRATION_COLUMNS


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def invoke(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), "export", *args])


def stored(db, table, columns):
    return db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid").fetchall()


def typed(columns, row):
    """A stored row as Parquet should hold it: timestamps as UTC datetimes, booleans."""
    values = []
    for column, value in zip(columns, row, strict=True):
        if column.endswith("_at") and value is not None:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            value = value.replace(tzinfo=value.tzinfo or dt.timezone.utc)
        elif column == "self_healed" and value is not None:
            value = bool(value)
        values.append(value)
    return tuple(values)


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
            assert values == [typed(columns, row) for row in stored(db, table, columns)]


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


def test_parquet_columns_are_typed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = make_original_db(
        tmp_path / "original.db",
        orchestrations=[
            {
                "id": "o1",
                "session_id": "s1",
                "status": "running",
                "total_tasks": None,
                "started_at": "2026-03-01T10:00:00.250Z",
                "created_at": "2026-03-01 10:00:00",
            },
        ],
        executions=[
            {
                "id": "e1",
                "orchestration_id": "o1",
                "agent_session_id": "a1",
                "agent_name": "coder",
                "status": "completed",
                "self_healed": 1,
                "started_at": "2026-03-01T10:00:00.250Z",
                "completed_at": "2026-03-01T11:30:00.500Z",
                "duration_ms": 5400250,
                "created_at": "2026-03-01 10:00:00",
            },
            {
                "id": "e2",
                "orchestration_id": "o1",
                "agent_session_id": "a2",
                "agent_name": "coder",
                "status": "in_progress",
                "self_healed": 0,
                "retry_count": None,
                "started_at": "2026-03-01T12:00:00+02:00",
            },
        ],
    )
    for name, table in (("o", "orchestrations"), ("e", "executions")):
        out = tmp_path / f"{name}.parquet"
        assert invoke(path, "--format", "parquet", "--table", table, "-o", str(out)).exit_code == 0
    schema = pq.read_schema(tmp_path / "e.parquet")
    for column in ("started_at", "completed_at", "created_at"):
        assert schema.field(column).type == pa.timestamp("ms", tz="UTC")
    assert schema.field("self_healed").type == pa.bool_()
    assert schema.field("retry_count").type == pa.int64()
    executions = pq.read_table(tmp_path / "e.parquet").to_pydict()
    # 2026-03-01T10:00:00Z is 1772359200 s after the epoch (20513 days * 86400 + 36000).
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    ms = [
        None if t is None else (t - epoch) // dt.timedelta(milliseconds=1)
        for t in executions["started_at"] + executions["completed_at"]
    ]
    assert ms == [1772359200250, 1772359200000, 1772364600500, None]
    assert executions["self_healed"] == [True, False]
    assert executions["retry_count"] == [0, None]
    orchestrations = pq.read_table(tmp_path / "o.parquet").to_pydict()
    assert orchestrations["total_tasks"] == [None]
    assert orchestrations["created_at"] == [dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc)]
    # pandas (and DuckDB, which reads the same Arrow schema) see the types, not text.
    frame = pd.read_parquet(tmp_path / "e.parquet", dtype_backend="numpy_nullable")
    assert str(frame["started_at"].dtype) == "datetime64[ms, UTC]"
    assert str(frame["self_healed"].dtype) == "boolean"
    assert str(frame["retry_count"].dtype) == "Int64"
    assert frame["retry_count"].isna().tolist() == [False, True]


def test_parquet_refuses_a_timestamp_it_cannot_read(tmp_path):
    path = make_original_db(
        tmp_path / "original.db",
        executions=[
            {
                "id": "e1",
                "agent_session_id": "a1",
                "agent_name": "coder",
                "status": "in_progress",
                "started_at": "last tuesday",
            }
        ],
    )
    out = tmp_path / "e.parquet"
    result = invoke(path, "--format", "parquet", "--table", "executions", "-o", str(out))
    assert result.exit_code == 1
    assert result.output.startswith("Error: Column executions.started_at holds a value")
    assert "last tuesday" in result.output and len(result.output.splitlines()) == 1
    assert not out.exists()


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
        "Error: Parquet export needs pyarrow: pip install 'agentmetrics-sqlite[parquet]'\n"
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

    def broken(db, table, out, chunk_rows=0, progress=None):
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
