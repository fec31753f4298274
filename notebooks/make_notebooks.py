"""Write the notebooks in this folder and execute them from a fresh kernel.

Run ``python notebooks/make_notebooks.py`` after changing a notebook's cells here (or
the library's output), then check them with
``pytest --nbval --nbval-current-env notebooks/``. The notebooks read the demo
database ``data/notebook-demo.db``, built on first use with a fixed seed and ``now``,
so their stored outputs are reproducible. ``06-frameworks`` writes its own file from a
pydantic-ai run on TestModel (offline) and shows no times or durations; ``07-one-run``
writes its own file from fixed spans (``agentmetrics.demo.build_one_run``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from agentmetrics.demo import NOTEBOOK_NOW as NOW

HERE = Path(__file__).parent

SETUP = """\
%matplotlib inline
import pandas as pd

from agentmetrics import plots, reports
from agentmetrics.demo import NOTEBOOK_NOW, ensure_demo
from agentmetrics.formatting import format_duration, readable

pd.options.display.precision = 1
pd.options.display.width = 120
NOW = NOTEBOOK_NOW  # the demo ends here; every time window is measured back from it
DB = ensure_demo("../data/notebook-demo.db", now=NOW)  # built on first use (a few seconds)
print(DB, NOW)"""

INTRO = """\
The database is agentmetrics' demo: 600 orchestrations of seven agents over 30 days,
ending at a fixed moment (`NOW`) so this notebook's outputs never change. Build the
same data yourself with `agentmetrics demo --db data/demo.db --now {now}`, or point
`DB` at your own monitoring database and drop the `now=` arguments."""


FRAMEWORK_SETUP = """\
%matplotlib inline
import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentmetrics import reports
from agentmetrics.formatting import readable
from agentmetrics.otel import SQLiteSpanExporter

pd.options.display.precision = 1
DB = Path("../data/notebook-frameworks.db")
for suffix in ("", "-wal", "-shm"):
    Path(f"{DB}{suffix}").unlink(missing_ok=True)  # a fresh file on every run

exporter = SQLiteSpanExporter(DB)
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(exporter))"""

# The agents' cell is the part of docs/examples/pydantic_ai_example.py between its markers.
_EXAMPLE = (Path(__file__).parent.parent / "docs/examples/pydantic_ai_example.py").read_text()
FRAMEWORK_AGENTS = _EXAMPLE.split("# [notebook 06: the agents]\n")[1].split("# [end]")[0].rstrip()


ONE_RUN_SETUP = """\
%matplotlib inline
from pathlib import Path

import pandas as pd

import agentmetrics
from agentmetrics import plots
from agentmetrics.outputs import display, waterfall
from agentmetrics.demo import build_one_run

pd.options.display.precision = 1
pd.options.display.width = 120
DB = Path("../data/notebook-one-run.db")
for suffix in ("", "-wal", "-shm"):
    Path(f"{DB}{suffix}").unlink(missing_ok=True)  # a fresh file on every run
SESSION = build_one_run(DB)
SESSION"""


class Markdown(str):
    """A markdown cell's text (other cells are code)."""


def md(text: str) -> Markdown:
    return Markdown(text)


NOTEBOOKS = {
    "01-health-overview.ipynb": [
        md("# Health overview: what is the state now?\n\n" + INTRO),
        SETUP,
        md(
            "## The last 24 hours\n\n"
            "The same numbers `agentmetrics health` prints: orchestrations by status, "
            "executions, success rate (completed out of finished) and durations, shown by "
            "`readable` as the command line shows them (counts as integers, rates in %, "
            "durations as `2m 5s`)."
        ),
        "health = reports.system_health(DB, hours=24, now=NOW)\nreadable(health).T",
        md("The report itself keeps plain numbers to compute with (milliseconds, percent):"),
        'health[["executions", "success_rate", "p95_duration_ms"]]',
        md("## The last week, for comparison"),
        "readable(reports.system_health(DB, hours=24 * 7, now=NOW)).T",
        md(
            "## What is running right now\n\n"
            "The newest orchestrations; the few at the top started minutes before `NOW` and "
            "are still running."
        ),
        "latest = reports.list_orchestrations(DB, limit=8)\n"
        'latest[["session_id", "task_description", "status", "started_at", "total_tasks",\n'
        '        "completed_tasks", "failed_tasks"]]',
        'running = latest[latest["status"] == "running"]\n'
        'print(f"{len(running)} orchestrations running")',
        md(
            "## The last two weeks, day by day\n\n"
            "Executions per day (completed and failed) and the daily success rate."
        ),
        'daily = reports.trends(DB, since="14d", now=NOW)\n'
        'daily[["period", "executions", "failed", "success_rate"]].tail(7)',
        'fig = plots.plot_trends(daily, title="Last 14 days")\nfig',
    ],
    "02-agent-performance.ipynb": [
        md("# Agent performance: who is slow, who fails?\n\n" + INTRO),
        SETUP,
        md(
            "## Every agent at a glance\n\n"
            "`performance_report` is what `agentmetrics performance` prints: one row per "
            "agent, busiest first, with exact percentiles of finished executions."
        ),
        "perf = reports.performance_report(DB)\n"
        'perf[["agent_name", "executions", "failed", "success_rate", "p50_duration_ms",\n'
        '      "p95_duration_ms", "p99_duration_ms", "retries", "self_healed_executions"]]',
        md("## Who is slow?\n\nSorted by p95 duration, in readable units:"),
        'slowest = perf.sort_values("p95_duration_ms", ascending=False).set_index("agent_name")\n'
        'slowest[["p50_duration_ms", "p95_duration_ms", "p99_duration_ms"]].map(format_duration)',
        md("The spread per agent (boxes span p25 to p75, whiskers p5 to p95; log scale):"),
        "fig = plots.plot_duration_distribution(reports.durations(DB))\nfig",
        md(
            "`code-writer` is the slowest agent, and its box is tall: it got slower "
            "recently. Its median and p95 per day over the month show when:"
        ),
        "daily = reports.trends(DB, by_agent=True, now=NOW)\n"
        "fig = plots.plot_durations(daily)\nfig",
        'reports.trends(DB, freq="W", agent="code-writer")[\n'
        '    ["period", "executions", "p50_duration_ms", "p95_duration_ms"]]',
        md(
            "## Who fails?\n\nSorted by success rate, lowest first: `test-runner` is the flaky one."
        ),
        'perf.sort_values("success_rate")[["agent_name", "executions", "failed", "success_rate"]]',
        md("## One agent's latest executions"),
        'reports.agent_stats(DB, "test-runner", limit=5)[\n'
        '    ["agent_session_id", "status", "started_at", "duration_ms", "retry_count",\n'
        '     "self_healed", "error_message"]]',
    ],
    "03-failure-analysis.ipynb": [
        md("# Failure analysis: error patterns, failed orchestrations, self-healing\n\n" + INTRO),
        SETUP,
        md(
            "## Error patterns\n\n"
            "Failed executions grouped by their error message with the variable parts "
            "(numbers, ids, paths, quoted values) folded into placeholders, so hundreds of "
            "different messages become a handful of causes."
        ),
        "patterns = reports.error_patterns(DB)\n"
        'patterns[["pattern", "count", "agents", "first_seen", "last_seen"]]',
        md("The raw messages behind the most frequent pattern look like this:"),
        'print(patterns["example"].iloc[0])',
        md("The flaky `test-runner` accounts for three patterns, and nothing else:"),
        'reports.error_patterns(DB, agent="test-runner")[["pattern", "count", "agent_count"]]',
        "fig = plots.plot_failures(reports.self_healing(DB), patterns)\nfig",
        md(
            "## Failed orchestrations\n\n"
            "What `agentmetrics failures` lists: a failed task usually stops the "
            "orchestration (`failed`); sometimes it carries on (`partial`)."
        ),
        "failed = reports.failed_orchestrations(DB, limit=8, include_partial=True)\n"
        'failed[["session_id", "status", "started_at", "total_tasks", "completed_tasks",\n'
        '        "failed_tasks", "task_completion_rate"]]',
        md("The executions of the latest one, in task order:"),
        'session = failed["session_id"].iloc[0]\n'
        "steps = reports.executions(DB, session)\n"
        'steps["duration"] = steps["duration_ms"].map(format_duration)\n'
        'steps[["task_number", "agent_name", "status", "duration", "retry_count", "self_healed",\n'
        '       "error_message"]]',
        md(
            "## Self-healing\n\n"
            "How often self-healing kicked in (`self_healed_rate`, percent of "
            "executions) and how often it rescued the execution (`rescue_rate`, percent of "
            "self-healed executions that completed)."
        ),
        "reports.self_healing(DB)",
    ],
    "04-trends.ipynb": [
        md("# Trends: how things change, and the agent that regressed\n\n" + INTRO),
        SETUP,
        md(
            "## Day by day\n\n"
            "One row per day, including days with nothing (zero executions), with the "
            "success rate and exact p50/p95 durations of that day's finished executions."
        ),
        "daily = reports.trends(DB, now=NOW)\ndaily.tail(10)",
        "fig = plots.plot_trends(daily)\nfig",
        md("## Week by week\n\nWeeks start on Monday; the first and last weeks are partial."),
        'reports.trends(DB, freq="W")',
        md(
            "## Per agent: who changed?\n\n"
            "The weekly p95 of every agent side by side: one column moves, the others hold."
        ),
        'weekly = reports.trends(DB, freq="W", by_agent=True)\n'
        'weekly.pivot(index="period", columns="agent_name", values="p95_duration_ms").map(\n'
        "    format_duration)",
        "fig = plots.plot_durations(reports.trends(DB, by_agent=True, now=NOW))\nfig",
        md(
            "## Is it a real regression?\n\n"
            "`regressions` compares each agent's last 7 days with the 21 days before, with a "
            "rank test and a minimum sample size: only `code-writer` is flagged."
        ),
        'found = reports.regressions(DB, recent="7d", baseline="21d", now=NOW)\n'
        'found[["agent_name", "baseline_value", "recent_value", "change", "baseline_n",\n'
        '       "recent_n", "regressed"]]',
        md("## Hour by hour, the last day"),
        'hourly = reports.trends(DB, freq="h", since="24h", now=NOW)\n'
        'hourly[["period", "executions", "failed", "p95_duration_ms"]].tail(6)',
    ],
    "05-costs.ipynb": [
        md("# Costs: what did the agents cost?\n\n" + INTRO),
        SETUP,
        md(
            "## Rates\n\n"
            "The same table as `[costs]` in `agentmetrics.toml`: a default hourly rate, "
            "per-agent hourly rates, and per-model token prices (USD per million tokens). "
            "Here they are given inline; from the file, they are "
            "`cost_rates(load_config())` "
            "(`agentmetrics.reports.cost`, `agentmetrics.alerting.config`)."
        ),
        "rates = {\n"
        '    "default_hourly_rate": 6.0,\n'
        '    "agents": {"deployer": 2.0},\n'
        '    "models": {\n'
        '        "claude-sonnet-4": {"input_per_million": 3.0, "output_per_million": 15.0}\n'
        "    },\n"
        "}\n"
        "SINCE = pd.Timestamp(NOW) - pd.Timedelta(days=7)",
        md(
            "## By agent, last 7 days\n\n"
            "Each execution is priced by the first method that applies: the `cost_usd` the "
            "tracker recorded, else its tokens at its model's price, else its duration at "
            "the hourly rate. The demo's model-backed agents record `cost_usd`; `deployer` "
            "runs no model, so its cost comes from time. `method` says which produced each "
            "row's figure, and the `*_cost_usd` columns split it."
        ),
        "by_agent = reports.costs(DB, rates=rates, since=SINCE, until=NOW)\n"
        'by_agent[["agent_name", "finished", "time_cost_usd", "token_cost_usd",\n'
        '          "recorded_cost_usd", "cost_usd", "method"]].round(2)',
        "from agentmetrics.plots import cost_chart\n\n"
        'fig = cost_chart(by_agent, title="Estimated cost by agent, last 7 days")\nfig',
        md("## Day by day"),
        'daily = reports.costs(DB, rates=rates, by="day", since=SINCE, until=NOW)\n'
        'daily[["day", "finished", "cost_usd"]].round({"cost_usd": 2})',
        md("## The most expensive orchestrations"),
        'by_run = reports.costs(DB, rates=rates, by="orchestration", since=SINCE,\n'
        "                       until=NOW)\n"
        'by_run[["session_id", "task_description", "finished", "cost_usd"]].head(5).round(2)',
    ],
    "06-frameworks.ipynb": [
        md(
            "# Frameworks: a pydantic-ai team, traced into agentmetrics\n\n"
            "Agents built on a framework already emit OpenTelemetry spans. "
            "`SQLiteSpanExporter` writes them into a SQLite file as orchestrations and "
            "executions ([OpenTelemetry](../docs/opentelemetry.md) has the mapping), so every "
            "report works on them. Here three pydantic-ai agents run on its `TestModel`: no "
            "network, no API key (`pip install -e '.[notebooks]'` installs pydantic-ai and the "
            "OpenTelemetry SDK). The spans carry the real times of this run, so the tables "
            "below show counts, statuses, names and tokens, and leave times and durations "
            "out: they differ on every run."
        ),
        md(
            "## A tracer provider that writes into a fresh file\n\n"
            "A `BatchSpanProcessor` exports from a background thread, so the agents never "
            "wait for the database."
        ),
        FRAMEWORK_SETUP,
        md(
            "## The agents\n\n"
            "A `coordinator` handles a ticket through one tool, `delegate`, which runs two "
            "sub-agents: the `researcher` (with a `search` tool) and then the `writer`. "
            "pydantic-ai's instrumentation sends every agent run, model call and tool call "
            "to the provider above. `TestModel` calls every tool once and makes up its "
            "answers."
        ),
        FRAMEWORK_AGENTS,
        md(
            "## Four tickets, one failing in a tool\n\n"
            "Ticket 3 runs while search is down: the researcher's tool raises, and the "
            "error goes up through the coordinator's tool to the caller. Each run's "
            "`conversation_id` becomes its orchestration's session id. (A notebook runs an "
            "event loop already, hence `await agent.run()`; a script calls `run_sync`.)"
        ),
        "outcomes = {}\n"
        "for n in range(1, 5):\n"
        '    session = f"ticket-{n}"\n'
        "    try:\n"
        "        await coordinator.run(session, deps=Backend(search_up=n != 3),\n"
        "                              conversation_id=session)\n"
        '        outcomes[session] = "answered"\n'
        "    except ConnectionError as e:\n"
        '        outcomes[session] = f"failed: {e}"\n'
        "provider.force_flush()  # wait for the background thread to write the last spans\n"
        'print(f"{exporter.exported} spans stored, {exporter.dropped} dropped")\n'
        'pd.Series(outcomes, name="outcome").to_frame()',
        md(
            "## Orchestrations\n\n"
            "Each coordinator run is an orchestration; the agents it ran, itself included, "
            "are its tasks."
        ),
        "runs = reports.list_orchestrations(DB)\n"
        'runs.sort_values("session_id")[["session_id", "task_description", "status",\n'
        '                                 "total_tasks", "completed_tasks", "failed_tasks"]]',
        md(
            "One ticket's executions: the sub-agents point at the coordinator "
            "(`parent_execution_id`), model calls add up their tokens, and tool calls are "
            "counted in `metadata_json`."
        ),
        'steps = reports.executions(DB, "ticket-1")\n'
        'names = steps.set_index("id")["agent_name"]\n'
        'steps["called_by"] = steps["parent_execution_id"].map(names).fillna("")\n'
        'steps["tool_calls"] = [json.loads(m).get("tool_calls", 0)\n'
        '                       for m in steps["metadata_json"]]\n'
        'steps[["agent_name", "called_by", "status", "model", "input_tokens", "output_tokens",\n'
        '       "tool_calls"]]',
        md(
            "## Health\n\n"
            "What `agentmetrics health` prints, for the last 24 hours (durations left out):"
        ),
        "health = readable(reports.system_health(DB, hours=24))\n"
        'health[["orchestrations", "completed_orchestrations", "failed_orchestrations",\n'
        '        "executions", "completed", "failed", "success_rate"]].T',
        md(
            "## Per agent\n\n"
            "`performance_report` (what `agentmetrics performance` prints) and one agent's "
            "`agent_summary`; their duration percentiles are in the frames too."
        ),
        "perf = reports.performance_report(DB)\n"
        'perf[["agent_name", "executions", "completed", "failed", "success_rate", "retries"]]',
        'reports.agent_summary(DB, "researcher")[["agent_name", "executions", "failed",\n'
        '                                         "success_rate"]]',
        'fig = Figure(figsize=(6, 2.5), layout="constrained")\n'
        "ax = fig.subplots()\n"
        'perf.set_index("agent_name")[["completed", "failed"]].plot.barh(\n'
        '    ax=ax, stacked=True, color=["tab:green", "tab:red"])\n'
        'ax.set(xlabel="executions", ylabel="", title="Executions by agent")\n'
        "ax.xaxis.set_major_locator(MaxNLocator(integer=True))\n"
        "ax.invert_yaxis()\n"
        "fig",
        md(
            "## What failed\n\n"
            "What `agentmetrics failures` lists, the error patterns, and the failed "
            "ticket's executions: the researcher failed in its tool, the coordinator with "
            "it, and the writer never ran."
        ),
        "failed = reports.failed_orchestrations(DB, include_partial=True)\n"
        'failed[["session_id", "status", "total_tasks", "completed_tasks", "failed_tasks"]]',
        'reports.error_patterns(DB)[["pattern", "count", "agents"]]',
        'reports.executions(DB, "ticket-3")[["agent_name", "status", "error_message"]]',
        md(
            "The file is an ordinary agentmetrics database: "
            "`agentmetrics --db data/notebook-frameworks.db failures` shows the same, and so "
            "do the HTML report and the CI gate. Shutting the provider down flushes and closes "
            "it."
        ),
        "provider.shutdown()",
    ],
    "07-one-run.ipynb": [
        md(
            "# One run, seen whole\n\n"
            "One failed orchestration, followed from the top: what ran, in what order, "
            "inside what, how often the failing agent tried, and what it did inside each "
            "try. The run comes from OpenTelemetry: a coordinator agent runs a `triager`, "
            "then a `researcher` whose `search` tool times out; it is tried three times "
            "and the coordinator gives up. `build_one_run` ingests its spans into a fresh "
            "file, the same rows every time."
        ),
        ONE_RUN_SETUP,
        md(
            "## The run view\n\n"
            "`display.run` reads the orchestration's summary and its timeline in one "
            "snapshot. In a notebook it shows itself: the summary, then the waterfall (a "
            "lane per task, nested runs under the one they ran in, failed runs red and "
            "crossed, the LLM and tool calls inside as thin bars)."
        ),
        "view = display.run(DB, SESSION)\nview",
        md(
            "## The timeline frame\n\n"
            "Behind the picture is an ordinary DataFrame: one row per execution in start "
            "order, with its depth, lane, attempt, and its start and end in milliseconds "
            "from the orchestration's start. `spans=True` adds the calls each execution "
            "made, right after it."
        ),
        "frame = view.timeline  # the same as reports.timeline(DB, SESSION, spans=True)\n"
        'runs = frame[frame["kind"] == "execution"]\n'
        'runs[["agent_name", "depth", "lane", "attempt", "status", "start_offset_ms",\n'
        '      "duration_ms", "input_tokens"]]',
        md(
            "## The failing agent's attempts\n\n"
            "The researcher's three executions are attempts of one task (one lane): each "
            "failed, and each failure is the reason for the next try."
        ),
        'attempts = runs[runs["agent_name"] == "researcher"]\n'
        'attempts[["attempt", "status", "start_offset_ms", "duration_ms", "error_message"]]',
        md(
            "## Inside each attempt\n\n"
            "The spans under the researcher: every attempt asked the model, then waited on "
            "`search` until it failed; the third failed at once and then waited again."
        ),
        'calls = frame[(frame["kind"] != "execution") & (frame["agent_name"] == "researcher")]\n'
        'calls[["attempt", "kind", "name", "status", "start_offset_ms", "duration_ms",\n'
        '       "input_tokens", "error_message"]]',
        md("Where the time went: most of each attempt is the tool call that failed."),
        'waiting = calls[calls["kind"] == "tool"].groupby("attempt")["duration_ms"].sum()\n'
        'share = 100 * waiting / attempts.set_index("attempt")["duration_ms"]\n'
        'share.round(1).rename("% of the attempt in search")',
        md(
            "## The chart, and the terminal's view\n\n"
            "`plots.plot_timeline` is the chart on its own (`agentmetrics plot timeline "
            "ticket-42 -o run.png` writes it); `agentmetrics show ticket-42` prints the "
            "same waterfall in a terminal."
        ),
        "fig = plots.plot_timeline(frame)\nfig",
        'print("\\n".join(waterfall.render(frame, 100, color=False)))',
        md(
            "## The Monitor\n\n"
            "A `Monitor` shows its file: the orchestrations by status, the newest ones, and "
            "the newest one's timeline. (An orchestration handle, `with monitor."
            "orchestration(...) as run:`, shows its own run view the same way.)"
        ),
        "monitor = agentmetrics.Monitor(DB)\nmonitor",
        "monitor.close()",
    ],
}


def build(name: str, cells: list[str]) -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    for text in cells:
        if isinstance(text, Markdown):
            notebook.cells.append(new_markdown_cell(text.replace("{now}", NOW)))
        else:
            notebook.cells.append(new_code_cell(text))
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return notebook


def main(names: list[str]) -> None:
    from nbclient import NotebookClient  # only to execute: tests import build() without it

    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        notebook = build(name, cells)
        NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(HERE)}}).execute()
        nbformat.write(notebook, HERE / name)
        print(f"wrote {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
