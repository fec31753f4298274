"""A pydantic-ai team traced into agentmetrics, offline: the agents of notebook 06.

Three agents run on pydantic-ai's TestModel (no network, no API key): a coordinator hands
each ticket to a researcher, which has a search tool, and then to a writer. Ticket 3 runs
while search is down, so it fails in the tool. Each ticket becomes an orchestration, each
agent run an execution (docs/opentelemetry.md has the mapping).

    pip install 'agentmetrics-sqlite[otel]' pydantic-ai-slim
    python docs/examples/pydantic_ai_example.py [DB]      # default: monitoring.db
"""

# ruff: noqa: E402 (notebooks/make_notebooks.py takes the agents' part, imports and all)
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentmetrics import reports
from agentmetrics.formatting import readable
from agentmetrics.otel import SQLiteSpanExporter

DB = sys.argv[1] if len(sys.argv) > 1 else "monitoring.db"
exporter = SQLiteSpanExporter(DB)
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(exporter))

# [notebook 06: the agents]
from dataclasses import dataclass

from pydantic_ai import Agent, RunContext
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel

Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))


@dataclass
class Backend:
    search_up: bool = True


coordinator = Agent(TestModel(), name="coordinator", deps_type=Backend)
researcher = Agent(TestModel(), name="researcher", deps_type=Backend)
writer = Agent(TestModel(), name="writer")


@researcher.tool
def search(ctx: RunContext[Backend], query: str) -> str:
    """Search the knowledge base."""
    if not ctx.deps.search_up:
        raise ConnectionError("search backend unreachable")
    return f"3 documents about {query}"


@coordinator.tool
async def delegate(ctx: RunContext[Backend], ticket: str) -> str:
    """Research the ticket, then write the answer."""
    notes = await researcher.run(ticket, deps=ctx.deps, usage=ctx.usage)
    return (await writer.run(notes.output, usage=ctx.usage)).output


# [end]

for n in range(1, 5):
    session = f"ticket-{n}"
    try:
        coordinator.run_sync(session, deps=Backend(search_up=n != 3), conversation_id=session)
    except ConnectionError as error:
        print(f"{session} failed: {error}")
provider.shutdown()  # flushes the last spans into DB

performance = reports.performance_report(DB)[["agent_name", "executions", "completed", "failed"]]
print(readable(performance).to_string(index=False))
