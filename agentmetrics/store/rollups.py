"""Rollups: hourly aggregates of finished executions, so reports need not scan them all.

``am_rollups`` holds, per hour of ``started_at`` (``YYYY-MM-DDTHH``) and per day, agent
and model, the counts by status and the sums the reports show; ``am_rollup_sketches`` holds
per hour and per day, and agent, a histogram of durations in log-spaced buckets
(DDSketch): any percentile read from it is within :data:`RELATIVE_ERROR` of the
exact one.

Rollups are kept current on read, never by the tracking statements (the original
tool writes to the same file and knows nothing of them): :func:`refresh` rolls up
the rows added since a rowid watermark, in batches worked out before their short
write transaction. Everything else that can change a rolled-up row
is caught by triggers that only fire off the tracking path:

- a run still in progress when rolled past is kept in ``am_rollup_open`` and rolled
  up once finished (late completions, ``reap``);
- an update of a finished row (import/merge) or a delete (cleanup) marks its hour
  in ``am_rollup_dirty``: that hour is rebuilt from the table;
- deleting the rows at the top of the table frees their rowids for reuse: the
  lowest one freed is kept (``reuse_from``), and the rows found from there up to
  the watermark are new.

Until :func:`refresh` runs, reports read every row the rollups do not hold exactly
(see :mod:`agentmetrics.reports._rollups`), so they are always right.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from sqlite_utils import Database

from .batching import rest

# Relative error of a duration read from a sketch (DDSketch's alpha): every value in
# bucket k lies in (GAMMA**(k-1), GAMMA**k], shown as the point within ALPHA of all.
RELATIVE_ERROR = 0.005
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
# Keys: 0 for zero, BIAS + k for a positive value, -(BIAS + k) for a negative one,
# so that keys sort like the values they stand for.
_BIAS = 1 << 20
# Rows read per catch-up batch: well under 0.1 s of reading; the write that follows
# holds the lock for milliseconds, up to 0.1-0.3 s for rows spread over many hours.
BATCH_ROWS = 20_000
# A dirty hour to rebuild counts as this many rows in a refresh's budget and backlog.
DIRTY_HOUR_ROWS = 1000

TABLES = (
    "am_rollups",
    "am_rollup_sketches",
    "am_rollup_state",
    "am_rollup_open",
    "am_rollup_dirty",
)
# What the costs report (reports/cost.py) prices, per method: (which rows, summed value).
_COST_SUMS = {
    "recorded_cost": ("cost_usd IS NOT NULL", "cost_usd"),
    "input_tokens": ("cost_usd IS NULL", "input_tokens"),
    "output_tokens": ("cost_usd IS NULL", "output_tokens"),
    "token_duration": (
        "cost_usd IS NULL AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)",
        "duration_ms",
    ),
    "time_duration": (
        "cost_usd IS NULL AND input_tokens IS NULL AND output_tokens IS NULL",
        "duration_ms",
    ),
}
# The prefix of the same sums over failed executions only (reports/retries.py).
FAILED = "failed_"
# The sums kept per (hour, agent_name, model), as the reports define them.
SUM_COLUMNS = {
    "completed": "total(status = 'completed')",
    "failed": "total(status = 'failed')",
    "durations": "count(duration_ms)",
    "duration_sum": "sum(duration_ms)",
    "duration_min": "min(duration_ms)",
    "duration_max": "max(duration_ms)",
    "retries": "total(retry_count)",
    "self_healed": "total(self_healed != 0)",
    "files_created": "total(files_created)",
    "files_modified": "total(files_modified)",
    # For costs (reports/cost.py): recorded costs, rows priceable by tokens, by time.
    "recorded": "total(cost_usd IS NOT NULL)",
    "token_rows": "total(cost_usd IS NULL AND (input_tokens IS NOT NULL"
    " OR output_tokens IS NOT NULL))",
    **{
        name: f"total(CASE WHEN {rows} THEN {value} END)"
        for name, (rows, value) in _COST_SUMS.items()
    },
    # For retries (reports/retries.py), each attempt in the hour of its own start: first
    # attempts (NULL is the first), tasks that needed a second attempt, completed later
    # attempts (tasks rescued by a retry), self-healed runs (they end completed: one per
    # task), and the time and cost of failed attempts.
    "first_attempts": "total(ifnull(attempt, 1) = 1)",
    "first_attempt_completed": "total(ifnull(attempt, 1) = 1 AND status = 'completed')",
    "retried": "total(attempt = 2)",
    "rescued": "total(attempt >= 2 AND status = 'completed')",
    "max_attempt": "ifnull(max(ifnull(attempt, 1)), 0)",
    "self_healed_tasks": "total(self_healed != 0 AND status = 'completed')",
    "failed_duration": "total(CASE WHEN status = 'failed' THEN duration_ms END)",
    **{
        FAILED + name: f"total(CASE WHEN status = 'failed' AND {rows} THEN {value} END)"
        for name, (rows, value) in _COST_SUMS.items()
    },
    "first_started": "min(started_at)",
    "last_started": "max(started_at)",
}
# How two rollup rows of one key combine, per column.
COMBINE = {
    name: "min"
    if name in ("duration_min", "first_started")
    else "max"
    if name in ("duration_max", "max_attempt", "last_started")
    else "sum"
    for name in SUM_COLUMNS
}
KEY_COLUMNS = ("hour", "agent_name", "model")

_SCHEMA = [
    # level 'h': hour is an hour of started_at; 'D': a day (the sums of its hours).
    "CREATE TABLE IF NOT EXISTS am_rollups (level TEXT NOT NULL, hour TEXT NOT NULL,"
    " agent_name TEXT NOT NULL,"
    " model TEXT, " + ", ".join(SUM_COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS am_rollups_hour ON am_rollups(level, hour, agent_name)",
    "CREATE INDEX IF NOT EXISTS am_rollups_agent ON am_rollups(level, agent_name, hour)",
    # level 'h': period is an hour; 'D': a day (the sum of its hours).
    "CREATE TABLE IF NOT EXISTS am_rollup_sketches (level TEXT NOT NULL, period TEXT NOT NULL,"
    " agent_name TEXT NOT NULL, sketch BLOB NOT NULL, PRIMARY KEY (level, period, agent_name))"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS am_rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " watermark INTEGER NOT NULL, watermark_id TEXT, reuse_from INTEGER)",
    "INSERT OR IGNORE INTO am_rollup_state (id, watermark) VALUES (1, 0)",
    # started_at: lets a report look only at the open runs of its window.
    "CREATE TABLE IF NOT EXISTS am_rollup_open (row INTEGER PRIMARY KEY, started_at TEXT)",
    "CREATE INDEX IF NOT EXISTS am_rollup_open_started ON am_rollup_open(started_at)",
    "CREATE TABLE IF NOT EXISTS am_rollup_dirty (hour TEXT PRIMARY KEY) WITHOUT ROWID",
    # The tracking statements never fire these: a start inserts (no trigger), and a
    # completion updates a row still in progress (the WHEN is false).
    """CREATE TRIGGER IF NOT EXISTS am_rollup_updated AFTER UPDATE ON agent_executions
WHEN OLD.status != 'in_progress' OR NEW.started_at IS NOT OLD.started_at BEGIN
  INSERT INTO am_rollup_dirty (hour) SELECT substr(OLD.started_at, 1, 13)
    WHERE NOT EXISTS (SELECT 1 FROM am_rollup_dirty WHERE hour = substr(OLD.started_at, 1, 13));
  INSERT INTO am_rollup_dirty (hour) SELECT substr(NEW.started_at, 1, 13)
    WHERE NOT EXISTS (SELECT 1 FROM am_rollup_dirty WHERE hour = substr(NEW.started_at, 1, 13));
END""",
    """CREATE TRIGGER IF NOT EXISTS am_rollup_deleted AFTER DELETE ON agent_executions BEGIN
  INSERT INTO am_rollup_dirty (hour) SELECT substr(OLD.started_at, 1, 13)
    WHERE OLD.status != 'in_progress' AND NOT EXISTS
      (SELECT 1 FROM am_rollup_dirty WHERE hour = substr(OLD.started_at, 1, 13));
  UPDATE am_rollup_state SET reuse_from = min(ifnull(reuse_from, OLD.rowid),
    ifnull((SELECT max(rowid) FROM agent_executions), 0) + 1)
    WHERE OLD.rowid > ifnull((SELECT max(rowid) FROM agent_executions), 0);
END""",
]

# Finished rows matching {where}, aggregated per rollup key, with their durations.
AGGREGATE_SQL = (
    "SELECT substr(started_at, 1, 13) AS hour, agent_name, model, "
    + ", ".join(f"{sql} AS {name}" for name, sql in SUM_COLUMNS.items())
    + ", group_concat(duration_ms) AS duration_list"
    " FROM agent_executions {indexed}WHERE status != 'in_progress' AND {where} GROUP BY 1, 2, 3"
)
# For rows picked by rowid: SQLite would rather walk a partial index of finished rows.
BY_ROWID = "NOT INDEXED "
# A row counts as rolled up when it is at or below the watermark, not open, and not
# in a range of reused rowids.
ROLLED = (
    "rowid <= (SELECT watermark FROM am_rollup_state)"
    " AND rowid NOT IN (SELECT row FROM am_rollup_open)"
    " AND rowid < ifnull((SELECT reuse_from FROM am_rollup_state), rowid + 1)"
)


def present(db: Database) -> bool:
    """Whether ``db`` has the rollup tables, as this version makes them."""
    names = {
        row[0]
        for row in db.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name LIKE 'am_rollup%'"
        )
    }
    return set(TABLES) <= names and not _outdated(db)


def _outdated(db: Database) -> bool:
    """Whether ``am_rollups`` is an earlier version's: it lacks a sum kept now."""
    columns = {row[1] for row in db.execute("PRAGMA main.table_info(am_rollups)")}
    return bool(columns) and not set(SUM_COLUMNS) <= columns


def create(db: Database) -> None:
    """Create the (empty) rollup tables and triggers: instant, whatever the file's size.

    An earlier version's rollups (fewer sums) are dropped, all at once: the next
    :func:`refresh` rolls every row up again, in short batches, and reports read
    exactly until then.
    """
    with db.atomic():
        outdated = _outdated(db)
        if outdated:
            db.execute("DROP TABLE am_rollups")
        for sql in _SCHEMA:
            db.execute(sql)
        if outdated:
            _forget(db)


def upper(prefix: str) -> str:
    """The least string above every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# -- sketches ----------------------------------------------------------------------------


def sketch_keys(values: np.ndarray) -> np.ndarray:
    """The bucket key of each value (see ``_BIAS``)."""
    values = np.asarray(values, dtype=np.float64)
    keys = np.zeros(len(values), dtype=np.int64)
    magnitude = np.abs(values)
    nonzero = magnitude > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.ceil(np.log(magnitude[nonzero]) / _LOG_GAMMA)
    k = np.clip(np.nan_to_num(k, posinf=_BIAS - 1, neginf=1 - _BIAS), 1 - _BIAS, _BIAS - 1)
    keys[nonzero] = (_BIAS + k.astype(np.int64)) * np.sign(values[nonzero]).astype(np.int64)
    return keys


def key_values(keys: np.ndarray) -> np.ndarray:
    """The value each key stands for: within RELATIVE_ERROR of every value in it."""
    keys = np.asarray(keys, dtype=np.int64)
    k = np.abs(keys) - _BIAS
    values = np.sign(keys) * 2 * np.power(GAMMA, k.astype(np.float64)) / (1 + GAMMA)
    return np.where(keys == 0, 0.0, values)


def encode(keys: np.ndarray, counts: np.ndarray) -> bytes:
    return np.stack([keys, counts], axis=1).astype("<i8").tobytes()


def decode(blobs: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Merge encoded sketches: (sorted keys, counts)."""
    pairs = np.frombuffer(b"".join(blobs), dtype="<i8").reshape(-1, 2)
    return merge(pairs[:, 0], pairs[:, 1])


def merge(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


def split(text: str | None) -> np.ndarray:
    return (
        np.array(text.split(","), dtype=np.float64)
        if isinstance(text, str) and text
        else np.empty(0)
    )


# -- keeping rollups current -------------------------------------------------------------


def refresh(
    db: Database,
    *,
    budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Bring the rollups of ``db`` up to date; return whether the watermark is.

    Rebuilds the hours marked dirty (newest first, each counting as
    :data:`DIRTY_HOUR_ROWS` rows), rolls up the open runs that finished, then the
    rows above the watermark in batches of :data:`BATCH_ROWS`, stopping after about
    ``budget`` rows (None: no limit); what is left is read exactly until a later
    refresh. Each write transaction is short, and the lock is left free between two
    rebuilds (:func:`~agentmetrics.store.batching.rest`) and while a batch is read; a
    batch another process rolled up meanwhile is dropped.
    """
    _check_watermark(db)
    dirty = db.execute("SELECT hour FROM am_rollup_dirty ORDER BY hour DESC").fetchall()
    if budget is not None:
        dirty = dirty[: budget // DIRTY_HOUR_ROWS]
    for (hour,) in dirty:
        started = time.perf_counter()
        _rebuild(db, hour)
        rest(time.perf_counter() - started)
    # Finished open runs are read exactly until then: roll them up now and then only,
    # as checking them all costs a lookup each.
    reused = db.execute("SELECT reuse_from FROM am_rollup_state").fetchone()[0]
    if budget is None or reused is not None:
        _roll_reopened(db)
    done, spent = 0, len(dirty) * DIRTY_HOUR_ROWS
    last = db.execute("SELECT max(rowid) FROM agent_executions").fetchone()[0] or 0
    while True:
        watermark = _watermark(db)
        if watermark >= last or (budget is not None and spent + done >= budget):
            if done >= BATCH_ROWS:
                _roll_reopened(db)
            return watermark >= last
        end = min(watermark + BATCH_ROWS, last)
        with _read(db):
            frame = _aggregate(db, "rowid > ? AND rowid <= ?", [watermark, end])
            running = db.execute(
                "SELECT rowid, started_at FROM agent_executions"
                " WHERE rowid > ? AND rowid <= ? AND status = 'in_progress'",
                [watermark, end],
            ).fetchall()
            end_id = _id_at(db, end)
        delta = _delta(frame)  # worked out before taking the lock
        with _write(db):
            if _watermark(db) != watermark:
                continue  # another process rolled this batch up
            _apply(db, delta)
            db.conn.executemany(
                "INSERT OR REPLACE INTO am_rollup_open (row, started_at) VALUES (?, ?)", running
            )
            db.execute("UPDATE am_rollup_state SET watermark = ?, watermark_id = ?", [end, end_id])
        done += end - watermark
        if progress:
            progress(end, last)


def backlog(db: Database) -> int:
    """Rows the rollups do not hold yet (above the watermark, in reused rowids), and
    a thousand per dirty hour."""
    last = db.execute("SELECT max(rowid) FROM agent_executions").fetchone()[0] or 0
    dirty = db.execute("SELECT count(*) FROM am_rollup_dirty").fetchone()[0]
    watermark, reuse_from = db.execute(
        "SELECT watermark, reuse_from FROM am_rollup_state"
    ).fetchone()
    reused = watermark - reuse_from + 1 if reuse_from else 0
    return max(last - watermark, 0) + max(reused, 0) + dirty * DIRTY_HOUR_ROWS


def reset(db: Database) -> None:
    """Forget every rollup (the next :func:`refresh` rebuilds them): after VACUUM,
    which may renumber rowids."""
    with _write(db):
        _forget(db)


def _forget(db: Database) -> None:
    for table in ("am_rollups", "am_rollup_sketches", "am_rollup_open", "am_rollup_dirty"):
        db.execute(f"DELETE FROM {table}")
    db.execute("UPDATE am_rollup_state SET watermark = 0, watermark_id = NULL, reuse_from = NULL")


def _watermark(db: Database) -> int:
    return db.execute("SELECT watermark FROM am_rollup_state").fetchone()[0]


def _id_at(db: Database, row: int) -> str | None:
    found = db.execute("SELECT id FROM agent_executions WHERE rowid = ?", [row]).fetchone()
    return found[0] if found else None


def _check_watermark(db: Database) -> None:
    watermark, expected = db.execute(
        "SELECT watermark, watermark_id FROM am_rollup_state"
    ).fetchone()
    if not watermark:
        return
    found = _id_at(db, watermark)
    if found is not None and found != expected:  # deleted is fine: a hole
        reset(db)


def _aggregate(db: Database, where: str, params: list, indexed: str = BY_ROWID) -> pd.DataFrame:
    sql = AGGREGATE_SQL.format(where=where, indexed=indexed)
    return pd.read_sql_query(sql, db.conn, params=params)


def _rebuild(db: Database, hour: str) -> None:
    """Recompute one hour from the table (its rolled-up rows only)."""
    with _write(db):
        for agent, blob in db.execute(
            "SELECT agent_name, sketch FROM am_rollup_sketches WHERE level = 'h' AND period = ?",
            [hour],
        ).fetchall():
            pairs = np.frombuffer(blob, dtype="<i8").reshape(-1, 2)
            day, name = (
                np.full(len(pairs), hour[:10], dtype=object),
                np.full(len(pairs), agent, dtype=object),
            )
            add_sketches(db, "D", day, name, pairs[:, 0], -pairs[:, 1])
        db.execute("DELETE FROM am_rollup_sketches WHERE level = 'h' AND period = ?", [hour])
        db.execute("DELETE FROM am_rollups WHERE level = 'h' AND hour = ?", [hour])
        in_hour = "started_at >= ? AND started_at < ? AND substr(started_at, 1, 13) = ?"
        params = [hour, upper(hour), hour]
        _apply(db, _delta(_aggregate(db, f"{in_hour} AND {ROLLED}", params, indexed="")))
        _roll_days(db, {hour[:10]})
        # A row set back in progress (by an import) is open again.
        db.execute(
            "INSERT OR REPLACE INTO am_rollup_open (row, started_at) SELECT rowid, started_at"
            f" FROM agent_executions WHERE status = 'in_progress' AND {in_hour}"
            " AND rowid <= (SELECT watermark FROM am_rollup_state)",
            params,
        )
        db.execute("DELETE FROM am_rollup_dirty WHERE hour = ?", [hour])


_EXISTS = "EXISTS (SELECT 1 FROM agent_executions WHERE rowid = am_rollup_open.row)"


def _roll_reopened(db: Database) -> None:
    """Roll up the open runs that finished, and the rows that reuse freed rowids."""
    with _write(db):
        # Rows in reused rowids are new: open until rolled up like the others.
        db.execute(
            "INSERT OR REPLACE INTO am_rollup_open (row, started_at) SELECT rowid, started_at"
            " FROM agent_executions WHERE rowid >= (SELECT reuse_from FROM am_rollup_state)"
            " AND rowid <= (SELECT watermark FROM am_rollup_state)"
        )
        db.execute("UPDATE am_rollup_state SET reuse_from = NULL")
        db.execute(f"DELETE FROM am_rollup_open WHERE NOT {_EXISTS}")
        finished = "rowid IN (SELECT row FROM am_rollup_open)"
        _apply(db, _delta(_aggregate(db, finished, [])))
        db.execute(
            "DELETE FROM am_rollup_open WHERE row IN (SELECT rowid FROM agent_executions"
            " WHERE rowid IN (SELECT row FROM am_rollup_open) AND status != 'in_progress')"
        )


@dataclasses.dataclass
class _Delta:
    """Aggregated rows (from :data:`AGGREGATE_SQL`) ready to add to the rollups: worked
    out before the write transaction, which then only merges them in."""

    rows: list[tuple]  # KEY_COLUMNS + SUM_COLUMNS, NULL as None
    days: set[str]
    # One element per duration: its hour, day, agent and sketch key.
    hours: np.ndarray
    day_of_hour: np.ndarray
    agents: np.ndarray
    keys: np.ndarray


def _delta(frame: pd.DataFrame) -> _Delta:
    rows = frame[[*KEY_COLUMNS, *SUM_COLUMNS]].astype(object)
    lists = frame["duration_list"].fillna("")
    lengths = lists.map(lambda text: text.count(",") + 1 if text else 0).to_numpy(np.int64)
    hours = np.repeat(frame["hour"].to_numpy(dtype=object), lengths)
    return _Delta(
        rows=list(rows.where(rows.notna(), None).itertuples(index=False, name=None)),
        days={hour[:10] for hour in frame["hour"]},
        hours=hours,
        day_of_hour=np.array([h[:10] for h in hours], dtype=object),
        agents=np.repeat(frame["agent_name"].to_numpy(dtype=object), lengths),
        keys=sketch_keys(split(",".join(text for text in lists if text))),
    )


def _apply(db: Database, delta: _Delta) -> None:
    """Add ``delta`` to the rollups."""
    if not delta.rows:
        return
    columns = [*KEY_COLUMNS, *SUM_COLUMNS]
    listed = ", ".join(columns)
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS am_rollup_delta ({listed})")
    db.execute("DELETE FROM temp.am_rollup_delta")
    db.conn.executemany(
        f"INSERT INTO temp.am_rollup_delta VALUES ({', '.join('?' * len(columns))})", delta.rows
    )
    merged = ", ".join(f"{COMBINE[name]}({name})" for name in SUM_COLUMNS)
    touched = "level = 'h' AND hour IN (SELECT hour FROM temp.am_rollup_delta)"
    db.execute(f"INSERT INTO temp.am_rollup_delta SELECT {listed} FROM am_rollups WHERE {touched}")
    db.execute(f"DELETE FROM am_rollups WHERE {touched}")
    db.execute(
        f"INSERT INTO am_rollups (level, {listed}) SELECT 'h', {', '.join(KEY_COLUMNS)}, {merged}"
        f" FROM temp.am_rollup_delta GROUP BY {', '.join(KEY_COLUMNS)}"
    )
    _roll_days(db, delta.days)
    ones = np.ones(len(delta.keys), dtype=np.int64)
    add_sketches(db, "h", delta.hours, delta.agents, delta.keys, ones)
    add_sketches(db, "D", delta.day_of_hour, delta.agents, delta.keys, ones)


def _roll_days(db: Database, days: set[str]) -> None:
    """Recompute the day rows of ``days`` from their hour rows."""
    listed = ", ".join(SUM_COLUMNS)
    merged = ", ".join(f"{COMBINE[name]}({name})" for name in SUM_COLUMNS)
    for day in days:
        db.execute("DELETE FROM am_rollups WHERE level = 'D' AND hour = ?", [day])
        db.execute(
            f"INSERT INTO am_rollups (level, hour, agent_name, model, {listed})"
            f" SELECT 'D', ?, agent_name, model, {merged} FROM am_rollups"
            " WHERE level = 'h' AND hour >= ? AND hour < ? GROUP BY agent_name, model",
            [day, day, upper(day)],
        )


# Sketch keys shifted to be positive and below 2**22, to pack (group, key) in one int64.
_SHIFT = 1 << 21
_PAIR_BYTES = 16  # one (key, count) pair in an encoded sketch


def add_sketches(
    db: Database,
    level: str,
    periods: np.ndarray,
    agents: np.ndarray,
    keys: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Add ``counts`` (negative: remove) of ``keys`` to the sketches of each element's
    (period, agent) at ``level``, all groups at once."""
    if not len(keys):
        return
    names = periods.astype(object) + "\x1f" + agents.astype(object)
    wanted = set(names)
    found = db.execute(
        "SELECT period || char(31) || agent_name, sketch FROM am_rollup_sketches"
        " WHERE level = ? AND period IN (SELECT value FROM json_each(?))",
        [level, json.dumps(sorted(set(periods)))],
    ).fetchall()
    found = [(name, blob) for name, blob in found if name in wanted]
    pairs = [np.frombuffer(blob, dtype="<i8").reshape(-1, 2) for _, blob in found]
    lengths = [len(p) for p in pairs]
    old = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    all_names = np.concatenate([names, np.repeat([n for n, _ in found], lengths).astype(object)])
    codes, uniques = pd.factorize(all_names)
    packed = (codes.astype(np.int64) << 22) | (np.concatenate([keys, old[:, 0]]) + _SHIFT)
    unique, inverse = np.unique(packed, return_inverse=True)
    totals = np.bincount(inverse, weights=np.concatenate([counts, old[:, 1]]))
    kept = totals != 0
    unique, totals = unique[kept], totals[kept].astype(np.int64)
    group, key = unique >> 22, (unique & ((1 << 22) - 1)) - _SHIFT
    bounds = np.searchsorted(group, np.arange(len(uniques) + 1)) * _PAIR_BYTES
    encoded = encode(key, totals)  # every group's sketch at once: slices of it
    replaced, deleted = [], []
    for i, name in enumerate(uniques):
        period, agent = name.split("\x1f", 1)
        start, end = bounds[i], bounds[i + 1]
        if start == end:
            deleted.append((level, period, agent))
        else:
            replaced.append((level, period, agent, encoded[start:end]))
    db.conn.executemany(
        "DELETE FROM am_rollup_sketches WHERE level = ? AND period = ? AND agent_name = ?",
        deleted,
    )
    db.conn.executemany(
        "INSERT OR REPLACE INTO am_rollup_sketches (level, period, agent_name, sketch)"
        " VALUES (?, ?, ?, ?)",
        replaced,
    )


class _Transaction:
    def __init__(self, db: Database, begin: str) -> None:
        self.conn, self.begin = db.conn, begin

    def __enter__(self) -> None:
        self.conn.execute(self.begin)

    def __exit__(self, kind, value, traceback) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _read(db: Database) -> _Transaction:
    return _Transaction(db, "BEGIN")


def _write(db: Database) -> _Transaction:
    return _Transaction(db, "BEGIN IMMEDIATE")
