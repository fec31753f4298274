import datetime as dt
import http.server
import json
import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli_result, no_traceback

import agentmetrics.alerting.notify
from agentmetrics.alerting import rules
from agentmetrics.alerting.notify import notify
from agentmetrics.alerting.rules import evaluate, load_rules, payload
from agentmetrics.cli import cli
from agentmetrics.demo import SLOW_AGENT, build_demo
from agentmetrics.errors import ConfigError

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
NOW_ISO = "2026-03-10T12:00:00.000Z"

CODER = [1000.0 * i for i in range(1, 11)]  # 10 runs in the last 24h, the first 2 failed
REVIEWER = [500.0, 500.0, 600.0, 700.0]  # 4 runs in the last 24h, all completed
OLD_FAILURES = 5  # coder failures 30h ago: inside 7d, outside 24h


def ago(hours: float) -> str:
    moment = NOW - dt.timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.fixture
def data(db):
    rows = []

    def run(agent, duration, status, hours):
        rows.append(
            {
                "id": f"e{len(rows)}",
                "agent_session_id": f"e{len(rows)}",
                "agent_name": agent,
                "status": status,
                "started_at": ago(hours),
                "duration_ms": duration,
            }
        )

    for i, duration in enumerate(CODER):
        run("coder", duration, "failed" if i < 2 else "completed", 1 + i)
    for i, duration in enumerate(REVIEWER):
        run("reviewer", duration, "completed", 2 + i)
    for i in range(OLD_FAILURES):
        run("coder", 99_999, "failed", 30 + i)
    run("coder", None, "in_progress", 1)
    db.table("agent_executions").insert_all(rows)
    orchestrations = [("failed", 3), ("failed", 20), ("failed", 30), ("completed", 5)]
    orchestrations.append(("running", 10))  # no sign of life for 10h: stale
    db.table("orchestrations").insert_all(
        {"id": f"o{i}", "session_id": f"o{i}", "status": status, "started_at": ago(hours)}
        for i, (status, hours) in enumerate(orchestrations)
    )
    return db


def write_rules(text: str, name: str = "agentmetrics.toml") -> Path:
    path = Path(name)
    path.write_text(text)
    return path


def rule_toml(**keys) -> str:
    return "[[rules]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


ALL = CODER + REVIEWER


@pytest.mark.parametrize(
    "keys, value, status",
    [
        # success rate: 12 of 14 finished in 24h completed; it alerts below.
        ({"metric": "success_rate", "warn": 95, "alert": 90}, 1200 / 14, "alert"),
        ({"metric": "success_rate", "warn": 90, "alert": 80}, 1200 / 14, "warn"),
        ({"metric": "success_rate", "warn": 85}, 1200 / 14, "ok"),
        ({"metric": "success_rate", "agent": "coder", "alert": 80}, 80.0, "ok"),  # equal: ok
        ({"metric": "success_rate", "agent": "coder", "alert": 80.5}, 80.0, "alert"),
        ({"metric": "success_rate", "window": "7d", "alert": 70}, 1200 / 19, "alert"),
        (
            {"metric": "success_rate", "agent": "reviewer", "window": "1h", "alert": 99},
            math.nan,
            "ok",
        ),
        # an agent that never ran at all is probably a typo: warn.
        ({"metric": "success_rate", "agent": "nobody", "alert": 99}, math.nan, "warn"),
        ({"metric": "failed_executions", "agent": "nobody", "alert": 0}, math.nan, "warn"),
        # durations alert above.
        ({"metric": "p95_duration_ms", "warn": "9s"}, np.percentile(ALL, 95), "warn"),
        ({"metric": "p95_duration_ms", "agent": "coder", "alert": "9500ms"}, 9550.0, "alert"),
        ({"metric": "p95_duration_ms", "agent": "reviewer", "alert": "700ms"}, 685.0, "ok"),
        ({"metric": "p50_duration_ms", "alert": "4s"}, np.median(ALL), "ok"),
        ({"metric": "p50_duration_ms", "agent": "coder", "alert": "5s"}, 5500.0, "alert"),
        (
            {"metric": "p95_duration_ms", "window": "7d", "alert": "1000s"},
            np.percentile(ALL + [99_999] * OLD_FAILURES, 95),
            "ok",
        ),
        # counts alert above: alert = 0 means any.
        ({"metric": "failed_executions", "alert": 0}, 2, "alert"),
        ({"metric": "failed_executions", "agent": "reviewer", "alert": 0}, 0, "ok"),
        ({"metric": "failed_executions", "window": "7d", "warn": 5, "alert": 10}, 7, "warn"),
        ({"metric": "failed_orchestrations", "alert": 0}, 2, "alert"),
        ({"metric": "failed_orchestrations", "alert": 2}, 2, "ok"),
        ({"metric": "failed_orchestrations", "window": "7d", "alert": 2}, 3, "alert"),
        ({"metric": "stale_running", "alert": 0}, 1, "alert"),
        ({"metric": "stale_running", "stale_after": "12h", "alert": 0}, 0, "ok"),
    ],
)
def test_rule_values(data, keys, value, status):
    ruleset = load_rules(write_rules(rule_toml(name="r", **keys)))
    result = evaluate(data, ruleset, now=NOW).iloc[0]
    if keys.get("agent") == "nobody":
        assert result["detail"] == (
            "no execution of agent 'nobody' was ever recorded: check the name"
        )
    elif math.isnan(value):
        assert result["detail"] == "no data in the window"
    if math.isnan(value):
        assert math.isnan(result["value"])
    else:
        assert result["value"] == pytest.approx(value)
    assert result["status"] == status


def test_rule_min_samples_guards_small_samples(data):
    """Four reviewer runs: a tight p95 rule would alert, but four runs are not judged."""
    text = rule_toml(name="tight", metric="p95_duration_ms", agent="reviewer", alert="600ms")
    text += rule_toml(
        name="guarded", metric="p95_duration_ms", agent="reviewer", alert="600ms", min_samples=10
    )
    text += rule_toml(name="rate", metric="success_rate", agent="coder", alert=90, min_samples=10)
    results = evaluate(data, load_rules(write_rules(text)), now=NOW)
    assert list(results["status"]) == ["alert", "ok", "alert"]
    assert results.loc[1, "value"] == pytest.approx(685.0)
    assert results.loc[1, "detail"] == "too few runs to judge (4, need 10)"


def test_results_frame(data):
    text = rule_toml(name="a", metric="success_rate", warn=95, alert=90)
    text += rule_toml(name="b", metric="stale_running", alert=0)
    text += rule_toml(name="c", metric="failed_executions", agent="coder", warn=1)
    results = evaluate(data, load_rules(write_rules(text)), now=NOW)
    assert list(results.columns) == rules.RESULT_COLUMNS
    assert list(results["name"]) == ["a", "b", "c"]
    assert list(results["agent"]) == [None, None, "coder"]
    assert list(results["window"]) == ["24h", None, "24h"]
    assert math.isnan(results.loc[1, "warn"]) and results.loc[1, "alert"] == 0
    assert list(results["detail"]) == ["85.7% < 90.0%", "1 > 0", "2 > 1"]
    assert rules.overall_status(results) == "alert"
    assert rules.overall_status(results.iloc[2:]) == "warn"
    assert rules.overall_status(results.iloc[:0]) == "ok"


@pytest.fixture
def demo_path(tmp_path):
    path = tmp_path / "demo.db"
    build_demo(path, now="2026-11-01T12:00:00Z")
    return path


@pytest.mark.parametrize(
    "keys, value",
    [
        ({}, 1),  # code-writer got slower
        ({"agent": SLOW_AGENT}, 1),
        ({"agent": "deployer"}, 0),  # 15 recent runs: too few to judge
        ({"of": "success_rate"}, 0),
        ({"of": "p50_duration_ms", "window": "3d", "baseline": "14d"}, 1),
        ({"min_samples": 100000}, 0),
        ({"threshold": 3.0}, 0),
        ({"alpha": 1e-40}, 0),
    ],
)
def test_regressions_rule(demo_path, keys, value):
    ruleset = load_rules(write_rules(rule_toml(name="r", metric="regressions", alert=0, **keys)))
    result = evaluate(demo_path, ruleset, now="2026-11-01T12:00:00Z").iloc[0]
    assert result["value"] == value
    assert result["status"] == ("alert" if value else "ok")
    assert result["window"] == keys.get("window", "3d")


# -- configuration ---------------------------------------------------------------------


def test_pyproject_rules(tmp_path):
    Path("pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[[tool.agentmetrics.rules]]\nname = "r"\n'
        'metric = "failed_executions"\nalert = 3\n'
    )
    ruleset = load_rules()
    assert ruleset.path.resolve() == tmp_path / "pyproject.toml"
    assert ruleset.rules == [rules.Rule("r", "failed_executions", alert=3)]


def test_agentmetrics_toml_wins_and_rules_flag_overrides(tmp_path):
    Path("pyproject.toml").write_text(
        '[[tool.agentmetrics.rules]]\nname = "from pyproject"\nmetric = "stale_running"\n'
        "alert = 0\n"
    )
    write_rules(rule_toml(name="from toml", metric="stale_running", alert=0))
    assert load_rules().rules[0].name == "from toml"
    other = write_rules(rule_toml(name="other", metric="stale_running", alert=0), "ci.toml")
    assert load_rules(other).rules[0].name == "other"
    rule = load_rules(other).rules[0]
    assert (rule.window, rule.options) == ("24h", {"stale_after": "6h"})


def test_no_rules_file():
    with pytest.raises(ConfigError, match="No rules file: create agentmetrics.toml"):
        load_rules()
    with pytest.raises(ConfigError, match="Config file missing.toml not found"):
        load_rules("missing.toml")


def test_toml_syntax_error_has_line():
    write_rules('[[rules]]\nname = "a"\nmetric = \n')
    with pytest.raises(ConfigError, match=r"agentmetrics.toml: invalid TOML: .*line 3"):
        load_rules()


GOOD = 'name = "ok"\nmetric = "success_rate"\nalert = 90\n'


@pytest.mark.parametrize(
    "bad_rule, message",
    [
        (
            'name = "x"\nmetric = "p99"\nalert = 1\n',
            "line 8: rule 2 ('x'): metric: unknown metric 'p99': use one of success_rate,",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nwarn = "high"\n',
            "line 9: rule 2 ('x'): warn: not a percent: 'high' (write 90 or 90%)",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nalert = 1\ntreshold = 3\n',
            "line 10: rule 2 ('x'): treshold: unknown key (allowed: name, metric, agent,"
            " window, warn, alert, min_samples)",
        ),
        ('metric = "success_rate"\nalert = 1\n', "line 6: rule 2: missing key 'name'"),
        ('name = "x"\nalert = 1\n', "line 6: rule 2 ('x'): missing key 'metric'"),
        (
            'name = "x"\nmetric = "success_rate"\n',
            "line 6: rule 2 ('x'): needs a 'warn' or an 'alert'",
        ),
        (
            'name = "x"\nmetric = "p95_duration_ms"\nwarn = "10s"\nalert = "5s"\n',
            "line 9: rule 2 ('x'): warn: must not be above alert (10s > 5s) for p95_duration_ms",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nwarn = 80\nalert = 90\n',
            "line 9: rule 2 ('x'): warn: must not be below alert (80 < 90) for success_rate",
        ),
        (
            'name = "x"\nmetric = "failed_orchestrations"\nagent = "a"\nalert = 1\n',
            "line 9: rule 2 ('x'): agent: does not apply to metric 'failed_orchestrations'",
        ),
        (
            'name = "x"\nmetric = "stale_running"\nwindow = "24h"\nalert = 1\n',
            "line 9: rule 2 ('x'): window: does not apply to metric 'stale_running'",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nwindow = "a day"\nalert = 1\n',
            "line 9: rule 2 ('x'): window: not a duration: 'a day'",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nwindow = 24\nalert = 1\n',
            "line 9: rule 2 ('x'): window: '24' needs a unit: use e.g. 24ms, 90s, 15m,"
            " 1.5h, 3d, 2w",
        ),
        (
            'name = "x"\nmetric = "regressions"\nof = "p99"\nalert = 0\n',
            "line 9: rule 2 ('x'): of: must be one of p95_duration_ms, p50_duration_ms,"
            " success_rate, got 'p99'",
        ),
        (
            'name = "x"\nmetric = "regressions"\nalpha = 2\nalert = 0\n',
            "line 9: rule 2 ('x'): alpha: must be above 0 and below 1, got 2",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nmin_samples = 2.5\nalert = 0\n',
            "line 9: rule 2 ('x'): min_samples: must be a whole number, got 2.5",
        ),
        (
            'name = "x"\nmetric = "failed_executions"\nalert = true\n',
            "line 9: rule 2 ('x'): alert: must be a number, got True",
        ),
        (
            'name = "x"\nmetric = "success_rate"\nalert = true\n',
            "line 9: rule 2 ('x'): alert: not a percent: True (write 90 or 90%)",
        ),
        (
            'name = "ok"\nmetric = "success_rate"\nalert = 50\n',
            "line 7: rule 2 ('ok'): name: duplicate rule name 'ok'",
        ),
        (
            'name = ""\nmetric = "success_rate"\nalert = 1\n',
            "line 7: rule 2 (''): name: must be a non-empty string, got ''",
        ),
    ],
)
def test_rule_errors_name_key_and_line(bad_rule, message):
    write_rules(f"[[rules]]\n{GOOD}\n[[rules]]\n{bad_rule}")
    with pytest.raises(ConfigError) as info:
        load_rules()
    assert str(info.value).startswith(f"agentmetrics.toml, {message}")


def test_rule_error_line_in_pyproject():
    Path("pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.agentmetrics]\n\n'
        '[[tool.agentmetrics.rules]]\nname = "a"\nmetric = "failed_executions"\nalert = -x\n'
    )
    with pytest.raises(ConfigError, match=r"pyproject.toml.* TOML: .*line 9"):
        load_rules()
    Path("pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[[tool.agentmetrics.rules]]\nname = "a"\n'
        'metric = "failed_executions"\nalert = 1\n\n'
        '[[ tool.agentmetrics.rules ]]\nname = "b"\nmetric = "failed_executions"\n'
        'alert = "x"\n'
    )
    with pytest.raises(ConfigError, match=r"pyproject.toml, line 12: rule 2 \('b'\): alert: "):
        load_rules()


@pytest.mark.parametrize(
    "text, message",
    [
        ('rules = "all"\n', "agentmetrics.toml, line 1: rules: must be an array of tables"),
        ("rules = []\n", "agentmetrics.toml, line 1: rules: is empty"),
        ("[costs]\ndefault_hourly_rate = 5\n", "agentmetrics.toml: no rules: add [[rules]] tables"),
    ],
)
def test_rules_table_errors(text, message):
    write_rules(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_rules()


# -- notification ----------------------------------------------------------------------


class Receiver:
    """A local HTTP server recording what is POSTed to it."""

    def __init__(self, status: int = 200):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_notify_posts_json(receiver):
    message = {"text": "hello", "status": "alert"}
    assert notify(receiver.url, message) is None
    assert receiver.received == [("/hook", "application/json", message)]


def test_notify_reports_failures(closed_port, silent_port):
    assert "refused" in notify(f"http://127.0.0.1:{closed_port}/", {"text": "x"}).lower()
    started = time.monotonic()
    problem = notify(f"http://127.0.0.1:{silent_port}/", {"text": "x"}, timeout=0.5)
    assert time.monotonic() - started < 3
    assert "timed out" in problem.lower()
    assert notify("ftp://example/", {}) == "not an http(s) URL: ftp://example"
    server = Receiver(status=500)
    try:
        assert notify(server.url, {"text": "x"}) == "HTTP 500 Internal Server Error"
    finally:
        server.close()


def test_notify_bounds_a_trickling_server():
    """A server sending a byte at a time never trips the socket timeout; notify still
    gives up, long before the server is done. Counted in bytes the server sent, not
    timed: each byte takes 0.2 s, so the whole answer would take 24 s."""
    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100 + b"\r\n\r\n"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()
    sent = []

    def trickle():
        conn, _ = listener.accept()
        with conn:
            for byte in answer:
                if stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                sent.append(byte)
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    problem = notify(f"http://127.0.0.1:{listener.getsockname()[1]}/", {}, timeout=0.5)
    stop.set()
    listener.close()
    # The whole call is bounded by the timeout plus 1 s (about 8 bytes); the bound is
    # generous for a loaded machine and still far below the whole answer.
    assert problem == "timed out after 0.5s"
    assert 0 < len(sent) < len(answer) // 3


def test_payload(data):
    text = rule_toml(name="rate", metric="success_rate", warn=95, alert=90)
    text += rule_toml(name="coder fails", metric="failed_executions", agent="coder", warn=1)
    text += rule_toml(name="stale", metric="stale_running", stale_after="12h", alert=0)
    results = evaluate(data, load_rules(write_rules(text)), now=NOW)
    message = payload(results, database="m.db")
    assert message["text"] == (
        "agentmetrics check: ALERT (1 alert, 1 warn, 1 ok) on m.db\n"
        "- ALERT rate: 85.7% < 90.0%\n"
        "- WARN coder fails [coder]: 2 > 1"
    )
    assert message["status"] == "alert"
    assert message["database"] == "m.db"
    assert message["counts"] == {"ok": 1, "warn": 1, "alert": 1}
    assert message["rules"][1] == {
        "name": "coder fails",
        "metric": "failed_executions",
        "agent": "coder",
        "window": "24h",
        "status": "warn",
        "value": 2,
        "warn": 1,
        "alert": None,
        "detail": "2 > 1",
    }
    assert message["rules"][0]["value"] == pytest.approx(1200 / 14)
    json.dumps(message)  # serialisable as is


# -- the check command -----------------------------------------------------------------


def check(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), "check", "--now", NOW_ISO, *args])


RULES = (
    rule_toml(name="rate", metric="success_rate", warn=80)
    + rule_toml(name="coder p95", metric="p95_duration_ms", agent="coder", warn="9s", alert="20s")
    + rule_toml(name="stale", metric="stale_running", alert=5)
)


def test_check_ok_and_warn_exit_0(data, db_path):
    write_rules(rule_toml(name="rate", metric="success_rate", warn=80))
    result = check(db_path)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"agentmetrics check: OK (0 alert, 0 warn, 1 ok) on {db_path}"
    )
    write_rules(RULES)
    result = check(db_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "status",
        "name",
        "metric",
        "agent",
        "window",
        "value",
        "warn",
        "alert",
        "why",
    ]
    # p95 of coder's durations 1-10 s is 9.55 s: shown as 9s, like the 9s limit, so
    # the reason gives both unrounded.
    assert lines[2].split() == [
        "WARN",
        "coder",
        "p95",
        "p95_duration_ms",
        "coder",
        "24h",
        "9s",
        "9s",
        "20s",
        "9550ms",
        ">",
        "9000ms",
    ]
    assert lines[-1] == f"agentmetrics check: WARN (0 alert, 1 warn, 2 ok) on {db_path}"
    assert check(db_path, "--strict").exit_code == 1


def test_check_alert_exit_1(data, db_path):
    write_rules(RULES + rule_toml(name="failures", metric="failed_orchestrations", alert=0))
    result = check(db_path)
    assert result.exit_code == 1
    assert result.output.splitlines()[4].split() == [
        "ALERT",
        "failures",
        "failed_orchestrations",
        "-",
        "24h",
        "2",
        "-",
        "0",
        "2",
        ">",
        "0",
    ]
    assert "agentmetrics check: ALERT (1 alert, 1 warn, 2 ok)" in result.output


def test_check_json(data, db_path):
    write_rules(RULES)
    result = check(db_path, "--json")
    assert result.exit_code == 0
    message = json.loads(result.stdout)
    assert message["status"] == "warn"
    assert [r["status"] for r in message["rules"]] == ["ok", "warn", "ok"]
    assert message["rules"][1]["value"] == pytest.approx(9550)
    assert message["database"] == str(db_path)


def test_check_rules_option_and_pyproject(data, db_path):
    Path("pyproject.toml").write_text(
        '[[tool.agentmetrics.rules]]\nname = "p"\nmetric = "failed_executions"\nalert = 0\n'
    )
    assert check(db_path).exit_code == 1  # 2 failed executions
    write_rules(rule_toml(name="lenient", metric="failed_executions", alert=10), "ci.toml")
    assert check(db_path, "--rules", "ci.toml").exit_code == 0


@pytest.mark.parametrize(
    "text, message",
    [
        (
            rule_toml(name="x", metric="p99", alert=1),
            "Error: agentmetrics.toml, line 3: rule 1 ('x'): metric: unknown metric 'p99'",
        ),
        ('[[rules]]\nname = "x"\nmetric = ', "Error: agentmetrics.toml: invalid TOML"),
        (None, "Error: No rules file"),
    ],
)
def test_check_config_errors_exit_2(data, db_path, text, message):
    if text is not None:
        write_rules(text)
    result = check(db_path)
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert "Traceback" not in result.output


def test_check_config_error_before_database(tmp_path):
    write_rules(rule_toml(name="x", metric="success_rate"))
    result = check(tmp_path / "missing.db")
    assert result.exit_code == 2
    assert "needs a 'warn' or an 'alert' threshold" in result.output


def test_check_missing_database(tmp_path):
    write_rules(RULES)
    result = check(tmp_path / "missing.db")
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found at")


def test_check_rules_file_missing(data, db_path):
    result = check(db_path, "--rules", "nope.toml")
    assert result.exit_code == 2
    assert result.output == "Error: Config file nope.toml not found\n"


def test_check_notify_posts_when_not_ok(data, db_path, receiver):
    write_rules(RULES)
    result = check(db_path, "--notify", receiver.url)
    assert result.exit_code == 0
    assert result.stderr == f"Notified http://127.0.0.1:{receiver.server.server_port}\n"
    ((path, content_type, message),) = receiver.received
    assert message["status"] == "warn"
    assert message["text"].startswith("agentmetrics check: WARN")
    assert [r["name"] for r in message["rules"]] == ["rate", "coder p95", "stale"]


def test_check_notify_silent_when_ok(data, db_path, receiver):
    write_rules(rule_toml(name="rate", metric="success_rate", warn=80))
    result = check(db_path, "--notify", receiver.url)
    assert result.exit_code == 0
    assert receiver.received == []
    assert result.stderr == ""


def test_check_notify_failures_are_not_fatal(data, db_path, closed_port, silent_port, monkeypatch):
    write_rules(RULES + rule_toml(name="failures", metric="failed_orchestrations", alert=0))
    result = check(db_path, "--notify", f"http://127.0.0.1:{closed_port}/")
    assert result.exit_code == 1  # the alert, not the network
    assert result.stderr.startswith(f"Warning: could not notify http://127.0.0.1:{closed_port}: ")
    monkeypatch.setattr(agentmetrics.alerting.notify, "NOTIFY_TIMEOUT", 0.3)
    started = time.monotonic()
    result = check(db_path, "--notify", f"http://127.0.0.1:{silent_port}/")
    assert time.monotonic() - started < 3
    assert result.exit_code == 1
    assert "timed out" in result.stderr


@pytest.mark.parametrize("url", ["ftp://host/x", "hooks.example/x", "http://"])
def test_check_notify_bad_url(data, db_path, url):
    write_rules(RULES)
    result = check(db_path, "--notify", url)
    assert result.exit_code == 2
    assert "Invalid value for '--notify': not an http(s) URL" in result.output


def test_check_notify_empty_url_sends_nothing(data, db_path):
    """An unset CI secret expands to an empty --notify: the check still runs."""
    write_rules(RULES)
    result = check(db_path, "--notify", "")
    assert result.exit_code == 0
    assert result.stderr == ""


# -- the webhook: a secret URL, a bounded answer, no redirects ---------------------------

SECRET = "T0001/B0002/XXsecretXX"


class Answering:
    """A local HTTP server answering every request with ``answer(handler)``."""

    def __init__(self, answer):
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                requests.append(("POST", self.path, self.rfile.read(length)))
                answer(self)

            def do_GET(self):
                requests.append(("GET", self.path, b""))
                answer(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering():
    servers = []

    def start(answer):
        servers.append(Answering(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_notify_does_not_follow_a_redirect(answering):
    """urllib follows a 302 with a GET without the body: the message would be lost while
    the call looked successful."""

    def answer(handler):
        if handler.path == "/landing":
            handler.send_response(200)
            handler.end_headers()
            return
        handler.send_response(302)
        handler.send_header("Location", "/landing")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = answering(answer)
    problem = notify(f"{server.base}/hook", {"text": "x"}, timeout=2)
    assert problem == "HTTP 302: a redirect, not followed (give the URL it redirects to)"
    assert [(method, path) for method, path, _ in server.requests] == [("POST", "/hook")]


def test_notify_reads_a_bounded_answer(answering):
    """A server streaming an endless 200 answer: notify reads 64 KiB and is done, long
    before the timeout (reading it all would end in "timed out")."""

    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**12))
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(100_000):  # bounded: about 6 GB, never reached
                handler.wfile.write(chunk)
        except OSError:  # the client hung up
            pass

    server = answering(answer)
    assert notify(f"{server.base}/hook", {"text": "x"}, timeout=2) is None


def test_redact_url():
    from agentmetrics.alerting.notify import redact_url

    assert redact_url(f"https://hooks.slack.com/services/{SECRET}") == "https://hooks.slack.com"
    assert redact_url("https://user:XXsecretXX@example.com:8443/x?token=1") == (
        "https://example.com:8443"
    )
    assert redact_url(f"http://[::1]:9/{SECRET}") == "http://[::1]:9"
    assert redact_url(f"http://[::1/{SECRET}") == "(an invalid URL)"
    assert redact_url(f"/{SECRET}") == "(a URL)"


def test_notify_problems_never_show_the_url(closed_port):
    for url in (
        f"http://127.0.0.1:{closed_port}/{SECRET}",
        f"ftp://user:{SECRET}@example/{SECRET}",
        f"http://127.0.0.1:{closed_port}/{SECRET} \x01",  # urllib quotes the URL in its error
    ):
        problem = notify(url, {"text": "x"}, timeout=2)
        assert problem and SECRET not in problem


def test_check_never_prints_the_webhook_url(data, db_path, answering, closed_port):
    def answer(handler):
        handler.send_response(200 if handler.path.endswith("ok") else 404)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = answering(answer)
    write_rules(RULES)
    sent = check(db_path, "--notify", f"{server.base}/services/{SECRET}/ok")
    assert sent.exit_code == 0, sent.output
    assert sent.stderr == f"Notified {server.base}\n"
    failed = check(db_path, "--notify", f"{server.base}/services/{SECRET}")
    assert failed.stderr == f"Warning: could not notify {server.base}: HTTP 404 Not Found\n"
    refused = check(db_path, "--notify", f"http://127.0.0.1:{closed_port}/services/{SECRET}")
    assert refused.stderr.startswith(f"Warning: could not notify http://127.0.0.1:{closed_port}: ")
    for result in (sent, failed, refused):
        assert SECRET not in result.output + result.stderr


def basic_auth_server(answering, accepted):
    """A webhook answering 200 to the ``Authorization`` header ``accepted``, else 401;
    it records the headers of every request."""
    headers = []

    def answer(handler):
        headers.append(dict(handler.headers))
        handler.send_response(200 if handler.headers["Authorization"] == accepted else 401)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = answering(answer)
    return server, headers


def test_notify_sends_url_credentials_as_basic_auth(answering):
    """``user:password@`` in the URL used to be looked up as part of the host name."""
    # "ci@bot:p:ss word" in base64, by hand (RFC 7617: user ":" password).
    server, headers = basic_auth_server(answering, "Basic Y2lAYm90OnA6c3Mgd29yZA==")
    host = server.base.removeprefix("http://")
    url = f"http://ci%40bot:p%3Ass%20word@{host}/hook?x=1"
    assert notify(url, {"text": "x"}, timeout=2) is None
    assert [(method, path) for method, path, _ in server.requests] == [("POST", "/hook?x=1")]
    assert headers[0]["Host"] == host  # the credentials are not part of the host
    # A user without a password is "user:" (RFC 7617); a wrong one gets the server's answer.
    server, headers = basic_auth_server(answering, "Basic dXNlcjo=")
    host = server.base.removeprefix("http://")
    assert notify(f"http://user@{host}/", {}, timeout=2) is None
    assert notify(f"http://user:{SECRET.replace('/', '')}@{host}/", {}, timeout=2) == (
        "HTTP 401 Unauthorized"
    )


def test_notify_without_credentials_sends_no_authorization(answering):
    server, headers = basic_auth_server(answering, None)
    assert notify(f"{server.base}/hook", {}, timeout=2) is None
    assert "Authorization" not in headers[0]


def test_check_never_prints_webhook_credentials(data, db_path, answering):
    password = SECRET.replace("/", "")
    server, _ = basic_auth_server(answering, "Basic dXNlcjpUMDAwMUIwMDAyWFhzZWNyZXRYWA==")
    write_rules(RULES)
    host = server.base.removeprefix("http://")
    sent = check(db_path, "--notify", f"http://user:{password}@{host}/hook")
    assert sent.exit_code == 0, sent.output
    assert sent.stderr == f"Notified {server.base}\n"
    refused = check(db_path, "--notify", f"http://user:wrong{password}@{host}/hook")
    assert refused.stderr == (f"Warning: could not notify {server.base}: HTTP 401 Unauthorized\n")
    for result in (sent, refused):
        assert password not in result.output + result.stderr
        assert "user" not in result.output + result.stderr


@pytest.mark.parametrize(
    "url, shown",
    [
        ("ftp://user:XXsecretXX@example.com/", "not an http(s) URL: ftp://example.com"),
        (f"https://example.com:99999/{SECRET}", "not a valid URL: check its host and port"),
        (f"https://user:{SECRET}@example.com/", "not a valid URL: check its host and port"),
        (f"https://example.com/{SECRET} x", "https://example.com...: spaces or control"),
    ],
)
def test_check_bad_webhook_url_is_not_printed(data, db_path, url, shown):
    write_rules(RULES)
    result = check(db_path, "--notify", url)
    assert result.exit_code == 2
    assert shown in result.output
    assert "XXsecretXX" not in result.output and "T0001" not in result.output


# -- rules: huge windows, thresholds TOML accepts but no rule can use ----------------------


def test_check_huge_window(db, db_path, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "a"\nmetric = "failed_executions"\nalert = 0\nwindow = "1000000d"\n'
        '[[rules]]\nname = "b"\nmetric = "stale_running"\nalert = 0\nstale_after = "1000000d"\n'
    )
    result = cli_result("--db", db_path, "check", "--rules", rules)
    no_traceback(result, 0)
    assert result.output.count(" ok ") == 2


def check_with(db_path, tmp_path, text, *args):
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    return cli_result("--db", db_path, "check", "--rules", rules, *args)


RULE = '[[rules]]\nname = "r"\nmetric = "{metric}"\n{extra}\n'


@pytest.mark.parametrize(
    "metric,extra,message",
    [
        # TOML has nan and inf; a nan threshold never compared true: a silent dead rule.
        ("success_rate", "warn = nan", "line 4: rule 1 ('r'): warn: nan is not a percent from 0"),
        ("p95_duration_ms", "alert = inf", "alert: not a duration: inf"),
        ("failed_executions", "alert = -inf", "alert: must be a number, got -inf"),
        ("regressions", "alert = 0\nthreshold = nan", "threshold: must be a number, got nan"),
        ("regressions", "alert = 0\nalpha = nan", "alpha: must be a number, got nan"),
        ("[1, 2]", "alert = 0", "metric: unknown metric"),
    ],
)
def test_check_rejects_unusable_values(db, db_path, tmp_path, metric, extra, message):
    text = RULE.format(metric=metric, extra=extra)
    if metric.startswith("["):
        text = text.replace('"[1, 2]"', "[1, 2]")
    result = check_with(db_path, tmp_path, text)
    no_traceback(result, 2)
    assert message in result.output


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/hook"])
def test_check_notify_malformed_url(db, db_path, tmp_path, url):
    result = check_with(
        db_path,
        tmp_path,
        RULE.format(metric="failed_executions", extra="alert = 0"),
        "--notify",
        url,
    )
    no_traceback(result, 2)
    assert "Invalid value for '--notify': not a valid URL" in result.output


def test_old_older_than_key_names_its_new_name(tmp_path):
    path = write_rules(rule_toml(name="r", metric="stale_running", older_than="6h", alert=0))
    with pytest.raises(rules.ConfigError, match="older_than: renamed: use 'stale_after'"):
        load_rules(path)
