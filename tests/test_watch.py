import datetime as dt
import io

import pytest
from click.testing import CliRunner
from conftest import cli_result
from dashboard_data import NOW, T0, build

import agentmetrics
from agentmetrics.cli import cli
from agentmetrics.outputs.watch import CLEAR, render, snapshot, watch

AT_11_05 = T0 + dt.timedelta(hours=1, minutes=5)


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


def test_snapshot_numbers(data_path):
    snap = snapshot(data_path, now=AT_11_05, recent_minutes=60)
    # Started in the hour before 11:05: a-3 (coder 30s) and a-4 (tester 10s), both ok.
    assert snap.hour_finished == 2
    assert snap.hour_success_rate == 100.0
    assert snap.hour_p95_ms == pytest.approx(10_000 + 0.95 * 20_000)
    # Finished between 10:05 and 11:05, newest first.
    assert snap.recent["agent_name"].tolist() == ["tester", "coder"]
    assert snap.recent["duration_ms"].tolist() == [10_000, 30_000]
    # s-3 starts the next day: nothing is running yet at 11:05.
    assert snap.running.empty
    assert snap.agents_running == 0
    assert snap.failures["agent_name"].tolist() == ["reviewer"]


def test_snapshot_running(data_path):
    snap = snapshot(data_path, now=NOW)
    assert snap.running["session_id"].tolist() == ["s-3"]
    assert snap.running["elapsed_ms"].tolist() == [7 * 3600 * 1000]
    assert snap.running["agents_running"].tolist() == [1]
    assert snap.agents_running == 2
    assert snap.hour_finished == 0
    assert snap.hour_success_rate != snap.hour_success_rate  # NaN: nothing to divide


def test_render(data_path):
    text = render(snapshot(data_path, now=NOW), width=60)
    assert text == (
        "agentmetrics watch  2026-03-02 12:00:00 UTC\n"
        "\n"
        "Last hour: 0 finished, success rate -, p95 -\n"
        "\n"
        "Running orchestrations (1 shown, 2 agents in progress)\n"
        "     7h 0m  1 agent   s-3  Long job\n"
        "\n"
        "Finished in the last 15 minutes\n"
        "  none\n"
        "\n"
        "Latest failures\n"
        "  2026-03-01 10:01  reviewer: TimeoutError: too slow\n"
    )


def test_render_truncates_to_width(data_path):
    text = render(snapshot(data_path, now=AT_11_05, recent_minutes=60), width=40)
    failure = text.splitlines()[-1]
    assert failure == "  2026-03-01 10:01  reviewer: TimeoutEr…"
    assert len(failure) == 40


def test_render_empty(db):
    text = render(snapshot(db, now=NOW))
    assert text.count("  none") == 3


def test_watch_loop_refreshes(data_path):
    out = io.StringIO()
    sleeps = []
    watch(data_path, interval=0.5, iterations=3, out=out, sleep=sleeps.append)
    # The screen is blanked once; later refreshes overwrite it in place (no flicker).
    assert out.getvalue().count(CLEAR) == 1
    assert out.getvalue().count("\x1b[H") == 3
    assert sleeps == [0.5, 0.5]


def test_watch_sees_new_writes_while_others_write(data_path):
    db = agentmetrics.open_database(data_path, read_only=True)
    first = snapshot(db).agents_running
    monitor = agentmetrics.Monitor(data_path)
    monitor.start_agent_execution("live", "coder")
    assert snapshot(db).agents_running == first + 1
    monitor.close()
    db.close()


def test_cli_once(data_path):
    result = CliRunner().invoke(cli, ["--db", str(data_path), "watch", "--once"])
    assert result.exit_code == 0
    assert result.output.startswith("agentmetrics watch  ")
    assert CLEAR not in result.output
    assert "Latest failures" in result.output


def test_cli_ctrl_c_exits_cleanly(data_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("agentmetrics.outputs.watch.watch", interrupted)
    result = CliRunner().invoke(cli, ["--db", str(data_path), "watch"])
    assert result.exit_code == 0
    assert "Traceback" not in result.output


def test_cli_does_not_write(data_path):
    before = data_path.read_bytes()
    CliRunner().invoke(cli, ["--db", str(data_path), "watch", "--iterations", "1"])
    assert data_path.read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--interval", "0"], "Error: Invalid value for '-n' / '--interval': 0.0 is not in the"),
        (["--interval", "soon"], "Error: Invalid value for '-n' / '--interval': 'soon' is not a"),
        (["--iterations", "-1"], "Error: Invalid value for '--iterations': -1 is not in the range"),
    ],
)
def test_cli_bad_options(data_path, args, message):
    result = CliRunner().invoke(cli, ["--db", str(data_path), "watch", *args])
    assert result.exit_code == 2  # a bad option value is a usage error
    assert result.output.startswith(message)


def test_cli_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "none.db"), "watch", "--once"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found")
    assert not (tmp_path / "none.db").exists()


# -- watch: odd databases, terminal sizes and bounds ---------------------------------------


def test_watch_on_a_database_without_our_tables(tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    result = cli_result("--db", other, "watch", "--once")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {other} is not an agentmetrics database: it has no agentmetrics tables"
        " but other tables (notes); it is left unchanged\n"
    )
    assert other.read_bytes() == before  # watching never creates the schema


def test_watch_refreshes_in_place_within_the_terminal_height(data_path):
    from agentmetrics.outputs.watch import render, snapshot, watch

    total = len(render(snapshot(data_path), 60).splitlines())
    assert total > 7
    out = io.StringIO()
    watch(data_path, iterations=2, out=out, sleep=lambda s: None, width=60, height=8)
    first, second = out.getvalue().split("\x1b[H")[1:]
    assert first.startswith("\x1b[2J") and not second.startswith("\x1b[2J")
    for frame in (first, second):
        lines = frame.removeprefix("\x1b[2J").removesuffix("\x1b[J").split("\n")
        assert lines[-1] == ""  # every line ends with a newline, the cursor row stays free
        shown = lines[:-1]
        assert len(shown) == 7  # an 8-row terminal never scrolls
        assert all(line.endswith("\x1b[K") for line in shown)
        assert shown[0].startswith("agentmetrics watch  ")
        # 6 lines of the view, then the count of those left out
        assert shown[-1] == f"… {total - 6} more lines: enlarge the terminal\x1b[K"


def test_watch_view_fits_without_cutting(data_path):
    from agentmetrics.outputs.watch import render, snapshot, watch

    out = io.StringIO()
    watch(data_path, iterations=1, out=out, sleep=lambda s: None, width=60, height=100)
    frame = out.getvalue().removeprefix("\x1b[H\x1b[2J").removesuffix("\x1b[J")
    expected = render(snapshot(data_path), 60)
    assert frame.replace("\x1b[K", "") == expected


@pytest.mark.parametrize(
    "args, message",
    [
        # Finished executions are looked up over the last day only: more minutes would
        # be accepted and silently cut to a day (and 1e308 overflowed).
        (
            ["--minutes", "1441"],
            "Error: Invalid value for '--minutes': 1441.0 is not in the range 0<x<=1440.\n",
        ),
        (
            ["--minutes", "1e308"],
            "Error: Invalid value for '--minutes': 1e+308 is not in the range 0<x<=1440.\n",
        ),
        (
            ["--interval", "1e308"],
            "Error: Invalid value for '-n' / '--interval': 1e+308 is not in the range"
            " 0<x<=86400.\n",
        ),
    ],
)
def test_watch_bounds(data_path, args, message):
    result = cli_result("--db", data_path, "watch", "--iterations", "2", *args)
    assert result.exit_code == 2  # a bad option value is a usage error
    assert result.output == message


def test_watch_snapshot_rejects_minutes_beyond_the_lookback(data_path):
    from agentmetrics.outputs.watch import snapshot

    with pytest.raises(ValueError, match="recent_minutes must be over 0 and at most 1440"):
        snapshot(data_path, recent_minutes=2000)
    assert snapshot(data_path, recent_minutes=1440).recent_minutes == 1440
