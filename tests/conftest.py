import datetime as dt
import os
import sqlite3
import subprocess
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import agentmetrics
from agentmetrics.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
ORIGINAL_SCHEMA = (FIXTURES / "original_schema.sql").read_text()


def pyproject() -> dict:
    """This project's pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads((FIXTURES.parent.parent / "pyproject.toml").read_text())


def pytest_report_header(config):
    return f"SQLite {sqlite3.sqlite_version}, sqlite-utils {version('sqlite-utils')}"


@pytest.fixture(autouse=True)
def env_setup(tmp_path, monkeypatch):
    """Point the default database at the test's temporary folder."""
    monkeypatch.setenv("AGENTMETRICS_DB", str(tmp_path / "monitoring.db"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def db(db_path):
    database = agentmetrics.open_database(db_path)
    yield database
    database.close()


@pytest.fixture
def monitor(db):
    return agentmetrics.Monitor(db)


def make_original_db(path: Path, orchestrations=(), executions=()) -> Path:
    """Create a file exactly as the original tool would, with plain sqlite3.

    ``orchestrations`` and ``executions`` are dicts of column values; missing columns
    take the schema defaults, as the original's INSERTs did.
    """
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL_SCHEMA)
    for table, rows in (("orchestrations", orchestrations), ("agent_executions", executions)):
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def original_db_path(tmp_path) -> Path:
    """An empty database file in the original tool's schema."""
    return make_original_db(tmp_path / "original.db")


@pytest.fixture
def lock_down():
    """Make a path unwritable, even for root (CI runs as root, which ignores modes)."""
    locked = []

    def lock(path):
        if os.geteuid() == 0:
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"root cannot make {path} unwritable here: {result.stderr.strip()}")
        else:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        locked.append(path)

    yield lock
    for path in locked:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


# -- helpers shared by several test files ------------------------------------------------

pandas_3_only = pytest.mark.skipif(
    int(pd.__version__.split(".")[0]) < 3,
    reason="pandas 2 cannot hold timestamps before 1677 (trends says so in a clear error)",
)


def cli_result(*args):
    """Run the command line with ``args`` (paths and numbers as text); return the result."""
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def no_traceback(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, OverflowError)


def add_runs(db, agent, start, count, failed=0):
    """``count`` finished executions a minute apart from ``start``; the first ``failed`` fail."""
    begin = dt.datetime.fromisoformat(start)
    offset = db["agent_executions"].count
    db["agent_executions"].insert_all(
        {
            "id": f"e{offset + i}",
            "agent_session_id": f"s{offset + i}",
            "agent_name": agent,
            "status": "failed" if i < failed else "completed",
            "started_at": (begin + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "duration_ms": 1000,
        }
        for i in range(count)
    )


SMALL_T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.timezone.utc)
SMALL_NOW = SMALL_T0 + dt.timedelta(hours=1)


@pytest.fixture
def small(db_path):
    """Orchestration s (failed): coder a1 completed in 1 s, coder a2 still running."""
    now = [SMALL_T0]
    m = agentmetrics.Monitor(db_path, clock=lambda: now[0])
    m.start_orchestration("s", "task", total_tasks=2)
    orchestration_id = m.db.execute("SELECT id FROM orchestrations").fetchone()[0]
    m.start_agent_execution("a1", "coder", orchestration_id=orchestration_id)
    now[0] = SMALL_T0 + dt.timedelta(seconds=1)
    m.complete_agent_execution("a1", "completed")
    now[0] = SMALL_T0 + dt.timedelta(seconds=2)
    m.start_agent_execution("a2", "coder", orchestration_id=orchestration_id)
    now[0] = SMALL_T0 + dt.timedelta(seconds=3)
    m.complete_orchestration("s", "failed")
    m.close()
    return db_path


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs, for full-disk tests (needs root and mount; skipped where unavailable)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True, timeout=30)


def fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler
