"""Prometheus text exposition of a monitoring database.

``agentmetrics metrics > /var/lib/node_exporter/textfile/agentmetrics.prom`` (from cron
or a systemd timer, via a temporary file and ``mv`` so node_exporter never reads half a
file) lets node_exporter's textfile collector publish these metrics:

- ``agentmetrics_executions_total{agent,status}``: finished executions (counter)
- ``agentmetrics_execution_duration_seconds{agent}``: histogram of their durations
- ``agentmetrics_success_ratio{agent}``: completed / finished executions (0-1)
- ``agentmetrics_orchestrations{status}``: orchestrations by status
- ``agentmetrics_running{kind}``: orchestrations running / executions in progress
- ``agentmetrics_stale{kind}``: of those, the ones with no sign of life for 6h
  (see :mod:`agentmetrics.reports.stale`)

Every number is aggregated in SQL; the histogram buckets too. Constant labels
(``metrics --label db=runner-3``) go on every series, so the files of several databases
can sit in one textfile-collector folder without colliding.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping

from ..errors import InvalidValue
from ..reports.stale import DEFAULT_STALE_AFTER, STALE_SQL, stale_cutoff
from ..store.db import DbArg, reading
from ..window import TimeArg

# Seconds: agent executions last from about a second to about an hour.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
PREFIX = "agentmetrics_"
# The text format's label names; names starting with __ are reserved for Prometheus.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels our series carry themselves: a constant label of the same name would clash.
SERIES_LABELS = ("agent", "status", "le", "kind")


@dataclasses.dataclass
class Family:
    """One metric family: its samples are ``(suffix, labels, value)``."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = dataclasses.field(default_factory=list)


def collect(
    db: DbArg,
    now: TimeArg = None,
    stale_after: str | dt.timedelta = DEFAULT_STALE_AFTER,
    buckets: tuple[float, ...] = DURATION_BUCKETS,
) -> list[Family]:
    """Read the metrics from the database (see the module docstring for the list)."""
    if list(buckets) != sorted(set(buckets)) or not buckets:
        raise InvalidValue("buckets must be distinct and increasing")
    executions = Family(
        PREFIX + "executions_total", "counter", "Finished agent executions by agent and status."
    )
    durations = Family(
        PREFIX + "execution_duration_seconds",
        "histogram",
        "Duration of finished agent executions.",
    )
    ratio = Family(
        PREFIX + "success_ratio",
        "gauge",
        "Completed executions as a fraction of finished executions, per agent.",
    )
    orchestrations = Family(PREFIX + "orchestrations", "gauge", "Orchestrations by status.")
    running = Family(
        PREFIX + "running", "gauge", "Orchestrations running and executions in progress."
    )
    stale = Family(
        PREFIX + "stale",
        "gauge",
        f"Unfinished runs with no sign of life for {stale_after}.",
    )
    bucket_sql = ", ".join(f"sum(duration_ms <= :b{i}) AS b{i}" for i in range(len(buckets)))
    bucket_params = {f"b{i}": bound * 1000 for i, bound in enumerate(buckets)}
    with reading(db) as conn:
        for agent, status, count in conn.execute(
            "SELECT agent_name, status, count(*) FROM agent_executions"
            " WHERE status != 'in_progress' GROUP BY agent_name, status"
            " ORDER BY agent_name, status"
        ):
            executions.samples.append(("", {"agent": agent, "status": status}, count))
        rows = conn.execute(
            f"SELECT agent_name, count(*), total(duration_ms), {bucket_sql}"
            " FROM agent_executions WHERE status != 'in_progress' AND duration_ms IS NOT NULL"
            " GROUP BY agent_name ORDER BY agent_name",
            bucket_params,
        ).fetchall()
        for agent, count, total_ms, *cumulative in rows:
            for bound, in_bucket in zip(buckets, cumulative, strict=True):
                durations.samples.append(
                    ("_bucket", {"agent": agent, "le": _number(bound)}, in_bucket)
                )
            durations.samples.append(("_bucket", {"agent": agent, "le": "+Inf"}, count))
            durations.samples.append(("_sum", {"agent": agent}, total_ms / 1000))
            durations.samples.append(("_count", {"agent": agent}, count))
        for agent, completed, finished in conn.execute(
            "SELECT agent_name, sum(status = 'completed'), count(*) FROM agent_executions"
            " WHERE status != 'in_progress' GROUP BY agent_name ORDER BY agent_name"
        ):
            ratio.samples.append(("", {"agent": agent}, completed / finished))
        by_status = dict(
            conn.execute("SELECT status, count(*) FROM orchestrations GROUP BY status").fetchall()
        )
        for status in ("running", "completed", "failed", "partial"):
            orchestrations.samples.append(("", {"status": status}, by_status.get(status, 0)))
        in_progress = conn.execute(
            "SELECT count(*) FROM agent_executions WHERE status = 'in_progress'"
        ).fetchone()[0]
        running.samples.append(("", {"kind": "orchestration"}, by_status.get("running", 0)))
        running.samples.append(("", {"kind": "execution"}, in_progress))
        stale_counts = dict(
            conn.execute(
                f"SELECT kind, count(*) FROM ({STALE_SQL}) GROUP BY kind",
                {"cutoff": stale_cutoff(stale_after, now)},
            ).fetchall()
        )
        for kind in ("orchestration", "execution"):
            stale.samples.append(("", {"kind": kind}, stale_counts.get(kind, 0)))
    return [executions, durations, ratio, orchestrations, running, stale]


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """``["db=runner-3", ...]`` as a dict of constant labels, checked by :func:`check_labels`.

    :raises InvalidValue: a pair without ``=``, a bad or repeated name
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            raise InvalidValue(f"label {pair!r} is not NAME=VALUE")
        if name in labels:
            raise InvalidValue(f"label {name!r} is given twice")
        labels[name] = value
    return check_labels(labels)


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return ``labels`` if every name is a valid Prometheus label name of our own and
    every value is not empty.

    :raises InvalidValue: a name the text format does not allow, reserved (``__``), or one
        of :data:`SERIES_LABELS`; an empty value (Prometheus reads it as no label at all,
        so it would not keep two files apart)
    """
    for name, value in labels.items():
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise InvalidValue(
                f"label name {name!r} is not allowed: use letters, digits and _, not"
                " starting with a digit or __"
            )
        if name in SERIES_LABELS:
            raise InvalidValue(
                f"label name {name!r} is already used by the series: choose another"
                f" than {', '.join(SERIES_LABELS)}"
            )
        if not value:
            raise InvalidValue(
                f"label {name!r} has an empty value, which Prometheus reads as no label"
            )
    return dict(labels)


def render(families: list[Family], labels: Mapping[str, str] | None = None) -> str:
    """The text exposition format (version 0.0.4) of ``families``.

    ``labels`` (constant labels, see :func:`check_labels`) are added to every sample.
    """
    constant = check_labels(labels or {})
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, own, value in family.samples:
            label_text = ",".join(
                f'{key}="{_escape_label(val)}"' for key, val in {**constant, **own}.items()
            )
            name = family.name + suffix
            lines.append(
                f"{name}{{{label_text}}} {_number(value)}"
                if label_text
                else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def metrics_text(
    db: DbArg,
    now: TimeArg = None,
    stale_after: str = DEFAULT_STALE_AFTER,
    labels: Mapping[str, str] | None = None,
) -> str:
    """:func:`collect` then :func:`render` (with constant ``labels``)."""
    check_labels(labels or {})  # before reading the database
    return render(collect(db, now=now, stale_after=stale_after), labels)


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _escape_label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
