"""A LangGraph team traced into agentmetrics through OpenInference, offline.

Two graph nodes run on LangChain's fake chat model (no network, no API key): a
researcher, which calls a search tool, then a writer. OpenInference marks a LangChain run
whose name contains "agent" as an agent span, so each node run becomes an execution and
each graph run an orchestration, whose session id comes from the run's metadata. Ticket 3
runs while search is down, so it fails in the tool.

    pip install 'agentmetrics-sqlite[otel]' langgraph openinference-instrumentation-langchain
    python docs/examples/langgraph_example.py [DB]      # default: monitoring.db
"""

import sys
from typing import TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentmetrics import reports
from agentmetrics.formatting import readable
from agentmetrics.otel import SQLiteSpanExporter

DB = sys.argv[1] if len(sys.argv) > 1 else "monitoring.db"
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter(DB)))
LangChainInstrumentor().instrument(tracer_provider=provider)

SEARCH_UP = {"up": True}


@tool
def search(query: str) -> str:
    """Search the knowledge base."""
    if not SEARCH_UP["up"]:
        raise ConnectionError("search backend unreachable")
    return f"3 documents about {query}"


def chat_model(answer: str, tokens_in: int, tokens_out: int) -> GenericFakeChatModel:
    """A model that gives ``answer`` and reports its token usage, as a real one would."""
    usage = UsageMetadata(
        input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=tokens_in + tokens_out
    )
    return GenericFakeChatModel(messages=iter([AIMessage(answer, usage_metadata=usage)]))


class Ticket(TypedDict, total=False):
    question: str
    notes: str
    answer: str


def researcher_agent(ticket: Ticket) -> Ticket:
    query = chat_model("search query", 12, 4).invoke(ticket["question"]).content
    return {"notes": search.invoke({"query": query})}


def writer_agent(ticket: Ticket) -> Ticket:
    return {"answer": chat_model("the answer", 30, 9).invoke(ticket["notes"]).content}


app = StateGraph(Ticket).add_sequence([researcher_agent, writer_agent])
app = app.add_edge(START, "researcher_agent").compile()

for n in range(1, 5):
    session = f"ticket-{n}"
    SEARCH_UP["up"] = n != 3
    try:
        app.invoke({"question": session}, config={"metadata": {"session_id": session}})
    except ConnectionError as error:
        print(f"{session} failed: {error}")
provider.shutdown()  # flushes the last spans into DB

performance = reports.performance_report(DB)[["agent_name", "executions", "completed", "failed"]]
print(readable(performance).to_string(index=False))
