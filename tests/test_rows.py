"""execution_rows and the bulk loader behind it: Arrow (adbc-driver-sqlite) and plain
sqlite3 give equal frames, whatever the stored timestamps, NULLs and file."""

import datetime as dt
import sqlite3

import adbc_driver_sqlite  # noqa: F401 (a test dependency: without it, fail, don't skip)
import pandas as pd
import pytest
from conftest import make_original_db

import agentmetrics
from agentmetrics import reports
from agentmetrics.errors import UnknownAgent
from agentmetrics.reports import _arrow

UTC = dt.timezone.utc


def both_paths(monkeypatch, report, *args, **kwargs):
    """The report through Arrow, then through sqlite3 (the driver hidden)."""
    calls = []
    real = _arrow.arrow_frame

    def spy(*a):
        frame = real(*a)
        calls.append(frame is not None)
        return frame

    with monkeypatch.context() as m:
        m.setattr(_arrow, "arrow_frame", spy)
        arrow = report(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(_arrow, "adbc", None)
        plain = report(*args, **kwargs)
    return arrow, plain, calls


def insert(conn, rows):
    for i, row in enumerate(rows):
        values = {
            "id": f"e{i}",
            "agent_session_id": f"a{i}",
            "agent_name": "coder",
            "status": "completed",
            **row,
        }
        conn.execute(
            f"INSERT INTO agent_executions ({', '.join(values)})"
            f" VALUES ({', '.join('?' * len(values))})",
            list(values.values()),
        )
    conn.commit()


# Every form the original, our tracker, imports or other tools leave in the file.
FORMS = [
    ("2026-03-01T10:00:00.000Z", dt.datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ("2026-03-01 10:00:01", dt.datetime(2026, 3, 1, 10, 0, 1, tzinfo=UTC)),
    ("2026-03-01T12:00:02.5+02:00", dt.datetime(2026, 3, 1, 10, 0, 2, 500000, tzinfo=UTC)),
    ("2026-03-01T10:00:03.123456Z", dt.datetime(2026, 3, 1, 10, 0, 3, 123456, tzinfo=UTC)),
    ("2026-03-01T05:00:04-05:00", dt.datetime(2026, 3, 1, 10, 0, 4, tzinfo=UTC)),
]


@pytest.mark.parametrize("mixed", [False, True], ids=["one form per column", "mixed forms"])
def test_timestamp_forms_by_hand_and_equal_on_both_paths(db, monkeypatch, mixed):
    rows = []
    for i, (text, _) in enumerate(FORMS):
        # One column in one form (pyarrow parses it), or every form in each column.
        rows.append(
            {
                "started_at": FORMS[i][0] if mixed else FORMS[0][0].replace("00.000", f"0{i}.000"),
                "completed_at": text,
                "created_at": FORMS[(i + 1) % 5][0] if mixed else FORMS[1][0],
            }
        )
    insert(db.conn, rows)
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db.conn and db)
    assert calls == [True]
    pd.testing.assert_frame_equal(arrow, plain)
    by_id = arrow.set_index("id")
    expected = [moment for _, moment in FORMS]
    assert by_id.loc[[f"e{i}" for i in range(5)], "completed_at"].tolist() == expected
    assert str(arrow["started_at"].dtype) == "datetime64[us, UTC]"


def test_values_nulls_and_dtypes_by_hand(db, monkeypatch):
    insert(
        db.conn,
        [
            {
                "started_at": "2026-03-01T10:00:00.000Z",
                "duration_ms": 1500,
                "retry_count": 2,
                "self_healed": 1,
                "files_created": None,
                "input_tokens": 10,
                "cost_usd": 0.25,
                "error_message": "boom",
                "status": "failed",
            },
            {"started_at": "2026-03-01T09:00:00.000Z", "status": "in_progress"},
        ],
    )
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db)
    assert calls == [True]
    pd.testing.assert_frame_equal(arrow, plain)
    # Start order: the running one started first.
    assert arrow["id"].tolist() == ["e1", "e0"]
    running, failed = arrow.iloc[0], arrow.iloc[1]
    assert running["completed_at"] is pd.NaT and pd.isna(running["duration_ms"])
    assert running["error_message"] is None and running["summary_report_path"] is None
    assert (running["retry_count"], running["self_healed"], running["files_created"]) == (
        0,
        False,
        0,
    )
    assert (failed["duration_ms"], failed["retry_count"], failed["self_healed"]) == (
        1500.0,
        2,
        True,
    )
    assert (failed["input_tokens"], failed["cost_usd"], failed["error_message"]) == (
        10.0,
        0.25,
        "boom",
    )
    assert pd.isna(failed["output_tokens"])


def test_null_in_the_first_rows_then_text(db, monkeypatch):
    # The driver infers types from its first batch: a column NULL for 3,000 rows then
    # text must still load, as the same frame.
    rows = [{"started_at": f"2026-03-01T10:00:00.{i % 1000:03d}Z"} for i in range(3000)]
    rows.append({"started_at": "2026-03-02T00:00:00.000Z", "error_message": "late", "cost_usd": 1})
    insert(db.conn, rows)
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db)
    assert calls == [True]
    pd.testing.assert_frame_equal(arrow, plain)
    assert arrow["error_message"].iloc[-1] == "late" and arrow["error_message"].iloc[0] is None


def test_text_in_a_number_column_is_left_to_sqlite3(db):
    # Arrow would make the whole column text; sqlite3 keeps each value as it is.
    insert(db.conn, [{"started_at": FORMS[0][0], "task_number": "first"}])
    assert _arrow.arrow_frame(db, "SELECT task_number FROM agent_executions", {}) is None
    insert(db.conn, [])
    db.conn.execute("UPDATE agent_executions SET task_number = 7")
    frame = _arrow.arrow_frame(db, "SELECT task_number FROM agent_executions", {})
    assert frame["task_number"].tolist() == [7.0]


def test_window_and_agent(db, monkeypatch):
    insert(
        db.conn,
        [
            {"started_at": "2026-03-01T00:00:00.000Z"},
            {"started_at": "2026-03-02T00:00:00.000Z"},
            {"started_at": "2026-03-02T00:00:00.000Z", "agent_name": "other"},
            {"started_at": "2026-03-03T00:00:00.000Z", "status": "in_progress"},
            {"started_at": "2026-03-04T00:00:00.000Z"},
        ],
    )
    arrow, plain, _ = both_paths(
        monkeypatch,
        reports.execution_rows,
        db,
        since="2026-03-02",
        until="2026-03-04",
        agent="coder",
    )
    pd.testing.assert_frame_equal(arrow, plain)
    assert arrow["id"].tolist() == ["e1", "e3"]
    spans = reports.execution_rows(db, since="3d", until="1d", now="2026-03-05")
    assert spans["id"].tolist() == ["e1", "e2", "e3"]
    assert reports.execution_rows(db, agent="nobody").empty


def test_empty_file_and_path_argument(db_path, monkeypatch):
    agentmetrics.open_database(db_path).close()
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db_path)
    assert calls == [True]
    pd.testing.assert_frame_equal(arrow, plain)
    assert arrow.empty


def test_read_only_original_file(tmp_path, lock_down, monkeypatch):
    # The original's schema (no model, tokens, cost), in a folder nothing may write to:
    # our columns come from temporary views, on the Arrow connection too.
    folder = tmp_path / "ro"
    folder.mkdir()
    path = make_original_db(
        folder / "orig.db",
        [{"id": "o", "session_id": "s", "status": "completed", "started_at": FORMS[0][0]}],
        [
            {
                "id": f"e{i}",
                "orchestration_id": "o",
                "agent_session_id": f"a{i}",
                "agent_name": "coder",
                "status": "completed",
                "started_at": FORMS[0][0],
                "self_healed": i,
            }
            for i in range(2)
        ],
    )
    lock_down(path)
    lock_down(folder)
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, path)
    pd.testing.assert_frame_equal(arrow, plain)
    assert arrow["self_healed"].tolist() == [False, True]
    assert arrow["model"].tolist() == [None, None]
    assert arrow["created_at"].notna().all()  # datetime('now') from the original's default


LATER = "2026-03-02T00:00:00.000Z"


def add(conn, name):
    conn.execute(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at)"
        " VALUES (?, ?, 'coder', 'in_progress', ?)",
        [name, name, LATER],
    )


def test_a_callers_snapshot_and_uncommitted_writes(db, db_path, monkeypatch):
    insert(db.conn, [{"started_at": FORMS[0][0]}])
    # In the caller's read transaction, a later commit by another connection is not seen.
    db.conn.execute("BEGIN")
    db.conn.execute("SELECT count(*) FROM agent_executions").fetchone()  # snapshot taken
    with sqlite3.connect(db_path) as other:
        add(other, "theirs")
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db)
    assert calls == []  # another connection would see it
    assert arrow["id"].tolist() == ["e0"]
    pd.testing.assert_frame_equal(arrow, plain)
    db.conn.execute("COMMIT")
    # In the caller's write transaction, its own uncommitted row is seen.
    db.conn.execute("BEGIN")
    add(db.conn, "mine")
    arrow, plain, calls = both_paths(monkeypatch, reports.execution_rows, db)
    assert calls == []
    assert arrow["id"].tolist() == ["e0", "theirs", "mine"]  # a tie: in insertion order
    pd.testing.assert_frame_equal(arrow, plain)
    db.conn.execute("ROLLBACK")
    # Outside a transaction, a path or the Database read the latest commit.
    for source in (db, db_path):
        assert reports.execution_rows(source)["id"].tolist() == ["e0", "theirs"]


def test_agent_stats_shares_the_loader(db, monkeypatch):
    insert(
        db.conn,
        [{"started_at": FORMS[0][0]}, {"started_at": LATER, "status": "in_progress"}],
    )
    arrow, plain, calls = both_paths(monkeypatch, reports.agent_stats, db, "coder")
    assert calls == [True]
    pd.testing.assert_frame_equal(arrow, plain)
    assert arrow["id"].tolist() == ["e1", "e0"]  # newest first
    with pytest.raises(UnknownAgent):
        reports.agent_stats(db, "nobody")


def test_a_file_the_driver_cannot_open_reads_through_sqlite3(db, monkeypatch):
    insert(db.conn, [{"started_at": FORMS[0][0], "cost_usd": 0.5}])

    def refuse(uri):
        raise OSError("unable to open database file")

    expected = reports.execution_rows(db)
    monkeypatch.setattr(_arrow.adbc, "connect", refuse)
    assert _arrow.arrow_frame(db, "SELECT id FROM agent_executions", {}) is None
    pd.testing.assert_frame_equal(reports.execution_rows(db), expected)
    assert reports.execution_rows(db)["cost_usd"].tolist() == [0.5]
