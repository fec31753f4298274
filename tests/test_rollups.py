"""Rollups (agentmetrics.store.rollups, reports/_rollups.py): every report gives the same
counts, sums and rates with and without them, whatever happened to the file since
they were last brought up to date; percentiles stay within the documented bound.

The reference is always the same report with ``exact=True`` (the scan, unchanged
from before rollups), on the same file; the percentile bound is checked against
numpy on the raw durations.
"""

import datetime as dt
import random
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import make_original_db

import agentmetrics
from agentmetrics import Monitor, reports
from agentmetrics.errors import MissingIndexesWarning
from agentmetrics.exchange import merge_databases
from agentmetrics.maintenance import reap
from agentmetrics.reports import _rollups
from agentmetrics.store import db as dbmodule
from agentmetrics.store import rollups
from agentmetrics.store.cleanup import cleanup, vacuum

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
RATES = {
    "default_hourly_rate": 3.6,
    "agents": {"b": 7.2},
    "models": {"m1": {"input_per_million": 3.0, "output_per_million": 15.0}},
}
# Windows not aligned to hours, aligned to hours and days, inside one hour, open-ended.
WINDOWS = [
    (None, None),
    ("2026-03-08T05:17:23.456Z", "2026-03-09T19:42:00.001Z"),
    ("2026-03-08T00:00:00.000Z", "2026-03-10T00:00:00.000Z"),
    ("2026-03-09T10:10:00.000Z", "2026-03-09T10:50:00.000Z"),
    ("2026-03-08T13:00:00.000Z", None),
    (None, "2026-03-09T07:30:00.000Z"),
]


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def populate(
    db, seed: int, n: int = 400, start: dt.datetime = NOW - dt.timedelta(days=3), original=False
):
    """``n`` executions over three days, as the original tool's statements write them:
    ties, zero and huge durations, a one-row agent, NULL durations and counters,
    models, tokens and recorded costs, runs still in progress, starts on the hour;
    a quarter of them later attempts (2 or 3) of another row, in any hour."""
    rng = random.Random(seed)
    tries = random.Random(-seed)  # its own stream: the other columns stay as they were
    rows = []
    for i in range(n):
        started = start + dt.timedelta(milliseconds=rng.randrange(3 * 86_400_000))
        if rng.random() < 0.1:
            started = started.replace(minute=0, second=0, microsecond=0)
        status = rng.choice(["completed"] * 6 + ["failed", "in_progress"])
        duration = rng.choice([0, 1000, 1000, 2500, 10**10, None, rng.randrange(1, 10**6)])
        tokens = rng.random() < 0.3
        rows.append(
            (
                f"{seed}-{i}",
                f"session-{seed}-{i}",
                rng.choice("aabbc"),
                status,
                iso(started),
                None if status == "in_progress" else duration,
                rng.choice([0, 1, 2, None]),
                rng.choice([0, 1]),
                rng.randrange(5),
                rng.choice([None, "m1", "m2"]),
                rng.randrange(10**5) if tokens else None,
                rng.randrange(10**4) if tokens else None,
                rng.choice([None, None, 0.25]),
                *(
                    (tries.choice([2, 2, 3]), f"{seed}-{tries.randrange(i)}")
                    if i and tries.random() < 0.25
                    else (tries.choice([None, 1]), None)
                ),
            )
        )
    rows.append((f"{seed}-one", f"session-{seed}-one", "d", "completed", iso(start), 1234,
                 0, 0, 0, None, None, None, None, None, None))  # fmt: skip
    columns = ["id", "agent_session_id", "agent_name", "status", "started_at", "duration_ms",
               "retry_count", "self_healed", "files_created", "model", "input_tokens",
               "output_tokens", "cost_usd", "attempt", "first_attempt_id"]  # fmt: skip
    if original:  # the original's columns only
        columns, rows = columns[:9], [row[:9] for row in rows]
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    conn.executemany(
        f"INSERT INTO agent_executions ({', '.join(columns)})"
        f" VALUES ({', '.join('?' * len(columns))})",
        rows,
    )
    if conn.in_transaction:
        conn.commit()


def calls(since, until):
    """Every report that reads rollups, as ``f(db, exact)``."""
    window = {"since": since, "until": until}
    found = [
        lambda d, x: reports.system_health(d, **window, now=NOW, exact=x),
        lambda d, x: reports.performance_report(d, **window, exact=x),
        lambda d, x: reports.performance_report(d, **window, agent="b", exact=x),
        lambda d, x: reports.agent_summary(d, "a", **window, exact=x),
        lambda d, x: reports.costs(d, **window, rates=RATES, exact=x),
        lambda d, x: reports.costs(d, **window, by="day", exact=x),
        lambda d, x: reports.retries(d, **window, rates=RATES, total=True, now=NOW, exact=x),
        lambda d, x: reports.retries(d, **window, agent="b", now=NOW, exact=x),
    ]
    for freq, by_agent in (("h", True), ("D", False), ("W", True)):
        found.append(
            lambda d, x, f=freq, b=by_agent: reports.trends(
                d, freq=f, **window, by_agent=b, now=NOW, exact=x
            )
        )
    return found


REGRESSIONS = [
    lambda d, x, m=metric: reports.regressions(
        d, recent="1d", baseline="2d", now=NOW, metric=m, min_samples=2, exact=x
    )
    for metric in ("p95_duration_ms", "p50_duration_ms", "success_rate")
]


def assert_same(db, *, refresh: bool = True, windows=WINDOWS):
    """Each report through the rollups equals its exact path. Without ``refresh`` the
    reports run inside a transaction, which keeps them from bringing the rollups up
    to date: they read the stale rollups plus everything those do not hold."""
    assert rollups.present(db)
    if not refresh:
        db.conn.execute("BEGIN")
    try:
        for since, until in windows:
            for call in calls(since, until):
                expected, got = call(db, True), call(db, False)
                pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
        for call in REGRESSIONS:
            pd.testing.assert_frame_equal(call(db, False), call(db, True))
    finally:
        if not refresh:
            db.conn.execute("COMMIT")


def complete_late(db):
    """Runs started in old hours finish now: the original's UPDATE, and ours."""
    running = [
        row[0]
        for row in db.execute(
            "SELECT agent_session_id FROM agent_executions WHERE status = 'in_progress'"
            " ORDER BY started_at LIMIT 6"
        )
    ]
    for session in running[:3]:
        db.execute(
            "UPDATE agent_executions SET status = 'completed', duration_ms = 4321,"
            " completed_at = ? WHERE agent_session_id = ?",
            [iso(NOW), session],
        )
    monitor = Monitor(db)
    for session in running[3:]:
        monitor.complete_agent_execution(session, "failed", retry_count=3)


def edit_finished(db):
    """What a merge does to rows already rolled up: new values, a new start hour, a
    finished run set back in progress."""
    db.execute(
        "UPDATE agent_executions SET duration_ms = 77, status = 'failed' WHERE rowid % 9 = 1"
    )
    db.execute(
        "UPDATE agent_executions SET started_at = '2026-03-09T23:59:59.999Z' WHERE rowid % 13 = 2"
    )
    db.execute(
        "UPDATE agent_executions SET status = 'in_progress', duration_ms = NULL"
        " WHERE rowid % 17 = 3 AND status != 'in_progress'"
    )
    db.conn.commit() if db.conn.in_transaction else None


def import_old(db, tmp_path):
    """Merge another file's rows, started before everything here (old buckets)."""
    other = agentmetrics.open_database(tmp_path / "other.db")
    populate(other, seed=99, n=150, start=NOW - dt.timedelta(days=2, hours=7))
    other.close()
    merge_databases(db, [tmp_path / "other.db"])


def reuse_rowids(db):
    """Delete the newest rows (their rowids are free again), then add new ones."""
    db.execute(
        "DELETE FROM agent_executions WHERE rowid > (SELECT max(rowid) - 3 FROM agent_executions)"
    )
    populate(db, seed=7, n=5)


def upsert_finished(db):
    """What OpenTelemetry ingestion does: upserts of finished rows, twice each, so an
    hour already marked dirty is marked again (an upsert's conflict policy overrides a
    trigger's OR IGNORE)."""
    rows = db.execute(
        "SELECT id, agent_session_id, agent_name, started_at FROM agent_executions"
        " WHERE status != 'in_progress' ORDER BY started_at LIMIT 4"
    ).fetchall()
    for duration in (55, 66):
        for row in rows:
            db.execute(
                "INSERT INTO agent_executions (id, agent_session_id, agent_name, status,"
                " started_at, duration_ms) VALUES (?, ?, ?, 'failed', ?, ?) ON CONFLICT(id)"
                " DO UPDATE SET status = excluded.status, duration_ms = excluded.duration_ms",
                [*row, duration],
            )


MUTATIONS = {
    "late completions": complete_late,
    "finished rows edited": edit_finished,
    "old data merged": None,  # needs tmp_path
    "cleanup": lambda db: cleanup(db, days=1.5, now=NOW),
    "reap": lambda db: reap(db, stale_after="1h", now=NOW),
    "rowids reused": reuse_rowids,
    "finished rows upserted": upsert_finished,
    "vacuum": lambda db: (
        db.execute("DELETE FROM agent_executions WHERE rowid % 5 = 0"),
        vacuum(db),
    ),
}


def test_reports_are_identical_on_a_fresh_file(db):
    populate(db, seed=1)
    assert_same(db, refresh=False)  # nothing rolled up yet: all read exactly
    assert_same(db)
    assert db.execute("SELECT count(*) FROM am_rollups").fetchone()[0] > 0


@pytest.mark.parametrize("refresh", [False, True], ids=["stale rollups", "refreshed"])
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_reports_stay_identical_after(db, tmp_path, mutation, refresh):
    populate(db, seed=2)
    reports.performance_report(db)  # rolls everything up
    assert db.execute("SELECT watermark FROM am_rollup_state").fetchone()[0] > 0
    if mutation == "old data merged":
        import_old(db, tmp_path)
    else:
        MUTATIONS[mutation](db)
    assert_same(db, refresh=refresh)
    if refresh:
        rollups.refresh(db)  # all the way: open runs that finished too
        # Nothing left over: the rollups alone hold every finished row.
        assert db.execute("SELECT count(*) FROM am_rollup_dirty").fetchone()[0] == 0
        rolled = db.execute(
            "SELECT sum(completed + failed) FROM am_rollups WHERE level = 'h'"
        ).fetchone()[0]
        finished = db.execute(
            "SELECT count(*) FROM agent_executions WHERE status != 'in_progress'"
        ).fetchone()[0]
        assert rolled == finished


# Instants on hour and day edges, in the original's format (JavaScript toISOString()).
EDGES = [
    "2026-03-08T23:59:59.999Z",
    "2026-03-09T00:00:00.000Z",
    "2026-03-09T10:59:59.999Z",
    "2026-03-09T11:00:00.000Z",
    "2026-03-09T11:00:00.001Z",
    "2026-03-09T23:59:59.999Z",
    "2026-03-10T00:00:00.000Z",
]
# Windows bounded exactly on those edges, the bounds written as a user may write them.
EDGE_WINDOWS = [
    ("2026-03-09T00:00:00.000Z", "2026-03-09T11:00:00.000Z"),
    ("2026-03-08T23:59:59.999Z", "2026-03-09T10:59:59.999Z"),
    ("2026-03-09 11:00:00", "2026-03-10"),
    ("2026-03-09T10:59:59.999Z", "2026-03-09T11:00:00.001Z"),
    ("2026-03-09T12:00:00+01:00", "2026-03-09T23:59:59.999Z"),
    (dt.datetime(2026, 3, 9, tzinfo=dt.timezone.utc), "2026-03-10T00:00:00Z"),
    ("2026-03-09T00:00:00.001Z", None),
    (None, "2026-03-09T00:00:00.000Z"),
]


def add_edge_rows(db):
    """Three finished runs (agents a and b, one failed) and one in progress on each edge."""
    rows = [
        (f"edge-{i}-{j}", f"edge-{i}-{j}", "ab"[j % 2], status, started, duration)
        for i, started in enumerate(EDGES)
        for j, (status, duration) in enumerate(
            [
                ("completed", 1000 + i),
                ("failed", 50 * i),
                ("completed", None),
                ("in_progress", None),
            ]
        )
    ]
    db.conn.executemany(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at,"
        " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return rows


def in_window(started: str, since, until) -> bool:
    """By hand: parsed instants, since inclusive, until exclusive."""

    def instant(value):
        if value is None or isinstance(value, dt.datetime):
            return value
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)

    moment = instant(started)
    return (since is None or moment >= instant(since)) and (
        until is None or moment < instant(until)
    )


@pytest.mark.parametrize("refresh", [False, True], ids=["stale rollups", "refreshed"])
def test_rows_on_hour_and_day_edges(db, refresh):
    """Runs started exactly on hour and day edges, windows bounded exactly there: the
    rollup path equals the exact path, and both count what the window holds by hand."""
    populate(db, seed=4)
    reports.performance_report(db)  # rolls the background rows up
    edge_rows = add_edge_rows(db)
    if refresh:
        rollups.refresh(db)  # the edge hours rolled up too
    assert_same(db, refresh=refresh, windows=EDGE_WINDOWS)
    background = db.execute(
        "SELECT started_at, status FROM agent_executions WHERE id NOT LIKE 'edge-%'"
    ).fetchall()
    everything = background + [(row[4], row[3]) for row in edge_rows]
    for since, until in EDGE_WINDOWS:
        inside = [status for started, status in everything if in_window(started, since, until)]
        health = reports.system_health(db, since=since, until=until, now=NOW).iloc[0]
        assert (health["executions"], health["completed"], health["failed"]) == (
            len(inside),
            inside.count("completed"),
            inside.count("failed"),
        ), (since, until)


def test_a_report_rebuilds_a_bounded_number_of_dirty_hours(db, monkeypatch):
    """After a cleanup a report rebuilt every dirty hour back to back (721 hours, 9 s
    of write transactions with trackers waiting). Now: the newest ones its budget
    allows, with the lock left free between them; the others are read exactly."""
    import time
    import types

    from agentmetrics.store import batching

    populate(db, seed=5)
    reports.performance_report(db)  # rolls everything up
    cleanup(db, days=1.5, now=NOW)
    dirty = [hour for (hour,) in db.execute("SELECT hour FROM am_rollup_dirty ORDER BY hour")]
    assert len(dirty) > 10
    rests = []
    fake = types.SimpleNamespace(perf_counter=time.perf_counter, sleep=rests.append)
    monkeypatch.setattr(batching, "time", fake)
    rollups.refresh(db, budget=3 * rollups.DIRTY_HOUR_ROWS)
    left = [hour for (hour,) in db.execute("SELECT hour FROM am_rollup_dirty ORDER BY hour")]
    assert left == dirty[:-3]
    assert len(rests) == 3
    assert_same(db, refresh=False)  # the dirty hours read exactly


def test_tracking_never_fires_the_triggers(db):
    monitor = Monitor(db)
    monitor.start_agent_execution("s1", "a")
    monitor.complete_agent_execution("s1", "completed", files_created=1)
    reports.performance_report(db)
    monitor.start_agent_execution("s2", "a")
    monitor.complete_agent_execution("s2", "failed")  # completes a row rolled up as open
    assert db.execute("SELECT count(*) FROM am_rollup_dirty").fetchone()[0] == 0
    assert db.execute("SELECT reuse_from FROM am_rollup_state").fetchone()[0] is None
    assert reports.performance_report(db)["finished"].tolist() == [2]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_within_the_bound(db, monkeypatch, seed):
    """Sketched percentiles against numpy on the raw durations (ties, zero and huge
    durations, one-row agents, runs across hour edges, unaligned windows)."""
    monkeypatch.setattr(_rollups, "EXACT_PERCENTILE_ROWS", 0)
    populate(db, seed=seed, n=1500)
    bound = rollups.RELATIVE_ERROR * (1 + 1e-9)
    raw = pd.read_sql_query(
        "SELECT agent_name, started_at, duration_ms FROM agent_executions"
        " WHERE status != 'in_progress' AND duration_ms IS NOT NULL",
        db.conn,
    )
    for since, until in WINDOWS:
        inside = raw[
            (raw.started_at >= (since or "")) & ((raw.started_at < until) if until else True)
        ]
        frame = reports.performance_report(db, since=since, until=until).set_index("agent_name")
        for agent, values in inside.groupby("agent_name")["duration_ms"]:
            expected = np.percentile(values.to_numpy(dtype=float), [50, 95, 99])
            got = frame.loc[agent, ["p50_duration_ms", "p95_duration_ms", "p99_duration_ms"]]
            np.testing.assert_allclose(got.to_numpy(dtype=float), expected, rtol=bound, atol=0)
        health = reports.system_health(db, since=since, until=until, now=NOW)
        expected = np.percentile(inside["duration_ms"].to_numpy(dtype=float), [50, 95])
        got = health[["p50_duration_ms", "p95_duration_ms"]].iloc[0].to_numpy(dtype=float)
        np.testing.assert_allclose(got, expected, rtol=bound, atol=0)
    # A one-row agent's percentiles are its value (clamped to the exact min and max);
    # its row starts at populate's start, inside the last window.
    percentiles = ["p50_duration_ms", "p95_duration_ms", "p99_duration_ms"]
    assert frame.loc["d", percentiles].tolist() == [1234, 1234, 1234]


def test_trends_percentiles_within_the_bound(db, monkeypatch):
    monkeypatch.setattr(_rollups, "EXACT_PERCENTILE_ROWS", 0)
    populate(db, seed=11, n=1500)
    since, until = WINDOWS[1]
    exact = reports.trends(db, since=since, until=until, by_agent=True, now=NOW, exact=True)
    got = reports.trends(db, since=since, until=until, by_agent=True, now=NOW)
    counts = [c for c in exact.columns if not c.startswith("p")]
    pd.testing.assert_frame_equal(got[counts], exact[counts])
    for column in ("p50_duration_ms", "p95_duration_ms"):
        np.testing.assert_allclose(
            got[column], exact[column], rtol=rollups.RELATIVE_ERROR * (1 + 1e-9), atol=0
        )


def test_sketch_keys_bound_every_value():
    values = np.concatenate([[0.0, 1e-3, 1.0, 1e300], np.geomspace(0.5, 1e12, 10_000)])
    estimates = rollups.key_values(rollups.sketch_keys(values))
    nonzero = values > 0
    error = np.abs(estimates[nonzero] / values[nonzero] - 1)
    assert error.max() <= rollups.RELATIVE_ERROR * (1 + 1e-9)
    assert estimates[0] == 0


def _estimate_one(keys, counts, quantiles):
    """The per-group estimate as it was before all groups were read at once."""
    unique, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
    if not counts.sum():
        return np.full(len(quantiles), np.nan)
    ends = np.cumsum(counts)
    ranks = np.asarray(quantiles, dtype=np.float64) / 100 * (ends[-1] - 1)
    below, above = np.floor(ranks), np.ceil(ranks)
    points = rollups.key_values(unique)
    lo = points[np.searchsorted(ends, below, side="right")]
    hi = points[np.searchsorted(ends, above, side="right")]
    return lo + (ranks - below) * (hi - lo)


@pytest.mark.parametrize("seed", range(4))
def test_grouped_estimates_equal_the_per_group_ones(seed):
    """All groups at once give bit for bit what each group alone gives, on random
    sketches in random order: repeated keys, ties, zero-count buckets, one-value
    groups, groups with no entry or only empty buckets, zero and huge durations."""
    rng = np.random.default_rng(seed)
    size, quantiles = 60, [0, 1, 50, 95, 99.9, 100]
    keys, counts, groups = [], [], []
    for g in range(size):
        kind = g % 5
        if kind == 0:
            continue  # no entry at all
        n = 1 if kind == 1 else int(rng.integers(2, 400))
        values = np.concatenate([[0.0, 1e15], rng.lognormal(7, 2, n)])[: n if kind > 1 else 1]
        found = rollups.sketch_keys(np.round(values, int(rng.integers(0, 3))))
        weights = rng.integers(0, 5 if kind > 2 else 1, len(found)) + (kind != 2)
        keys.append(found)
        counts.append(weights)
        groups.append(np.full(len(found), g))
    keys, counts, groups = (np.concatenate(a) for a in (keys, counts, groups))
    shuffled = rng.permutation(len(keys))
    got = _rollups.estimates(groups[shuffled], keys[shuffled], counts[shuffled], size, quantiles)
    for g in range(size):
        mine = groups == g
        expected = _estimate_one(keys[mine], counts[mine], quantiles)
        np.testing.assert_array_equal(got[g], expected)
        # And a second method: numpy on the buckets' values, repeated.
        repeated = np.repeat(rollups.key_values(keys[mine]), counts[mine])
        if len(repeated):
            reference = np.percentile(repeated, quantiles)
            np.testing.assert_allclose(got[g], reference, rtol=1e-12, atol=0)
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all()
    one = rollups.key_values(keys[groups == 1])
    assert (got[1] == one[0]).all()


def test_percentiles_mix_exact_and_sketched_groups():
    """Groups without sketches get numpy's exact percentiles; sketched ones add their
    exact values to their sketches and are clamped to the group's min and max."""
    values = np.array([10.0, 20.0, 30.0, 1000.0])
    blob = rollups.encode(*rollups.merge(rollups.sketch_keys(values), np.ones(4, np.int64)))
    groups = [("a",), ("b",), ("c",)]
    table = _rollups._percentiles(
        groups,
        {("b",): [blob], ("c",): [blob, blob]},
        {("a",): ["1,2", "3,4"], ("b",): ["5"]},
        [0, 50, 100],
        np.array([1.0, 5.0, 10.0]),
        np.array([4.0, 990.0, 1000.0]),
    )
    np.testing.assert_array_equal(table[0], [1.0, 2.5, 4.0])
    merged = np.sort(np.concatenate([values, [5.0]]))
    np.testing.assert_allclose(table[1], [5.0, merged[2], 990.0], rtol=0.005)
    assert table[1, 0] == 5.0 and table[1, 2] == 990.0  # clamped
    np.testing.assert_allclose(table[2], [10.0, 25.0, 1000.0], rtol=0.005)


def test_rows_inside_the_window_are_not_walked(db):
    """Rows in rolled-up hours cost a report nothing: the exact scan of an edge hour
    searches that hour only (given the window's bounds too, SQLite used to walk the
    index from the window's start). Counted in SQLite virtual machine steps, not timed."""
    populate(db, seed=3, n=3000)
    since, until = "2026-03-07T13:17:00.000Z", "2026-03-09T19:42:00.000Z"

    def steps() -> int:
        rollups.refresh(db, budget=10**9)
        counted = [0]

        def tick() -> int:
            counted[0] += 1
            return 0

        db.conn.set_progress_handler(tick, 100)
        found = _rollups.finished(db, since, until, by=["agent_name"])
        db.conn.set_progress_handler(None, 0)
        return counted[0], found["completed"].sum()

    before, completed = steps()
    # 20,000 more runs in one hour well inside the window.
    db.conn.executemany(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at,"
        " duration_ms) VALUES (?, ?, 'a', 'completed', '2026-03-08T10:30:00.000Z', 5)",
        [(f"inside-{i}", f"s-{i}") for i in range(20_000)],
    )
    db.conn.commit()
    after, more = steps()
    assert more == completed + 20_000
    assert after - before < 100, (before, after)  # 100 steps: 10,000 instructions


def test_a_read_only_original_file_is_read_exactly(tmp_path, lock_down):
    """The original's file, which we may not add tables to (read-only here): no
    rollups, the exact path, the answers of a writable copy."""
    (tmp_path / "original").mkdir()
    path = make_original_db(tmp_path / "original" / "monitoring.db")
    conn = sqlite3.connect(path)
    populate(conn, seed=3, original=True)
    conn.close()
    shutil.copyfile(path, tmp_path / "copy.db")
    copy = agentmetrics.open_database(tmp_path / "copy.db")
    assert rollups.present(copy)  # a small file gets them on open
    expected = [call(copy, False) for call in calls(*WINDOWS[1])]
    lock_down(path)
    lock_down(path.parent)
    db = agentmetrics.open_database(path, create=False)
    assert not rollups.present(db)
    for call, frame in zip(calls(*WINDOWS[1]), expected, strict=True):
        pd.testing.assert_frame_equal(call(db, False), frame, check_exact=False, rtol=1e-12)


def test_upgrade_rolls_a_large_file_up_in_short_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(dbmodule, "IMPLICIT_INDEX_ROWS", 10)
    monkeypatch.setattr(rollups, "BATCH_ROWS", 50)
    path = tmp_path / "large.db"
    db = agentmetrics.open_database(path)
    db.execute("DROP TABLE IF EXISTS am_rollups")  # as a file of the previous release
    populate(db, seed=4)
    assert not rollups.present(db)
    statements = []
    db.conn.set_trace_callback(statements.append)
    timings = dbmodule.upgrade(db, progress=None)
    db.conn.set_trace_callback(None)
    assert "rollups" in timings
    # One short write per batch of 50 rows (401 rows), plus creating the tables.
    assert statements.count("BEGIN IMMEDIATE") >= 9
    assert db.execute("SELECT count(*) FROM am_rollups").fetchone()[0] > 0
    assert rollups.backlog(db) == 0
    assert_same(db)


# The sums rollups gained with attempts (the earlier version's am_rollups lacks them).
ATTEMPT_SUMS = [
    "first_attempts",
    "first_attempt_completed",
    "retried",
    "rescued",
    "max_attempt",
    "self_healed_tasks",
    "failed_duration",
    "failed_recorded_cost",
    "failed_input_tokens",
    "failed_output_tokens",
    "failed_token_duration",
    "failed_time_duration",
]


def roll_up_as_earlier_version(path):
    """A file rolled up by the version before attempts: its am_rollups, full of rows,
    lacks the attempt sums."""
    db = agentmetrics.open_database(path)
    populate(db, seed=5)
    reports.performance_report(db)  # rolls everything up
    for column in ATTEMPT_SUMS:
        db.execute(f"ALTER TABLE am_rollups DROP COLUMN {column}")
    assert db.execute("SELECT count(*) FROM am_rollups").fetchone()[0] > 0
    db.close()


def test_a_small_file_with_earlier_rollups_gets_them_rebuilt_on_open(tmp_path):
    roll_up_as_earlier_version(tmp_path / "small.db")
    db = agentmetrics.open_database(tmp_path / "small.db", create=False)
    assert rollups.present(db)
    assert_same(db)
    # Rebuilt from the rows, every sum: later attempts counted once each.
    retried = db.execute("SELECT total(retried) FROM am_rollups WHERE level = 'h'").fetchone()[0]
    expected = db.execute(
        "SELECT count(*) FROM agent_executions WHERE attempt = 2 AND status != 'in_progress'"
    ).fetchone()[0]
    assert retried == expected > 0
    db.close()


def test_a_large_file_with_earlier_rollups_is_read_exactly_until_upgraded(tmp_path, monkeypatch):
    roll_up_as_earlier_version(tmp_path / "large.db")
    monkeypatch.setattr(dbmodule, "IMPLICIT_INDEX_ROWS", 10)
    monkeypatch.setattr(rollups, "BATCH_ROWS", 50)
    with pytest.warns(MissingIndexesWarning, match="rollups missing"):
        db = agentmetrics.open_database(tmp_path / "large.db", create=False)
    assert not rollups.present(db)
    exact = [call(db, True) for call in calls(*WINDOWS[1])]
    for call, frame in zip(calls(*WINDOWS[1]), exact, strict=True):
        pd.testing.assert_frame_equal(call(db, False), frame)  # the same path: exact
    statements = []
    db.conn.set_trace_callback(statements.append)
    assert "rollups" in dbmodule.upgrade(db, progress=None)
    db.conn.set_trace_callback(None)
    assert "DROP TABLE am_rollups" in statements
    assert statements.count("BEGIN IMMEDIATE") >= 9  # 401 rows in batches of 50
    assert rollups.present(db) and rollups.backlog(db) == 0
    assert_same(db)
    db.close()
