"""The query layer the aggregate reports read finished executions through.

:func:`finished` gives the counts, sums and percentiles of the finished executions
in a window, grouped by agent, model and/or period, from the rollups
(:mod:`agentmetrics.store.rollups`) where they hold the answer, else from the table:

- hours strictly inside the window, and an edge hour whose rolled-up rows all lie in
  the window, come from ``am_rollups``;
- the other edge hours, and hours marked dirty, are scanned exactly;
- rows not rolled up yet (above the watermark, open runs that finished, rows in
  reused rowids) are read exactly wherever they fall.

Counts and sums are then identical to the exact path's. Percentiles are exact when
no rollup took part in a group, else read from the merged sketches with the exact
rows added: within :data:`~agentmetrics.store.rollups.RELATIVE_ERROR` of the exact value
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

from ..store import rollups
from ..store.rollups import COMBINE, SUM_COLUMNS, key_values, sketch_keys, split
from ._common import DbArg, snapshot, using_database, window
from ._frames import percentiles

# Up to this many finished executions in a report, percentiles are exact: reading
# their durations from an index takes about 10 ms.
EXACT_PERCENTILE_ROWS = 20_000
# What the reports read (first/last_started only tell whether an edge hour is inside).
READ_COLUMNS = [name for name in SUM_COLUMNS if name not in ("first_started", "last_started")]
_OPERATIONS = [{"sum": operator.add, "min": min, "max": max}[COMBINE[n]] for n in READ_COLUMNS]
# The rollup sum the reports name apart from the row flag it counts (the stored column
# keeps its name: renaming it would rebuild every file's rollups).
_REPORT_NAMES = {"self_healed": "self_healed_executions"}
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
    with using_database(db, create=False) as conn:
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
      :data:`~agentmetrics.store.rollups.SUM_COLUMNS` (counts and sums as int64 where whole;
      ``self_healed`` as ``self_healed_executions``)
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
        f" {{indexed}}WHERE status != 'in_progress'{{terms}} AND {{where}}{group}"
    )
    # An exact hour's part of the window as one range: also given the window's bounds,
    # SQLite may search the index between the wrong pair (days of rows, not an hour).
    agent_only = window(None, None, agent=agent)[0]
    for i, hour in enumerate(exact_hours):
        params[f"h{i}"] = hour
        params[f"h{i}_from"] = max(hour, since or hour)
        params[f"h{i}_end"] = min(rollups.upper(hour), until or rollups.upper(hour))
        where = f"started_at >= :h{i}_from AND started_at < :h{i}_end"
        parts.append(aggregate.format(terms=agent_only, where=where, indexed=""))
    outside = ""
    if exact_hours:
        marks = ", ".join(f":h{i}" for i in range(len(exact_hours)))
        outside = f" AND substr(started_at, 1, 13) NOT IN ({marks})"
    opened = window(since, until)[0]
    for unrolled in (
        "rowid > (SELECT watermark FROM am_rollup_state)",
        # Open runs still running are told by the running index, not fetched one by one.
        f"rowid IN (SELECT row FROM am_rollup_open WHERE 1{opened} EXCEPT"
        f" SELECT rowid FROM agent_executions WHERE status = 'in_progress'{opened})"
        " AND rowid < ifnull((SELECT reuse_from FROM am_rollup_state), rowid + 1)",
        "rowid >= (SELECT reuse_from FROM am_rollup_state)"
        " AND rowid <= (SELECT watermark FROM am_rollup_state)",
    ):
        parts.append(
            aggregate.format(terms=terms, where=unrolled + outside, indexed=rollups.BY_ROWID)
        )
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
        _REPORT_NAMES.get(name, name): np.array([r[i] for r in rows], dtype=DTYPES[name])
        if DTYPES[name] == "int64"
        else np.array([np.nan if r[i] is None else r[i] for r in rows], dtype="float64")
        for i, name in enumerate(READ_COLUMNS)
    }
    if distributions:
        columns["distribution"] = [
            distribution(sketches.get(g, []), [split(t) for t in lists.get(g, [])]) for g in groups
        ]
    if quantiles:
        table = (
            _percentiles(
                groups, sketches, lists, quantiles, columns["duration_min"], columns["duration_max"]
            )
            if groups
            else np.empty((0, len(quantiles)))
        )
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
    groups: list[tuple],
    sketches: dict[tuple, list[bytes]],
    lists: dict[tuple, list[str]],
    quantiles: Sequence[float],
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Per group: exact percentiles without sketches, else estimated from its sketches
    and exact values together (all such groups at once), within its exact min and max."""
    table = np.full((len(groups), len(quantiles)), np.nan)
    sketched, blobs, sizes, values = [], [], [], []
    for i, g in enumerate(groups):
        exact = [split(t) for t in lists.get(g, [])]
        if not sketches.get(g):
            table[i] = percentiles(np.concatenate(exact) if exact else np.empty(0), quantiles)
            continue
        sketched.append(i)
        blobs += sketches[g]
        sizes.append(sum(len(b) for b in sketches[g]) // 16)
        values.append(np.concatenate(exact) if exact else np.empty(0))
    if sketched:
        pairs = np.frombuffer(b"".join(blobs), dtype="<i8").reshape(-1, 2)
        counted = [len(v) for v in values]
        members = np.arange(len(sketched))
        found = estimates(
            np.concatenate([np.repeat(members, sizes), np.repeat(members, counted)]),
            np.concatenate([pairs[:, 0], sketch_keys(np.concatenate(values))]),
            np.concatenate([pairs[:, 1], np.ones(sum(counted), dtype=np.int64)]),
            len(sketched),
            quantiles,
        )
        table[sketched] = np.clip(found, low[sketched, None], high[sketched, None])
    return table


def estimate(keys: np.ndarray, counts: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Percentiles of one sketched distribution (see :func:`estimates`)."""
    return estimates(np.zeros(len(keys), dtype=np.int64), keys, counts, 1, quantiles)[0]


def estimates(
    groups: np.ndarray,
    keys: np.ndarray,
    counts: np.ndarray,
    size: int,
    quantiles: Sequence[float],
) -> np.ndarray:
    """Percentiles of ``size`` sketched distributions at once: ``counts[i]`` values in
    bucket ``keys[i]`` of distribution ``groups[i]`` (in any order, keys repeated or
    not). Row ``g`` holds numpy's linear interpolation between the two closest ranks of
    distribution ``g``, each rank's value read from its bucket (NaN if empty).

    One sort and one cumulative count serve every distribution: a rank in ``g`` is
    searched for among all the counts, offset by the values of the distributions
    before ``g``.
    """
    groups, keys = np.asarray(groups, dtype=np.int64), np.asarray(keys, dtype=np.int64)
    # One sort by (group, key): keys lie within +-2**21 (see rollups._BIAS).
    order = np.argsort(groups * (1 << 22) + keys + (1 << 21), kind="stable")
    groups, keys = groups[order], keys[order]
    counts = np.asarray(counts, dtype=np.int64)[order]
    starts = np.flatnonzero(
        np.concatenate([[True], (groups[1:] != groups[:-1]) | (keys[1:] != keys[:-1])])
    )[: len(keys)]
    groups, keys, counts = groups[starts], keys[starts], np.add.reduceat(counts, starts)
    totals = np.bincount(groups, weights=counts, minlength=size).astype(np.int64)
    table = np.full((size, len(quantiles)), np.nan)
    filled = totals > 0
    if not filled.any():
        return table
    ends = np.cumsum(counts)
    before = (np.cumsum(totals) - totals)[filled, None]
    ranks = np.asarray(quantiles, dtype=np.float64) / 100 * (totals[filled, None] - 1)
    below, above = np.floor(ranks), np.ceil(ranks)
    lo = key_values(keys[np.searchsorted(ends, before + below, side="right")])
    hi = key_values(keys[np.searchsorted(ends, before + above, side="right")])
    table[filled] = lo + (ranks - below) * (hi - lo)
    return table


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
    # One source per day, not their ranges ORed: each is then searched by its range.
    sources += [
        ("h", f"{rolled} AND {column} >= :day{i} AND {column} < :day{i}_end")
        for i in range(len(partial))
    ]
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
