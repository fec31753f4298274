"""The tracking API: every write agentmetrics makes while orchestrations run.

Each call is one short autocommit statement, so many processes can track into one
file at once. Completion computes ``completed_at`` and ``duration_ms`` in SQL from the
stored ``started_at``, with no read first.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlite_utils import Database

from .db import default_path, ensure_database
from .errors import (
    AlreadyFinished,
    DuplicateSession,
    InvalidValue,
    ReadOnlyDatabase,
    UnknownSession,
)
from .timestamps import SQL_NOW, to_iso, to_sqlite_datetime

ORCHESTRATION_STATUSES = ("running", "completed", "failed", "partial")
EXECUTION_STATUSES = ("in_progress", "completed", "failed")

_NOW = f"COALESCE(:now, {SQL_NOW})"
_DURATION = f"CAST(ROUND((julianday({_NOW}) - julianday(started_at)) * 86400000) AS INTEGER)"

_START_ORCHESTRATION = f"""
INSERT INTO orchestrations (id, session_id, task_description, status, started_at,
  total_tasks, completed_tasks, failed_tasks, git_commit_hash, plan_file_path,
  progress_file_path, created_at)
VALUES (:id, :session_id, :task_description, 'running', {_NOW}, :total_tasks, 0, 0,
  :git_commit_hash, :plan_file_path, :progress_file_path, COALESCE(:created, datetime('now')))
"""

_COMPLETE_ORCHESTRATION = f"""
UPDATE orchestrations SET status = :status, completed_at = {_NOW}, duration_ms = {_DURATION},
  completed_tasks = COALESCE(:completed_tasks, completed_tasks),
  failed_tasks = COALESCE(:failed_tasks, failed_tasks)
WHERE session_id = :session_id AND status = 'running'
"""

_UPDATE_TASKS = """
UPDATE orchestrations SET total_tasks = COALESCE(:total_tasks, total_tasks),
  completed_tasks = COALESCE(:completed_tasks, completed_tasks),
  failed_tasks = COALESCE(:failed_tasks, failed_tasks)
WHERE session_id = :session_id
"""

_START_EXECUTION = f"""
INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name, task_id,
  task_number, status, started_at, retry_count, self_healed, files_created, files_modified,
  session_log_path, created_at)
VALUES (:id, :orchestration_id, :agent_session_id, :agent_name, :task_id, :task_number,
  'in_progress', {_NOW}, 0, 0, 0, 0, :session_log_path, COALESCE(:created, datetime('now')))
"""

_COMPLETE_EXECUTION = f"""
UPDATE agent_executions SET status = :status, completed_at = {_NOW}, duration_ms = {_DURATION},
  files_created = COALESCE(:files_created, files_created),
  files_modified = COALESCE(:files_modified, files_modified),
  retry_count = COALESCE(:retry_count, retry_count),
  self_healed = COALESCE(:self_healed, self_healed),
  error_message = COALESCE(:error_message, error_message),
  summary_report_path = COALESCE(:summary_report_path, summary_report_path),
  model = COALESCE(:model, model),
  input_tokens = COALESCE(:input_tokens, input_tokens),
  output_tokens = COALESCE(:output_tokens, output_tokens),
  cost_usd = COALESCE(:cost_usd, cost_usd)
WHERE agent_session_id = :agent_session_id AND status = 'in_progress'
"""

# Task counts that follow the orchestration's executions (context-manager form).
_RECOUNT_TASKS = """
UPDATE orchestrations SET
  completed_tasks = (SELECT count(*) FROM agent_executions
                     WHERE orchestration_id = :id AND status = 'completed'),
  failed_tasks = (SELECT count(*) FROM agent_executions
                  WHERE orchestration_id = :id AND status = 'failed'),
  total_tasks = max(COALESCE(total_tasks, 0),
                    (SELECT count(*) FROM agent_executions WHERE orchestration_id = :id))
WHERE id = :id
"""


def _count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{name} must be a whole number, got {value!r}")
    if value < 0:
        raise InvalidValue(f"{name} must not be negative, got {value}")
    return value


def _status(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidValue(f"Invalid status {value!r}: use one of {', '.join(allowed)}")
    return value


class Monitor:
    """Records orchestrations and agent executions into one SQLite database.

    :param db: a path, a ``sqlite_utils.Database``, or None for the default path
    :param clock: returns the current time; the default is SQLite's own UTC clock.
      Set it to write deterministic data (demo databases, tests).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Database | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.db = ensure_database(db if db is not None else default_path())
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

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
            _START_ORCHESTRATION,
            {
                "id": orchestration_id,
                "session_id": _text("session_id", session_id),
                "task_description": task_description,
                "total_tasks": _count("total_tasks", total_tasks),
                "git_commit_hash": git_commit_hash,
                "plan_file_path": plan_file_path,
                "progress_file_path": progress_file_path,
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
            "session_id": session_id,
            "total_tasks": _count("total_tasks", total_tasks),
            "completed_tasks": _count("completed_tasks", completed_tasks),
            "failed_tasks": _count("failed_tasks", failed_tasks),
        }
        if self._write(_UPDATE_TASKS, params) == 0:
            raise UnknownSession(f"No orchestration with session id {session_id!r}")

    def complete_orchestration(
        self,
        session_id: str,
        status: str,
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
    ) -> None:
        """Finish a running orchestration as ``completed``, ``failed`` or ``partial``.

        :raises UnknownSession: no orchestration has this session id
        :raises AlreadyFinished: it was completed before
        """
        params = {
            "session_id": session_id,
            "status": _status(status, ORCHESTRATION_STATUSES[1:]),
            "completed_tasks": _count("completed_tasks", completed_tasks),
            "failed_tasks": _count("failed_tasks", failed_tasks),
            **self._now(),
        }
        if self._write(_COMPLETE_ORCHESTRATION, params) == 0:
            self._explain_missing("orchestrations", "session_id", session_id, "Orchestration")

    def start_agent_execution(
        self,
        agent_session_id: str,
        agent_name: str,
        orchestration_id: str | None = None,
        task_id: str | None = None,
        task_number: int | None = None,
        session_log_path: str | None = None,
    ) -> str:
        """Record an execution in progress and return its new id (a UUID4 string).

        :raises UnknownSession: ``orchestration_id`` names no orchestration
        :raises DuplicateSession: the agent session id is already recorded
        """
        execution_id = str(uuid.uuid4())
        if task_number is not None and (
            isinstance(task_number, bool) or not isinstance(task_number, int)
        ):
            raise InvalidValue(f"task_number must be a whole number, got {task_number!r}")
        self._write(
            _START_EXECUTION,
            {
                "id": execution_id,
                "orchestration_id": orchestration_id,
                "agent_session_id": _text("agent_session_id", agent_session_id),
                "agent_name": _text("agent_name", agent_name),
                "task_id": task_id,
                "task_number": task_number,
                "session_log_path": session_log_path,
                **self._now(),
            },
            duplicate=f"Agent session {agent_session_id!r} already exists",
            foreign_key=f"No orchestration with id {orchestration_id!r}",
        )
        return execution_id

    def complete_agent_execution(
        self,
        agent_session_id: str,
        status: str,
        files_created: int | None = None,
        files_modified: int | None = None,
        error_message: str | None = None,
        summary_report_path: str | None = None,
        retry_count: int | None = None,
        self_healed: bool | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Finish an execution as ``completed`` or ``failed``.

        :raises UnknownSession: no execution has this agent session id
        :raises AlreadyFinished: it was completed before
        """
        if cost_usd is not None and (
            isinstance(cost_usd, bool)
            or not isinstance(cost_usd, (int, float))
            or not 0 <= cost_usd < math.inf  # also refuses NaN
        ):
            raise InvalidValue(f"cost_usd must be a finite number >= 0, got {cost_usd!r}")
        params = {
            "agent_session_id": agent_session_id,
            "status": _status(status, EXECUTION_STATUSES[1:]),
            "files_created": _count("files_created", files_created),
            "files_modified": _count("files_modified", files_modified),
            "retry_count": _count("retry_count", retry_count),
            "self_healed": None if self_healed is None else int(bool(self_healed)),
            "error_message": error_message,
            "summary_report_path": summary_report_path,
            "model": model,
            "input_tokens": _count("input_tokens", input_tokens),
            "output_tokens": _count("output_tokens", output_tokens),
            "cost_usd": None if cost_usd is None else float(cost_usd),
            **self._now(),
        }
        if self._write(_COMPLETE_EXECUTION, params) == 0:
            self._explain_missing(
                "agent_executions", "agent_session_id", agent_session_id, "Agent session"
            )

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

        ``completed`` on normal exit; ``failed`` when an exception escapes (re-raised).
        Its task counts follow its executions unless set explicitly.
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
    ) -> AgentRun:
        """Start an execution that completes itself when its ``with`` block ends."""
        return self._agent(
            None,
            agent_name,
            agent_session_id,
            orchestration_id=orchestration_id,
            task_id=task_id,
            task_number=task_number,
            session_log_path=session_log_path,
        )

    def _agent(
        self, orchestration: Orchestration | None, agent_name: str, agent_session_id, **kwargs
    ) -> AgentRun:
        agent_session_id = agent_session_id if agent_session_id is not None else str(uuid.uuid4())
        execution_id = self.start_agent_execution(agent_session_id, agent_name, **kwargs)
        return AgentRun(self, execution_id, agent_session_id, orchestration)

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> dict[str, str | None]:
        if self.clock is None:
            return {"now": None, "created": None}
        moment = self.clock()
        return {"now": to_iso(moment), "created": to_sqlite_datetime(moment)}

    def _write(
        self,
        sql: str,
        params: dict[str, Any],
        duplicate: str = "Duplicate session id",
        foreign_key: str = "Unknown orchestration",
    ) -> int:
        try:
            with self._lock:
                return self.db.execute(sql, params).rowcount
        except sqlite3.IntegrityError as e:
            message = str(e)
            if "UNIQUE" in message:
                raise DuplicateSession(duplicate) from None
            if "FOREIGN KEY" in message:
                raise UnknownSession(foreign_key) from None
            raise InvalidValue(message) from None
        except sqlite3.OperationalError as e:
            # "is a view": the read-only shim of an original file (db._shim_missing_columns)
            if "readonly" in str(e) or "because it is a view" in str(e):
                raise ReadOnlyDatabase("The database is open read-only") from None
            raise

    def _explain_missing(self, table: str, column: str, value: str, what: str) -> None:
        row = self.db.execute(f"SELECT status FROM {table} WHERE {column} = ?", [value]).fetchone()
        if row is None:
            raise UnknownSession(f"{what} {value!r} not found")
        raise AlreadyFinished(f"{what} {value!r} is already {row[0]}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{name} must be a non-empty string, got {value!r}")
    return value


class _Tracked:
    """Shared ``with`` behaviour: complete on exit, failed when an exception escapes."""

    finished = False

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
        if exc is None:
            self.complete("completed")
        else:
            self.fail(f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)


class Orchestration(_Tracked):
    """A running orchestration; use :meth:`agent` to track its executions."""

    def __init__(self, monitor: Monitor, id: str, session_id: str) -> None:
        self.monitor = monitor
        self.id = id
        self.session_id = session_id
        self.follow_executions = True

    def agent(
        self,
        agent_name: str,
        agent_session_id: str | None = None,
        *,
        task_id: str | None = None,
        task_number: int | None = None,
        session_log_path: str | None = None,
    ) -> AgentRun:
        """Start an execution that belongs to this orchestration."""
        return self.monitor._agent(
            self,
            agent_name,
            agent_session_id,
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
            self.follow_executions = False

    def complete(
        self,
        status: str = "completed",
        completed_tasks: int | None = None,
        failed_tasks: int | None = None,
    ) -> None:
        """Finish the orchestration now (the ``with`` block then leaves it alone)."""
        self.monitor.complete_orchestration(self.session_id, status, completed_tasks, failed_tasks)
        self.finished = True

    def fail(self, error_message: str | None = None) -> None:
        # The original's orchestrations table has no error column: the failure is
        # recorded on the execution that raised it.
        self.complete("failed")

    def _recount(self) -> None:
        if self.follow_executions:
            self.monitor._write(_RECOUNT_TASKS, {"id": self.id})


class AgentRun(_Tracked):
    """A running agent execution. Set the attributes below before the block ends."""

    def __init__(
        self,
        monitor: Monitor,
        id: str,
        agent_session_id: str,
        orchestration: Orchestration | None = None,
    ) -> None:
        self.monitor = monitor
        self.id = id
        self.agent_session_id = agent_session_id
        self.orchestration = orchestration
        self.files_created: int | None = None
        self.files_modified: int | None = None
        self.retry_count: int | None = None
        self.self_healed: bool | None = None
        self.summary_report_path: str | None = None
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: float | None = None

    def complete(self, status: str = "completed", **fields: Any) -> None:
        """Finish the execution now; ``fields`` override the attributes set on the run."""
        values = {
            name: getattr(self, name)
            for name in (
                "files_created",
                "files_modified",
                "retry_count",
                "self_healed",
                "summary_report_path",
                "model",
                "input_tokens",
                "output_tokens",
                "cost_usd",
            )
        }
        values.update(fields)
        self.monitor.complete_agent_execution(self.agent_session_id, status, **values)
        self.finished = True
        if self.orchestration is not None:
            self.orchestration._recount()

    def fail(self, error_message: str | None = None) -> None:
        """Finish the execution as failed with this error message."""
        self.complete("failed", error_message=error_message)


_default: dict[str, Any] = {}


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
