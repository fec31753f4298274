"""A live terminal view of a monitoring database (``agentmetrics watch``).

Each refresh reads a :class:`Snapshot` (a few indexed queries over recent rows) and
prints :func:`render` of it; rendering is a pure function of the snapshot, so it is
tested without a terminal. The database is opened read-only, so watching never blocks
or disturbs the processes that track into it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import IO

import pandas as pd

from ..errors import InvalidValue
from ..formatting import format_duration, format_percent, printable
from ..reports import percent, percentiles, read_frame
from ..store.db import DbArg, reading
from ..timestamps import parse_timestamp, to_iso
from ..window import TimeArg, resolve_now, window

CLEAR = "\x1b[H\x1b[2J"
# Later refreshes overwrite the previous one in place (cursor home, each line erased to
# its end, the rest of the screen erased) instead of blanking the screen: no flicker.
HOME, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
# "Finished recently" looks at executions started in the last day, so the query stays
# on the started_at index; a run longer than that is not listed when it finishes.
RECENT_LOOKBACK = dt.timedelta(days=1)
RECENT_LOOKBACK_MINUTES = 24 * 60


@dataclasses.dataclass
class Snapshot:
    """What the live view shows at ``now``.

    - ``running``: session_id, task_description, started_at, elapsed_ms, agents_running
    - ``recent``: agent_name, status, duration_ms, completed_at (newest first)
    - ``failures``: started_at, agent_name, error_message (newest first)
    - ``hour_finished``, ``hour_success_rate`` (percent, NaN if none), ``hour_p95_ms``
    """

    now: dt.datetime
    running: pd.DataFrame
    agents_running: int
    recent: pd.DataFrame
    recent_minutes: float
    hour_finished: int
    hour_success_rate: float
    hour_p95_ms: float
    failures: pd.DataFrame


def snapshot(
    db: DbArg,
    now: TimeArg = None,
    recent_minutes: float = 15,
    limit: int = 10,
) -> Snapshot:
    """Read the live view's data."""
    if not 0 < recent_minutes <= RECENT_LOOKBACK_MINUTES:
        raise InvalidValue(
            f"recent_minutes must be over 0 and at most {RECENT_LOOKBACK_MINUTES}"
            f" (one day), got {recent_minutes}"
        )
    moment = resolve_now(now)
    now_iso = to_iso(moment)
    hour, hour_params = window(moment - dt.timedelta(hours=1), moment)
    with reading(db) as conn:
        running = read_frame(
            conn,
            "SELECT o.session_id, o.task_description, o.started_at,"
            " (SELECT count(*) FROM agent_executions e WHERE e.orchestration_id = o.id"
            "  AND e.status = 'in_progress') AS agents_running"
            " FROM orchestrations o WHERE o.status = 'running' AND o.started_at <= :now"
            " ORDER BY o.started_at DESC LIMIT :limit",
            {"limit": limit, "now": now_iso},
        )
        agents_running = conn.execute(
            "SELECT count(*) FROM agent_executions WHERE status = 'in_progress'"
            " AND started_at <= ?",
            [now_iso],
        ).fetchone()[0]
        recent = read_frame(
            conn,
            "SELECT agent_name, status, duration_ms, completed_at FROM agent_executions"
            " WHERE status != 'in_progress' AND started_at >= :lookback"
            " AND completed_at >= :cutoff AND completed_at <= :now"
            " ORDER BY completed_at DESC LIMIT :limit",
            {
                "lookback": to_iso(moment - RECENT_LOOKBACK),
                "cutoff": to_iso(moment - dt.timedelta(minutes=recent_minutes)),
                "now": now_iso,
                "limit": limit,
            },
        )
        hour = conn.execute(
            f"SELECT status, duration_ms FROM agent_executions WHERE status != 'in_progress'{hour}",
            hour_params,
        ).fetchall()
        failures = read_frame(
            conn,
            "SELECT started_at, agent_name, error_message FROM agent_executions"
            " WHERE status = 'failed' AND started_at <= :now"
            " ORDER BY started_at DESC LIMIT :limit",
            {"now": now_iso, "limit": min(limit, 5)},
        )
    running["elapsed_ms"] = [
        (moment - parse_timestamp(s)) // dt.timedelta(milliseconds=1) for s in running["started_at"]
    ]
    running = running[
        ["session_id", "task_description", "started_at", "elapsed_ms", "agents_running"]
    ]
    completed = sum(1 for status, _ in hour if status == "completed")
    durations = [d for _, d in hour if d is not None]
    return Snapshot(
        now=moment,
        running=running,
        agents_running=agents_running,
        recent=recent,
        recent_minutes=recent_minutes,
        hour_finished=len(hour),
        hour_success_rate=percent(completed, len(hour)),
        hour_p95_ms=percentiles(durations, [95])[0],
        failures=failures,
    )


def _cut(text: object, width: int) -> str:
    value = "-" if text is None or text != text else str(text)
    value = printable(value.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    return value if len(value) <= width else value[: max(width - 1, 0)] + "…"


def render(snap: Snapshot, width: int = 100) -> str:
    """The text of one refresh (no terminal control codes)."""
    lines = [
        _cut(f"agentmetrics watch  {to_iso(snap.now)[:19].replace('T', ' ')} UTC", width),
        "",
        f"Last hour: {snap.hour_finished} finished, success rate "
        f"{format_percent(snap.hour_success_rate)}, p95 {format_duration(snap.hour_p95_ms)}",
        "",
        f"Running orchestrations ({len(snap.running)} shown, {snap.agents_running} agents"
        " in progress)",
    ]
    if snap.running.empty:
        lines.append("  none")
    for row in snap.running.itertuples():
        agents = f"{row.agents_running} agent{'' if row.agents_running == 1 else 's'}"
        head = f"  {format_duration(row.elapsed_ms):>8}  {agents:<9} "
        lines.append(
            head + _cut(f"{row.session_id}  {row.task_description or ''}", width - len(head))
        )
    lines += ["", f"Finished in the last {snap.recent_minutes:g} minutes"]
    if snap.recent.empty:
        lines.append("  none")
    for row in snap.recent.itertuples():
        head = (
            f"  {row.completed_at[11:19]}  {row.status:<9}  {format_duration(row.duration_ms):>8}  "
        )
        lines.append(head + _cut(row.agent_name, width - len(head)))
    lines += ["", "Latest failures"]
    if snap.failures.empty:
        lines.append("  none")
    for row in snap.failures.itertuples():
        head = f"  {row.started_at[:16].replace('T', ' ')}  "
        lines.append(head + _cut(f"{row.agent_name}: {row.error_message or ''}", width - len(head)))
    return "\n".join(lines) + "\n"


def watch(
    db: DbArg,
    interval: float = 2.0,
    iterations: int | None = None,
    out: IO[str] | None = None,
    width: Callable[[], int] | int = 100,
    clear: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    recent_minutes: float = 15,
    height: Callable[[], int] | int | None = None,
) -> None:
    """Refresh the view every ``interval`` seconds, ``iterations`` times (forever: None).

    With ``clear`` each refresh redraws the terminal in place, cut to ``height`` rows
    (the terminal's; None: no limit) so that it never scrolls.
    KeyboardInterrupt propagates; the CLI turns it into a clean exit.
    """
    import sys

    stream = out if out is not None else sys.stdout
    count = 0
    while iterations is None or count < iterations:
        if count:
            sleep(interval)
        text = render(
            snapshot(db, recent_minutes=recent_minutes),
            width() if callable(width) else width,
        )
        if clear:
            rows = height() if callable(height) else height
            text = _in_place(text, rows, first=count == 0)
        stream.write(text)
        stream.flush()
        count += 1


def _in_place(text: str, rows: int | None, first: bool) -> str:
    """One refresh as terminal output that overwrites the previous one."""
    lines = text.splitlines()
    # The last row stays free: writing a newline there would scroll the screen.
    room = max((rows or len(lines) + 1) - 1, 1)
    if len(lines) > room:
        hidden = len(lines) - room + 1
        lines = lines[: room - 1] + [f"… {hidden} more lines: enlarge the terminal"]
    body = "".join(f"{line}{ERASE_LINE}\n" for line in lines)
    return (CLEAR if first else HOME) + body + ERASE_BELOW
