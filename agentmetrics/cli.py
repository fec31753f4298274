"""The ``agentmetrics`` command line: a thin layer over the library's functions."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable

import click
import pandas as pd
from sqlite_utils import Database

from . import DISTRIBUTION
from .atomic import atomic_file
from .errors import AgentMetricsError, ConfigError, MissingIndexesWarning, PendingWritesWarning
from .formatting import format_duration, format_time, formatters, parse_percent, printable, readable
from .reports.regression import METRICS as REGRESSION_METRICS
from .reports.trend import FREQUENCIES
from .store.db import DEFAULT_PATH, ENV_VAR, open_database
from .store.schema import MAX_INTEGER, MIN_INTEGER
from .timestamps import before, parse_timestamp, positive_duration, to_iso
from .window import bound, resolve_now


class _UsageFailure(click.ClickException):
    """A bad option value or configuration: ``Error: ...`` and exit code 2."""

    exit_code = 2


SECTIONS = {
    "Tracking": ("list", "show", "executions", "agent", "failures", "watch"),
    "Reports": (
        "health",
        "performance",
        "retries",
        "trends",
        "costs",
        "regressions",
        "check",
        "plot",
        "report",
    ),
    "Data in and out": ("export", "import", "merge", "demo"),
    "Upkeep": ("cleanup", "reap", "upgrade", "flush"),
    "Serving": ("serve", "metrics", "datasette-metadata"),
}
"""The sections of ``agentmetrics --help``, in order, and their commands."""


class _Group(click.Group):
    """Turns errors into one ``Error: ...`` line: exit code 2 for a bad option value or
    configuration (:class:`~agentmetrics.errors.ConfigError`), 1 for everything else.

    ``--help`` lists the commands by :data:`SECTIONS`, aligned across sections.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = max(len(name) for name in self.commands)
        limit = formatter.width - 6 - width  # as click's own listing
        for title, names in SECTIONS.items():
            rows = [
                (name.ljust(width), self.commands[name].get_short_help_str(limit)) for name in names
            ]
            with formatter.section(title):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.BadParameter as e:  # without click's usage lines
            raise _UsageFailure(e.format_message()) from None
        except ConfigError as e:
            raise _UsageFailure(str(e)) from None
        except (AgentMetricsError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
            # pandas wraps the sqlite3 errors raised while it reads a query.
            raise click.ClickException(f"Database error: {e}") from None
        except BrokenPipeError:
            sys.stderr.close()  # output piped into `head`: not an error
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
@click.option(
    "-d",
    "--db",
    "db_path",
    envvar=ENV_VAR,
    default=DEFAULT_PATH,
    show_default=True,
    help=f"Database file (env {ENV_VAR}).",
)
@click.pass_context
def cli(ctx: click.Context, db_path: str) -> None:
    """Track multi-agent orchestrations in SQLite and report on them."""
    ctx.obj = {"db_path": db_path}


def _set_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj["db_path"] = value


db_option = click.option(
    "-d",
    "--db",
    "db_path",
    expose_value=False,
    callback=_set_db,
    help="Database file (overrides the global --db).",
)
"""Lets ``--db`` follow the command name too: ``agentmetrics health --db x.db``."""


def read_db(ctx: click.Context) -> Database:
    """Open the --db file for reading; a missing file is an error and is not created.

    A large file without the report indexes gets one hint line on stderr.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingIndexesWarning)
        warnings.simplefilter("always", PendingWritesWarning)
        db = open_database(ctx.obj["db_path"], create=False)
    ctx.call_on_close(db.close)
    for warning in caught:
        click.echo(f"agentmetrics: {warning.message}", err=True)
    return db


def write_db(ctx: click.Context) -> Database:
    """Open the --db file for writing, creating it if needed."""
    db = open_database(ctx.obj["db_path"])
    ctx.call_on_close(db.close)
    return db


def output_options(fn: Callable) -> Callable:
    """Add ``--json`` and ``--csv``; the command receives ``fmt``."""
    for option in reversed(
        (
            click.option("--json", "json_", is_flag=True, help="Output JSON."),
            click.option("--csv", "csv_", is_flag=True, help="Output CSV."),
        )
    ):
        fn = option(fn)

    def wrapper(*args, json_: bool, csv_: bool, **kwargs):
        if json_ and csv_:
            raise _UsageFailure("Use just one of --json or --csv")
        return fn(*args, fmt="json" if json_ else "csv" if csv_ else "table", **kwargs)

    return click.decorators.update_wrapper(wrapper, fn)


def _checked(check: Callable[[str], object]) -> Callable:
    """A click callback that checks a value up front (a bad one is a usage error, exit 2)
    and passes its text on unchanged."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                check(value)
            except ValueError as e:  # InvalidValue too
                raise click.BadParameter(str(e)) from None
        return value

    return callback


_WINDOW = "at or after SINCE, before UNTIL; a timestamp or a span like 7d"
_WINDOW_OPTIONS = {
    "since": click.option(
        "--since", callback=_checked(bound), help=f"Only runs started {_WINDOW}."
    ),
    "until": click.option(
        "--until", callback=_checked(bound), help=f"Only runs started {_WINDOW}."
    ),
    "agent": click.option("--agent", help="Only this agent."),
}
now_option = click.option(
    "--now",
    metavar="TIME",
    callback=_checked(parse_timestamp),
    help="Answer as of this UTC time instead of the current time.",
)


def window_options(*names: str) -> Callable[[Callable], Callable]:
    """Add ``--since`` and ``--until`` (and ``--agent``, ``--now`` when named)."""
    options = [now_option if name == "now" else _WINDOW_OPTIONS[name] for name in names]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def write_exact(text: str) -> None:
    """Write machine output (JSON, CSV, metrics) exactly: ``click.echo`` strips ANSI
    sequences, stored values included, when stdout is not a terminal."""
    sys.stdout.write(text)
    sys.stdout.flush()


def emit(
    df: pd.DataFrame,
    fmt: str,
    formatters: dict[str, Callable] | None = None,
    empty: str = "No rows.",
) -> None:
    """Print a report DataFrame as a readable table, JSON records or CSV.

    JSON and CSV carry the values exactly; the table shows control characters in
    them as escapes (``\\x1b``), so stored text cannot drive the terminal.
    """
    if fmt == "json":
        write_exact(df.to_json(orient="records", date_format="iso", indent=2) + "\n")
    elif fmt == "csv":
        write_exact(df.to_csv(index=False))
    elif df.empty:
        click.echo(empty)
    else:
        shown = df.copy()
        for column, formatter in (formatters or {}).items():
            if column in shown:
                shown[column] = shown[column].map(formatter)
        for column in shown.columns:
            kind = shown[column].dtype
            if pd.api.types.is_object_dtype(kind) or pd.api.types.is_string_dtype(kind):
                shown[column] = shown[column].map(_cell)  # None in text columns: "-" like NaN
        click.echo(shown.to_string(index=False, na_rep="-"))


def _cell(value: object) -> object:
    if value is None:
        return "-"
    return printable(value) if isinstance(value, str) else value


# -- reports, export, import, merge and cleanup ------------------------------------------


class _Number(click.FloatRange):
    """click's FloatRange that also refuses ``nan`` and ``inf`` (nan compares in range)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class _Whole(click.IntRange):
    name = "whole number"  # in click's message: "'2.5' is not a valid whole number."


# The longest window HOURS may give: a bigger number is a typo, not a window.
MAX_HOURS_YEARS = 100
MAX_HOURS = MAX_HOURS_YEARS * 366 * 24


class _Hours(_Number):
    """HOURS of a report window: positive, at most :data:`MAX_HOURS`."""

    name = "number of hours"  # "'soon' is not a valid number of hours."

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number > MAX_HOURS:
            self.fail(
                f"{value} hours is more than {MAX_HOURS_YEARS} years: use --since for a"
                " window that long",
                param,
                ctx,
            )
        return number


class _Percent(click.ParamType):
    """A rate in percent, ``90`` or ``90%`` (:func:`~agentmetrics.formatting.parse_percent`);
    the value is passed on as written, for the rules that parse it the same way."""

    name = "percent"

    def convert(self, value, param, ctx):
        try:
            parse_percent(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value


HOURS = _Hours()
PERCENT = _Percent()
POSITIVE_INT = _Whole(min=1)
NON_NEGATIVE_INT = _Whole(min=0)
POSITIVE_NUMBER = _Number(min=0, min_open=True)
NON_NEGATIVE_NUMBER = _Number(min=0)
SQLITE_INT = _Whole(MIN_INTEGER, MAX_INTEGER)  # what an INTEGER column holds


def emit_report(
    df: pd.DataFrame, fmt: str, columns: list[str] | None = None, empty: str = "No rows."
) -> None:
    """:func:`emit` with durations, rates and times formatted; the table shows ``columns``.

    ``--json`` and ``--csv`` always carry every column of the report.
    """
    if fmt == "table" and columns is not None:
        df = df[columns]
    emit(df, fmt, formatters(df), empty=empty)


def emit_record(df: pd.DataFrame, fmt: str) -> None:
    """Print a one-row report: ``name  value`` lines, one JSON object, or CSV."""
    if fmt == "csv":
        emit(df, fmt)
        return
    if fmt == "json":
        records = json.loads(df.to_json(orient="records", date_format="iso"))
        write_exact(json.dumps(records[0] if records else {}, indent=2) + "\n")
        return
    shown = readable(df)
    width = max((len(str(k)) for k in df.columns), default=0)
    for name in df.columns:
        value = shown[name].iloc[0] if len(df) else None
        text = "-" if value is None or value is pd.NaT or value != value else str(value)
        click.echo(f"{name:<{width}}  {_cell(text)}")


def progress_shown() -> bool:
    """Whether long work draws a progress bar: only on a terminal (stderr, where it is
    drawn), and never in CI (which sets ``CI``), whose logs are not terminals to redraw."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() in ("", "0", "false")


class _Progress:
    """A progress bar on stderr for long work, when :func:`progress_shown`."""

    THRESHOLD = 10_000

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = progress_shown()
        self.bar = None

    def total(self, n: int) -> None:
        if n >= self.THRESHOLD and self.shown:
            # Redraw about 200 times in all, however fine-grained the updates.
            steps = max(1, n // 200)
            self.bar = click.progressbar(
                length=n, label=self.label, file=sys.stderr, update_min_steps=steps
            )
            self.bar.__enter__()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


_ORCHESTRATION_TABLE = [
    "session_id",
    "status",
    "started_at",
    "duration_ms",
    "total_tasks",
    "completed_tasks",
    "failed_tasks",
    "task_description",
]
_EXECUTION_TABLE = [
    "agent_session_id",
    "agent_name",
    "task_number",
    "status",
    "started_at",
    "duration_ms",
    "retry_count",
    "self_healed",
    "files_created",
    "files_modified",
    "error_message",
]


@cli.command(name="list")
@click.option("-n", "--limit", type=POSITIVE_INT, default=50, show_default=True)
@db_option
@output_options
@click.pass_context
def list_(ctx: click.Context, limit: int, fmt: str) -> None:
    """List the latest orchestrations, newest first."""
    from . import reports

    df = reports.list_orchestrations(read_db(ctx), limit=limit)
    emit_report(df, fmt, _ORCHESTRATION_TABLE, empty="No orchestrations recorded.")


@cli.command()
@click.argument("session_id")
@now_option
@db_option
@output_options
@click.pass_context
def show(ctx: click.Context, session_id: str, now: str | None, fmt: str) -> None:
    """Show one orchestration's metrics and timeline.

    On a terminal the timeline is a waterfall scaled to its width (one line per task,
    its attempts side by side, running ones up to --now); piped, a table of the
    executions in start order. --json and --csv give the metrics only.
    """
    from . import reports

    db = read_db(ctx)
    emit_record(reports.orchestration_summary(db, session_id), fmt)
    if fmt != "table":
        return
    frame = reports.timeline(db, session_id)
    click.echo()
    width = _terminal_width()
    if width is None:
        table = frame[_TIMELINE_TABLE]
        offsets = dict.fromkeys(("start_offset_ms", "end_offset_ms"), format_duration)
        emit(table, fmt, {**formatters(table), **offsets}, empty=_NO_EXECUTIONS)
        return
    from .outputs.waterfall import render

    for line in render(frame, width, now=now):
        click.echo(line)


_NO_EXECUTIONS = "No executions recorded for this orchestration."
_TIMELINE_TABLE = [
    "depth",
    "agent_name",
    "task_number",
    "attempt",
    "status",
    "start_offset_ms",
    "end_offset_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "error_message",
]


def _terminal_width() -> int | None:
    """The terminal's width when stdout is one, else None (a pipe gets tables)."""
    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


@cli.command()
@click.argument("agent_name")
@click.option("--list", "list_", is_flag=True, help="List the agent's executions instead.")
@click.option("-n", "--limit", type=POSITIVE_INT, help="With --list: only the newest N.")
@db_option
@output_options
@click.pass_context
def agent(ctx: click.Context, agent_name: str, list_: bool, limit: int | None, fmt: str) -> None:
    """Show one agent's statistics over all its executions."""
    from . import reports

    if list_:
        df = reports.agent_stats(read_db(ctx), agent_name, limit=limit)
        emit_report(df, fmt, _EXECUTION_TABLE)
    elif limit is not None:
        raise _UsageFailure("--limit only applies with --list")
    else:
        emit_record(reports.agent_summary(read_db(ctx), agent_name), fmt)


@cli.command()
@click.argument("session_id")
@db_option
@output_options
@click.pass_context
def executions(ctx: click.Context, session_id: str, fmt: str) -> None:
    """List one orchestration's executions in start order."""
    from . import reports

    df = reports.executions(read_db(ctx), session_id)
    emit_report(df, fmt, _EXECUTION_TABLE, empty=_NO_EXECUTIONS)


_duration_text = _checked(positive_duration)


def duration_option(name: str, help: str, default: str | None = None) -> Callable:
    """An option taking a duration with a unit (``90s``, ``15m``, ``6h``, ``3d``)."""
    return click.option(
        name,
        default=default,
        show_default=default is not None,
        callback=_duration_text,
        metavar="DURATION",
        help=help,
    )


stale_after_option = duration_option(
    "--stale-after", "Count unfinished runs as stale after this long without a sign of life.", "6h"
)


class _NumberArgument(click.Command):
    """Reads a negative number (``health -24``) as the argument, so its type says what is
    wrong with it, rather than as an unknown option ``-2``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))  # click consumes the list it gets
        except click.NoSuchOption as e:
            negative = [
                i for i, arg in enumerate(args) if arg.startswith(e.option_name) and _is_number(arg)
            ]
            if not negative or "--" in args:
                raise
            i = negative[-1]
            return super().parse_args(ctx, [*args[:i], *args[i + 1 :], "--", args[i]])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@cli.command(cls=_NumberArgument)
@click.argument("hours", type=HOURS, required=False)
@window_options("since", "until")
@click.option(
    "--min-success-rate", type=PERCENT, metavar="PCT", help="Fail below this rate (90 or 90%)."
)
@click.option("--max-running", type=NON_NEGATIVE_INT, metavar="N", help="Fail above N running.")
@click.option(
    "--max-failed", type=NON_NEGATIVE_INT, metavar="N", help="Fail above N failed executions."
)
@click.option(
    "--max-failed-orchestrations",
    type=NON_NEGATIVE_INT,
    metavar="N",
    help="Fail above N failed orchestrations.",
)
@duration_option("--max-p95", "Fail when p95 is over (5m).")
@click.option("--max-stale", type=NON_NEGATIVE_INT, metavar="N", help="Fail above N stale runs.")
@stale_after_option
@now_option
@db_option
@output_options
@click.pass_context
def health(
    ctx: click.Context,
    hours: float | None,
    since: str | None,
    until: str | None,
    stale_after: str,
    now: str | None,
    fmt: str,
    **limits: float | str | None,
) -> None:
    """System health over the last HOURS hours (default 24).

    A CI gate with the --max/--min options: exit 1 with the reason when unhealthy. Each
    limit is an alert rule evaluated as `agentmetrics check` does (no data in the window
    passes). --since/--until give the window instead of HOURS: it is then answered as of
    UNTIL (HOURS hours before it without --since).

    \b
    agentmetrics health 24 --min-success-rate 90 --max-running 0
    agentmetrics health --since 2026-11-01 --until 2026-11-08
    """
    from . import reports
    from .alerting import rules

    if hours is not None and since is not None:
        raise _UsageFailure("Give HOURS or --since, not both")
    end = _window_end(until, now)
    start = parse_timestamp(bound(since, now)) if since is not None else before(end, hours or 24)
    if start >= end:
        raise _UsageFailure(f"--since ({format_time(start)} UTC) is not before the window's end")
    hours = (end - start).total_seconds() / 3600
    now = to_iso(end)
    db = read_db(ctx)
    df = reports.system_health(db, hours=hours, now=now, stale_after=stale_after)
    if fmt == "table":
        length = "" if since is not None else f", last {hours:g} h"
        click.echo(
            f"Health of {ctx.obj['db_path']}{length}:"
            f" {format_time(start)} to {format_time(end)} UTC"
        )
    emit_record(df, fmt)
    gate = rules.health_rules(hours, stale_after, **limits)
    if gate:
        results = rules.evaluate(db, gate, now=now)
        failed = results[results["status"] != "ok"]
        if len(failed):
            reasons = (f"{m} {d}" for m, d in zip(failed["metric"], failed["detail"], strict=True))
            raise click.ClickException("Unhealthy: " + "; ".join(reasons))


def _window_end(until: str | None, now: str | None):
    """Where a window given by HOURS ends: at --until, else now."""
    return parse_timestamp(bound(until, now)) if until is not None else resolve_now(now)


@cli.command()
@window_options("since", "until", "agent", "now")
@db_option
@output_options
@click.pass_context
def performance(ctx: click.Context, fmt: str, **window) -> None:
    """Each agent's success rate and duration percentiles."""
    from . import reports

    df = reports.performance_report(read_db(ctx), **window)
    hidden = ("finished", "in_progress", "min_duration_ms", "files_modified")
    columns = [c for c in df.columns if c not in hidden]
    emit_report(df, fmt, columns, empty="No agent executions recorded.")


costs_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file with a [costs] table (default: agentmetrics.toml or pyproject.toml).",
)


def _cost_rates(config_path: str | None) -> dict:
    """The checked ``[costs]`` table of ``--config`` (or of the file found from cwd)."""
    from .alerting.config import load_config
    from .reports.cost import cost_rates

    return cost_rates(load_config(config_path))


@cli.command(cls=_NumberArgument)
@click.argument("hours", type=HOURS, required=False)
@window_options("since", "until", "agent", "now")
@costs_config_option
@db_option
@output_options
@click.pass_context
def retries(
    ctx: click.Context,
    hours: float | None,
    since: str | None,
    until: str | None,
    now: str | None,
    config_path: str | None,
    fmt: str,
    agent: str | None,
) -> None:
    """Tasks, attempts and retries per agent.

    First-attempt and eventual success, tasks rescued by a retry, time and cost of failed
    attempts, the top reasons retried. Over the last HOURS hours (default 24, before
    --until, else now), or --since/--until. Failed attempts are priced like `agentmetrics
    costs` prices them.

    \b
    agentmetrics retries 24
    agentmetrics retries --since 7d --agent coder --json
    """
    from .formatting import format_usd
    from .reports.retries import retries as retries_

    if hours is not None and since is not None:
        raise _UsageFailure("Give HOURS or --since, not both")
    if since is None:
        end = _window_end(until, now)
        since, until = to_iso(before(end, hours or 24)), to_iso(end)
    df = retries_(
        read_db(ctx), since=since, until=until, agent=agent, now=now, rates=_cost_rates(config_path)
    )
    if fmt != "table":
        emit(df, fmt)
        return
    shown = df.drop(columns=["retried_tasks", "failed_attempts", "top_reasons"])
    money = {
        "failed_cost_usd": format_usd,
        "attempts_per_task": lambda x: "-" if pd.isna(x) else f"{x:.2f}",
    }
    emit(shown, fmt, {**formatters(shown), **money}, empty="No finished attempts in this window.")
    for name, reasons in zip(df["agent_name"], df["top_reasons"], strict=True):
        if reasons is not None:
            click.echo(f"\nRetried {name} after: {printable(reasons)}")


@cli.command(cls=_NumberArgument)
@click.argument("limit", type=POSITIVE_INT, default=50)
@click.option("--include-partial", is_flag=True, help="Include partial orchestrations.")
@db_option
@output_options
@click.pass_context
def failures(ctx: click.Context, limit: int, include_partial: bool, fmt: str) -> None:
    """List the latest failed orchestrations.

    At most LIMIT of them (default 50), newest first.
    """
    from . import reports

    df = reports.failed_orchestrations(read_db(ctx), limit=limit, include_partial=include_partial)
    columns = [*_ORCHESTRATION_TABLE[:-1], "task_completion_rate", "task_description"]
    emit_report(df, fmt, columns, empty="No failed orchestrations.")


@cli.command()
@click.argument("session_id", required=False)
@click.option(
    "-f",
    "--format",
    "format_",
    default="json",
    show_default=True,
    help="json (the original's shape), jsonl (one object per line), otlp (OpenTelemetry"
    " traces as OTLP/JSON lines), otlp-protobuf (the same as one OTLP protobuf message),"
    " csv or parquet (one table: --table, or both into the -o directory).",
)
@click.option(
    "-o", "--output", type=click.Path(), help="Write to this file (csv/parquet: a directory)."
)
@click.option(
    "--table",
    type=click.Choice(["executions", "orchestrations"]),
    help="csv/parquet: export only this table (to stdout or the -o file).",
)
@db_option
@click.pass_context
def export(
    ctx: click.Context,
    session_id: str | None,
    format_: str,
    output: str | None,
    table: str | None,
) -> None:
    """Export all data, or one session, streamed.

    As JSON (the default), JSON Lines, OTLP, CSV or Parquet.

    \b
    agentmetrics export > all-data.json
    agentmetrics export SESSION_ID -o session.json
    agentmetrics export --format jsonl -o all.jsonl
    agentmetrics export --format otlp -o traces.jsonl
    agentmetrics export --format otlp-protobuf -o traces.pb
    agentmetrics export --format csv --table executions > executions.csv
    agentmetrics export --format parquet -o tables/
    """
    from .exchange import EXPORT_FORMATS, TABLE_FORMATS
    from .exchange import export as export_

    if format_ not in EXPORT_FORMATS:
        raise _UsageFailure(f"Unknown format {format_!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if format_ in TABLE_FORMATS:
        _export_tables(ctx, format_, session_id, table, output)
        return
    if table is not None:
        raise _UsageFailure(f"--table only applies to --format {' or '.join(TABLE_FORMATS)}")
    binary = EXPORT_FORMATS[format_].binary
    db = read_db(ctx)
    if output is None:
        if binary and sys.stdout.isatty():
            raise _UsageFailure(f"--format {format_} is binary: use -o FILE or a pipe")
        export_(db, sys.stdout.buffer if binary else sys.stdout, format_, session_id)
        return
    with atomic_file(output, binary=binary) as out, _Progress("Exporting") as bar:
        if bar.shown and session_id is None:
            bar.total(_count_rows(db, "agent_executions"))
        counts = export_(db, out, format_, session_id, progress=bar.update)
    click.echo(
        f"Exported {counts.orchestrations} orchestrations and {counts.executions}"
        f" executions to {output}",
        err=True,
    )


def _count_rows(db: Database, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _print_import(result) -> None:
    for label, counts in (
        ("Orchestrations", result.orchestrations),
        ("Executions", result.executions),
    ):
        click.echo(
            f"{label}: {counts.inserted} inserted, {counts.updated} updated,"
            f" {counts.skipped} skipped"
        )


@cli.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "format_",
    type=click.Choice(["json", "otlp"]),
    default="json",
    show_default=True,
    help="json: exports, ours or the original's (JSON or JSON Lines); otlp: OpenTelemetry"
    " traces (OTLP/JSON Lines or protobuf, gzip or not).",
)
@db_option
@click.pass_context
def import_(ctx: click.Context, files: tuple[str, ...], format_: str) -> None:
    """Import export files or OpenTelemetry traces.

    Export files are JSON or JSON Lines, ours or the original's; traces (--format otlp) are
    OTLP/JSON Lines or protobuf. Rows are matched by session id: a stored row is replaced
    only by one further along (finished beats running; a later completed_at wins). A
    malformed file is rejected whole and nothing is imported. Rows are written in short
    transactions (trackers keep writing meanwhile); an interrupted import completes when run
    again. Spans become orchestrations and executions as docs/opentelemetry.md maps them;
    importing the same spans again changes nothing.

    \b
    agentmetrics import all-data.json
    agentmetrics import --format otlp traces.jsonl spans.pb
    """
    if format_ == "otlp":
        from .otel.ingest import ingest_files

        with _Progress("Importing spans") as bar:
            ingested = ingest_files(
                ctx.obj["db_path"], files, progress=bar.update, on_total=bar.total
            )
        click.echo(
            f"Spans: {ingested.accepted} imported; orchestrations: {ingested.new_orchestrations}"
            f" new, executions: {ingested.new_executions} new"
        )
        return
    from .exchange import import_files

    with _Progress("Importing") as bar:
        result = import_files(ctx.obj["db_path"], files, progress=bar.update, on_total=bar.total)
    _print_import(result)


@cli.command()
@click.argument("databases", nargs=-1, required=True, type=click.Path(dir_okay=False))
@db_option
@click.pass_context
def merge(ctx: click.Context, databases: tuple[str, ...]) -> None:
    """Merge other database files into the database.

    Files of agentmetrics or of the original tool; they are only read, and rows follow the
    same rules as import.
    """
    from .exchange import merge_databases

    with _Progress("Merging") as bar:
        result = merge_databases(
            ctx.obj["db_path"], databases, progress=bar.update, on_total=bar.total
        )
    _print_import(result)


@cli.command(cls=_NumberArgument)
@click.argument("days", type=NON_NEGATIVE_NUMBER)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Give the freed space back to the file system (in short steps on a file"
    " agentmetrics created; other files: one VACUUM, writers wait throughout).",
)
@now_option
@db_option
@click.pass_context
def cleanup(ctx: click.Context, days: float, dry_run: bool, vacuum: bool, now: str | None) -> None:
    """Delete the runs started more than DAYS days ago.

    Orchestrations with their executions, and standalone executions of the same age
    (0: everything started before now).
    """
    from .store.cleanup import cleanup as cleanup_
    from .store.cleanup import vacuum as vacuum_

    db = read_db(ctx)
    with _Progress("Deleting") as bar:
        if bar.shown and not dry_run:
            counted = cleanup_(db, days, now=now, dry_run=True)
            bar.total(
                counted.orchestrations
                + counted.executions
                + counted.standalone_executions
                + counted.spans
            )
        result = cleanup_(db, days, now=now, dry_run=dry_run, progress=bar.update)
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {result.orchestrations} orchestrations with {result.executions} executions,"
        f" and {result.standalone_executions} standalone executions"
        f" (started before {result.cutoff})"
    )
    if vacuum and not dry_run:
        freed = vacuum_(db)
        click.echo(f"Vacuumed: {freed / 1e6:.1f} MB freed")


@cli.command()
@db_option
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Build the indexes and rollups a large file lacks.

    Opening a file never builds them when it holds many rows, as that holds the write
    lock for seconds; reports work without them, only slower. Writers wait while each
    index is built: run this when they can (the estimate comes first, on stderr).
    """
    from .store.db import upgrade as upgrade_

    timings = upgrade_(ctx.obj["db_path"], progress=lambda m: click.echo(m, err=True))
    if timings:
        indexes = len(timings) - ("rollups" in timings)
        built = " and ".join(
            ([f"{indexes} report indexes"] if indexes else [])
            + (["the rollups"] if "rollups" in timings else [])
        )
        click.echo(f"Built {built} in {sum(timings.values()):.1f}s")


@cli.command()
@db_option
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Apply the writes kept in DB.pending.jsonl.

    The tracking writes kept there while the database was unavailable. Any tracking write
    applies them too; this is for when no tracker runs any more.
    """
    from .errors import StorageError
    from .monitor import Monitor
    from .store.pending import REJECTED_SUFFIX, count_kept

    path = ctx.obj["db_path"]
    if not count_kept(path):
        click.echo(f"No tracking writes wait for {path}")
        return
    monitor = Monitor(path, strict=True)
    failure = None
    try:
        waiting = monitor.flush()
    except StorageError as e:  # what a replay that failed midway did is still reported
        failure = e
    finally:
        monitor.close()  # without a second wait for a database that failed just now
    if monitor.applied or monitor.rejected or not failure:
        rejected = monitor.rejected
        click.echo(
            f"Applied {monitor.applied:,} tracking writes to {path}"
            + (f"; rejected {rejected:,}, kept in {path}{REJECTED_SUFFIX}" if rejected else "")
        )
    if failure:
        raise failure
    if waiting:
        raise click.ClickException(
            f"{waiting:,} tracking writes still wait for {path}: is the database locked or"
            " read-only?"
        )


# -- costs, metrics, watch and report (dashboard and integrations) ---------------------


def _export_tables(
    ctx: click.Context, format_: str, session_id: str | None, table: str | None, output: str | None
) -> None:
    from .exchange import TABLES, export_table, export_tables, write_csv

    if session_id is not None:
        raise _UsageFailure(f"--format {format_} exports whole tables, not one session")
    db = read_db(ctx)
    if table is None:
        if output is None:
            raise _UsageFailure(
                f"--format {format_} needs --table executions|orchestrations,"
                " or -o DIRECTORY for both tables"
            )
        with _Progress("Exporting") as bar:
            if bar.shown:
                bar.total(sum(_count_rows(db, stored) for stored, _ in TABLES.values()))
            written = export_tables(db, output, format_, progress=bar.update)
        for name, path in written.items():
            click.echo(f"Exported {name} to {path}", err=True)
    elif output is not None:
        with _Progress("Exporting") as bar:
            if bar.shown:
                bar.total(_count_rows(db, TABLES[table][0]))
            rows = export_table(db, table, output, format_, progress=bar.update)
        click.echo(f"Exported {rows} {table} to {output}", err=True)
    elif format_ == "parquet":
        raise _UsageFailure("--format parquet needs -o FILE (it is a binary format)")
    else:
        write_csv(db, table, sys.stdout)


@cli.command()
@click.option(
    "--by",
    type=click.Choice(["agent", "day", "orchestration"]),
    default="agent",
    show_default=True,
    help="Group the costs by agent, UTC day or orchestration.",
)
@window_options("since", "until", "agent", "now")
@costs_config_option
@output_options
@db_option
@click.pass_context
def costs(
    ctx: click.Context,
    by: str,
    config_path: str | None,
    fmt: str,
    **window,
) -> None:
    """Estimate the cost of finished executions.

    Each figure says how it was produced. Recorded cost_usd is used as is; token counts are
    priced with [costs.models]; otherwise execution time is priced at the agent's hourly
    rate.

    \b
    agentmetrics costs
    agentmetrics costs --by day --since 2026-01-01 --json
    """
    from .formatting import format_usd
    from .reports.cost import costs as costs_

    df = costs_(read_db(ctx), rates=_cost_rates(config_path), by=by, **window)
    if fmt != "table":
        emit(df, fmt)
        return
    shown = df.drop(columns=["time_priced", "token_priced", "recorded_priced"])
    if by == "orchestration":
        shown = shown.drop(columns=["orchestration_id"]).fillna({"session_id": "(none)"})
    elif by == "day":
        shown["day"] = shown["day"].dt.strftime("%Y-%m-%d")
    money = {c: format_usd for c in shown.columns if c.endswith("cost_usd")}
    emit(shown, fmt, {**formatters(shown), **money}, empty="No finished executions.")
    if len(df):
        total = format_usd(df["cost_usd"].sum())
        click.echo(f"\nTotal: {total} over {df['finished'].sum()} finished executions")


@cli.command()
@stale_after_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to this file atomically (for node_exporter's textfile collector).",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NAME=VALUE",
    help="A constant label for every series (repeatable), e.g. db=runner-3.",
)
@now_option
@db_option
@click.pass_context
def metrics(
    ctx: click.Context,
    stale_after: str,
    output: str | None,
    labels: tuple[str, ...],
    now: str | None,
) -> None:
    """Print Prometheus metrics (text exposition format).

    \b
    agentmetrics metrics -o /var/lib/node_exporter/textfile/agentmetrics.prom
    agentmetrics metrics --label db=runner-3 -o /var/lib/node_exporter/textfile/runner-3.prom
    """
    from .outputs.prometheus import metrics_text, parse_labels

    try:
        constant = parse_labels(labels)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--label'") from None
    text = metrics_text(read_db(ctx), now=now, stale_after=stale_after, labels=constant)
    if output is None:
        write_exact(text)
        return
    # node_exporter may read at any moment: it must only ever see a whole file.
    with atomic_file(output) as out:
        out.write(text)


@cli.command(name="datasette-metadata")
@db_option
@click.pass_context
def datasette_metadata(ctx: click.Context) -> None:
    """Print Datasette metadata for the database.

    Internal tables hidden, newest first, column descriptions and units, canned queries
    (health, failures, slowest agents).

    \b
    agentmetrics --db monitoring.db datasette-metadata > metadata.json
    datasette monitoring.db -m metadata.json
    """
    from .outputs.datasette import datasette_metadata as metadata

    read_db(ctx)  # a missing or foreign file is an error, as for every read
    write_exact(json.dumps(metadata(ctx.obj["db_path"]), indent=2) + "\n")


# -- stale runs, regressions and alerting rules ------------------------------------------


@cli.command()
@stale_after_option
@click.option("--dry-run", is_flag=True, help="Only list what would be reaped.")
@now_option
@output_options
@db_option
@click.pass_context
def reap(ctx: click.Context, stale_after: str, dry_run: bool, now: str | None, fmt: str) -> None:
    """Close stale runs (left by a crashed process).

    Orchestrations still running and executions still in progress with no sign of life for
    --stale-after. Each gets completed_at = its last sign of life and an "abandoned: ..."
    message. An execution ends failed; an orchestration's task counts are recounted from its
    executions and it ends completed, partial or failed by the one status rule, every task
    that did not complete counted as failed (failed when it has no task). Finished rows are
    never touched. All in one transaction.
    """
    from .formatting import format_duration
    from .maintenance import reap as reap_

    runs = reap_(read_db(ctx), stale_after=stale_after, now=now, dry_run=dry_run)
    if fmt != "table":
        emit(runs, fmt)
        return
    kinds = runs["kind"].value_counts()
    verb = "Would reap" if dry_run else "Reaped"
    click.echo(
        f"{verb} {kinds.get('orchestration', 0)} orchestrations and"
        f" {kinds.get('execution', 0)} executions with no sign of life for {stale_after}"
    )
    if len(runs):
        shown = runs[["kind", "session_id", "agent_name", "last_seen_at", "age_ms"]]
        emit(shown.rename(columns={"age_ms": "age"}), fmt, {"age": format_duration})


def _regression_formatters(metric: str) -> dict[str, Callable]:
    from .formatting import format_duration, format_percent

    value = format_percent if metric == "success_rate" else format_duration

    def change(x: float) -> str:
        if x != x:
            return "-"
        return f"{x:+.1f} pts" if metric == "success_rate" else f"{x:.2f}x"

    def p_value(p: float) -> str:
        return "-" if p != p else f"{p:.2g}"

    return {
        "baseline_value": value,
        "recent_value": value,
        "change": change,
        "p_value": p_value,
        "p_adjusted": p_value,
        "regressed": lambda flag: "REGRESSED" if flag else "",
    }


@cli.command()
@duration_option("--recent", "Recent window, ending now.", "3d")
@duration_option("--baseline", "Baseline window, just before it.", "14d")
@click.option(
    "--metric",
    type=click.Choice(REGRESSION_METRICS),
    default="p95_duration_ms",
    show_default=True,
)
@click.option(
    "--min-samples",
    type=POSITIVE_INT,
    default=20,
    show_default=True,
    help="Finished executions needed in each window.",
)
@click.option(
    "--threshold",
    type=POSITIVE_NUMBER,
    help="Ratio for durations (default 1.2) or drop in points for success_rate (5).",
)
@click.option(
    "--alpha", type=POSITIVE_NUMBER, default=0.01, show_default=True, help="Significance level."
)
@click.option("--agent", help="Only this agent.")
@now_option
@output_options
@db_option
@click.pass_context
def regressions(
    ctx: click.Context,
    recent: str,
    baseline: str,
    metric: str,
    min_samples: int,
    threshold: float | None,
    alpha: float,
    agent: str | None,
    now: str | None,
    fmt: str,
) -> None:
    """Compare each agent's recent runs with its baseline.

    The recent window against the baseline before it; exit 1 if any agent regressed (a
    practical change, significant, with enough runs).

    \b
    Example, in CI:
        agentmetrics regressions --recent 3d --baseline 14d --metric success_rate
    """
    from .reports.regression import regressions as regressions_

    df = regressions_(
        read_db(ctx),
        recent=recent,
        baseline=baseline,
        now=now,
        metric=metric,
        min_samples=min_samples,
        threshold=threshold,
        alpha=alpha,
        agent=agent,
    )
    found = int(df["regressed"].sum())
    if fmt == "table":
        click.echo(
            f"{found} of {len(df)} agents regressed ({metric}, last {recent}"
            f" vs the {baseline} before)"
        )
        if len(df):
            emit(df.drop(columns="metric"), fmt, _regression_formatters(metric))
    else:
        emit(df, fmt)
    if found:
        ctx.exit(1)


def _notify_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check the webhook URL; messages show only its scheme and host (it is a secret)."""
    import urllib.parse

    from .alerting.notify import redact_url

    if value == "":  # an unset CI secret: no notification
        return None
    if value is None:
        return None
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # its message may quote part of the URL
        raise click.BadParameter("not a valid URL: check its host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"not an http(s) URL: {redact_url(value)}")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise click.BadParameter(f"{redact_url(value)}...: spaces or control characters in URL")
    return value


@cli.command()
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False),
    help="Rules file (default: agentmetrics.toml, or [tool.agentmetrics] in pyproject.toml).",
)
@click.option("--json", "json_", is_flag=True, help="Output JSON.")
@click.option(
    "--notify",
    metavar="URL",
    callback=_notify_url,
    help="POST a JSON message (Slack-compatible) here when a rule is not ok.",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@now_option
@db_option
@click.pass_context
def check(
    ctx: click.Context,
    rules_path: str | None,
    json_: bool,
    notify: str | None,
    strict: bool,
    now: str | None,
) -> None:
    """Evaluate the alerting rules and print their status.

    Each rule's status and value. Exit codes: 0 when every rule is ok or only warns
    (--strict: warnings exit 1), 1 when a rule alerts, 2 for a configuration error.
    """
    from .alerting import notify as notify_
    from .alerting import rules as rules_

    rule_set = rules_.load_rules(rules_path)
    results = rules_.evaluate(read_db(ctx), rule_set, now=now)
    message = rules_.payload(results, database=ctx.obj["db_path"])
    if json_:
        write_exact(json.dumps(message, indent=2) + "\n")
    else:
        emit(rules_.for_display(results), "table")
        click.echo(message["text"].splitlines()[0])
    status = message["status"]
    if notify and status != "ok":
        problem = notify_.notify(notify, message, timeout=notify_.NOTIFY_TIMEOUT)
        where = notify_.redact_url(notify)
        if problem:
            click.echo(f"Warning: could not notify {where}: {problem}", err=True)
        else:
            click.echo(f"Notified {where}", err=True)
    if status == "alert" or (strict and status == "warn"):
        ctx.exit(1)


# -- demo data, trends and charts ------------------------------------------------------


@cli.command()
@click.option("--days", type=POSITIVE_NUMBER, default=30, show_default=True, help="Days of data.")
@click.option(
    "--orchestrations",
    type=_Whole(1, 1_000_000),  # ~10M executions
    default=600,
    show_default=True,
    help="How many orchestrations (about ten executions each).",
)
@click.option("--seed", type=SQLITE_INT, default=42, show_default=True, help="Random seed.")
@click.option("--now", help="When the demo ends (UTC timestamp; default: the current minute).")
@click.option("--replace", is_flag=True, help="Delete the data already in the database.")
@db_option
@click.pass_context
def demo(
    ctx: click.Context, days: float, orchestrations: int, seed: int, now: str | None, replace: bool
) -> None:
    """Build a realistic demo database.

    The same --seed and --now give the same data. Seven agents over --days days: one got
    slower in the last week, one is flaky, some runs are retried and self-heal, a few
    orchestrations are still running. Refuses a database that holds other data unless
    --replace is given; an earlier demo build is rebuilt.

    \b
    Example:
        agentmetrics demo --db data/demo.db && agentmetrics --db data/demo.db health
    """
    from .demo import build_demo

    path = ctx.obj["db_path"]
    with _Progress("Building the demo") as bar:
        bar.total(orchestrations)
        built = build_demo(
            path,
            days=days,
            orchestrations=orchestrations,
            seed=seed,
            now=now,
            replace=replace,
            progress=bar.update,
        )
    click.echo(
        f"Built {path}: {built['orchestrations']} orchestrations, {built['executions']} "
        f"executions over {built['days']:g} days up to {built['now']} (seed {built['seed']})"
    )


def freq_option(help: str) -> Callable:
    """``--freq``: a period of :data:`~agentmetrics.reports.trend.FREQUENCIES` (else exit 2)."""
    return click.option(
        "--freq", type=click.Choice(FREQUENCIES), default="D", show_default=True, help=help
    )


@cli.command()
@freq_option("Period: h (hour), D (day), W (week).")
@click.option("--by-agent", is_flag=True, help="One row per period and agent.")
@window_options("since", "until", "agent", "now")
@db_option
@output_options
@click.pass_context
def trends(ctx: click.Context, freq: str, by_agent: bool, fmt: str, **window) -> None:
    """Executions, success rate and durations over time.

    Per hour, day or week: executions, success rate, p50 and p95 duration.
    """
    from . import reports

    df = reports.trends(read_db(ctx), freq=freq, by_agent=by_agent, **window)
    emit_report(df, fmt, empty="No agent executions in this window.")


_CHARTS = ("trends", "durations", "failures", "distribution", "timeline")
# The figures are at most 12 x 6 inches: 600 dpi (print quality) draws 7,200 x 3,600
# pixels in about 260 MB and 10 s; 1200 took 520 MB and 20 s; 100000 a MemoryError.
MIN_DPI, MAX_DPI = 10, 600


@cli.command()
@click.argument("chart", type=click.Choice(_CHARTS))
@click.argument("session_id", required=False)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Image file to write."
)
@freq_option("Period for trends and durations.")
@click.option(
    "--dpi",
    type=_Whole(MIN_DPI, MAX_DPI),
    default=100,
    show_default=True,
    help=f"Resolution, {MIN_DPI} to {MAX_DPI} dots per inch.",
)
@window_options("since", "until", "agent", "now")
@db_option
@click.pass_context
def plot(
    ctx: click.Context,
    chart: str,
    session_id: str | None,
    output: str,
    freq: str,
    dpi: int,
    **window,
) -> None:
    """Draw a chart into a PNG, SVG or PDF file.

    The format follows the file's extension.

    \b
    trends        executions per period and the success rate
    durations     p50 and p95 duration per period, one line per agent
    failures      failures by agent and by error pattern
    distribution  duration box plot per agent
    timeline      one orchestration's executions: plot timeline SESSION -o FILE
    """
    from . import plots, reports

    if (chart == "timeline") != (session_id is not None):
        raise _UsageFailure(
            "timeline needs a SESSION" if chart == "timeline" else f"{chart} takes no SESSION"
        )
    db = read_db(ctx)
    if chart == "timeline":
        df = reports.timeline(db, session_id, spans=True)
        fig = plots.plot_timeline(df, now=window["now"])
        empty = False  # an orchestration without executions still has its chart
    elif chart == "trends":
        df = reports.trends(db, freq=freq, **window)
        fig = plots.plot_trends(df)
        empty = not df["executions"].any()
    elif chart == "durations":
        df = reports.trends(db, freq=freq, by_agent=True, **window)
        fig = plots.plot_durations(df)
        empty = not df["executions"].any()
    elif chart == "failures":
        by_agent = reports.self_healing(db, **window)
        fig = plots.plot_failures(by_agent, reports.error_patterns(db, **window))
        empty = not by_agent["failed"].any()
    else:
        df = reports.durations(db, **window)
        fig = plots.plot_duration_distribution(df)
        empty = df.empty
    if empty:
        raise click.ClickException("Nothing to plot: no matching executions in this window")
    image_format = _image_format(fig, output)
    with atomic_file(output, binary=True) as out:
        fig.savefig(out, dpi=dpi, format=image_format)
    click.echo(f"Wrote {output}")


def _image_format(fig, output: str) -> str:
    """The format named by the file's extension, checked before anything is written."""
    import os

    extension = os.path.splitext(output)[1].lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if extension not in supported:
        given = f"Format {extension!r} is not supported" if extension else "No file extension"
        raise _UsageFailure(f"{given}: use one of {', '.join(sorted(supported))}")
    return extension


@cli.command()
@click.option(
    "-n",
    "--interval",
    type=_Number(min=0, min_open=True, max=86400),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes (at most a day).",
)
@click.option(
    "--minutes",
    # Finished executions are looked up over the last day only (watch.RECENT_LOOKBACK_MINUTES).
    type=_Number(min=0, min_open=True, max=24 * 60),
    default=15,
    show_default=True,
    help="List executions finished in the last N minutes.",
)
@click.option("--iterations", type=POSITIVE_INT, help="Stop after N refreshes.")
@click.option("--once", is_flag=True, help="Print one view and exit (no screen clearing).")
@db_option
@click.pass_context
def watch(
    ctx: click.Context, interval: float, minutes: float, iterations: int | None, once: bool
) -> None:
    """Live view of running and recent runs.

    Running orchestrations, recent executions, the last hour, failures. Reads through a
    read-only connection, so it can run while agents write. Press Ctrl-C to stop.
    """
    import shutil

    from .outputs.watch import watch as watch_

    # Read-only, so the schema is never created here: a file with no agentmetrics
    # tables is a DatabaseError.
    db = open_database(ctx.obj["db_path"], read_only=True)
    ctx.call_on_close(db.close)
    try:
        watch_(
            db,
            interval=interval,
            iterations=1 if once else iterations,
            width=lambda: shutil.get_terminal_size((100, 24)).columns,
            height=lambda: shutil.get_terminal_size((100, 24)).lines,
            clear=not once and sys.stdout.isatty(),
            recent_minutes=minutes,
        )
    except KeyboardInterrupt:
        click.echo()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4318,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--max-body-mib",
    type=_Number(min=0, min_open=True, max=1024),
    default=32,
    show_default=True,
    help="Largest request body accepted, compressed or not (MiB).",
)
@click.option(
    "--max-buffered-mib",
    type=_Number(min=0, min_open=True, max=65536),
    default=None,
    help="Request bytes all connections together may hold; more are answered 503"
    " (MiB, at least --max-body-mib)  [default: twice --max-body-mib]",
)
@click.option(
    "--max-connections",
    type=POSITIVE_INT,
    default=256,
    show_default=True,
    help="Connections served at once; more are answered 503.",
)
@db_option
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    max_body_mib: float,
    max_buffered_mib: float | None,
    max_connections: int,
) -> None:
    """Receive OpenTelemetry traces over OTLP/HTTP.

    POST /v1/traces takes protobuf or JSON, gzip or not; agent spans become executions
    and workflows orchestrations, as `import --format otlp` does. Stops on Ctrl-C or
    SIGTERM.

    \b
    agentmetrics serve
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 python my_agent.py
    """
    from .otel.receiver import serve as serve_

    def ready(server) -> None:
        click.echo(
            f"Receiving traces on {server.url}/v1/traces into {ctx.obj['db_path']}"
            " (Ctrl-C to stop)",
            err=True,
        )

    max_body = int(max_body_mib * 1024 * 1024)
    max_buffered = None if max_buffered_mib is None else int(max_buffered_mib * 1024 * 1024)
    if max_buffered is not None and max_buffered < max_body:
        raise click.BadParameter(
            f"{max_buffered_mib:g} is under --max-body-mib ({max_body_mib:g})",
            param_hint="--max-buffered-mib",
        )
    totals = serve_(
        ctx.obj["db_path"],
        host,
        port,
        max_body=max_body,
        max_connections=max_connections,
        max_buffered=max_buffered,
        ready=ready,
    )
    click.echo(
        f"Stopped: {totals.accepted} spans stored, {totals.rejected} rejected,"
        f" in {totals.requests} requests ({totals.failed_requests} refused)",
        err=True,
    )


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="report.html",
    show_default=True,
    help="The HTML file to write.",
)
@window_options("since", "until", "now")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False),
    help="Alert rules file (default: the rules in agentmetrics.toml, if any).",
)
@click.option("--title", default="agentmetrics report", show_default=True)
@db_option
@click.pass_context
def report(
    ctx: click.Context,
    output: str,
    since: str | None,
    until: str | None,
    now: str | None,
    rules_path: str | None,
    title: str,
) -> None:
    """Write a self-contained HTML report.

    Health, agents, trends, failures and costs of the 7 days before --until (default:
    now), or from --since.

    \b
    agentmetrics report -o report.html
    agentmetrics report --since 2026-01-01 --until 2026-02-01 -o january.html
    """
    from .outputs.htmlreport import write_report

    db = read_db(ctx)
    path = write_report(
        db, output, since=since, until=until, now=now, rules_path=rules_path, title=title
    )
    click.echo(f"Wrote {path}", err=True)
