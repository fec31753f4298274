"""A deterministic, realistic demo database for tours, notebooks, tests and benchmarks.

:func:`build_demo` simulates ``orchestrations`` runs spread over the ``days`` before
``now``. Each orchestration plans a sequence of tasks (plan, research, code and test
pairs, review, docs, deploy) run one after another by seven agents with their own speed
and reliability:

- durations are lognormal around each agent's median;
- ``code-writer`` got slower in the last 7 days (its durations are multiplied by
  :data:`SLOWDOWN`, so its p95 roughly doubles): the regression to find;
- ``test-runner`` is flaky: its failures repeat three error messages that differ only
  in ids, numbers and paths, so they fold into a few error patterns;
- troubled executions retry, and self-healing sometimes rescues them;
- an orchestration stops (``failed``) or carries on (``partial``) after a failed task;
  its task counts match its executions; the most recent ones are still ``running``.

The same ``seed``, ``days``, ``orchestrations`` and ``now`` always give the same rows,
so reports on two builds are identical. Rows are written with bulk ``executemany``
inside one write transaction: a million executions take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .errors import AgentMetricsError, ForeignDatabase, InvalidValue
from .store.db import using_database, write_transaction
from .timestamps import parse_timestamp, utcnow

DEFAULT_DAYS = 30
DEFAULT_ORCHESTRATIONS = 600
DEFAULT_SEED = 42
# The notebooks, README and the docs pin this so their outputs never change.
NOTEBOOK_NOW = "2026-11-01T12:00:00Z"

MARKER_TABLE = "_agentmetrics_demo"
# Bump when the simulation changes, so ensure_demo() rebuilds older files.
DEMO_VERSION = 1
SLOW_AGENT = "code-writer"
FLAKY_AGENT = "test-runner"
SLOWDOWN = 2.2
SLOWDOWN_DAYS = 7
BATCH_SIZE = 20_000


@dataclass(frozen=True)
class AgentProfile:
    """How one demo agent behaves: speed, trouble rate, output and model."""

    name: str
    median_ms: float
    sigma: float
    trouble: float  # chance an execution runs into trouble (retries, maybe fails)
    errors: tuple[tuple[str, float], ...]
    files_created: int = 0
    files_modified: int = 0
    model: str | None = None
    tokens_per_second: float = 0.0


_COMMON_ERRORS = (
    ("Rate limit exceeded (HTTP 429), retry after {n2}s", 3),
    ("Context window exceeded: {big} tokens > 200000", 2),
    ("Tool call failed: `git push origin {branch}` exited with code {code}", 1),
)

AGENTS: tuple[AgentProfile, ...] = (
    AgentProfile("planner", 45_000, 0.35, 0.03, _COMMON_ERRORS, 1, 0, "claude-opus-4", 40),
    AgentProfile("researcher", 120_000, 0.60, 0.04, _COMMON_ERRORS, 1, 0, "claude-sonnet-4", 60),
    AgentProfile(
        SLOW_AGENT,
        150_000,
        0.45,
        0.03,
        _COMMON_ERRORS + (("FileNotFoundError: {path}", 2),),
        4,
        6,
        "claude-sonnet-4",
        50,
    ),
    AgentProfile(
        FLAKY_AGENT,
        80_000,
        0.40,
        0.11,
        (
            ("AssertionError: {n1} of {n3} tests failed in {test_path}", 6),
            ("Timeout after {secs}s waiting for sandbox {hex}", 3),
            ("Database fixture '{fixture}' not found (pid {pid})", 1),
        ),
        0,
        1,
        "claude-haiku-4",
        80,
    ),
    AgentProfile("code-reviewer", 60_000, 0.30, 0.02, _COMMON_ERRORS, 0, 0, "claude-opus-4", 50),
    AgentProfile("doc-writer", 40_000, 0.35, 0.02, _COMMON_ERRORS, 1, 2, "claude-haiku-4", 90),
    AgentProfile(
        "deployer",
        25_000,
        0.25,
        0.04,
        (("Deploy to {env} failed: health check returned HTTP {status}", 1),),
    ),
)
_BY_NAME = {agent.name: agent for agent in AGENTS}

# USD per million input / output tokens.
MODEL_PRICES = {
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4": (0.8, 4.0),
}

_FEATURES = ("login", "billing", "search", "export", "caching", "rate limits", "webhooks")
_COMPONENTS = ("api", "web app", "worker", "cli", "scheduler", "sdk")
_VERBS = ("Add {f} to the {c}", "Fix {f} bug in the {c}", "Refactor {f} in the {c}")


def build_demo(
    db: str | os.PathLike[str] | Database,
    *,
    days: float = DEFAULT_DAYS,
    orchestrations: int = DEFAULT_ORCHESTRATIONS,
    seed: int = DEFAULT_SEED,
    now: str | dt.datetime | None = None,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fill ``db`` with demo orchestrations and executions; return what was built.

    :param db: a path (created with its folder if missing) or a Database
    :param days: how far back the orchestrations start
    :param orchestrations: how many (about ten executions each)
    :param seed: the random seed
    :param now: when the demo ends (default: the current time to the minute); runs
      that would end later are still running
    :param replace: delete existing rows first. Without it a database holding rows is
      refused, unless those rows are an untouched earlier demo build, and so is another
      application's database (with it, the demo tables are added beside its tables)
    :param progress: called with the number of orchestrations written, batch by batch
    :returns: ``{"version", "orchestrations", "executions", "seed", "days", "now"}``
    :raises AgentMetricsError: the database holds data that is not a demo build
    """
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0:
        raise InvalidValue(f"days must be a positive number, got {days!r}")
    if isinstance(orchestrations, bool) or not isinstance(orchestrations, int):
        raise InvalidValue(f"orchestrations must be a whole number, got {orchestrations!r}")
    if orchestrations < 1:
        raise InvalidValue(f"orchestrations must be at least 1, got {orchestrations}")
    end = _resolve_now(now)
    try:
        end - dt.timedelta(days=days)
    except OverflowError:
        raise InvalidValue(f"days must not reach back before the year 1, got {days!r}") from None
    if not isinstance(db, Database):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    try:
        with using_database(db, allow_foreign=replace) as database:
            return _build(database, days, orchestrations, seed, end, replace, progress)
    except ForeignDatabase as e:
        raise ForeignDatabase(f"{e}; use --replace (replace=True) to add the demo to it") from None


def ensure_demo(
    path: str | os.PathLike[str],
    *,
    days: float = DEFAULT_DAYS,
    orchestrations: int = DEFAULT_ORCHESTRATIONS,
    seed: int = DEFAULT_SEED,
    now: str | dt.datetime = NOTEBOOK_NOW,
) -> Path:
    """Return ``path``, building the demo there first unless it already holds this build.

    Notebooks call this: the first run builds the file, later runs reuse it. A file
    built with other arguments or an older demo version is rebuilt; a file with other
    data is refused, as in :func:`build_demo`.
    """
    path = Path(path)
    wanted = {
        "version": DEMO_VERSION,
        "orchestrations": orchestrations,
        "seed": seed,
        "days": days,
        "now": _iso(parse_timestamp(now)),
    }
    if path.exists():
        with using_database(path) as db:
            marker = db.table(MARKER_TABLE)
            built = next(iter(marker.rows_where("id = 1")), {}) if marker.exists() else {}
        if all(built.get(key) == value for key, value in wanted.items()):
            return path
    build_demo(path, days=days, orchestrations=orchestrations, seed=seed, now=now)
    return path


def _resolve_now(now: str | dt.datetime | None) -> dt.datetime:
    if now is not None:
        return parse_timestamp(now)
    return utcnow().replace(second=0, microsecond=0)


def _build(
    db: Database,
    days: float,
    count: int,
    seed: int,
    now: dt.datetime,
    replace: bool,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    sim = _Simulation(random.Random(seed), now, days)
    orchestration_rows: list[tuple] = []
    execution_rows: list[tuple] = []
    executions = 0
    with write_transaction(db):
        _clear_or_refuse(db, replace)
        cache = db.conn.execute("PRAGMA cache_size").fetchone()[0]
        # Random UUID keys touch index pages everywhere: a big page cache keeps a
        # million-row build from thrashing. Restored below.
        db.conn.execute("PRAGMA cache_size = -262144")
        try:
            for orchestration, rows in sim.orchestrations(count):
                orchestration_rows.append(orchestration)
                execution_rows.extend(rows)
                if len(execution_rows) >= BATCH_SIZE:
                    executions += _flush(db, orchestration_rows, execution_rows, progress)
            for row in sim.standalone(max(1, count // 50)):
                execution_rows.append(row)
            executions += _flush(db, orchestration_rows, execution_rows, progress)
        finally:
            db.conn.execute(f"PRAGMA cache_size = {int(cache)}")
        summary = {
            "version": DEMO_VERSION,
            "orchestrations": count,
            "executions": executions,
            "seed": seed,
            "days": days,
            "now": _iso(now),
        }
        db.table(MARKER_TABLE).insert({"id": 1, **summary}, pk="id", replace=True, alter=True)
    return summary


def _clear_or_refuse(db: Database, replace: bool) -> None:
    counts = {
        table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("orchestrations", "agent_executions")
    }
    if any(counts.values()) and not replace:
        marker = db.table(MARKER_TABLE)
        built = next(iter(marker.rows_where("id = 1")), None) if marker.exists() else None
        untouched = built is not None and (built["orchestrations"], built["executions"]) == (
            counts["orchestrations"],
            counts["agent_executions"],
        )
        if not untouched:
            raise AgentMetricsError(
                f"The database already holds {counts['orchestrations']} orchestrations and "
                f"{counts['agent_executions']} executions; use --replace (replace=True) "
                "to delete them and build the demo"
            )
    db.execute("DELETE FROM agent_executions")
    db.execute("DELETE FROM orchestrations")
    if db.table(MARKER_TABLE).exists():
        db.execute(f"DELETE FROM {MARKER_TABLE}")


_INSERT_ORCHESTRATION = """
INSERT INTO orchestrations (id, session_id, task_description, status, started_at,
  completed_at, duration_ms, total_tasks, completed_tasks, failed_tasks, git_commit_hash,
  plan_file_path, progress_file_path, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_INSERT_EXECUTION = """
INSERT INTO agent_executions (id, orchestration_id, agent_session_id, agent_name, task_id,
  task_number, status, started_at, completed_at, duration_ms, retry_count, self_healed,
  files_created, files_modified, error_message, summary_report_path, session_log_path,
  created_at, model, input_tokens, output_tokens, cost_usd)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _flush(
    db: Database,
    orchestration_rows: list[tuple],
    execution_rows: list[tuple],
    progress: Callable[[int], None] | None,
) -> int:
    db.conn.executemany(_INSERT_ORCHESTRATION, orchestration_rows)
    db.conn.executemany(_INSERT_EXECUTION, execution_rows)
    written = len(execution_rows)
    if progress is not None:
        progress(len(orchestration_rows))
    orchestration_rows.clear()
    execution_rows.clear()
    return written


_EPOCH = dt.datetime(1970, 1, 1)


def _iso(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class _Simulation:
    """Generates rows in time order from one random stream."""

    def __init__(self, rng: random.Random, now: dt.datetime, days: float) -> None:
        self.rng = rng
        self.now_ms = _to_ms(now)
        self.span_ms = int(days * 86_400_000)
        # Orchestrations start at least an hour before `now` (except the running ones).
        self.start_range_ms = max(self.span_ms - 3_600_000, 60_000)
        self.slow_from_ms = self.now_ms - SLOWDOWN_DAYS * 86_400_000
        self.session_prefix = f"{rng.getrandbits(24):06x}"

    # -- ids and text ----------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def error_message(self, agent: AgentProfile) -> str:
        rng = self.rng
        messages, weights = zip(*agent.errors, strict=True)
        template = rng.choices(messages, weights)[0]
        n3 = rng.randint(40, 400)
        return template.format(
            n1=rng.randint(1, 9),
            n2=rng.randint(5, 90),
            n3=n3,
            big=rng.randint(200_001, 260_000),
            code=rng.choice((1, 128, 255)),
            secs=rng.choice((120, 300, 600)),
            pid=rng.randint(1000, 65000),
            hex=self.hex(12),
            branch=f"feature/{rng.choice(_FEATURES).replace(' ', '-')}-{rng.randint(1, 999)}",
            path=f"/repo/src/{rng.choice(_COMPONENTS).replace(' ', '_')}/"
            f"module_{rng.randint(1, 80)}.py",
            test_path=f"tests/{rng.choice(_COMPONENTS).replace(' ', '_')}/"
            f"test_{rng.choice(_FEATURES).replace(' ', '_')}.py",
            fixture=f"{rng.choice(_FEATURES).replace(' ', '_')}_{rng.randint(1, 50)}",
            env=rng.choice(("staging", "production")),
            status=rng.choice((500, 502, 503)),
        )

    # -- orchestrations ----------------------------------------------------------------

    def orchestrations(self, count: int) -> Iterator[tuple[tuple, list[tuple]]]:
        rng = self.rng
        running = min(5, max(1, count // 200)) if count >= 5 else 0
        starts = sorted(
            self.now_ms - self.span_ms + rng.randrange(self.start_range_ms)
            for _ in range(count - running)
        )
        # The last few start minutes ago, so they are still running at `now`.
        starts += sorted(self.now_ms - rng.randrange(60_000, 1_200_000) for _ in range(running))
        for number, start in enumerate(starts, 1):
            yield self.orchestration(number, start, force_running=number > count - running)

    def plan(self) -> list[str]:
        rng = self.rng
        tasks = ["planner"]
        if rng.random() < 0.5:
            tasks.append("researcher")
        for _ in range(rng.randint(1, 6)):
            tasks += [SLOW_AGENT, FLAKY_AGENT]
        tasks.append("code-reviewer")
        if rng.random() < 0.4:
            tasks.append("doc-writer")
        if rng.random() < 0.3:
            tasks.append("deployer")
        return tasks

    def orchestration(self, number: int, start: int, force_running: bool) -> tuple[tuple, list]:
        rng = self.rng
        orchestration_id = self.uuid()
        session = f"orch-{self.session_prefix}-{number:06d}"
        verb = rng.choice(_VERBS).format(f=rng.choice(_FEATURES), c=rng.choice(_COMPONENTS))
        plan = self.plan()
        rows = []
        clock = start + rng.randint(200, 3_000)
        completed = failed = 0
        stopped = False
        for task_number, agent_name in enumerate(plan, 1):
            row, end = self.execution(
                _BY_NAME[agent_name], clock, orchestration_id, session, task_number
            )
            rows.append(row)
            if end is None:  # still in progress at `now`
                break
            if row[6] == "completed":
                completed += 1
            else:
                failed += 1
                # Most failures stop the orchestration; otherwise it carries on (partial).
                if rng.random() < 0.5:
                    stopped = True
                    break
            clock = end + rng.randint(300, 5_000)
        else:
            if force_running:
                # Reopen the last execution so this recent orchestration is running.
                last = rows[-1]
                rows[-1] = _in_progress(last)
                completed -= last[6] == "completed"
                failed -= last[6] == "failed"
                end = None
        if end is None:
            status, finished_at, duration = "running", None, None
        else:
            finished = end + rng.randint(100, 2_000)
            status = "failed" if stopped else "partial" if failed else "completed"
            if failed and not completed:
                status = "failed"
            finished_at, duration = _ms_iso(finished), finished - start
        slug = verb.lower().replace(" ", "-")
        orchestration = (
            orchestration_id,
            session,
            verb,
            status,
            _ms_iso(start),
            finished_at,
            duration,
            len(plan),
            completed,
            failed,
            self.hex(40),
            f"plans/{slug}.md",
            f".agents/{session}/progress.md",
            _ms_sqlite(start),
        )
        return orchestration, rows

    # -- executions --------------------------------------------------------------------

    def execution(
        self,
        agent: AgentProfile,
        start: int,
        orchestration_id: str | None,
        session: str,
        task_number: int | None,
    ) -> tuple[tuple, int | None]:
        """One execution row, and when it ended (None: still in progress at `now`)."""
        rng = self.rng
        median = agent.median_ms
        if agent.name == SLOW_AGENT and start >= self.slow_from_ms:
            median *= SLOWDOWN
        duration = int(rng.lognormvariate(math.log(median), agent.sigma))
        retries, healed, ok = 0, 0, True
        if rng.random() < agent.trouble:
            retries = rng.choices((1, 2, 3), (6, 3, 1))[0]
            healed = int(rng.random() < 0.5)
            # Self-healing rescues most troubled runs; plain retries fewer.
            ok = rng.random() < (0.7 if healed else 0.35)
            duration += int(duration * 0.6 * retries)
        end = start + duration
        suffix = f"t{task_number:02d}" if task_number is not None else self.hex(8)
        agent_session = f"{session}-{suffix}"
        log_path = f".agents/{session}/{suffix}.log"
        base = (
            self.uuid(),
            orchestration_id,
            agent_session,
            agent.name,
            f"task-{task_number}" if task_number is not None else None,
            task_number,
        )
        if end > self.now_ms:
            row = base + ("in_progress", _ms_iso(start), None, None, 0, 0, 0, 0, None, None)
            return row + (log_path, _ms_sqlite(start), None, None, None, None), None
        created = rng.randint(0, agent.files_created) if ok else 0
        modified = rng.randint(0, agent.files_modified) if ok else 0
        model = input_tokens = output_tokens = cost = None
        if agent.model is not None:
            model = agent.model
            output_tokens = int(duration / 1000 * agent.tokens_per_second * rng.uniform(0.5, 1.5))
            input_tokens = output_tokens * rng.randint(4, 12)
            price_in, price_out = MODEL_PRICES[model]
            cost = round((input_tokens * price_in + output_tokens * price_out) / 1e6, 6)
        row = base + (
            "completed" if ok else "failed",
            _ms_iso(start),
            _ms_iso(end),
            duration,
            retries,
            healed,
            created,
            modified,
            None if ok else self.error_message(agent),
            f".agents/{session}/{suffix}-summary.md" if ok else None,
            log_path,
            _ms_sqlite(start),
            model,
            input_tokens,
            output_tokens,
            cost,
        )
        return row, end

    def standalone(self, count: int) -> Iterator[tuple]:
        """Ad-hoc executions outside any orchestration (reviews run by hand)."""
        rng = self.rng
        for _ in range(count):
            start = self.now_ms - self.span_ms + rng.randrange(self.start_range_ms)
            agent = _BY_NAME[rng.choice(("code-reviewer", "researcher", "doc-writer"))]
            row, _ = self.execution(agent, start, None, f"adhoc-{self.session_prefix}", None)
            yield row


def _in_progress(row: tuple) -> tuple:
    row = row[:6] + ("in_progress", row[7], None, None, 0, 0, 0, 0, None, None, row[16], row[17])
    return row + (None, None, None, None)


def _to_ms(moment: dt.datetime) -> int:
    delta = moment.replace(tzinfo=None) - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _ms_iso(ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


def _ms_sqlite(ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=ms)).isoformat(sep=" ", timespec="seconds")


# -- one failed run, traced: notebooks/07-one-run.ipynb ----------------------------------

ONE_RUN_SESSION = "ticket-42"
_ONE_RUN_START_NS = 1_793_530_800_000_000_000  # 2026-11-01T11:00:00Z
_TIMEOUT = "TimeoutError: search backend timed out after 20s"
_UNREACHABLE = "ConnectionError: search backend unreachable"
# (span number, parent number, kind, name, start s, end s, error, attributes)
_ONE_RUN = [
    (1, None, "invoke_workflow", "Answer ticket 42", 0, 95, "researcher gave up", {}),
    (2, 1, "invoke_agent", "coordinator", 0.5, 94, "researcher gave up", {}),
    (3, 2, "chat", "gpt-4.1-mini", 1, 3, None, (820, 64)),
    (4, 2, "invoke_agent", "triager", 3.5, 8, None, {}),
    (5, 4, "chat", "gpt-4.1-mini", 4, 7.5, None, (410, 38)),
    (6, 2, "invoke_agent", "researcher", 9, 35, _TIMEOUT, {}),
    (7, 6, "chat", "gpt-4.1", 10, 13, None, (1200, 90)),
    (8, 6, "execute_tool", "search", 13.5, 34, _TIMEOUT, {}),
    (9, 2, "invoke_agent", "researcher", 37, 63, _TIMEOUT, {}),
    (10, 9, "chat", "gpt-4.1", 38, 41, None, (1350, 95)),
    (11, 9, "execute_tool", "search", 41.5, 62, _TIMEOUT, {}),
    (12, 2, "invoke_agent", "researcher", 65, 92, _UNREACHABLE, {}),
    (13, 12, "chat", "gpt-4.1", 66, 69, None, (1500, 110)),
    (14, 12, "execute_tool", "search", 69.5, 70, _UNREACHABLE, {}),
    (15, 12, "chat", "gpt-4.1", 71, 75, None, (1640, 120)),
    (16, 12, "execute_tool", "search", 75.5, 91, _UNREACHABLE, {}),
]


def build_one_run(db: str | os.PathLike[str] | Database) -> str:
    """Write one failed orchestration, as OpenTelemetry spans ingested, into ``db``:
    a coordinator runs a triager, then a researcher three times (each attempt's search
    tool fails) and gives up. Returns its session id. The same rows every time."""
    from .otel.ingest import ingest_spans
    from .otel.spans import STATUS_ERROR, STATUS_UNSET, Span

    trace = "42" * 16
    spans = []
    for number, parent, kind, name, start, end, error, extra in _ONE_RUN:
        attributes: dict[str, Any] = {"gen_ai.operation.name": kind}
        if kind == "invoke_workflow":
            attributes["gen_ai.workflow.name"] = name
            attributes["gen_ai.conversation.id"] = ONE_RUN_SESSION
        elif kind == "invoke_agent":
            attributes["gen_ai.agent.name"] = name
        elif kind == "chat":
            attributes["gen_ai.request.model"] = name
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"] = (
                extra
            )
        spans.append(
            Span(
                trace_id=trace,
                span_id=f"{number:016x}",
                parent_span_id=None if parent is None else f"{parent:016x}",
                name=f"{kind} {name}",
                start_ns=_ONE_RUN_START_NS + int(start * 1e9),
                end_ns=_ONE_RUN_START_NS + int(end * 1e9),
                status_code=STATUS_ERROR if error else STATUS_UNSET,
                status_message=error or "",
                attributes=attributes,
            )
        )
    with using_database(db) as database:
        ingest_spans(database, spans)  # the researcher's three runs: attempts of one task
    return ONE_RUN_SESSION


__all__ = [
    "AGENTS",
    "FLAKY_AGENT",
    "NOTEBOOK_NOW",
    "ONE_RUN_SESSION",
    "SLOW_AGENT",
    "build_demo",
    "build_one_run",
    "ensure_demo",
]
