"""The store's column rules: for each column of ``orchestrations`` and
``agent_executions``, its SQL type, whether it may be NULL and which values it holds.

Tracking (:mod:`agentmetrics.monitor`, its journal replay included), import and merge
(:mod:`agentmetrics.exchange`) and OpenTelemetry ingestion (:mod:`agentmetrics.otel.ingest`)
check values against these rules, so what tracking stores, an export of it imports and
merges again (``tests/test_schema.py`` round-trips every rule). :meth:`Rule.check` refuses
a bad value with :class:`~agentmetrics.errors.InvalidValue`; ingestion is lenient and uses
:meth:`Rule.accept`, which drops it (the column's default).

Part of the store: it imports only the leaves (errors, timestamps), so anything may
import it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from ..errors import InvalidValue
from ..timestamps import parse_timestamp, to_iso, to_sqlite_datetime

# What an SQLite INTEGER holds: a 64-bit signed integer.
MAX_INTEGER = 2**63 - 1
MIN_INTEGER = -(2**63)
ORCHESTRATION_STATUSES = ("running", "completed", "failed", "partial")
EXECUTION_STATUSES = ("in_progress", "completed", "failed")
# Years before 1000 would be stored with fewer than four digits by SQLite's and
# Python's date formatting, which sorts wrongly and breaks the reports that parse them.
MIN_YEAR = 1000


# -- one check per kind of value: (name, value) -> the value to store, or InvalidValue ---


def integer(name: str, value: Any, low: int = MIN_INTEGER) -> int:
    """A whole number from ``low`` to :data:`MAX_INTEGER` (True and False are not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{name} must be a whole number, got {value!r}")
    if value > MAX_INTEGER:
        raise InvalidValue(f"{name} is too large to store (at most {MAX_INTEGER}), got {value}")
    if value < low:
        limit = "must not be negative" if low == 0 else f"must be at least {low}"
        raise InvalidValue(f"{name} {limit}, got {value}")
    return value


def optional_integer(name: str, value: Any) -> int | None:
    """None, or any :func:`integer`."""
    return None if value is None else integer(name, value)


def count(name: str, value: Any) -> int | None:
    """None, or a whole number from 0 to :data:`MAX_INTEGER`."""
    return None if value is None else integer(name, value, 0)


def text(name: str, value: Any) -> str:
    """A non-empty string that UTF-8 can encode (no lone surrogate)."""
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{name} must be a non-empty string, got {value!r}")
    return optional_text(name, value)


def optional_text(name: str, value: Any) -> str | None:
    """None, or a string (empty too) that UTF-8 can encode."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{name} must be a string, got {type(value).__name__} {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(f"{name} is not valid text (lone surrogate): {value!r}") from None
    return value


def flag(name: str, value: Any) -> int | None:
    """None, or True/False (also 1/0), stored as 1/0."""
    if value is None:
        return None
    if isinstance(value, int) and value in (0, 1):  # True and False are ints too
        return int(value)
    raise InvalidValue(f"{name} must be True or False, got {value!r}")


def cost(name: str, value: Any) -> float | None:
    """None, or a finite number >= 0, stored as a float."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            amount = float(value)
        except OverflowError:  # an int too large for a float
            amount = math.inf
        if 0 <= amount < math.inf:  # also refuses NaN
            return amount
    raise InvalidValue(f"{name} must be a finite number >= 0, got {value!r}")


def status(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidValue(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def timestamp(name: str, value: Any) -> dt.datetime:
    """A timestamp :func:`~agentmetrics.timestamps.parse_timestamp` reads, from the year
    :data:`MIN_YEAR` on, as an aware UTC datetime."""
    if value is None:
        raise InvalidValue(f"{name} is missing")
    try:
        moment = parse_timestamp(value)
    except (ValueError, OverflowError):  # OverflowError: the year 9999 moved to UTC
        raise InvalidValue(f"{name} is not a timestamp: {value!r}") from None
    if moment.year < MIN_YEAR:
        raise InvalidValue(f"{name} is before the year {MIN_YEAR}: {value!r}")
    return moment


# -- the rules of each column ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one column holds.

    ``kind`` is ``text``, ``integer``, ``real``, ``flag``, ``status`` or ``timestamp``;
    ``required`` columns are NOT NULL; ``low`` is an integer's least value; ``values``
    a status's allowed ones; ``non_empty`` text refuses ``""``; ``default`` is what a
    missing value is stored as (the table's DEFAULT); ``form`` writes a timestamp
    (the ISO form, or SQLite's ``datetime()`` form for ``created_at``).
    """

    kind: str
    required: bool = False
    low: int = MIN_INTEGER
    values: tuple[str, ...] = ()
    non_empty: bool = False
    default: Any = None
    form: Any = to_iso

    def check(self, name: str, value: Any) -> Any:
        """``value`` in storage form (a missing one: the default); InvalidValue if the
        column cannot hold it."""
        if value is None and not self.required:
            return self.default
        if self.kind == "text":
            return (text if self.non_empty else optional_text)(name, value)
        if self.kind == "integer":
            return integer(name, value, self.low)
        if self.kind == "real":
            return cost(name, value)
        if self.kind == "flag":
            return flag(name, value)
        if self.kind == "status":
            return status(name, value, self.values)
        return self.form(timestamp(name, value))

    def accept(self, value: Any) -> Any:
        """:meth:`check`, lenient: the default (None or 0) for a value the column
        cannot hold."""
        try:
            return self.check("value", value)
        except InvalidValue:
            return self.default


_ID = Rule("text", non_empty=True)  # None: a new one is made (import)
_TEXT = Rule("text")
_NAME = Rule("text", required=True, non_empty=True)
# A clock stepped back between start and end stores a negative duration.
_DURATION = Rule("integer")
_COUNT = Rule("integer", low=0, default=0)
_OPTIONAL_COUNT = Rule("integer", low=0)
_STARTED = Rule("timestamp", required=True)
_ENDED = Rule("timestamp")
_CREATED = Rule("timestamp", form=to_sqlite_datetime)

COLUMNS: dict[str, dict[str, Rule]] = {
    "orchestrations": {
        "id": _ID,
        "session_id": _NAME,
        "task_description": _TEXT,
        "status": Rule("status", required=True, values=ORCHESTRATION_STATUSES),
        "started_at": _STARTED,
        "completed_at": _ENDED,
        "duration_ms": _DURATION,
        "total_tasks": _COUNT,
        "completed_tasks": _COUNT,
        "failed_tasks": _COUNT,
        "git_commit_hash": _TEXT,
        "plan_file_path": _TEXT,
        "progress_file_path": _TEXT,
        "created_at": _CREATED,
        "metadata_json": _TEXT,
    },
    "agent_executions": {
        "id": _ID,
        "orchestration_id": _TEXT,
        "agent_session_id": _NAME,
        "agent_name": _NAME,
        "task_id": _TEXT,
        "task_number": Rule("integer"),  # any: tracking takes -1 or 0 as a task's number
        "status": Rule("status", required=True, values=EXECUTION_STATUSES),
        "started_at": _STARTED,
        "completed_at": _ENDED,
        "duration_ms": _DURATION,
        "retry_count": _COUNT,
        "self_healed": Rule("flag", default=0),
        "files_created": _COUNT,
        "files_modified": _COUNT,
        "error_message": _TEXT,
        "summary_report_path": _TEXT,
        "session_log_path": _TEXT,
        "created_at": _CREATED,
        "model": _TEXT,
        "input_tokens": _OPTIONAL_COUNT,
        "output_tokens": _OPTIONAL_COUNT,
        "cost_usd": Rule("real"),
        "metadata_json": _TEXT,
        "parent_execution_id": _TEXT,
        "attempt": Rule("integer", low=1),  # NULL: the first attempt
        "first_attempt_id": _TEXT,
    },
}
"""Every column's :class:`Rule`, in the order of
:data:`agentmetrics.store.migrations.COLUMN_TYPES`."""
