"""The query layer the aggregate reports read finished executions through.

:func:`finished` gives the counts, sums and percentiles of the finished executions
in a window, grouped by agent, model and/or period, from the rollups
(:mod:`agentmetrics.rollups`) where they hold the answer, else from the table:

- hours strictly inside the window, and an edge hour whose rolled-up rows all lie in
  the window, come from ``am_rollups``;
- the other edge hours, and hours marked dirty, are scanned exactly;
- rows not rolled up yet (above the watermark, open runs that finished, rows in
  reused rowids) are read exactly wherever they fall.

Counts and sums are then identical to the exact path's. Percentiles are exact when
no rollup took part in a group, else read from the merged sketches with the exact
rows added: within :data:`~agentmetrics.rollups.RELATIVE_ERROR` of the exact value
(and within the group's exact min and max).
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sqlite_utils import Database

from .. import rollups
from ..rollups import COMBINE, SUM_COLUMNS, key_values, sketch_keys, split
from ._common import DbArg, database, snapshot, window
from ._frames import percentiles

# Up to this many finished executions in a report, percentiles are exact: reading
# their durations from an index takes about 10 ms.
EXACT_PERCENTILE_ROWS = 20_000
# What the reports read (first/last_started only tell whether an edge hour is inside).
READ_COLUMNS = [name for name in SUM_COLUMNS if name not in ("first_started", "last_started")]
_OPERATIONS = [{"sum": operator.add, "min": min, "max": max}[COMBINE[n]] for n in READ_COLUMNS]
# Counts and sums of integers are int64; sums of durations and costs, and min/max, float64.
DTYPES = {
    name: "float64"
    if name in ("duration_sum", "duration_min", "duration_max")
    or name.endswith(("cost", "_duration"))
    else "int64"
    for name in READ_COLUMNS
}
# A report refreshes the rollups by at most this many rows (about 0.2 s) ...
REFRESH_BUDGET = 60_000
# waiting at most this long for another writer's lock ...
REFRESH_WAIT_MS = 200
# ... and reads the rest exactly: beyond this backlog the exact path is faster.
MAX_BACKLOG = 100_000


@contextlib.contextmanager
def reading(db: DbArg, exact: bool = False) -> Iterator[tuple[Database, bool]]:
    """Like :func:`._common.reading`, also yielding whether to read through rollups.

    Rollups are brought up to date first (a few short write transactions) when the
    file can be written; a file without them, or far behind, is read exactly.
    """
    with database(db) as conn:
        use = not exact and _ready(conn)
        with snapshot(conn):
            yield conn, use


def _ready(db: Database) -> bool:
    if not rollups.present(db):
        return False
    writable = not db.conn.in_transaction and not db.execute("PRAGMA query_only").fetchone()[0]
    if writable:
        timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
        db.execute(f"PRAGMA busy_timeout = {REFRESH_WAIT_MS}")
        # Locked or read-only: read what is there, exactly where needed.
        with contextlib.suppress(sqlite3.OperationalError):
            rollups.refresh(db, budget=REFRESH_BUDGET)
        db.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    return rollups.backlog(db) <= MAX_BACKLOG


def finished(
    db: Database,
    since: str | None,
    until: str | None,
    *,
    agent: str | None = None,
    by: Sequence[str] = (),
    period: str | None = None,
    hourly: bool = False,
    quantiles: Sequence[float] = (),
    distributions: bool = False,
) -> pd.DataFrame:
    """Aggregates of the finished executions with ``since <= started_at < until``.

    :param since: the window's stored ISO bounds (None: unbounded)
    :param by: group keys among ``agent_name``, ``model`` and ``period``
    :param period: SQL expression of the period over ``started_at`` (for ``period``)
    :param hourly: periods shorter than a day (per-day sketches cannot serve them)
    :param quantiles: percentiles (0-100) of ``duration_ms`` to add as ``p<q>``
    :param distributions: add ``distribution``: the group's durations as sketch
      (keys, counts), see :func:`distribution`
    :returns: one row per group with a finished execution: the keys, then
      :data:`~agentmetrics.rollups.SUM_COLUMNS` (counts and sums as int64 where whole)
    """
    dirty = {row[0] for row in db.execute("SELECT hour FROM am_rollup_dirty")}
    s13, u13 = since and since[:13], until and until[:13]
    usable = {e for e in {s13, u13} - {None} - dirty if _inside(db, e, since, until)}
    exact_hours = sorted(
        ({s13, u13} - {None} - usable)
        | {h for h in dirty if (s13 is None or h >= s13) and (u13 is None or h <= u13)}
    )
    terms, params = window(since, until, agent=agent)
    keys = list(by)

    # Rolled-up hours: inside the window, not dirty; whole days from the day rows.
    sources, extra = _sources("hour", since, until, usable, dirty, hourly)
    params |= extra
    agent_term = " AND agent_name = :agent" if agent is not None else ""
    select = _keys(keys, period, "hour")
    sums = ", ".join(f"{COMBINE[name]}({name}) AS {name}" for name in READ_COLUMNS)
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    parts = [
        f"SELECT {select}{sums}, NULL AS duration_list FROM am_rollups"
        f" WHERE level = '{level}' AND {condition}{agent_term}{group}"
        for level, condition in sources
    ]

    # Exact: edge and dirty hours, and rows not rolled up.
    raw = _keys(keys, period, "started_at") + ", ".join(
        f"{SUM_COLUMNS[name]} AS {name}" for name in READ_COLUMNS
    )
    aggregate = (
        f"SELECT {raw}, group_concat(duration_ms) AS duration_list FROM agent_executions"
        f" {{indexed}}WHERE status != 'in_progress'{terms} AND {{where}}{group}"
    )
    for i, hour in enumerate(exact_hours):
        params[f"h{i}"], params[f"h{i}_end"] = hour, rollups.upper(hour)
        where = f"started_at >= :h{i} AND started_at < :h{i}_end"
        parts.append(aggregate.format(where=where, indexed=""))
    outside = ""
    if exact_hours:
        marks = ", ".join(f":h{i}" for i in range(len(exact_hours)))
        outside = f" AND substr(started_at, 1, 13) NOT IN ({marks})"
    opened = window(since, until)[0]
    for unrolled in (
        "rowid > (SELECT watermark FROM am_rollup_state)",
        # The open runs that finished: runs still in progress are taken out by a
        # scan of their small index, not by a table lookup each.
        f"rowid IN (SELECT row FROM am_rollup_open WHERE 1{opened}"
        f" EXCEPT SELECT rowid FROM agent_executions WHERE status = 'in_progress'{opened})"
        " AND rowid < ifnull((SELECT reuse_from FROM am_rollup_state), rowid + 1)",
        "rowid >= (SELECT reuse_from FROM am_rollup_state)"
        " AND rowid <= (SELECT watermark FROM am_rollup_state)",
    ):
        parts.append(aggregate.format(where=unrolled + outside, indexed=rollups.BY_ROWID))
    # One statement, reduced in Python: the groups are few, pandas' overhead is not.
    totals, lists = _reduce(db.execute(" UNION ALL ".join(parts), params), len(keys))
    if (
        quantiles
        and sum(t[READ_COLUMNS.index("durations")] for t in totals.values())
        <= (EXACT_PERCENTILE_ROWS)
        and not distributions
    ):
        # Few enough values to read them all: exact percentiles, cheaply.
        sketches, lists = {}, {}
        # Keys and durations only: the finished indexes cover them.
        listed = (
            f"SELECT {_keys(keys, period, 'started_at')}group_concat(duration_ms)"
            f" FROM agent_executions WHERE status != 'in_progress' AND duration_ms IS NOT NULL"
            f"{terms}{group}"
        )
        for row in db.execute(listed, params):
            if row[-1] is not None:
                lists[tuple(row[:-1])] = [row[-1]]
    elif quantiles or distributions:
        sketches = _sketches(
            db, keys, period, params, agent_term, since, until, usable, dirty, hourly
        )
    groups = sorted(totals, key=lambda g: tuple((v is None, v) for v in g))
    rows = [totals[g] for g in groups]
    # One frame built from whole columns: adding them one by one costs milliseconds each.
    columns = {
        key: pd.Series([g[i] for g in groups], dtype=object) for i, key in enumerate(keys)
    } | {
        name: np.array([r[i] for r in rows], dtype=DTYPES[name])
        if DTYPES[name] == "int64"
        else np.array([np.nan if r[i] is None else r[i] for r in rows], dtype="float64")
        for i, name in enumerate(READ_COLUMNS)
    }
    if distributions:
        columns["distribution"] = [
            distribution(sketches.get(g, []), [split(t) for t in lists.get(g, [])]) for g in groups
        ]
    if quantiles:
        table = np.array(
            [
                _percentiles(
                    sketches.get(g), [split(t) for t in lists.get(g, [])], quantiles, low, high
                )
                for g, low, high in zip(
                    groups, columns["duration_min"], columns["duration_max"], strict=True
                )
            ],
            dtype="float64",
        ).reshape(len(groups), len(quantiles))
        columns |= {f"p{q:g}": table[:, i] for i, q in enumerate(quantiles)}
    return pd.DataFrame(columns)


def _reduce(cursor: sqlite3.Cursor, width: int) -> tuple[dict[tuple, list], dict[tuple, list[str]]]:
    """Combine the rows of each group (keys first, then READ_COLUMNS and the list of
    durations): the totals, and the duration lists, per group."""
    totals: dict[tuple, list] = {}
    lists: dict[tuple, list[str]] = {}
    for row in cursor:
        key, values, durations = row[:width], row[width:-1], row[-1]
        if values[0] is None:
            continue  # an ungrouped aggregate of no row
        if durations:
            lists.setdefault(key, []).append(durations)
        found = totals.get(key)
        if found is None:
            totals[key] = list(values)
            continue
        for i, (old, new) in enumerate(zip(found, values, strict=True)):
            if new is None:
                continue
            if old is None:
                found[i] = new
            else:
                found[i] = _OPERATIONS[i](old, new)
    return totals, lists


def distribution(blobs: list[bytes], exact: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sketches and exact values merged: (sorted sketch keys, counts)."""
    values = np.concatenate(exact) if exact else np.empty(0)
    if len(blobs) == 1 and not len(values):  # one sketch: already merged and sorted
        pairs = np.frombuffer(blobs[0], dtype="<i8").reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]
    keys, counts = rollups.decode(blobs)
    return rollups.merge(
        np.concatenate([keys, sketch_keys(values)]),
        np.concatenate([counts, np.ones(len(values), dtype=np.int64)]),
    )


def _percentiles(
    blobs: list[bytes] | None,
    exact: list[np.ndarray],
    quantiles: Sequence[float],
    low: float,
    high: float,
) -> list[float]:
    """Exact percentiles without sketches, else estimated from sketches and the exact
    values together (linear interpolation between estimated ranks, as numpy does)."""
    if not blobs:
        return percentiles(np.concatenate(exact) if exact else np.empty(0), quantiles)
    return [float(v) for v in np.clip(estimate(*distribution(blobs, exact), quantiles), low, high)]


def estimate(keys: np.ndarray, counts: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Percentiles of a sketched distribution: numpy's linear interpolation between
    the two closest ranks, each rank's value read from its bucket (NaN if empty)."""
    if not counts.sum():
        return np.full(len(quantiles), np.nan)
    ends = np.cumsum(counts)
    ranks = np.asarray(quantiles, dtype=np.float64) / 100 * (ends[-1] - 1)
    below, above = np.floor(ranks), np.ceil(ranks)
    points = key_values(keys)
    lo = points[np.searchsorted(ends, below, side="right")]
    hi = points[np.searchsorted(ends, above, side="right")]
    return lo + (ranks - below) * (hi - lo)


def _inside(db: Database, hour: str, since: str | None, until: str | None) -> bool:
    first, last = db.execute(
        "SELECT min(first_started), max(last_started) FROM am_rollups"
        " WHERE level = 'h' AND hour = ?",
        [hour],
    ).fetchone()
    if first is None:
        return True
    return (since is None or first >= since) and (until is None or last < until)


def _keys(keys: Sequence[str], period: str | None, column: str) -> str:
    exprs = []
    for key in keys:
        if key == "period":
            exprs.append(period.replace("started_at", column) + " AS period")
        else:
            exprs.append(key)
    return "".join(e + ", " for e in exprs)


def _sources(
    column: str,
    since: str | None,
    until: str | None,
    usable: set[str],
    dirty: set[str],
    hourly: bool,
) -> tuple[list[tuple[str, str]], dict]:
    """Where the rolled-up hours of the window are: ``(level, condition on column)``.

    A day strictly inside the window without a dirty hour is read from its day row
    (unless ``hourly``); the other rolled-up hours (inside the window, or an edge hour
    in ``usable``, and not dirty) from their hour rows.
    """
    s13, u13 = since and since[:13], until and until[:13]
    s10, u10 = since and since[:10], until and until[:10]
    params: dict = {"s13": s13, "u13": u13, "s10": s10, "u10": u10}
    params |= {f"usable{i}": e for i, e in enumerate(sorted(usable))}
    inner = [f"{column} > :s13" if s13 else "", f"{column} < :u13" if u13 else ""]
    marks = ", ".join(f":usable{i}" for i in range(len(usable)))
    rolled = (
        "(" + (" AND ".join(t for t in inner if t) or "1")
        + (f" OR {column} IN ({marks})" if usable else "")
        + f") AND {column} NOT IN (SELECT hour FROM am_rollup_dirty)"
    )  # fmt: skip
    if hourly:
        return [("h", rolled)], params
    dirty_days = sorted({hour[:10] for hour in dirty})
    partial = sorted({day for day in (s10, u10) if day} | set(dirty_days))
    for i, day in enumerate(partial):
        params[f"day{i}"], params[f"day{i}_end"] = day, rollups.upper(day)
    params |= {f"dirty{i}": day for i, day in enumerate(dirty_days)}
    whole = [f"{column} > :s10" if s10 else "", f"{column} < :u10" if u10 else ""]
    if dirty_days:
        whole.append(f"{column} NOT IN ({', '.join(f':dirty{i}' for i in range(len(dirty_days)))})")
    sources = [("D", " AND ".join(t for t in whole if t) or "1")]
    if partial:
        ranges = " OR ".join(
            f"({column} >= :day{i} AND {column} < :day{i}_end)" for i in range(len(partial))
        )
        # The days' span, implied by the ranges, is what SQLite can seek on: without it,
        # the sketches' primary key (no rowid, so no OR by index) is read level-wide.
        span = f"{column} >= :day0 AND {column} < :day{len(partial) - 1}_end"
        sources.append(("h", f"{rolled} AND {span} AND ({ranges})"))
    return sources, params


def _sketches(
    db: Database,
    keys: list[str],
    period: str | None,
    params: dict,
    agent_term: str,
    *window: object,
) -> dict[tuple, list[bytes]]:
    """The sketches of the rolled-up hours (:func:`_sources`), per group."""
    if "model" in keys:
        raise ValueError("durations are sketched per agent and period, not per model")
    select = _keys(keys, period, "period")
    sources, _ = _sources("period", *window)
    sql = " UNION ALL ".join(
        f"SELECT {select}sketch FROM am_rollup_sketches"
        f" WHERE level = '{level}' AND {condition}{agent_term}"
        for level, condition in sources
    )
    sketches: dict[tuple, list[bytes]] = {}
    for row in db.execute(sql, params):
        sketches.setdefault(tuple(row[:-1]), []).append(row[-1])
    return sketches
