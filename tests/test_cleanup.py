import datetime as dt
import sqlite3

import pytest
from conftest import SMALL_NOW, cli_result, make_original_db

import agentmetrics
from agentmetrics.errors import DatabaseError
from agentmetrics.store import cleanup as cleanup_module
from agentmetrics.store.cleanup import cleanup, vacuum

NOW = dt.datetime(2024, 6, 30, 12, 0, tzinfo=dt.timezone.utc)
MS = dt.timedelta(milliseconds=1)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def add_orchestration(db, session_id, started_at, executions=2, created_at="2024-06-30 12:00:00"):
    """Insert raw rows (any started_at text) with ``executions`` children."""
    db.execute(
        "INSERT INTO orchestrations (id, session_id, status, started_at, created_at)"
        " VALUES (?, ?, 'completed', ?, ?)",
        [session_id, session_id, started_at, created_at],
    )
    for i in range(executions):
        add_execution(db, f"{session_id}-e{i}", started_at, orchestration_id=session_id)


def add_execution(db, agent_session_id, started_at, orchestration_id=None):
    db.execute(
        "INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name,"
        " status, started_at) VALUES (?, ?, ?, 'agent', 'completed', ?)",
        [agent_session_id, orchestration_id, agent_session_id, started_at],
    )


def sessions(db):
    return {r[0] for r in db.execute("SELECT session_id FROM orchestrations")}


def executions(db):
    return {r[0] for r in db.execute("SELECT agent_session_id FROM agent_executions")}


@pytest.fixture
def aged(db):
    cutoff = NOW - dt.timedelta(days=30)
    add_orchestration(db, "old", iso(cutoff - dt.timedelta(days=5)), executions=3)
    add_orchestration(db, "just-outside", iso(cutoff - MS))
    add_orchestration(db, "at-cutoff", iso(cutoff))
    add_orchestration(db, "just-inside", iso(cutoff + MS))
    add_orchestration(db, "new", iso(NOW - dt.timedelta(hours=1)))
    add_execution(db, "solo-old", iso(cutoff - MS))
    add_execution(db, "solo-new", iso(cutoff + MS))
    return db


def test_boundaries_and_cascade(aged):
    result = cleanup(aged, 30, now=NOW)
    # 3 + 2 executions belong to "old" and "just-outside".
    assert (result.orchestrations, result.executions, result.standalone_executions) == (2, 5, 1)
    assert result.cutoff == "2024-05-31T12:00:00.000Z"
    assert sessions(aged) == {"at-cutoff", "just-inside", "new"}
    assert executions(aged) == {
        f"{s}-e{i}" for s in ("at-cutoff", "just-inside", "new") for i in range(2)
    } | {"solo-new"}


def test_dry_run_counts_and_leaves_data(aged):
    before = (sessions(aged), executions(aged))
    counted = cleanup(aged, 30, now=NOW, dry_run=True)
    assert counted.dry_run
    assert (counted.orchestrations, counted.executions, counted.standalone_executions) == (2, 5, 1)
    assert (sessions(aged), executions(aged)) == before
    done = cleanup(aged, 30, now=NOW)
    assert (done.orchestrations, done.executions, done.standalone_executions) == (2, 5, 1)


def test_small_batches_delete_the_same_rows(aged):
    result = cleanup(aged, 30, now=NOW, batch_size=1)
    assert (result.orchestrations, result.executions, result.standalone_executions) == (2, 5, 1)
    assert sessions(aged) == {"at-cutoff", "just-inside", "new"}


def resting(monkeypatch, events):
    """Record each rest (batching's sleep) in ``events`` instead of sleeping."""
    import time
    import types

    from agentmetrics.store import batching

    fake = types.SimpleNamespace(
        perf_counter=time.perf_counter, sleep=lambda s: events.append(("rest", s))
    )
    monkeypatch.setattr(batching, "time", fake)


def test_cleanup_leaves_the_lock_free_between_batches(aged, monkeypatch):
    """A tracker waiting for the lock retries every 100 ms at most: a cleanup that took
    the lock back at once after each batch let it in only by chance (a tracker call
    waited 3 s in bench_trust). Counted in statements, not timed."""
    from agentmetrics.store.batching import RETRY_SECONDS

    events = []
    resting(monkeypatch, events)
    aged.conn.set_trace_callback(lambda sql: events.append(sql.strip()))
    cleanup(aged, 30, now=NOW, batch_size=1)
    aged.conn.set_trace_callback(None)
    begins = [i for i, e in enumerate(events) if e == "BEGIN IMMEDIATE"]
    # Orchestrations old and just-outside, the last empty batch; solo-old, an empty one.
    assert len(begins) >= 5
    rests = [e for e in events if isinstance(e, tuple)]
    for begin, following in zip(begins, begins[1:], strict=False):
        assert any(isinstance(e, tuple) for e in events[begin:following]), events[begin:following]
    assert len(rests) >= len(begins) - 1
    assert all(0 <= seconds <= RETRY_SECONDS for _, seconds in rests)


def test_a_rest_lasts_as_long_as_the_lock_was_held_up_to_the_retry_interval(monkeypatch):
    from agentmetrics.store.batching import rest

    events = []
    resting(monkeypatch, events)
    rest(0.02)
    rest(2.5)
    assert events == [("rest", 0.02), ("rest", 0.1)]


def test_days_zero_deletes_everything_started_before_now(aged):
    add_orchestration(aged, "future", iso(NOW + MS))
    result = cleanup(aged, 0, now=NOW)
    assert result.orchestrations == 5
    assert sessions(aged) == {"future"}
    assert executions(aged) == {"future-e0", "future-e1"}


def test_instants_not_text_whatever_the_stored_format(db):
    # The cutoff is 2024-05-31T12:00:00Z. Text comparison would get all of these wrong.
    add_orchestration(db, "space-before", "2024-05-31 11:59:59")  # sorts before "T": old
    add_orchestration(db, "space-after", "2024-05-31 12:00:01")  # sorts before too, but new
    add_orchestration(db, "offset-old", "2024-05-31T13:59:00+02:00")  # 11:59Z
    add_orchestration(db, "offset-new", "2024-05-31T08:01:00-04:00")  # 12:01Z
    add_orchestration(db, "next-day-offset-old", "2024-06-01T01:00:00+14:00")  # 11:00Z
    # created_at says new but started_at old (and the reverse): started_at decides.
    add_orchestration(
        db, "created-late", "2024-05-01T00:00:00.000Z", created_at="2024-06-30 00:00:00"
    )
    add_orchestration(
        db, "created-early", "2024-06-01T00:00:00.000Z", created_at="2024-01-01 00:00:00"
    )
    add_execution(db, "solo-space-after", "2024-05-31 12:00:01")
    result = cleanup(db, 30, now=NOW)
    assert sessions(db) == {"space-after", "offset-new", "created-early"}
    assert result.orchestrations == 4
    assert "solo-space-after" in executions(db)


def test_foreign_keys_are_on_and_no_orphans_remain(aged):
    assert aged.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    cleanup(aged, 30, now=NOW)
    orphans = aged.execute(
        "SELECT count(*) FROM agent_executions WHERE orchestration_id IS NOT NULL"
        " AND orchestration_id NOT IN (SELECT id FROM orchestrations)"
    ).fetchone()[0]
    assert orphans == 0


def test_cascade_alone_removes_children(db):
    # The schema's ON DELETE CASCADE is live on our connections.
    add_orchestration(db, "o", iso(NOW), executions=3)
    db.execute("DELETE FROM orchestrations")
    assert executions(db) == set()


def test_path_and_monitor_data(db_path):
    clock = iter([NOW - dt.timedelta(days=40), NOW - dt.timedelta(days=40), NOW])
    m = agentmetrics.Monitor(db_path, clock=lambda: next(clock))
    o = m.start_orchestration("tracked")
    m.start_agent_execution("tracked-a", "x", orchestration_id=o)
    m.start_orchestration("recent")
    m.close()
    result = cleanup(str(db_path), 30, now=NOW)
    assert (result.orchestrations, result.executions) == (1, 1)


@pytest.mark.parametrize("days", [-1, float("nan"), float("inf"), "3", True])
def test_bad_days(db, days):
    with pytest.raises(ValueError, match="days must be a number >= 0"):
        cleanup(db, days, now=NOW)


def test_bad_batch_size(db):
    with pytest.raises(ValueError, match="batch_size"):
        cleanup(db, 1, batch_size=0)


def test_vacuum_gives_space_back(db):
    for i in range(300):
        add_orchestration(db, f"s{i}", iso(NOW - dt.timedelta(days=60)), executions=5)
    cleanup(db, 30, now=NOW)
    assert vacuum(db) > 0


def _pages(path):
    conn = sqlite3.connect(path)
    pages = [
        conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count")
    ]
    conn.close()
    return pages


def test_vacuum_of_our_file_frees_pages_in_short_transactions(db_path, monkeypatch):
    monkeypatch.setattr(cleanup_module, "VACUUM_PAGES", 5)
    monkeypatch.setattr(cleanup_module, "TARGET_LOCK_SECONDS", 0)  # sizes never grow
    db = agentmetrics.open_database(db_path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, from creation
    for i in range(200):
        add_orchestration(db, f"s{i}", iso(NOW - dt.timedelta(days=60)), executions=5)
    add_orchestration(db, "kept", iso(NOW), executions=3)
    cleanup(db, 30, now=NOW)
    watermark = db.execute("SELECT * FROM am_rollup_state").fetchall()
    pages, free = _pages(db_path)
    assert free > 20
    statements = []
    db.conn.set_trace_callback(statements.append)
    freed = vacuum(db)
    db.conn.set_trace_callback(None)
    statements = [s.strip(" ;") for s in statements]
    steps = [i for i, s in enumerate(statements) if "incremental_vacuum" in s]
    assert len(steps) == -(-free // 5)  # 5 pages each, each in its own write transaction
    transaction = ["BEGIN IMMEDIATE", "PRAGMA incremental_vacuum(5)", "COMMIT"]
    assert all(statements[i - 1 : i + 2] == transaction for i in steps)
    assert not any(s.strip().upper() == "VACUUM" for s in statements)
    assert _pages(db_path) == [pages - free, 0]
    assert freed == free * db.execute("PRAGMA page_size").fetchone()[0]
    assert db.execute("SELECT session_id FROM orchestrations").fetchall() == [("kept",)]
    assert db.execute("SELECT count(*) FROM agent_executions").fetchone()[0] == 3
    assert db.execute("SELECT * FROM am_rollup_state").fetchall() == watermark  # rowids kept
    db.close()


def test_vacuum_of_another_file_converts_it_once(tmp_path):
    path = make_original_db(tmp_path / "original.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE filler (x)")  # pages to free, in a table of its own
    conn.execute("INSERT INTO filler SELECT randomblob(3000) FROM orchestrations")
    conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 3000,)] * 200)
    conn.execute("DELETE FROM filler")
    conn.commit()
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    assert vacuum(path) > 0
    assert _pages(path)[1] == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # later vacuums are short
    conn.close()


def test_vacuum_refuses_to_run_inside_a_transaction(db):
    db.execute("BEGIN")
    with pytest.raises(DatabaseError, match="inside a transaction"):
        vacuum(db)
    assert db.conn.in_transaction  # the caller's transaction is still theirs
    db.execute("ROLLBACK")


# -- cleanup with a retention longer than the calendar -------------------------------------


def test_cleanup_huge_days_deletes_nothing(small):
    result = cli_result("--db", small, "cleanup", "1e300", "--dry-run").output
    assert result.startswith("Would delete 0 orchestrations with 0 executions")
    assert cleanup(small, 1e300, now=SMALL_NOW).orchestrations == 0
    with sqlite3.connect(small) as raw:
        assert raw.execute("SELECT count(*) FROM agent_executions").fetchone()[0] == 2


def test_batch_size_grows_while_quick_and_shrinks_when_slow():
    from agentmetrics.store.batching import BatchSize

    size = BatchSize(10, target_seconds=1.0, max_growth=4)
    seen = []
    for seconds in (0.1, 0.1, 0.1, 0.7, 1.5, 9, 9):
        size.update(seconds)
        seen.append(size.size)
    # Doubles under 0.5 s up to 10 x 4, holds between 0.5 and 1 s, halves over 1 s.
    assert seen == [20, 40, 40, 40, 20, 10, 10]
