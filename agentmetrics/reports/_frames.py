"""Row-level frames shared by the health, agent and orchestration reports.

Conventions for every frame built here: timestamps (``started_at``, ``completed_at``,
``created_at``) are pandas UTC datetimes in microseconds (``NaT`` when missing),
whatever the stored format; durations are float milliseconds (NaN while running);
counters are int64 (a missing one is 0; a missing ``attempt`` is 1, the first);
flags are bool; missing text is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype
from sqlite_utils import Database

from ..errors import InvalidValue
from ..store.schema import MAX_INTEGER

TIMESTAMPS = ("started_at", "completed_at", "created_at")
FLOATS = ("duration_ms", "task_number", "input_tokens", "output_tokens", "cost_usd")
COUNTERS = (
    "total_tasks",
    "completed_tasks",
    "failed_tasks",
    "retry_count",
    "files_created",
    "files_modified",
)
FLAGS = ("self_healed",)
# What a NULL integer stands for: counters start at 0, attempts at 1.
INTEGER_DEFAULTS = {**dict.fromkeys(COUNTERS, 0), "attempt": 1}

# The aggregate vocabulary (see the package docstring): counts of executions by state...
EXECUTION_COUNTS = ["executions", "finished", "completed", "failed", "in_progress"]
# ...and sums over the executions counted (``self_healed_executions`` counts the rows whose
# ``self_healed`` flag is set).
EXECUTION_SUMS = ["retries", "self_healed_executions", "files_created", "files_modified"]
# What the per-agent and per-orchestration summaries give after their keys.
AGGREGATE_COLUMNS = [
    *EXECUTION_COUNTS,
    "success_rate",
    *(f"{stat}_duration_ms" for stat in ("avg", "min", "max", "p50", "p95", "p99")),
    *EXECUTION_SUMS,
]

# What the trends add about attempts (see reports/retries.py).
ATTEMPT_COLUMNS = ["tasks", "first_attempt_success_rate", "retry_rate"]


def select_list(columns: Sequence[str], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + column for column in columns)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply the conventions above to the known columns of ``frame``, in place."""
    for column in frame.columns:
        if column in _CONVERT:
            frame[column] = _CONVERT[column](frame[column])
    return texts(frame)


def texts(frame: pd.DataFrame, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Text columns (and ``columns``, whatever their dtype) as object dtype holding str
    or None: not pandas' string dtype, whose default differs between pandas 2 and 3.
    In place."""
    for column in frame.columns:
        kind = frame[column].dtype
        if (
            column in columns
            or pd.api.types.is_object_dtype(kind)
            or pd.api.types.is_string_dtype(kind)
        ):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def to_utc(values: pd.Series) -> pd.Series:
    """Stored timestamps (ISO with ``Z`` or ``YYYY-MM-DD HH:MM:SS``) as UTC datetimes
    in microseconds, whatever pandas would infer (years 1 to 9999 fit)."""
    return pd.to_datetime(values, utc=True, format="ISO8601").dt.as_unit("us")


_CONVERT = {
    **dict.fromkeys(TIMESTAMPS, to_utc),
    **dict.fromkeys(FLOATS, lambda values: pd.to_numeric(values).astype("float64")),
    **{
        name: lambda values, default=default: pd.to_numeric(values).fillna(default).astype("int64")
        for name, default in INTEGER_DEFAULTS.items()
    },
    **dict.fromkeys(FLAGS, lambda values: pd.to_numeric(values).fillna(0).astype(bool)),
}


def rows_frame(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a query returning table rows and apply the column conventions.

    The frame is built column by column from the rows, not through ``read_sql``: on
    the few rows most reports list, pandas' per-column inference and conversions
    would take most of the time.
    """
    cursor = db.conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    rows = cursor.fetchall()
    table = np.empty((len(rows), len(names)), dtype=object)
    if rows:
        table[:] = rows
    data = {}
    for i, name in enumerate(names):
        column = table[:, i]
        kind = infer_dtype(column, skipna=True)
        numbers = _numbers(name, column, kind)
        if numbers is not None:
            data[name] = pd.Series(numbers, copy=False)
        elif name in _CONVERT:
            data[name] = _CONVERT[name](pd.Series(column, dtype=object))
        elif kind in ("string", "empty"):
            data[name] = pd.Series(column, dtype=object)
        else:  # numbers or blobs: inferred as read_sql would
            data[name] = texts(pd.DataFrame({name: list(column)}))[name]
    # One concat: pandas' fixed cost per call is most of the time on a few rows.
    return pd.concat(data, axis=1)


def _numbers(name: str, column: np.ndarray, kind: str) -> np.ndarray | None:
    """What ``_CONVERT`` gives for a column of numbers and NULLs (``kind`` as pandas'
    ``infer_dtype`` says), without pandas' overhead; None for other columns."""
    if name in INTEGER_DEFAULTS and kind in ("integer", "empty"):
        return np.where(pd.isna(column), INTEGER_DEFAULTS[name], column).astype(np.int64)
    if name not in FLOATS and name not in FLAGS:
        return None
    if kind in ("integer", "floating", "mixed-integer-float", "empty"):
        numbers = column.astype(np.float64)  # None becomes NaN
        return numbers if name in FLOATS else np.nan_to_num(numbers) != 0
    return None


def durations(db: Database, where: str, params: Sequence[Any] | dict[str, Any] = ()) -> np.ndarray:
    """Durations (ms) of the finished executions matching ``where``, as a float array.

    The ``status != 'in_progress'`` term is what lets SQLite read them from a partial
    index of finished executions. SQLite joins them into one string that numpy splits:
    twice as fast as one Python row per value.
    """
    text = db.conn.execute(
        "SELECT group_concat(duration_ms) FROM agent_executions"
        f" WHERE status != 'in_progress' AND duration_ms IS NOT NULL AND {where}",
        params,
    ).fetchone()[0]
    return split_durations(text)


def split_durations(text: str | None) -> np.ndarray:
    """Parse what ``group_concat(duration_ms)`` returned (None: no values)."""
    return np.array(text.split(","), dtype=np.float64) if text else np.empty(0)


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float]) -> list[float]:
    """Exact percentiles (``qs`` in [0, 100]) by linear interpolation between closest
    ranks, numpy's default; NaN when there is no value."""
    if len(values) == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def counted(frame: pd.DataFrame) -> pd.DataFrame:
    """Complete an aggregate frame holding ``completed``, ``failed`` and ``in_progress``
    (missing: 0): ``finished``, ``executions`` and ``success_rate``, with the dtypes of
    the contract (int64 counts and sums, float64 durations). In place."""
    for column in frame.columns:
        if column in EXECUTION_COUNTS or column in EXECUTION_SUMS:
            frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("int64")
        elif column.endswith("duration_ms"):
            frame[column] = pd.to_numeric(frame[column]).astype("float64")
    return _derive(frame)


def counted_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], ints: Sequence[str] = ()
) -> pd.DataFrame:
    """The frame :func:`counted` makes of ``rows`` (dicts; a missing key is None), with
    ``ints`` int64 too, built in one step: on a report of a few rows, converting column
    by column costs more than the queries."""
    data: dict[str, Any] = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        if column in EXECUTION_COUNTS or column in EXECUTION_SUMS or column in ints:
            data[column] = np.array([v or 0 for v in values], dtype=np.int64)
        elif column.endswith("duration_ms"):
            data[column] = np.array([np.nan if v is None else v for v in values], np.float64)
        else:
            data[column] = pd.Series(values, dtype=object)
    return pd.DataFrame(_derive(data), columns=columns)


def _derive(counts: Any) -> Any:
    counts["finished"] = counts["completed"] + counts["failed"]
    counts["executions"] = counts["finished"] + counts["in_progress"]
    counts["success_rate"] = percent(counts["completed"], counts["finished"])
    return counts


def percent(part: Any, whole: Any) -> Any:
    """``100 * part / whole`` as float64, NaN where ``whole`` is 0, for Series, arrays
    or numbers: every rate (``success_rate`` is ``percent(completed, finished)``)."""
    if isinstance(whole, pd.Series):
        return (100 * part / whole.where(whole > 0)).astype("float64")
    if isinstance(whole, np.ndarray):
        return 100 * part / np.where(whole > 0, whole, np.nan)
    return 100 * part / whole if whole else float("nan")


def attempt_rates(tasks: Any, first_completed: Any, retried: Any) -> dict[str, Any]:
    """``first_attempt_success_rate`` and ``retry_rate`` of finished attempts counted by
    their own start: ``retried`` (second attempts) may belong to tasks first tried
    before the window, so the share is capped at the window's tasks."""
    return {
        "first_attempt_success_rate": percent(first_completed, tasks),
        "retry_rate": percent(np.minimum(retried, tasks), tasks),
    }


# A bigger limit means "all rows" and would not bind.
MAX_LIMIT = MAX_INTEGER


def check_limit(limit: int) -> int:
    """Return ``limit`` ready to bind (at most SQLite's largest integer)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidValue(f"limit must be a whole number of at least 1, got {limit!r}")
    return min(limit, MAX_LIMIT)
