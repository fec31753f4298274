"""Regression detection: has an agent got slower, or failed more, lately?

Every agent's recent window ``[now - recent, now)`` is compared with the baseline
window just before it, ``[now - recent - baseline, now - recent)``. An agent counts as
regressed only when three things hold at once:

- the change matters in practice (``threshold``: by default p95/p50 up by 20% or
  more, or success rate down by 5 points or more);
- it is statistically significant (``p_adjusted < alpha``): a one-sided Mann-Whitney
  U test for durations (are recent runs longer?), a one-sided two-proportion z-test
  for the success rate (is the recent rate lower?; Fisher's exact test instead when
  failures or successes are too few for the z-test's approximation, as when a
  flawless baseline meets a single failure), with the p-values Holm-adjusted
  across the agents compared, so that watching many agents does not multiply false
  alarms;
- both windows hold at least ``min_samples`` finished executions, so a handful of
  slow runs never pages anyone.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from ..errors import InvalidValue
from ..stats import fisher_exact, mann_whitney_u, mann_whitney_u_counts, two_proportion_z
from ..timestamps import before, positive_duration, to_iso
from . import _rollups
from ._common import DbArg, TimeArg, read_frame, resolve_now, window
from ._frames import percentiles

METRICS = ("p95_duration_ms", "p50_duration_ms", "success_rate")
# Durations: the smallest recent/baseline ratio that counts; success rate: the
# smallest drop in percentage points.
DEFAULT_THRESHOLDS = {"p95_duration_ms": 1.2, "p50_duration_ms": 1.2, "success_rate": 5.0}
DEFAULT_MIN_SAMPLES = 20
DEFAULT_ALPHA = 0.01

COLUMNS = [
    "agent_name",
    "metric",
    "baseline_value",
    "recent_value",
    "change",
    "baseline_n",
    "recent_n",
    "p_value",
    "p_adjusted",
    "regressed",
    "reason",
]

# `status != 'in_progress'` (not an IN list) lets SQLite use the partial index on
# finished executions' started_at.
_ROWS_SQL = """
SELECT agent_name, started_at >= :split AS is_recent, {value} AS value
FROM agent_executions
WHERE status != 'in_progress'{where}{extra}
"""
_VALUE_SQL = {
    "duration": ("duration_ms", " AND duration_ms IS NOT NULL"),
    "rate": ("status = 'completed'", ""),
}


def regressions(
    db: DbArg,
    *,
    recent: str | dt.timedelta = "3d",
    baseline: str | dt.timedelta = "14d",
    agent: str | None = None,
    now: TimeArg = None,
    metric: str = "p95_duration_ms",
    min_samples: int = DEFAULT_MIN_SAMPLES,
    threshold: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    exact: bool = False,
) -> pd.DataFrame:
    """Compare every agent's recent window with the baseline window just before it.

    :param recent: length of the recent window ``[now - recent, now)``
    :param baseline: length of the baseline window, ending (excluded) where
      ``recent`` starts
    :param metric: ``p95_duration_ms``, ``p50_duration_ms`` or ``success_rate``
    :param min_samples: finished executions needed in each window to flag anything
    :param threshold: practical threshold: a ratio for durations (default 1.2), a
      drop in percentage points for the success rate (default 5)
    :param alpha: significance level for the p-value
    :param agent: only this agent
    :param exact: read every execution's duration. Otherwise, when the two windows
      hold more than :data:`~agentmetrics.reports._rollups.EXACT_PERCENTILE_ROWS`
      finished executions, durations come from the rollups' sketches: percentiles
      within 0.5%, and the U test ranks durations binned to 0.5% (a tie within a
      bin, where the exact test would have ranked them). Success rates are exact.
    :returns: one row per agent with a finished execution in either window, sorted by
      ``agent_name``, with columns

      - ``agent_name``, ``metric``
      - ``baseline_value``, ``recent_value``: the metric in each window (ms or percent;
        NaN when the window has no run)
      - ``change``: ``recent / baseline`` for durations, ``recent - baseline`` in
        points for the success rate (NaN when undefined)
      - ``baseline_n``, ``recent_n``: finished executions in each window
      - ``p_value``: one-sided p-value for "worse recently" (NaN when untestable)
      - ``p_adjusted``: ``p_value`` Holm-adjusted over the agents with enough runs in
        both windows (NaN for the others); compared with ``alpha``
      - ``regressed``: bool
      - ``reason``: one line explaining the verdict
    """
    if metric not in METRICS:
        raise InvalidValue(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    kind = "rate" if metric == "success_rate" else "duration"
    threshold = DEFAULT_THRESHOLDS[metric] if threshold is None else threshold
    _validate(kind, threshold, min_samples, alpha)
    recent_span = positive_duration(recent, "recent")
    baseline_span = positive_duration(baseline, "baseline")
    end = resolve_now(now)
    split = before(end, recent_span)
    value_sql, extra = _VALUE_SQL[kind]
    where, params = window(before(split, baseline_span), end, agent=agent)
    params["split"] = to_iso(split)
    sql = _ROWS_SQL.format(value=value_sql, where=where, extra=extra)
    args = (metric, kind, min_samples, threshold)
    with _rollups.reading(db, exact) as (conn, rolled):
        bounds = params.get("since"), params["split"], params["until"]
        compared = _compare_rolled(conn, bounds, agent, *args) if rolled else None
        if compared is None:
            rows = read_frame(conn, sql, params)
    if compared is None:
        compared = [
            _compare(
                name,
                *_summarize(
                    group.loc[group["is_recent"] == 0, "value"].to_numpy(dtype=float),
                    group.loc[group["is_recent"] == 1, "value"].to_numpy(dtype=float),
                    metric,
                    kind,
                ),
                *args,
            )
            for name, group in rows.groupby("agent_name", sort=True)
        ]
    adjusted = holm([c["p_value"] if c["enough"] else math.nan for c in compared])
    records = []
    for c, p in zip(compared, adjusted, strict=True):
        verdict = _verdict(c, p, alpha)
        records.append((*c["values"], p, verdict.startswith("regressed"), verdict))
    return pd.DataFrame.from_records(records, columns=COLUMNS).astype(
        {
            "agent_name": object,
            "metric": object,
            "baseline_value": float,
            "recent_value": float,
            "change": float,
            "baseline_n": "int64",
            "recent_n": "int64",
            "p_value": float,
            "p_adjusted": float,
            "regressed": bool,
            "reason": object,
        }
    )


def _summarize(base: np.ndarray, recent: np.ndarray, metric: str, kind: str) -> tuple:
    """(baseline value, recent value, p-value, baseline n, recent n) from the values."""
    if kind == "duration":
        q = 95 if metric == "p95_duration_ms" else 50
        [base_value], [recent_value] = percentiles(base, [q]), percentiles(recent, [q])
        p_value = mann_whitney_u(recent, base, alternative="greater").p_value
    else:
        base_value = 100 * base.mean() if len(base) else math.nan
        recent_value = 100 * recent.mean() if len(recent) else math.nan
        p_value = _rate_test(int(recent.sum()), len(recent), int(base.sum()), len(base))
    return base_value, recent_value, p_value, len(base), len(recent)


def _compare_rolled(
    conn, bounds: tuple, agent: str | None, metric: str, kind: str, *args
) -> list[dict] | None:
    """:func:`_compare` for every agent, from the rollups of both windows; None when
    they hold few enough runs to compare the values themselves, cheaply."""
    q = 95 if metric == "p95_duration_ms" else 50
    windows = [
        _rollups.finished(
            conn, start, end, agent=agent, by=["agent_name"], distributions=kind == "duration"
        ).set_index("agent_name")
        for start, end in (bounds[:2], bounds[1:])
    ]
    counted = ["durations"] if kind == "duration" else ["completed", "failed"]
    if sum(w[counted].to_numpy().sum() for w in windows) <= _rollups.EXACT_PERCENTILE_ROWS:
        return None
    compared = []
    for name in sorted(set(windows[0].index) | set(windows[1].index)):
        rows = [w.loc[name] if name in w.index else None for w in windows]
        if kind == "rate":
            done = [
                (0, 0) if r is None else (int(r["completed"]), int(r["completed"] + r["failed"]))
                for r in rows
            ]
            (base_ok, base_n), (recent_ok, recent_n) = done
            summary = (
                100 * (base_ok / base_n) if base_n else math.nan,
                100 * (recent_ok / recent_n) if recent_n else math.nan,
                _rate_test(recent_ok, recent_n, base_ok, base_n),
                base_n,
                recent_n,
            )
        else:
            empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
            (base_keys, base_counts), (recent_keys, recent_counts) = [
                empty if r is None else r["distribution"] for r in rows
            ]
            values = [
                math.nan
                if r is None or not r["durations"]
                else float(
                    np.clip(
                        _rollups.estimate(*r["distribution"], [q])[0],
                        r["duration_min"],
                        r["duration_max"],
                    )
                )
                for r in rows
            ]
            keys = np.union1d(base_keys, recent_keys)
            aligned = [
                np.bincount(np.searchsorted(keys, k), weights=c, minlength=len(keys))
                for k, c in ((base_keys, base_counts), (recent_keys, recent_counts))
            ]
            p_value = mann_whitney_u_counts(aligned[1], aligned[0], alternative="greater").p_value
            summary = (*values, p_value, int(base_counts.sum()), int(recent_counts.sum()))
        compared.append(_compare(name, *summary, metric, kind, *args))
    return compared


def _compare(
    agent: str,
    base_value: float,
    recent_value: float,
    p_value: float,
    base_n: int,
    recent_n: int,
    metric: str,
    kind: str,
    min_samples: int,
    threshold: float,
) -> dict:
    if kind == "duration":
        change = recent_value / base_value if base_value > 0 else math.nan
        big_enough = change >= threshold
        shown = f"{change:.2f}x" if not math.isnan(change) else "no ratio"
        practical = f"{shown} vs {threshold:g}x needed"
    else:
        change = recent_value - base_value
        big_enough = -change >= threshold
        practical = f"{change:+.1f} points vs -{threshold:g} needed"
    return {
        "values": (
            agent,
            metric,
            base_value,
            recent_value,
            change,
            base_n,
            recent_n,
            p_value,
        ),
        "p_value": p_value,
        "enough": min(base_n, recent_n) >= min_samples,
        "big_enough": big_enough,
        "practical": practical,
        "runs": f"baseline {base_n}, recent {recent_n}; need {min_samples}",
    }


# Below this expected count in a cell of the 2x2 table the z-test's normal
# approximation overstates the evidence (Cochran's rule): one failure in 20 runs after
# a flawless baseline would look like p < 1e-11.
_MIN_EXPECTED = 5


def _rate_test(successes1: int, n1: int, successes2: int, n2: int) -> float:
    """One-sided p-value for "the first success rate is lower"."""
    total = n1 + n2
    successes = successes1 + successes2
    if total and min(successes, total - successes) * min(n1, n2) / total < _MIN_EXPECTED:
        return fisher_exact(successes1, n1, successes2, n2, alternative="less").p_value
    return two_proportion_z(successes1, n1, successes2, n2, alternative="less").p_value


def _verdict(compared: dict, p_adjusted: float, alpha: float) -> str:
    if not compared["enough"]:
        return f"too few runs ({compared['runs']})"
    if not compared["big_enough"]:
        return f"change too small ({compared['practical']})"
    if not p_adjusted < alpha:  # also for NaN
        return f"not significant (adjusted p={_p(p_adjusted)}, alpha {alpha:g})"
    return f"regressed: {compared['practical']}, adjusted p={_p(p_adjusted)}"


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries are left out and stay NaN)."""
    adjusted = [math.nan] * len(p_values)
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def _p(p_value: float) -> str:
    return "n/a" if math.isnan(p_value) else f"{p_value:.2g}"


def _validate(kind: str, threshold: float, min_samples: int, alpha: float) -> None:
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InvalidValue(f"min_samples must be a whole number >= 1, got {min_samples!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InvalidValue(f"alpha must be between 0 and 1, got {alpha!r}")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise InvalidValue(f"threshold must be a finite number, got {threshold!r}")
    if kind == "duration" and threshold <= 1:
        raise InvalidValue(f"threshold for durations is a ratio above 1, got {threshold!r}")
    if kind == "rate" and threshold <= 0:
        raise InvalidValue(f"threshold for the success rate is a positive drop, got {threshold!r}")
