"""The tracking API: every write agentmetrics makes while orchestrations run.

Each call is one short autocommit statement, so many processes can track into one
file at once. Completion computes ``completed_at`` and ``duration_ms`` in SQL from the
stored ``started_at``, with no read first. A write the database cannot take (locked,
read-only, full) is kept in :mod:`agentmetrics.store.pending` and applied later.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import difflib
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from .errors import (
    AgentMetricsError,
    AlreadyFinished,
    DatabaseError,
    DuplicateSession,
    InvalidValue,
    NotADatabase,
    ReadOnlyDatabase,
    StorageError,
    UnknownSession,
)
from .store import schema
from .store.db import database_file, default_path, ensure_database, refused_write, write_transaction
from .store.pending import SUFFIX, PendingWrites
from .store.schema import EXECUTION_STATUSES, MAX_INTEGER, ORCHESTRATION_STATUSES
from .store.tasks import RECOUNT_TASKS_SQL, TASK_COUNTS_SQL, status_sql
from .timestamps import SQL_NOW, sql_duration_ms, to_iso, to_sqlite_datetime

if TYPE_CHECKING:
    from .otel.push import LivePush

STRICT_ENV_VAR = "AGENTMETRICS_STRICT"
BUSY_TIMEOUT = 5.0
# After a failed write, later ones go straight to the journal for this long instead of
# each waiting out the busy timeout again.
RETRY_SECONDS = 5.0

log = logging.getLogger("agentmetrics")

_NOW = f"COALESCE(:now, {SQL_NOW})"
_DURATION = sql_duration_ms(_NOW)

_START_ORCHESTRATION = f"""
INSERT INTO orchestrations (id, session_id, task_description, status, started_at,
  total_tasks, completed_tasks, failed_tasks, git_commit_hash, plan_file_path,
  progress_file_path, created_at)
VALUES (:id, :session_id, :task_description, 'running', {_NOW}, :total_tasks, 0, 0,
  :git_commit_hash, :plan_file_path, :progress_file_path, COALESCE(:created, datetime('now')))
"""

# The counts to end with: those given, else with :follow the orchestration's tasks, else
# the stored ones. Without a :status, the one status rule decides from them.
_FINAL_COUNTS = f"""
SELECT
  CASE WHEN :follow THEN max(COALESCE(orchestrations.total_tasks, 0), c.tasks)
    ELSE orchestrations.total_tasks END AS total,
  COALESCE(:completed_tasks, CASE WHEN :follow THEN c.completed END,
    orchestrations.completed_tasks) AS completed,
  COALESCE(:failed_tasks, CASE WHEN :follow THEN c.failed END, orchestrations.failed_tasks)
    AS failed
FROM ({TASK_COUNTS_SQL}) AS c
"""
_RULE = status_sql(
    "COALESCE(completed, 0)",
    "COALESCE(failed, 0)",
    "max(COALESCE(total, 0) - COALESCE(completed, 0) - COALESCE(failed, 0), 0)",
)

# The original's table has no error column: a failure's message goes in metadata_json.
_COMPLETE_ORCHESTRATION = f"""
UPDATE orchestrations SET (total_tasks, completed_tasks, failed_tasks, status) = (
    SELECT total, completed, failed, COALESCE(:status, {_RULE}) FROM ({_FINAL_COUNTS})),
  completed_at = {_NOW}, duration_ms = {_DURATION},
  metadata_json = CASE
    WHEN :error_message IS NULL THEN metadata_json
    WHEN json_valid(metadata_json) AND json_type(metadata_json) = 'object'
      THEN json_set(metadata_json, '$.error_message', :error_message)
    ELSE json_object('error_message', :error_message) END
WHERE session_id = :session_id AND status = 'running'
"""

_UPDATE_TASKS = """
UPDATE orchestrations SET total_tasks = COALESCE(:total_tasks, total_tasks),
  completed_tasks = COALESCE(:completed_tasks, completed_tasks),
  failed_tasks = COALESCE(:failed_tasks, failed_tasks)
WHERE session_id = :session_id
"""

# A first attempt keeps attempt NULL, as the original's rows and every row before: 1.
_START_EXECUTION = f"""
INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name, task_id,
  task_number, status, started_at, retry_count, self_healed, files_created, files_modified,
  session_log_path, parent_execution_id, created_at)
VALUES (:id, :orchestration_id, :agent_session_id, :agent_name, :task_id, :task_number,
  'in_progress', {_NOW}, 0, 0, 0, 0, :session_log_path, :parent_execution_id,
  COALESCE(:created, datetime('now')))
"""

# The next attempt of the task of the attempt :previous, while that one is in progress.
# Until it ends, its retry_count is the task's retries so far.
_START_NEXT_ATTEMPT = f"""
INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name, task_id,
  task_number, status, started_at, retry_count, self_healed, files_created, files_modified,
  session_log_path, parent_execution_id, attempt, first_attempt_id, created_at)
SELECT :id, orchestration_id, :agent_session_id, agent_name, task_id, task_number,
  'in_progress', {_NOW}, COALESCE(attempt, 1), 0, 0, 0, session_log_path,
  parent_execution_id, COALESCE(attempt, 1) + 1, COALESCE(first_attempt_id, id),
  COALESCE(:created, datetime('now'))
FROM agent_executions WHERE agent_session_id = :previous AND status = 'in_progress'
"""

# What a storage failure looks like (IntegrityError and ProgrammingError are handled first).
_UNAVAILABLE = (sqlite3.DatabaseError, DatabaseError, OSError)


# The optional fields that complete an execution, with their checks: the one list behind
# the SQL below, complete_agent_execution's keywords, AgentRun's attributes and complete().
EXECUTION_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "files_created": schema.count,
    "files_modified": schema.count,
    "retry_count": schema.count,
    "self_healed": schema.flag,
    "error_message": schema.optional_text,
    "summary_report_path": schema.optional_text,
    "model": schema.optional_text,
    "input_tokens": schema.count,
    "output_tokens": schema.count,
    "cost_usd": schema.cost,
}


def _complete_execution(retry_count: str) -> str:
    """The UPDATE that ends an in-progress execution, storing ``retry_count`` as given."""
    fields = [f"{name} = COALESCE(:{name}, {name})" for name in EXECUTION_FIELDS]
    fields[list(EXECUTION_FIELDS).index("retry_count")] = f"retry_count = {retry_count}"
    return f"""
UPDATE agent_executions SET status = :status, completed_at = {_NOW}, duration_ms = {_DURATION},
  {", ".join(fields)}
WHERE agent_session_id = :agent_session_id AND status = 'in_progress'
"""


_STATEMENTS = {
    "start_orchestration": _START_ORCHESTRATION,
    "update_orchestration_tasks": _UPDATE_TASKS,
    "complete_orchestration": _COMPLETE_ORCHESTRATION,
    "start_agent_execution": _START_EXECUTION,
    # The attempt that ends its task: its own in-run retries plus the attempts before it
    # (at most the largest INTEGER: SQLite would store a sum past it as a float).
    "complete_agent_execution": _complete_execution(
        f"COALESCE(min(:retry_count + COALESCE(attempt, 1) - 1, {MAX_INTEGER}), retry_count)"
    ),
    "recount_tasks": RECOUNT_TASKS_SQL,
    # An attempt that a retry ends: only its own in-run retries.
    "fail_attempt": _complete_execution("COALESCE(:retry_count, 0)"),
    "start_next_attempt": _START_NEXT_ATTEMPT,
}

# Parameters added to a statement since a journal line may have been kept: their values
# for a line that lacks them.
_ADDED: dict[str, dict[str, Any]] = {
    "start_agent_execution": {"parent_execution_id": None},
    "complete_orchestration": {"follow": False, "id": None},
}


# The formats of the call times a kept write holds (see _stamped), and how to write them.
_MOMENTS = {
    "now": ("%Y-%m-%dT%H:%M:%S.%fZ", to_iso),
    "created": ("%Y-%m-%d %H:%M:%S", to_sqlite_datetime),
}


def _moment(name: str, value: Any) -> str | None:
    if value is None:
        return None
    pattern, write = _MOMENTS[name]
    try:
        if write(dt.datetime.strptime(value, pattern)) == value:
            return value
    except (TypeError, ValueError):
        pass
    raise InvalidValue(
        f"{name} must be None or a time like {write(dt.datetime(2026, 1, 1))!r}, got {value!r}"
    )


def _finished_status(allowed: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda name, value: schema.status(name, value, allowed)


def _optional_finished_status(allowed: tuple[str, ...]) -> Callable[[str, Any], str | None]:
    return lambda name, value: None if value is None else schema.status(name, value, allowed)


_TIMES: dict[str, Callable[[str, Any], Any]] = {"now": _moment, "created": _moment}
_FINISH_EXECUTION = {
    "agent_session_id": schema.text,
    "status": _finished_status(EXECUTION_STATUSES[1:]),
    **EXECUTION_FIELDS,
    **_TIMES,
}
_ORCHESTRATION_COUNTS = dict.fromkeys(
    ("total_tasks", "completed_tasks", "failed_tasks"), schema.count
)
# What a kept write of each kind holds, with the checks it must pass to be applied: a
# journal line is checked again when replayed (it may be torn, edited or not ours).
_KEPT_PARAMS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "start_orchestration": {
        "id": schema.text,
        "session_id": schema.text,
        "task_description": schema.optional_text,
        "total_tasks": schema.count,
        "git_commit_hash": schema.optional_text,
        "plan_file_path": schema.optional_text,
        "progress_file_path": schema.optional_text,
        **_TIMES,
    },
    "update_orchestration_tasks": {"session_id": schema.text, **_ORCHESTRATION_COUNTS},
    "complete_orchestration": {
        "session_id": schema.text,
        "status": _optional_finished_status(ORCHESTRATION_STATUSES[1:]),
        "completed_tasks": schema.count,
        "failed_tasks": schema.count,
        "error_message": schema.optional_text,
        "follow": schema.flag,
        "id": schema.optional_text,
        **_TIMES,
    },
    "start_agent_execution": {
        "id": schema.text,
        "orchestration_id": schema.optional_text,
        "agent_session_id": schema.text,
        "agent_name": schema.text,
        "task_id": schema.optional_text,
        "task_number": schema.optional_integer,
        "session_log_path": schema.optional_text,
        "parent_execution_id": schema.optional_text,
        **_TIMES,
    },
    "complete_agent_execution": _FINISH_EXECUTION,
    "fail_attempt": _FINISH_EXECUTION,
    "start_next_attempt": {
        "id": schema.text,
        "agent_session_id": schema.text,
        "previous": schema.text,
        **_TIMES,
    },
    "recount_tasks": {"id": schema.text},
}
# The row an update of each kind must find: (what, the parameter naming it).
_TARGETS = {
    "update_orchestration_tasks": ("orchestration", "session_id"),
    "complete_orchestration": ("running orchestration", "session_id"),
    "complete_agent_execution": ("execution in progress", "agent_session_id"),
    "fail_attempt": ("execution in progress", "agent_session_id"),
    "start_next_attempt": ("execution in progress", "previous"),
    "recount_tasks": ("orchestration with id", "id"),
}


def _check_kept(kind: str, params: dict[str, Any]) -> None:
    """Raise InvalidValue unless ``params`` is a write of ``kind`` the API could have made."""
    checks = _KEPT_PARAMS[kind]
    if params.keys() != checks.keys():
        raise InvalidValue(
            f"{kind} takes the parameters {', '.join(checks)}, got {', '.join(params)}"
        )
    for name, check in checks.items():
        check(name, params[name])


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        raise InvalidValue(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


class Monitor:
    """Records orchestrations and agent executions into one SQLite database.

    Tracking never breaks the code it watches because of storage: when the database
    is locked for longer than ``busy_timeout``, read-only, on a full disk or cannot be
    opened, a write is kept in ``<database>.pending.jsonl`` (in memory if that cannot
    be written either, up to a bound: see :attr:`pending` and :attr:`dropped`) with the
    time of the call, and applied, in order, before the next write that succeeds from
    any Monitor on that file. Mistakes (bad values, unknown or duplicate sessions)
    still raise :mod:`agentmetrics.errors` exceptions, and nothing is written.

    :param db: a path, a ``sqlite_utils.Database``, or None for the default path
    :param clock: returns the current time as an aware datetime; the default is
      SQLite's own UTC clock. Set it to write deterministic data (demo databases, tests).
    :param strict: raise :class:`~agentmetrics.errors.StorageError` instead of keeping
      writes for later (None: ``$AGENTMETRICS_STRICT=1``). The end of a ``with``
      block never raises for storage, even in strict mode.
    :param busy_timeout: seconds a write waits for another process's lock
    :param otlp_endpoint: also send each finished execution and orchestration as an
      OpenTelemetry span to this OTLP/HTTP receiver's base URL (``/v1/traces`` is
      appended unless the URL already ends with it), or True for
      ``$OTEL_EXPORTER_OTLP_ENDPOINT``; headers come from ``$OTEL_EXPORTER_OTLP_HEADERS``.
      Needs the ``otel`` extra. See
      :mod:`agentmetrics.otel.push` and :attr:`push`.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Database | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        strict: bool | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        otlp_endpoint: str | bool | None = None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise InvalidValue(f"clock must be a function returning a datetime, got {clock!r}")
        self.clock = clock
        self.strict = _strict_from_env() if strict is None else bool(strict)
        self.busy_timeout = _seconds("busy_timeout", busy_timeout)
        self._source = _source(db)
        self._pending = PendingWrites(
            _journal_path(self._source), set(_STATEMENTS), timeout=self.busy_timeout
        )
        self._lock = threading.RLock()
        self._local = threading.local()
        self._db: Database | None = None
        self._retry_at = 0.0
        self._failing = False
        self._flush_failed = False
        self._pid = os.getpid()
        self._push: LivePush | None = None
        if otlp_endpoint not in (None, False):
            from .otel.push import LivePush

            self._push = LivePush(otlp_endpoint)
        _LIVE.add(self)
        with self._lock:
            try:
                self._db = self._open()
            except NotADatabase:
                raise  # the wrong file: a mistake to report, not an outage to ride out
            except _UNAVAILABLE as e:
                self._unavailable(e)

    @property
    def db(self) -> Database:
        """The ``sqlite_utils.Database`` (opened now if it could not be before)."""
        with self._lock:
            if self._db is None:
                try:
                    self._db = self._open()
                except _UNAVAILABLE as e:
                    raise _storage_error(e, self._source) from None
            return self._db

    @property
    def pending(self) -> int:
        """How many writes are waiting for the database (journal and memory)."""
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """How many writes were lost: neither the database nor the journal took them."""
        return self._pending.dropped

    @property
    def applied(self) -> int:
        """How many kept writes this Monitor applied to the database."""
        return self._pending.applied

    @property
    def rejected(self) -> int:
        """How many kept writes could not be applied (a torn journal line, a value the
        database cannot take, a session taken or missing) and were moved, each logged
        with its line number, to ``<database>.pending.rejected.jsonl``."""
        return self._pending.rejected

    @property
    def push(self) -> LivePush | None:
        """The live push (``sent``, ``dropped`` and ``waiting`` spans), None without one."""
        return self._push

    def flush(self) -> int:
        """Apply the pending writes now if the database takes them; return how many wait."""
        with self._lock:
            self._flush_failed = False
            try:
                self._ready(look=True)
            except _UNAVAILABLE as e:
                self._flush_failed = True
                self._unavailable(e)
            return self.pending

    def close(self) -> None:
        """Apply what is pending if possible (not again right after a :meth:`flush` that
        failed), then close the database; the live push sends what it holds (waiting up
        to a few seconds) and warns about spans it dropped."""
        if self._push is not None:
            self._push.close()
        with self._lock, self._lenient():
            if not self._flush_failed:  # would wait out the busy timeout a second time
                self.flush()
            self._pending.save_memory()
            lost = self._pending.drop_memory()
            if lost:
                log.warning(
                    "agentmetrics: %d tracking writes could not be stored and are lost"
                    " (Monitor.dropped: %d in all)",
                    lost,
                    self.dropped,
                )
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- low-level API, matching the original tool -------------------------------------

    def start_orchestration(
        self,
        session_id: str,
        task_description: str | None = None,
        total_tasks: int = 0,
        git_commit_hash: str | None = None,
        plan_file_path: str | None = None,
        progress_file_path: str | None = None,
    ) -> str:
        """Record a running orchestration and return its new id (a UUID4 string).

        :raises DuplicateSession: the session id is already recorded
        """
        orchestration_id = str(uuid.uuid4())
        self._write(
            "start_orchestration",
            {
                "id": orchestration_id,
                "session_id": schema.text("session_id", session_id),
                "task_description": schema.optional_text("task_description", task_description),
                "total_tasks": schema.count("total_tasks", total_tasks),
                "git_commit_hash": schema.optional_text("git_commit_hash", git_commit_hash),
                "plan_file_path": schema.optional_text("plan_file_path", plan_file_path),
                "progress_file_path": schema.optional_text(
                    "progress_file_path", progress_file_path
                ),
                **self._now(),
            },
            duplicate=f"Orchestration session {session_id!r} already exists",
        )
        return orchestration_id

    def update_orchestration_tasks(
        self,
        session_id: str,
        total_tasks: int | None = None,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
    ) -> None:
        """Set any of the orchestration's task counts (None leaves a count unchanged)."""
        params = {
            "session_id": schema.text("session_id", session_id),
            "total_tasks": schema.count("total_tasks", total_tasks),
            "completed_tasks": schema.count("completed_tasks", completed_tasks),
            "failed_tasks": schema.count("failed_tasks", failed_tasks),
        }
        if self._write("update_orchestration_tasks", params) == 0:
            raise UnknownSession(f"No orchestration with session id {session_id!r}")

    def complete_orchestration(
        self,
        session_id: str,
        status: str,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
        error_message: str | None = None,
    ) -> None:
        """Finish a running orchestration as ``completed``, ``failed`` or ``partial``.

        ``error_message`` is kept in its ``metadata_json`` (the original's table has no
        error column).

        :raises UnknownSession: no orchestration has this session id
        :raises AlreadyFinished: it was completed before
        """
        status = schema.status("status", status, ORCHESTRATION_STATUSES[1:])
        self._complete_orchestration(
            session_id, status, completed_tasks, failed_tasks, error_message
        )

    def _complete_orchestration(
        self,
        session_id: str,
        status: str | None,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
        error_message: str | None = None,
        follow: str | None = None,
    ) -> None:
        """Finish an orchestration; a None status by the one status rule, from its task
        counts or, with ``follow`` (its id), from its executions."""
        params = {
            "session_id": schema.text("session_id", session_id),
            "status": status,
            "completed_tasks": schema.count("completed_tasks", completed_tasks),
            "failed_tasks": schema.count("failed_tasks", failed_tasks),
            "error_message": schema.optional_text("error_message", error_message),
            "follow": follow is not None,
            "id": follow,
            **self._now(),
        }
        changed = self._write("complete_orchestration", params)
        if changed == 0:
            self._explain_missing("orchestrations", "session_id", session_id, "Orchestration")
        self._pushed(changed, "orchestration_finished", session_id)

    def start_agent_execution(
        self,
        agent_session_id: str,
        agent_name: str,
        orchestration_id: str | None = None,
        task_id: str | None = None,
        task_number: int | None = None,
        session_log_path: str | None = None,
        parent_execution_id: str | None = None,
    ) -> str:
        """Record an execution in progress and return its new id (a UUID4 string).

        :param parent_execution_id: the id of the execution this one runs inside
        :raises UnknownSession: ``orchestration_id`` names no orchestration
        :raises DuplicateSession: the agent session id is already recorded
        """
        execution_id = str(uuid.uuid4())
        self._write(
            "start_agent_execution",
            {
                "id": execution_id,
                "orchestration_id": schema.optional_text("orchestration_id", orchestration_id),
                "agent_session_id": schema.text("agent_session_id", agent_session_id),
                "agent_name": schema.text("agent_name", agent_name),
                "task_id": schema.optional_text("task_id", task_id),
                "task_number": None
                if task_number is None
                else schema.integer("task_number", task_number),
                "session_log_path": schema.optional_text("session_log_path", session_log_path),
                "parent_execution_id": schema.optional_text(
                    "parent_execution_id", parent_execution_id
                ),
                **self._now(),
            },
            duplicate=f"Agent session {agent_session_id!r} already exists",
            foreign_key=f"No orchestration with id {orchestration_id!r}",
        )
        return execution_id

    def complete_agent_execution(self, agent_session_id: str, status: str, **fields: Any) -> None:
        """Finish an execution as ``completed`` or ``failed``.

        :param fields: any of :data:`EXECUTION_FIELDS` (``files_created``,
          ``files_modified``, ``retry_count``, ``self_healed``, ``error_message``,
          ``summary_report_path``, ``model``, ``input_tokens``, ``output_tokens``,
          ``cost_usd``); one not given keeps its stored value
        :raises UnknownSession: no execution has this agent session id
        :raises AlreadyFinished: it was completed before
        :raises InvalidValue: an unknown field, or a value that cannot be stored
        """
        params = self._execution_params(agent_session_id, status, fields)
        self._end_execution("complete_agent_execution", params)

    def retry_agent_execution(
        self,
        agent_session_id: str,
        reason: str,
        new_agent_session_id: str | None = None,
        **fields: Any,
    ) -> str:
        """End an attempt in progress as failed with ``reason`` (its ``error_message``) and
        start the next attempt of its task; return the new attempt's agent session id.

        The new attempt has the same agent, orchestration, task and parent, ``attempt``
        one more and ``first_attempt_id`` the id of the task's first attempt. Complete it
        as any execution: the attempt that ends the task stores ``retry_count`` as its own
        in-run retries plus the attempts before it.

        :param new_agent_session_id: default ``agent_session_id`` with ``#2`` appended, or
          its ``#n`` suffix counted up (``run-7`` -> ``run-7#2`` -> ``run-7#3``)
        :param fields: any of :data:`EXECUTION_FIELDS` but ``error_message``, for the
          attempt that failed (``retry_count``: its own in-run retries)
        :raises UnknownSession: no execution has this agent session id
        :raises AlreadyFinished: that attempt was completed before
        :raises DuplicateSession: the new agent session id is already recorded
        """
        if "error_message" in fields:
            raise InvalidValue(
                "The reason is the failed attempt's error_message: pass it as reason"
            )
        if new_agent_session_id is None:
            new_agent_session_id = _next_attempt(schema.text("agent_session_id", agent_session_id))
        self._retry(agent_session_id, reason, new_agent_session_id, fields)
        return new_agent_session_id

    def _retry(
        self, agent_session_id: str, reason: str, new_agent_session_id: str, fields: dict
    ) -> str:
        """Start the next attempt, then fail the one in progress; the new execution id."""
        reason = schema.text("reason", reason)
        failed = self._execution_params(
            agent_session_id, "failed", {**fields, "error_message": reason}
        )
        execution_id = str(uuid.uuid4())
        start = {
            "id": execution_id,
            "agent_session_id": schema.text("new_agent_session_id", new_agent_session_id),
            "previous": agent_session_id,
            "now": failed["now"],
            "created": failed["created"],
        }
        # Started first: a taken session id then leaves the attempt in progress untouched.
        changed = self._write(
            "start_next_attempt",
            start,
            duplicate=f"Agent session {new_agent_session_id!r} already exists",
        )
        if changed == 0:
            self._explain_missing(
                "agent_executions", "agent_session_id", agent_session_id, "Agent session"
            )
        self._end_execution("fail_attempt", failed)
        return execution_id

    def _execution_params(
        self, agent_session_id: str, status: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(EXECUTION_FIELDS))
        if unknown:
            raise InvalidValue(
                f"Unknown execution field(s): {', '.join(unknown)}"
                + _did_you_mean(unknown[0], EXECUTION_FIELDS)
            )
        return {
            "agent_session_id": schema.text("agent_session_id", agent_session_id),
            "status": schema.status("status", status, EXECUTION_STATUSES[1:]),
            **{name: check(name, fields.get(name)) for name, check in EXECUTION_FIELDS.items()},
            **self._now(),
        }

    def _end_execution(self, kind: str, params: dict[str, Any]) -> None:
        changed = self._write(kind, params)
        session = params["agent_session_id"]
        if changed == 0:
            self._explain_missing("agent_executions", "agent_session_id", session, "Agent session")
        self._pushed(changed, "execution_finished", session)

    # -- context managers --------------------------------------------------------------

    def orchestration(
        self,
        session_id: str | None = None,
        task_description: str | None = None,
        total_tasks: int = 0,
        git_commit_hash: str | None = None,
        plan_file_path: str | None = None,
        progress_file_path: str | None = None,
    ) -> Orchestration:
        """Start an orchestration that completes itself when its ``with`` block ends.

        On normal exit its status follows the one rule (see :class:`Orchestration`);
        ``failed`` when an exception escapes (re-raised). Its task counts follow its
        executions, a task counted once by its last attempt, unless set explicitly. The
        session id is generated when not given.
        """
        session_id = session_id if session_id is not None else str(uuid.uuid4())
        orchestration_id = self.start_orchestration(
            session_id,
            task_description=task_description,
            total_tasks=total_tasks,
            git_commit_hash=git_commit_hash,
            plan_file_path=plan_file_path,
            progress_file_path=progress_file_path,
        )
        return Orchestration(self, orchestration_id, session_id)

    def agent(
        self,
        agent_name: str,
        agent_session_id: str | None = None,
        *,
        orchestration_id: str | None = None,
        task_id: str | None = None,
        task_number: int | None = None,
        session_log_path: str | None = None,
        parent: AgentRun | str | None = None,
    ) -> AgentRun:
        """Start an execution that completes itself when its ``with`` block ends.

        :param parent: the run (or execution id) this one runs inside; default: the agent
          block this one is opened in, if any (see :class:`AgentRun`)
        """
        return self._agent(
            None,
            agent_name,
            agent_session_id,
            orchestration_id=orchestration_id,
            task_id=task_id,
            task_number=task_number,
            session_log_path=session_log_path,
            parent=parent,
        )

    def _agent(
        self,
        orchestration: Orchestration | None,
        agent_name: str,
        agent_session_id: str | None,
        parent: AgentRun | str | None,
        **kwargs: Any,
    ) -> AgentRun:
        agent_session_id = agent_session_id if agent_session_id is not None else str(uuid.uuid4())
        parent_id = _parent_id(parent)
        execution_id = self.start_agent_execution(
            agent_session_id, agent_name, parent_execution_id=parent_id, **kwargs
        )
        return AgentRun(self, execution_id, agent_session_id, orchestration)

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> dict[str, str | None]:
        if self.clock is None:
            return {"now": None, "created": None}
        moment = self.clock()
        if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
            raise InvalidValue(
                f"clock must return an aware datetime (e.g. datetime.now(timezone.utc)),"
                f" got {moment!r}"
            )
        try:
            return {"now": to_iso(moment), "created": to_sqlite_datetime(moment)}
        except (OverflowError, ValueError) as e:
            raise InvalidValue(f"clock returned a time that cannot be stored: {e}") from None

    def _open(self) -> Database:
        return ensure_database(self._source, busy_timeout_ms=round(self.busy_timeout * 1000))

    def _ready(self, look: bool = False) -> Database:
        """The open database, with every pending write applied to it first (``look``: in
        the journal too, even if it was looked at less than CHECK_SECONDS ago)."""
        if self._db is None:
            self._db = self._open()
        if self._pending.waiting(look):
            applied = self._pending.replay(self._apply)
            log.info("agentmetrics: applied %d pending tracking writes", applied)
        self._failing = False
        self._retry_at = 0.0
        return self._db

    def _apply(self, writes: list[tuple[str, dict[str, Any]]]) -> dict[int, str]:
        """Apply kept writes in one transaction; why each refused one was, by index."""
        refused = {}
        with write_transaction(self._db):
            for index, (kind, params) in enumerate(writes):
                reason = self._apply_kept(kind, params)
                if reason is not None:
                    refused[index] = f"{kind}: {reason}"
        return refused

    def _apply_kept(self, kind: str, params: dict[str, Any]) -> str | None:
        """Apply one kept write; why it cannot be, or None once applied."""
        params = {**_ADDED.get(kind, {}), **params}
        try:
            _check_kept(kind, params)
            changed = self._db.conn.execute(_STATEMENTS[kind], params).rowcount
        except (InvalidValue, sqlite3.IntegrityError) as e:
            # A bad value in a journal line, or a session taken meanwhile (or a start
            # applied before, by a process that died before it could empty the journal).
            return str(e)
        if changed == 0 and kind in _TARGETS:
            what, key = _TARGETS[kind]
            return f"there is no {what} {params[key]!r} (was its start rejected?)"
        return None

    def _write(
        self,
        kind: str,
        params: dict[str, Any],
        duplicate: str = "Duplicate session id",
        foreign_key: str = "Unknown orchestration",
    ) -> int | None:
        """Run one statement; the rows it changed, or None if it was kept for later."""
        called = time.time()
        with self._lock:
            self._flush_failed = False
            try:
                if not self._is_strict() and time.monotonic() < self._retry_at:
                    self._pending.add(kind, _stamped(params, called))
                    return None
                return self._ready().execute(_STATEMENTS[kind], params).rowcount
            except sqlite3.IntegrityError as e:
                message = str(e)
                if "UNIQUE" in message:
                    raise DuplicateSession(duplicate) from None
                if "FOREIGN KEY" in message:
                    raise UnknownSession(foreign_key) from None
                raise InvalidValue(message) from None
            except sqlite3.ProgrammingError as e:
                raise InvalidValue(str(e)) from None
            except _UNAVAILABLE as e:
                self._unavailable(e)
                self._pending.add(kind, _stamped(params, called))
                return None

    def _pushed(self, changed: int | None, event: str, key: str) -> None:
        """Hand a finished run to the live push; one kept for later has no row to send."""
        if self._push is None:
            return
        if changed is None:
            self._push.missed()
            return
        with self._lock:
            getattr(self._push, event)(self._db, key)

    def _unavailable(self, error: BaseException) -> None:
        """After a storage failure: raise it in strict mode, else note it and carry on."""
        if isinstance(self._source, str) and self._db is not None:
            # Reopen next time: a file opened read-only stays read-only on this connection.
            self._db.close()
            self._db = None
        if self._is_strict():
            raise _storage_error(error, self._source) from None
        self._retry_at = time.monotonic() + RETRY_SECONDS
        if not self._failing:
            self._failing = True
            where = self._pending.path or "memory"
            log.warning(
                "agentmetrics: cannot write to %s (%s): keeping tracking writes in %s",
                _name(self._source),
                error,
                where,
            )

    def _is_strict(self) -> bool:
        return self.strict and not getattr(self._local, "lenient", False)

    @contextlib.contextmanager
    def _lenient(self) -> Iterator[None]:
        """Storage failures are kept for later even in strict mode (``with`` block ends)."""
        before = getattr(self._local, "lenient", False)
        self._local.lenient = True
        try:
            yield
        finally:
            self._local.lenient = before

    def _explain_missing(self, table: str, column: str, value: str, what: str) -> None:
        row = self.db.execute(f"SELECT status FROM {table} WHERE {column} = ?", [value]).fetchone()
        if row is None:
            raise UnknownSession(f"{what} {value!r} not found")
        raise AlreadyFinished(f"{what} {value!r} is already {row[0]}")

    def __repr__(self) -> str:
        return f"<Monitor {os.path.basename(_name(self._source))}>"

    def _repr_html_(self) -> str:
        """In a notebook: the file, its orchestrations and the newest one's timeline."""
        from .outputs.display import monitor_html

        return monitor_html(self)


def _source(db: Any) -> str | Database:
    if db is None:
        db = default_path()
    if isinstance(db, Database):
        return db
    if not isinstance(db, (str, os.PathLike)):
        raise InvalidValue(f"db must be a path or a sqlite_utils.Database, got {db!r}")
    path = os.fspath(db)
    if not isinstance(path, str) or not path:
        raise InvalidValue(f"db must be a non-empty path, got {db!r}")
    return path if path == ":memory:" else os.path.abspath(path)


def _journal_path(source: str | Database) -> str | None:
    if isinstance(source, str):
        return None if source == ":memory:" else source + SUFFIX
    try:
        file = database_file(source)
    except sqlite3.Error:
        return None
    return file + SUFFIX if file else None


def _name(source: str | Database) -> str:
    return source if isinstance(source, str) else "the database"


def _stamped(params: dict[str, Any], called: float) -> dict[str, Any]:
    """``params`` with SQLite's clock replaced by the time of the call, to keep for later."""
    if "now" in params and params["now"] is None:
        moment = dt.datetime.fromtimestamp(called, dt.timezone.utc)
        return {**params, "now": to_iso(moment), "created": to_sqlite_datetime(moment)}
    return params


def _storage_error(error: BaseException, source: str | Database) -> AgentMetricsError:
    if isinstance(error, AgentMetricsError):
        return error
    if refused_write(error):
        return ReadOnlyDatabase("The database is open read-only")
    return StorageError(f"Cannot write to {_name(source)}: {error}")


def _describe(exc: BaseException) -> str:
    """``"Type: message"`` for a failure, whatever the exception holds."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not stop the failure being recorded
        text = ""
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    # Lone surrogates (from bytes decoded with surrogateescape) cannot be stored.
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


class _Tracked:
    """Shared ``with`` behaviour: complete on exit, failed when an exception escapes.

    The end of a block never raises for storage (the write is kept for later), and an
    exception escaping the block always comes through unchanged. A mistake found only at
    the end (a clock that gives no usable time) first ends the run as failed, then raises.

    Only the names in ``_settable`` can be set, each value checked at assignment; any
    other public attribute raises ``AttributeError`` (naming the closest settable one).
    """

    _settable: dict[str, Callable[[str, Any], Any]] = {}
    monitor: Monitor
    finished = False

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            if name not in self._settable:
                raise AttributeError(_cannot_set(self, name))
            self._settable[name](name, value)  # InvalidValue now, not when the block ends
        object.__setattr__(self, name, value)

    def _set(self, **values: Any) -> None:
        """Set attributes the user cannot (id, session, state)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __enter__(self):
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        with self.monitor._lenient():
            if exc is not None:
                self._record_failure(_describe(exc))
                return
            try:
                self.complete()
            except InvalidValue as mistake:
                self._record_failure(_describe(mistake))
                raise

    def _record_failure(self, message: str) -> None:
        try:
            self.fail(message)
        except AgentMetricsError as e:
            log.warning("agentmetrics: could not record the failure: %s", e)


class Orchestration(_Tracked):
    """A running orchestration; use :meth:`agent` to track its executions.

    Ended without an explicit status (the end of its ``with`` block, :meth:`complete`
    without one), it is ``completed`` when every task completed, ``failed`` when every
    task failed, else ``partial`` (:func:`agentmetrics.store.tasks.orchestration_status`).
    """

    def __init__(self, monitor: Monitor, id: str, session_id: str) -> None:
        self._set(monitor=monitor, id=id, session_id=session_id, follow_executions=True)

    def agent(
        self,
        agent_name: str,
        agent_session_id: str | None = None,
        *,
        task_id: str | None = None,
        task_number: int | None = None,
        session_log_path: str | None = None,
        parent: AgentRun | str | None = None,
    ) -> AgentRun:
        """Start an execution that belongs to this orchestration (``parent``: see
        :meth:`Monitor.agent`)."""
        return self.monitor._agent(
            self,
            agent_name,
            agent_session_id,
            parent,
            orchestration_id=self.id,
            task_id=task_id,
            task_number=task_number,
            session_log_path=session_log_path,
        )

    def update_tasks(
        self,
        total_tasks: int | None = None,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
    ) -> None:
        """Set task counts; setting completed or failed stops them following executions."""
        self.monitor.update_orchestration_tasks(
            self.session_id, total_tasks, completed_tasks, failed_tasks
        )
        if completed_tasks is not None or failed_tasks is not None:
            self._set(follow_executions=False)

    def complete(
        self,
        status: str | None = None,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
    ) -> None:
        """Finish the orchestration now (the ``with`` block then leaves it alone); without
        a status, by the rule above."""
        if status is not None:
            status = schema.status("status", status, ORCHESTRATION_STATUSES[1:])
        self._finish(status, completed_tasks, failed_tasks)

    def fail(self, error_message: str | None = None) -> None:
        """Finish the orchestration as failed; the message goes in its ``metadata_json``."""
        self._finish("failed", error_message=error_message)

    def _finish(
        self,
        status: str | None,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
        error_message: str | None = None,
    ) -> None:
        self.monitor._complete_orchestration(
            self.session_id,
            status,
            completed_tasks,
            failed_tasks,
            error_message,
            follow=self.id if self.follow_executions else None,
        )
        self._set(finished=True)

    def _recount(self) -> None:
        if self.follow_executions:
            self.monitor._write("recount_tasks", {"id": self.id})

    def _repr_html_(self) -> str:
        """In a notebook: this orchestration's summary and timeline, as stored so far."""
        from .outputs.display import orchestration_html

        return orchestration_html(self)


class AgentRun(_Tracked):
    """A running agent execution: one attempt of its task.

    Set any of :data:`EXECUTION_FIELDS` as an attribute (``run.files_created = 2``,
    ``run.model = "m"``) before the block ends; ``retry_count`` is this attempt's own
    in-run retries. :meth:`retry` ends the attempt as failed and starts the next one.

    An agent block opened inside this one records it as its parent: also in ``asyncio``
    tasks and in threads run in a copy of the context (``contextvars.copy_context()``).
    """

    _settable = EXECUTION_FIELDS

    def __init__(
        self,
        monitor: Monitor,
        id: str,
        agent_session_id: str,
        orchestration: Orchestration | None = None,
    ) -> None:
        self._set(
            monitor=monitor,
            id=id,
            agent_session_id=agent_session_id,
            orchestration=orchestration,
            attempt=1,
            first_attempt_id=None,
            _entered=[],
        )
        self._clear_fields()

    def __enter__(self) -> AgentRun:
        self._entered.append(_CURRENT_RUN.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            _leave(self._entered.pop())

    def retry(self, reason: str, agent_session_id: str | None = None) -> None:
        """End this attempt as failed with ``reason`` and start the task's next attempt,
        which the run then stands for (``id``, ``agent_session_id``, ``attempt``), its
        fields unset again. See :meth:`Monitor.retry_agent_execution`.

        :param agent_session_id: the new attempt's (default: this one's ``#2``, ``#3``...)
        """
        if agent_session_id is None:
            agent_session_id = _next_attempt(self.agent_session_id)
        execution_id = self.monitor._retry(
            self.agent_session_id, reason, agent_session_id, self._fields()
        )
        self._set(
            id=execution_id,
            agent_session_id=agent_session_id,
            attempt=self.attempt + 1,
            first_attempt_id=self.first_attempt_id or self.id,
        )
        self._clear_fields()

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in EXECUTION_FIELDS}

    def _clear_fields(self) -> None:
        self._set(**dict.fromkeys(EXECUTION_FIELDS))  # files_created, model, cost_usd...

    def complete(self, status: str = "completed", **fields: Any) -> None:
        """Finish the execution now; ``fields`` override the attributes set on the run."""
        self.monitor.complete_agent_execution(
            self.agent_session_id, status, **{**self._fields(), **fields}
        )
        self._set(finished=True)
        if self.orchestration is not None:
            self.orchestration._recount()

    def fail(self, error_message: str | None = None) -> None:
        """Finish the execution as failed with this error message."""
        self.complete("failed", error_message=error_message)


# The agent block the code runs in: the parent of one opened inside it.
_CURRENT_RUN: contextvars.ContextVar[AgentRun | None] = contextvars.ContextVar(
    "agentmetrics_current_run", default=None
)


def _leave(token: contextvars.Token) -> None:
    try:
        _CURRENT_RUN.reset(token)
    except ValueError:  # the block ended in another context than it began in
        _CURRENT_RUN.set(None)


def _parent_id(parent: AgentRun | str | None) -> str | None:
    if parent is None:
        current = _CURRENT_RUN.get()
        return None if current is None else current.id
    if isinstance(parent, AgentRun):
        return parent.id
    if isinstance(parent, str) and parent:
        return schema.optional_text("parent", parent)
    raise InvalidValue(f"parent must be an AgentRun or an execution id, got {parent!r}")


def _next_attempt(agent_session_id: str) -> str:
    """The default agent session id of the attempt after ``agent_session_id``."""
    base, hash_sign, number = agent_session_id.rpartition("#")
    if hash_sign and number.isdigit():
        return f"{base}#{int(number) + 1}"
    return f"{agent_session_id}#2"


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _cannot_set(tracked: _Tracked, name: str) -> str:
    kind = type(tracked).__name__
    if hasattr(tracked, name):
        return f"{kind}.{name} cannot be set"
    message = f"{kind} has no attribute {name!r} to set"
    if tracked._settable:
        message += (
            f"{_did_you_mean(name, tracked._settable)}; settable: {', '.join(tracked._settable)}"
        )
    return message


_default: dict[str, Any] = {}
_LIVE: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Writes kept for later are applied (or saved to the journal), and spans queued for
    the live push sent, before the process ends."""
    for monitor in list(_LIVE):
        # A forked child's copy of its parent's Monitor is not its own to flush.
        if monitor._pid == os.getpid() and (
            monitor._pending.waiting() or monitor._push is not None
        ):
            with contextlib.suppress(Exception):
                monitor.close()


def get_monitor() -> Monitor:
    """The process-wide Monitor on ``$AGENTMETRICS_DB`` (else ``./monitoring.db``).

    A new one is opened after a fork or when the path changes, since a SQLite
    connection must not cross processes.
    """
    key = (os.getpid(), os.path.abspath(default_path()))
    if _default.get("key") != key:
        _default.update(key=key, monitor=Monitor(default_path()))
    return _default["monitor"]


__all__ = ["AgentRun", "Monitor", "Orchestration", "get_monitor"]
