"""Cost estimation for finished agent executions.

Each finished execution is priced by the first method that applies:

1. ``recorded``: the ``cost_usd`` the tracking call stored, as is;
2. ``tokens``: its ``model`` has a price in the ``[costs.models]`` table and it carries
   token counts: ``input_tokens * input_per_million / 1e6 + output_tokens * ...``;
3. ``time``: ``duration_ms`` at the agent's hourly rate (``[costs.agents]``), else the
   default hourly rate (``[costs] default_hourly_rate``).

Executions still in progress have no duration yet and are not counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, InvalidValue
from . import _rollups
from ._common import DbArg, TimeArg, read_frame, window
from ._frames import texts, to_utc

# Only a placeholder so that time-based estimates are never silently zero; set your own
# rate in the config file.
DEFAULT_HOURLY_RATE = 1.0
METHODS = ("time", "tokens", "recorded")
METHOD_COLUMNS = ("time_cost_usd", "token_cost_usd", "recorded_cost_usd")
GROUPINGS = {
    "agent": ("e.agent_name", ["agent_name"]),
    "day": ("substr(e.started_at, 1, 10)", ["day"]),
    "orchestration": ("e.orchestration_id", ["orchestration_id", "session_id", "task_description"]),
}
VALUE_COLUMNS = [
    "finished",
    "total_duration_ms",
    "time_priced",
    "token_priced",
    "recorded_priced",
    "time_cost_usd",
    "token_cost_usd",
    "recorded_cost_usd",
    "cost_usd",
    "method",
]

_PRICED = """
WITH agent_rates(agent_name, hourly_rate) AS ({agent_rates}),
model_prices(model, input_per_million, output_per_million) AS ({model_prices}),
classified AS (
  SELECT e.*, {key} AS group_key,
    CASE
      WHEN e.cost_usd IS NOT NULL THEN 'recorded'
      WHEN mp.model IS NOT NULL
        AND (e.input_tokens IS NOT NULL OR e.output_tokens IS NOT NULL) THEN 'tokens'
      ELSE 'time'
    END AS method,
    COALESCE(ar.hourly_rate, :default_rate) AS hourly_rate,
    mp.input_per_million, mp.output_per_million
  FROM agent_executions e
  LEFT JOIN agent_rates ar ON ar.agent_name = e.agent_name
  LEFT JOIN model_prices mp ON mp.model = e.model
  WHERE e.status != 'in_progress'{where}
),
priced AS (
  SELECT group_key, method, duration_ms,
    CASE method
      WHEN 'recorded' THEN cost_usd
      WHEN 'tokens' THEN (COALESCE(input_tokens, 0) * input_per_million
                          + COALESCE(output_tokens, 0) * output_per_million) / 1e6
      ELSE COALESCE(duration_ms, 0) * hourly_rate / 3600000.0
    END AS cost
  FROM classified
)
SELECT group_key,
  count(*) AS finished,
  sum(duration_ms) AS total_duration_ms,
  sum(method = 'time') AS time_priced,
  sum(method = 'tokens') AS token_priced,
  sum(method = 'recorded') AS recorded_priced,
  total(CASE WHEN method = 'time' THEN cost END) AS time_cost_usd,
  total(CASE WHEN method = 'tokens' THEN cost END) AS token_cost_usd,
  total(CASE WHEN method = 'recorded' THEN cost END) AS recorded_cost_usd,
  total(cost) AS cost_usd,
  CASE WHEN count(DISTINCT method) > 1 THEN 'mixed' ELSE max(method) END AS method
FROM priced
GROUP BY group_key
"""


def cost_rates(config: dict[str, Any]) -> dict[str, Any]:
    """The ``[costs]`` table of a loaded config (:func:`agentmetrics.alerting.config.load_config`),
    checked.

    :raises ConfigError: the table holds an unknown key or a bad rate
    """
    try:
        return _validate(config.get("costs", {}))
    except InvalidValue as e:
        raise ConfigError(str(e)) from None


def checked_rates(rates: dict[str, Any] | None) -> dict[str, Any]:
    """A ``[costs]`` table checked, every key present (None: the defaults).

    :raises InvalidValue: an unknown key or a bad rate
    """
    return _validate({} if rates is None else rates)


def costs(
    db: DbArg,
    *,
    rates: dict[str, Any] | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    agent: str | None = None,
    now: TimeArg = None,
    by: str = "agent",
    exact: bool = False,
) -> pd.DataFrame:
    """Estimated cost of finished executions, grouped by agent, day or orchestration.

    :param rates: a ``[costs]`` table: ``default_hourly_rate``, ``agents`` (name ->
      hourly rate) and ``models`` (name -> ``input_per_million``/``output_per_million``
      USD), as :func:`cost_rates` returns it from the config file. None prices every
      execution by time at :data:`DEFAULT_HOURLY_RATE`; no file is read.
    :param since: first start time included: a timestamp or a span before ``now``
    :param until: start times before this are included (same forms)
    :param agent: only this agent's executions
    :param by: ``"agent"``, ``"day"`` (UTC day of ``started_at``) or ``"orchestration"``
    :param exact: price every execution row by row instead of reading the rollups
      (by agent or day; by orchestration is always row by row). The counts are the
      same; the costs agree to float rounding (the rollups price sums of durations
      and tokens, the scan each row)
    :returns: one row per group with the key columns ``agent_name`` / ``day`` (UTC
      datetime at midnight) / ``orchestration_id``, ``session_id``,
      ``task_description`` (NULL id: executions outside any orchestration), then
      ``finished`` (the finished executions priced), ``total_duration_ms``,
      ``time_priced``, ``token_priced``, ``recorded_priced`` (how many were priced
      by each method), ``time_cost_usd``, ``token_cost_usd``, ``recorded_cost_usd``
      (the cost each method produced), ``cost_usd`` (their sum) and ``method``:
      ``time``, ``tokens``, ``recorded`` or ``mixed``. Sorted by day, or by cost
      (highest first) for agents and orchestrations.
    """
    if by not in GROUPINGS:
        raise InvalidValue(f"Invalid grouping {by!r}: use one of {', '.join(GROUPINGS)}")
    checked = checked_rates(rates)
    key, key_columns = GROUPINGS[by]
    where, params = window(since, until, now, agent=agent, alias="e")
    sql = priced_sql(checked, key, where, params)
    with _rollups.reading(db, exact or by == "orchestration") as (conn, rolled):
        if rolled:
            frame = _rolled(conn, params, agent, by, checked)
        else:
            frame = read_frame(conn, sql, params)
        if by == "orchestration":
            frame = _with_orchestrations(conn, frame)
    frame = frame.rename(columns={"group_key": key_columns[0]})
    frame = frame.reindex(columns=key_columns + VALUE_COLUMNS)
    for column in VALUE_COLUMNS[:5]:
        frame[column] = frame[column].astype("float64" if column.endswith("_ms") else "int64")
    for column in VALUE_COLUMNS[5:9]:
        frame[column] = frame[column].astype("float64")
    texts(frame, [*key_columns, "method"])
    if by == "day":
        frame["day"] = to_utc(frame["day"])
        frame = frame.sort_values("day")
    else:
        frame = frame.sort_values(
            ["cost_usd", key_columns[0]], ascending=[False, True], na_position="last"
        )
    return frame.reset_index(drop=True)


def priced_sql(rates: dict, key: str, where: str, params: dict[str, Any]) -> str:
    """The query pricing the finished executions ``e`` matching ``where`` row by row,
    grouped by the SQL expression ``key`` (column ``group_key``); adds the rates to
    ``params``. ``rates`` as :func:`cost_rates` checks them."""
    params["default_rate"] = rates["default_hourly_rate"]
    agent_rates = _values(rates["agents"].items(), "ar", params, 2)
    model_prices = _values(
        (
            (name, price["input_per_million"], price["output_per_million"])
            for name, price in rates["models"].items()
        ),
        "mp",
        params,
        3,
    )
    return _PRICED.format(agent_rates=agent_rates, model_prices=model_prices, key=key, where=where)


def _rolled(conn, params: dict, agent: str | None, by: str, rates: dict) -> pd.DataFrame:
    """The priced groups of :data:`_PRICED`, from the rollups' sums per agent and model."""
    found = _rollups.finished(
        conn,
        params.get("since"),
        params.get("until"),
        agent=agent,
        by=["agent_name", "model"] + (["period"] if by == "day" else []),
        period="substr(started_at, 1, 10)",
    )
    priced = _priced_models(found, rates)
    finished = found["completed"] + found["failed"]
    tokens = found["token_rows"].where(priced, 0)
    rows = pd.DataFrame(
        {
            "group_key": found["period" if by == "day" else "agent_name"],
            "finished": finished,
            "total_duration_ms": found["duration_sum"].where(found["durations"] > 0),
            "time_priced": finished - found["recorded"] - tokens,
            "token_priced": tokens,
            "recorded_priced": found["recorded"],
            **price_sums(found, rates),
        }
    )
    frame = rows.groupby("group_key", as_index=False).sum(min_count=1)
    frame["cost_usd"] = frame[list(METHOD_COLUMNS)].sum(axis=1)
    counts = frame[["time_priced", "token_priced", "recorded_priced"]].to_numpy() > 0
    names = np.array(METHODS)
    frame["method"] = [
        "mixed" if used.sum() > 1 else names[used][0] if used.any() else None for used in counts
    ]
    return frame


def _priced_models(found: pd.DataFrame, rates: dict) -> pd.Series:
    """Whether each row's model has a price (its token counts are priced)."""
    return found["model"].map(rates["models"]).notna() & found["model"].notna()


def price_sums(found: pd.DataFrame, rates: dict, prefix: str = "") -> dict[str, pd.Series]:
    """The cost by each method (:data:`METHOD_COLUMNS`) of rollup sums per agent and
    model (:func:`._rollups.finished` by ``agent_name`` and ``model``), as
    :data:`_PRICED` prices the rows they sum. ``prefix``: the sums of a subset
    (``rollups.FAILED``: failed executions)."""
    hourly = found["agent_name"].map(rates["agents"]).fillna(rates["default_hourly_rate"])
    prices = found["model"].map(rates["models"])
    priced = _priced_models(found, rates)
    inputs = prices.map(lambda p: p["input_per_million"] if isinstance(p, dict) else 0.0)
    outputs = prices.map(lambda p: p["output_per_million"] if isinstance(p, dict) else 0.0)
    time_duration = found[prefix + "time_duration"] + found[prefix + "token_duration"].where(
        ~priced, 0
    )
    tokens = found[prefix + "input_tokens"] * inputs + found[prefix + "output_tokens"] * outputs
    return {
        "time_cost_usd": time_duration * hourly / 3600000.0,
        "token_cost_usd": (tokens / 1e6).where(priced, 0.0),
        "recorded_cost_usd": found[prefix + "recorded_cost"],
    }


def _values(rows, prefix: str, params: dict[str, Any], width: int) -> str:
    """A parameterised VALUES list (an empty one still has ``width`` columns)."""
    parts = []
    for i, row in enumerate(rows):
        names = [f":{prefix}{i}_{j}" for j in range(width)]
        params.update({name[1:]: value for name, value in zip(names, row, strict=True)})
        parts.append(f"({', '.join(names)})")
    if not parts:
        return "SELECT " + ", ".join(["NULL"] * width) + " WHERE 0"
    return "VALUES " + ", ".join(parts)


def _with_orchestrations(conn, frame: pd.DataFrame) -> pd.DataFrame:
    ids = [i for i in frame["group_key"] if i is not None]
    if not ids:
        return frame.assign(session_id=None, task_description=None)
    marks = ", ".join("?" for _ in ids)
    details = read_frame(
        conn,
        f"SELECT id AS group_key, session_id, task_description FROM orchestrations"
        f" WHERE id IN ({marks})",
        ids,
    )
    return frame.merge(details, on="group_key", how="left")


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValue(f"{what} must be a number, got {value!r}")
    if value < 0:
        raise InvalidValue(f"{what} must not be negative, got {value!r}")
    return float(value)


def _validate(section: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise InvalidValue("[costs] must be a table")
    unknown = set(section) - {"default_hourly_rate", "agents", "models"}
    if unknown:
        raise InvalidValue(
            f"Unknown [costs] setting {sorted(unknown)[0]!r}:"
            " use default_hourly_rate, agents or models"
        )
    agents = section.get("agents", {})
    models = section.get("models", {})
    if not isinstance(agents, dict) or not isinstance(models, dict):
        raise InvalidValue("[costs.agents] and [costs.models] must be tables")
    checked_models = {}
    for name, price in models.items():
        if not isinstance(price, dict) or not (
            {"input_per_million", "output_per_million"} & set(price)
        ):
            raise InvalidValue(
                f"[costs.models.{name!r}] needs input_per_million and/or output_per_million"
            )
        # A misspelt key would otherwise price that side at zero without a word.
        extra = set(price) - {"input_per_million", "output_per_million"}
        if extra:
            raise InvalidValue(
                f"Unknown setting {sorted(extra)[0]!r} in [costs.models.{name!r}]:"
                " use input_per_million and output_per_million"
            )
        checked_models[name] = {
            key: _rate(price.get(key, 0), f"costs.models.{name}.{key}")
            for key in ("input_per_million", "output_per_million")
        }
    return {
        "default_hourly_rate": _rate(
            section.get("default_hourly_rate", DEFAULT_HOURLY_RATE), "costs.default_hourly_rate"
        ),
        "agents": {name: _rate(rate, f"costs.agents.{name}") for name, rate in agents.items()},
        "models": checked_models,
    }
