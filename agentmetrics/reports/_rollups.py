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
from ._common import DbArg, database, snapshot
from ._frames import percentiles

# Up to this many finished executions in a report, percentiles are exact: reading
# their durations takes a few tens of milliseconds.
EXACT_PERCENTILE_ROWS = 50_000
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
    window, params = _window(since, until, agent)
    keys = list(by)

    # Rolled-up hours: inside the window, not dirty.
    rolled = ["hour NOT IN (SELECT hour FROM am_rollup_dirty)"]
    inner = [t for t in ("hour > :s13" if s13 else "", "hour < :u13" if u13 else "") if t]
    marks = ", ".join(f":usable{i}" for i in range(len(usable)))
    rolled.append(
        "(" + (" AND ".join(inner) or "1") + (f" OR hour IN ({marks})" if usable else "") + ")"
    )
    if agent is not None:
        rolled.append("agent_name = :agent")
    params |= {"s13": s13, "u13": u13} | {f"usable{i}": e for i, e in enumerate(sorted(usable))}
    select = _keys(keys, period, "hour")
    sums = ", ".join(f"{COMBINE[name]}({name}) AS {name}" for name in READ_COLUMNS)
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    parts = [
        f"SELECT {select}{sums}, NULL AS duration_list FROM am_rollups"
        f" WHERE {' AND '.join(rolled)}{group}"
    ]

    # Exact: edge and dirty hours, and rows not rolled up.
    raw = _keys(keys, period, "started_at") + ", ".join(
        f"{SUM_COLUMNS[name]} AS {name}" for name in READ_COLUMNS
    )
    aggregate = (
        f"SELECT {raw}, group_concat(duration_ms) AS duration_list FROM agent_executions"
        f" {{indexed}}WHERE status != 'in_progress'{window} AND {{where}}{group}"
    )
    for i, hour in enumerate(exact_hours):
        params[f"h{i}"], params[f"h{i}_end"] = hour, rollups.upper(hour)
        where = f"started_at >= :h{i} AND started_at < :h{i}_end"
        parts.append(aggregate.format(where=where, indexed=""))
    outside = ""
    if exact_hours:
        marks = ", ".join(f":h{i}" for i in range(len(exact_hours)))
        outside = f" AND substr(started_at, 1, 13) NOT IN ({marks})"
    opened = _window(since, until, None)[0]
    for unrolled in (
        "rowid > (SELECT watermark FROM am_rollup_state)",
        f"rowid IN (SELECT row FROM am_rollup_open WHERE 1{opened})"
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
        sketches = {}
        _, lists = _reduce(db.execute(aggregate.format(where="1", indexed=""), params), len(keys))
    elif quantiles or distributions:
        sketches = _sketches(db, keys, period, since, until, agent, hourly, usable)
    groups = sorted(totals, key=lambda g: tuple((v is None, v) for v in g))
    rows = [totals[g] for g in groups]
    result = pd.DataFrame(
        {key: pd.Series([g[i] for g in groups], dtype=object) for i, key in enumerate(keys)}
        | {
            name: np.array([r[i] for r in rows], dtype=DTYPES[name])
            if DTYPES[name] == "int64"
            else np.array([np.nan if r[i] is None else r[i] for r in rows], dtype="float64")
            for i, name in enumerate(READ_COLUMNS)
        },
        columns=[*keys, *READ_COLUMNS],
    )
    if distributions:
        result["distribution"] = [
            distribution(sketches.get(g, []), [split(t) for t in lists.get(g, [])]) for g in groups
        ]
    for q in quantiles:
        result[f"p{q:g}"] = np.nan
    if quantiles and groups:
        table = [
            _percentiles(
                sketches.get(g), [split(t) for t in lists.get(g, [])], quantiles, low, high
            )
            for g, low, high in zip(
                groups, result["duration_min"], result["duration_max"], strict=True
            )
        ]
        result[[f"p{q:g}" for q in quantiles]] = np.array(table, dtype="float64")
    return result


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
        "SELECT min(first_started), max(last_started) FROM am_rollups WHERE hour = ?", [hour]
    ).fetchone()
    if first is None:
        return True
    return (since is None or first >= since) and (until is None or last < until)


def _window(since: str | None, until: str | None, agent: str | None) -> tuple[str, dict]:
    sql, params = "", {}
    for term, name, value in (
        ("started_at >= :since", "since", since),
        ("started_at < :until", "until", until),
        ("agent_name = :agent", "agent", agent),
    ):
        if value is not None:
            sql += " AND " + term
            params[name] = value
    return sql, params


def _keys(keys: Sequence[str], period: str | None, column: str) -> str:
    exprs = []
    for key in keys:
        if key == "period":
            exprs.append(period.replace("started_at", column) + " AS period")
        else:
            exprs.append(key)
    return "".join(e + ", " for e in exprs)


def _sketches(
    db: Database,
    keys: list[str],
    period: str | None,
    since: str | None,
    until: str | None,
    agent: str | None,
    hourly: bool,
    usable: set[str],
) -> dict[tuple, list[bytes]]:
    """The sketches of the rolled-up hours, per group: a day's when every hour of it
    is rolled up (and ``hourly`` is false), else each hour's."""
    if "model" in keys:
        raise ValueError("durations are sketched per agent and period, not per model")
    s13, u13 = since and since[:13], until and until[:13]
    s10, u10 = since and since[:10], until and until[:10]
    params: dict = {"s13": s13, "u13": u13, "s10": s10, "u10": u10, "agent": agent}
    params |= {f"usable{i}": e for i, e in enumerate(sorted(usable))}
    agent_term = " AND agent_name = :agent" if agent is not None else ""
    inner = [t for t in ("period > :s13" if s13 else "", "period < :u13" if u13 else "") if t]
    marks = ", ".join(f":usable{i}" for i in range(len(usable)))
    rolled_hour = (
        "(" + (" AND ".join(inner) or "1") + (f" OR period IN ({marks})" if usable else "") + ")"
        " AND period NOT IN (SELECT hour FROM am_rollup_dirty)"
    )
    select = _keys(keys, period, "period")
    sql = f"SELECT {select}sketch FROM am_rollup_sketches WHERE level = 'h' AND {rolled_hour}"
    if not hourly:
        # Days strictly inside the window, with no dirty hour: every hour is rolled up.
        day = [t for t in ("{d} > :s10" if s10 else "", "{d} < :u10" if u10 else "") if t]
        day.append("{d} NOT IN (SELECT substr(hour, 1, 10) FROM am_rollup_dirty)")
        full_day = " AND ".join(day)
        sql = (
            f"SELECT {select}sketch FROM am_rollup_sketches"
            f" WHERE level = 'D' AND {full_day.format(d='period')}{agent_term}"
            f" UNION ALL {sql} AND NOT ({full_day.format(d='substr(period, 1, 10)')})"
        )
    sketches: dict[tuple, list[bytes]] = {}
    for row in db.execute(sql + agent_term, params):
        sketches.setdefault(tuple(row[:-1]), []).append(row[-1])
    return sketches
