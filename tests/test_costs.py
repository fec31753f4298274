import json

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import cli_result
from dashboard_data import build

import agentmetrics
from agentmetrics.alerting.config import load_config
from agentmetrics.cli import cli
from agentmetrics.errors import ConfigError
from agentmetrics.plots import cost_chart
from agentmetrics.reports import costs
from agentmetrics.reports.cost import VALUE_COLUMNS, cost_rates

RATES = {
    "default_hourly_rate": 6.0,
    "agents": {"reviewer": 12.0},
    "models": {"m-small": {"input_per_million": 3.0, "output_per_million": 15.0}},
}
# By hand, per finished execution (see dashboard_data.RUNS):
#   a-1 coder 60s, time at 6/h:       0.1
#   a-2 reviewer 120s, time at 12/h:  0.4
#   a-3 coder tokens: 1000*3/1e6 + 500*15/1e6 = 0.0105
#   a-4 tester recorded:              0.25
#   a-5 coder 600s, time at 6/h:      1.0
TOML = """
[costs]
default_hourly_rate = 6.0

[costs.agents]
reviewer = 12.0

[costs.models."m-small"]
input_per_million = 3.0
output_per_million = 15.0
"""


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def test_costs_by_agent(data_path):
    df = costs(data_path, rates=RATES)
    assert list(df.columns) == ["agent_name", *VALUE_COLUMNS]
    expected = pd.DataFrame(
        {
            "agent_name": ["coder", "reviewer", "tester"],
            "finished": [3, 1, 1],
            "total_duration_ms": [690_000.0, 120_000.0, 10_000.0],
            "time_priced": [2, 1, 0],
            "token_priced": [1, 0, 0],
            "recorded_priced": [0, 0, 1],
            "time_cost_usd": [1.1, 0.4, 0.0],
            "token_cost_usd": [0.0105, 0.0, 0.0],
            "recorded_cost_usd": [0.0, 0.0, 0.25],
            "cost_usd": [1.1105, 0.4, 0.25],
            "method": ["mixed", "time", "recorded"],
        }
    )
    expected["agent_name"] = expected["agent_name"].astype(object)
    expected["method"] = expected["method"].astype(object)
    pd.testing.assert_frame_equal(df, expected, atol=1e-12)


def test_costs_by_day(data_path):
    df = costs(data_path, rates=RATES, by="day")
    assert df["day"].tolist() == [
        pd.Timestamp("2026-03-01", tz="UTC"),
        pd.Timestamp("2026-03-02", tz="UTC"),
    ]
    assert df["finished"].tolist() == [4, 1]
    assert df["cost_usd"].tolist() == pytest.approx([0.1 + 0.4 + 0.0105 + 0.25, 1.0])
    assert df["method"].tolist() == ["mixed", "time"]


def test_costs_by_orchestration(data_path):
    ids = build(data_path.parent / "other.db")
    df = costs(data_path.parent / "other.db", rates=RATES, by="orchestration")
    assert list(df.columns[:3]) == ["orchestration_id", "session_id", "task_description"]
    # Highest cost first: the standalone a-5 (1.0), s-1 (0.5), s-2 (0.2605).
    assert df["orchestration_id"].tolist() == [None, ids["s-1"], ids["s-2"]]
    assert df["session_id"].tolist() == [None, "s-1", "s-2"]
    assert df["task_description"].tolist() == [None, "Build feature", "Fix <bug> & test"]
    assert df["cost_usd"].tolist() == pytest.approx([1.0, 0.5, 0.2605])
    assert df["method"].tolist() == ["time", "time", "mixed"]


def test_costs_window(data_path):
    df = costs(data_path, rates=RATES, since="2026-03-01T11:00:00Z", until="2026-03-02T00:00:00Z")
    assert df["agent_name"].tolist() == ["tester", "coder"]
    assert df["cost_usd"].tolist() == pytest.approx([0.25, 0.0105])


def test_default_rate_without_config(data_path):
    df = costs(data_path, rates={})
    coder = df.set_index("agent_name").loc["coder"]
    # 60s + 600s at the placeholder 1 USD/hour; no model prices, so a-3 is timed too.
    assert coder["cost_usd"] == pytest.approx((60 + 30 + 600) / 3600)
    assert coder["method"] == "time"


@pytest.mark.parametrize("where", ["agentmetrics.toml", "pyproject.toml"])
def test_rates_from_config_file(data_path, tmp_path, where):
    text = (
        TOML if where == "agentmetrics.toml" else TOML.replace("[costs", "[tool.agentmetrics.costs")
    )
    (tmp_path / where).write_text(text)
    assert load_config()["costs"]["agents"] == {"reviewer": 12.0}
    pd.testing.assert_frame_equal(
        costs(data_path, rates=cost_rates(load_config())), costs(data_path, rates=RATES)
    )


def test_costs_read_no_config_file(data_path, tmp_path):
    """Without rates every execution is priced by time at the default rate, whatever
    config file lies in the working folder."""
    (tmp_path / "agentmetrics.toml").write_text(TOML)
    pd.testing.assert_frame_equal(costs(data_path), costs(data_path, rates={}))
    coder = costs(data_path).set_index("agent_name").loc["coder"]
    assert coder["cost_usd"] == pytest.approx((60 + 30 + 600) / 3600)


def test_bad_costs_table_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^costs.default_hourly_rate must not be negative"):
        cost_rates({"costs": {"default_hourly_rate": -1}})


def test_empty_database_keeps_columns(db):
    for by, key in (("agent", ["agent_name"]), ("day", ["day"])):
        df = costs(db, rates=RATES, by=by)
        assert df.empty
        assert list(df.columns) == key + VALUE_COLUMNS


@pytest.mark.parametrize(
    "rates, message",
    [
        ({"default_hourly_rate": -1}, "must not be negative"),
        ({"default_hourly_rate": "x"}, "must be a number"),
        ({"hourly": 1}, "Unknown [costs] setting 'hourly'"),
        ({"models": {"m": {"price": 1}}}, "needs input_per_million"),
        ({"agents": {"coder": True}}, "must be a number"),
    ],
)
def test_invalid_rates(db, rates, message):
    with pytest.raises(ValueError) as e:
        costs(db, rates=rates)
    assert message in str(e.value)


def test_invalid_grouping(db):
    with pytest.raises(ValueError, match="use one of agent, day, orchestration"):
        costs(db, rates=RATES, by="week")


def test_cost_chart(data_path):
    fig = cost_chart(costs(data_path, rates=RATES))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Cost (USD)"
    top_to_bottom = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_to_bottom] == ["coder", "reviewer", "tester"]
    # One bar per agent and method with a cost: coder time+tokens, reviewer, tester.
    widths = sorted(round(p.get_width(), 6) for p in ax.patches if p.get_width() > 0)
    assert widths == [0.0105, 0.25, 0.4, 1.1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["time", "tokens", "recorded"]


def test_cli_costs_json(data_path, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(TOML)
    result = CliRunner().invoke(
        cli,
        ["--db", str(data_path), "costs", "--config", str(config), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["agent_name"], round(r["cost_usd"], 6)) for r in rows] == [
        ("coder", 1.1105),
        ("reviewer", 0.4),
        ("tester", 0.25),
    ]


def test_cli_costs_spans_from_now_and_one_agent(data_path, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(TOML)
    base = ["--db", data_path, "costs", "--config", config, "--now", "2026-03-02T12:00:00Z"]

    def rows(*args):
        result = cli_result(*base, *args, "--json")
        assert result.exit_code == 0, result.output
        return [
            (r["agent_name"], r["finished"], round(r["cost_usd"], 6))
            for r in json.loads(result.stdout)
        ]

    # [09:00, 12:00) on 2026-03-02 holds only the standalone a-5: 600 s of coder at $6/h.
    assert rows("--since", "3h") == [("coder", 1, 1.0)]
    assert rows("--since", "2d", "--agent", "tester") == [("tester", 1, 0.25)]


def test_cli_costs_table(data_path, tmp_path):
    (tmp_path / "agentmetrics.toml").write_text(TOML)
    result = CliRunner().invoke(
        cli, ["--db", str(data_path), "costs", "--by", "orchestration"], catch_exceptions=False
    )
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "session_id",
        "task_description",
        "finished",
        "total_duration_ms",
        "time_cost_usd",
        "token_cost_usd",
        "recorded_cost_usd",
        "cost_usd",
        "method",
    ]
    assert "Fix <bug> & test" in result.output
    assert lines[-1] == "Total: $1.76 over 5 finished executions"


def test_cli_costs_finished_execution_without_duration(db, db_path):
    # An import can bring a finished execution without duration_ms: no traceback.
    db.execute(
        "INSERT INTO agent_executions (id, agent_session_id, agent_name, status, started_at,"
        " completed_at) VALUES ('x', 'x', 'coder', 'completed', '2026-01-01T00:00:00.000Z',"
        " '2026-01-01T00:01:00.000Z')"
    )
    db.conn.commit()
    result = CliRunner().invoke(cli, ["--db", str(db_path), "costs"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:3] == ["coder", "1", "-"]
    data = json.loads(CliRunner().invoke(cli, ["--db", str(db_path), "costs", "--json"]).output)
    assert (data[0]["finished"], data[0]["total_duration_ms"]) == (1, None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "missing.toml"], "Error: Config file missing.toml not found"),
        (
            ["--since", "yesterday"],
            "Error: Invalid value for '--since': not a time: 'yesterday'"
            " (use a timestamp such as 2026-11-01 or a span back such as 6h, 7d, 2w)",
        ),
    ],
)
def test_cli_costs_errors(data_path, args, message):
    result = CliRunner().invoke(cli, ["--db", str(data_path), "costs", *args])
    assert result.output.strip() == message
    assert result.exit_code == 2  # a bad option value and a bad config are usage errors


@pytest.mark.parametrize(
    "text", ["[costs\n", "[costs]\ndefault_hourly_rate = -1\n", "[costs]\nhourly = 1\n"]
)
def test_cli_costs_bad_config_exits_2(data_path, tmp_path, text):
    """Like `check` with a bad rules file: a configuration error exits 2 (it was 1)."""
    (tmp_path / "agentmetrics.toml").write_text(text)
    result = CliRunner().invoke(cli, ["--db", str(data_path), "costs"])
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("Error: ")


def test_cli_costs_bad_grouping(data_path):
    result = CliRunner().invoke(cli, ["--db", str(data_path), "costs", "--by", "week"])
    assert result.exit_code == 2
    assert "'week' is not one of" in result.output


def test_tracking_api_accepts_cost_fields(monitor, db):
    monitor.start_agent_execution("x", "coder")
    monitor.complete_agent_execution(
        "x", "completed", model="m", input_tokens=10, output_tokens=20, cost_usd=0.5
    )
    row = db.execute(
        "SELECT model, input_tokens, output_tokens, cost_usd FROM agent_executions"
    ).fetchone()
    assert row == ("m", 10, 20, 0.5)
    with pytest.raises(agentmetrics.AgentMetricsError):
        monitor.complete_agent_execution("x", "completed", cost_usd=-1)


def test_cost_usd_alert_rule(data_path, tmp_path):
    from agentmetrics.alerting.rules import evaluate, load_rules

    (tmp_path / "agentmetrics.toml").write_text(
        TOML
        + '\n[[rules]]\nname = "spend"\nmetric = "cost_usd"\nwindow = "30d"\nwarn = 1.5\n'
        + '\n[[rules]]\nname = "reviewer spend"\nmetric = "cost_usd"\nagent = "reviewer"\n'
        + 'window = "30d"\nalert = 1.0\n'
    )
    results = evaluate(data_path, load_rules(), now="2026-03-02T12:00:00Z")
    # All five finished executions: 0.1 + 0.4 + 0.0105 + 0.25 + 1.0; the reviewer: 0.4.
    assert results["value"].tolist() == pytest.approx([1.7605, 0.4])
    assert results["status"].tolist() == ["warn", "ok"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234.5, "$1,234.50"),
        (0.2133, "$0.21"),  # was $0.2133 next to $0.00: one format, to the cent
        (0.0105, "$0.01"),
        (0.005, "$0.01"),
        (0.0049, "<$0.01"),  # a cost, not nothing
        (0.0, "$0.00"),
        (float("nan"), "-"),
        (None, "-"),
    ],
)
def test_usd_has_one_format(value, text):
    from agentmetrics.formatting import format_usd

    assert format_usd(value) == text


# -- costs: bad windows and half-priced models ---------------------------------------------


def test_costs_since_after_until_is_an_error(data_path):
    from agentmetrics.reports import costs

    with pytest.raises(ValueError, match=r"since \(2026-03-02.*\) is after until \(2026-03-01"):
        costs(data_path, rates={}, since="2026-03-02", until="2026-03-01")
    result = cli_result(
        "--db", data_path, "costs", "--since", "2026-03-02", "--until", "2026-03-01"
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: since (2026-03-02T00:00:00.000Z) is after until (2026-03-01T00:00:00.000Z)\n"
    )


def test_costs_misspelt_model_price_is_an_error(data_path, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(
        '[costs.models."m-small"]\ninput_per_milion = 3.0\noutput_per_million = 15.0\n'
    )
    result = cli_result("--db", data_path, "costs", "--config", config)
    assert result.exit_code == 2  # a configuration error
    assert result.output == (
        "Error: Unknown setting 'input_per_milion' in [costs.models.'m-small']:"
        " use input_per_million and output_per_million\n"
    )


def test_costs_model_price_with_one_side_only(data_path):
    from agentmetrics.reports import costs

    # dashboard_data: a-3 (coder, model m-small) used 1000 input and 500 output tokens.
    df = costs(data_path, rates={"models": {"m-small": {"output_per_million": 10.0}}})
    coder = df.set_index("agent_name").loc["coder"]
    assert coder["token_cost_usd"] == pytest.approx(500 * 10.0 / 1e6)
