"""The ``agentmetrics`` command line: a thin layer over the library's functions."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable

import click
import pandas as pd
from sqlite_utils import Database

from .db import DEFAULT_PATH, ENV_VAR, open_database
from .errors import AgentMetricsError


class _Group(click.Group):
    """Turns agentmetrics' own errors into one ``Error: ...`` line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (AgentMetricsError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"Database error: {e}") from None
        except BrokenPipeError:
            sys.stderr.close()  # output piped into `head`: not an error
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentmetrics")
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
    """Open the --db file for reading; a missing file is an error and is not created."""
    db = open_database(ctx.obj["db_path"], create=False)
    ctx.call_on_close(db.close)
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
            raise click.UsageError("Use just one of --json or --csv")
        return fn(*args, fmt="json" if json_ else "csv" if csv_ else "table", **kwargs)

    return click.decorators.update_wrapper(wrapper, fn)


def emit(
    df: pd.DataFrame,
    fmt: str,
    formatters: dict[str, Callable] | None = None,
    empty: str = "No rows.",
) -> None:
    """Print a report DataFrame as a readable table, JSON records or CSV."""
    if fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
    elif fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif df.empty:
        click.echo(empty)
    else:
        shown = df.copy()
        for column, formatter in (formatters or {}).items():
            if column in shown:
                shown[column] = shown[column].map(formatter)
        click.echo(shown.to_string(index=False, na_rep="-"))
