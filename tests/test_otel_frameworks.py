"""Real framework instrumentation, offline, into SQLiteSpanExporter.

pydantic-ai (OpenTelemetry GenAI conventions) with its TestModel, and LangGraph with a
fake chat model under openinference-instrumentation-langchain (OpenInference). No
network, no API keys. Expected names, statuses and tokens are the ones the test
programs set up; durations are read off the SDK's own finished spans (an
InMemorySpanExporter on the same provider).
"""

import json
import sqlite3

import pytest


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")


@pytest.fixture
def provider(db_path):
    """A TracerProvider exporting into ``db_path`` and into memory (for the expected
    durations); shut down after the test."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentmetrics.otel import SQLiteSpanExporter

    tracer_provider = TracerProvider()
    exporter = SQLiteSpanExporter(db_path)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    memory = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer_provider.memory = memory
    tracer_provider.exporter = exporter
    yield tracer_provider
    tracer_provider.shutdown()


def table(path, name):
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(f"SELECT * FROM {name} ORDER BY started_at")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor]
    finally:
        conn.close()


def span_ms(provider, name):
    """The duration in ms of the finished SDK span called ``name`` (there must be one)."""
    [span] = [s for s in provider.memory.get_finished_spans() if s.name == name]
    return round((span.end_time - span.start_time) / 1e6)


# -- pydantic-ai ---------------------------------------------------------------------


def instrumented_agent(provider, name):
    """A pydantic-ai agent on TestModel, traced into ``provider``."""
    from pydantic_ai import Agent
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    settings = InstrumentationSettings(tracer_provider=provider)
    return Agent(TestModel(), name=name, capabilities=[Instrumentation(settings)])


def pydantic_agents(provider):
    helper = instrumented_agent(provider, "helper")
    boss = instrumented_agent(provider, "boss")
    from pydantic_ai import RunContext

    @boss.tool
    async def ask_helper(ctx: RunContext, question: str) -> str:
        """Delegate to the helper agent."""
        return (await helper.run(question, usage=ctx.usage)).output

    failing = instrumented_agent(provider, "failing")

    @failing.tool_plain
    def explode(x: int) -> str:
        """A tool that always fails."""
        raise ValueError("tool blew up")

    return boss, failing


def test_pydantic_ai_two_agents_and_a_failing_tool(db_path, provider):
    boss, failing = pydantic_agents(provider)
    boss.run_sync("hi")
    with pytest.raises(ValueError, match="tool blew up"):
        failing.run_sync("go")
    chats = [s for s in provider.memory.get_finished_spans() if s.name.startswith("chat ")]
    tokens = {  # what TestModel reported on each chat span, by agent
        agent: [
            (s.attributes["gen_ai.usage.input_tokens"], s.attributes["gen_ai.usage.output_tokens"])
            for s in chats
            if s.attributes["gen_ai.agent.name"] == agent
        ]
        for agent in ("boss", "helper", "failing")
    }
    assert len(tokens["boss"]) == 2 and len(tokens["helper"]) == 1

    first, second = table(db_path, "orchestrations")
    assert (first["task_description"], first["status"]) == ("invoke_agent boss", "completed")
    assert (first["total_tasks"], first["completed_tasks"], first["failed_tasks"]) == (2, 2, 0)
    assert (second["task_description"], second["status"]) == ("invoke_agent failing", "failed")
    assert json.loads(second["metadata_json"])["error_message"] == "ValueError: tool blew up"

    runs = {r["agent_name"]: r for r in table(db_path, "agent_executions")}
    assert set(runs) == {"boss", "helper", "failing"}
    boss_run, helper_run, failed_run = runs["boss"], runs["helper"], runs["failing"]
    assert boss_run["orchestration_id"] == helper_run["orchestration_id"] == first["id"]
    assert failed_run["orchestration_id"] == second["id"]
    # The helper ran inside the boss's tool call: a nested execution.
    assert helper_run["parent_execution_id"] == boss_run["id"]
    assert boss_run["parent_execution_id"] is None
    for run in (boss_run, helper_run):
        assert (run["status"], run["error_message"], run["model"]) == ("completed", None, "test")
    assert (failed_run["status"], failed_run["error_message"]) == (
        "failed",
        "ValueError: tool blew up",
    )
    for agent, run in runs.items():
        pairs = tokens[agent]
        assert (run["input_tokens"], run["output_tokens"]) == (
            sum(i for i, _ in pairs),
            sum(o for _, o in pairs),
        )
        assert run["duration_ms"] == span_ms(provider, f"invoke_agent {agent}")
    assert json.loads(boss_run["metadata_json"])["tool_calls"] == 1
    assert json.loads(failed_run["metadata_json"])["tool_errors"] == 1
    assert first["duration_ms"] == span_ms(provider, "invoke_agent boss")
    assert provider.exporter.dropped == 0


def test_pydantic_ai_model_retry_is_a_retry_inside_the_run(db_path, provider):
    flaky = instrumented_agent(provider, "flaky")
    from pydantic_ai import ModelRetry

    calls = []

    @flaky.tool_plain
    def fetch(x: int) -> str:
        """Fails the first time: the model is asked to call it again."""
        calls.append(x)
        if len(calls) == 1:
            raise ModelRetry("try again")
        return "ok"

    flaky.run_sync("go")
    assert len(calls) == 2
    [run] = table(db_path, "agent_executions")
    assert (run["status"], run["retry_count"], run["self_healed"]) == ("completed", 1, 1)
    assert (run["attempt"], run["first_attempt_id"]) == (1, None)
    [orchestration] = table(db_path, "orchestrations")
    assert (orchestration["status"], orchestration["total_tasks"]) == ("completed", 1)


def test_pydantic_ai_sub_agent_run_again_is_a_second_attempt(db_path, provider):
    worker = instrumented_agent(provider, "worker")
    boss = instrumented_agent(provider, "boss")
    from pydantic_ai import RunContext

    runs = []

    @worker.tool_plain
    def work(x: int) -> str:
        """Fails on the worker's first run."""
        runs.append(x)
        if len(runs) == 1:
            raise ValueError("worker failed")
        return "done"

    @boss.tool
    async def delegate(ctx: RunContext, question: str) -> str:
        """Run the worker, once more if it fails."""
        try:
            return (await worker.run(question, usage=ctx.usage)).output
        except ValueError:
            return (await worker.run(question, usage=ctx.usage)).output

    boss.run_sync("hi")
    boss_run, first, second = table(db_path, "agent_executions")
    assert [r["agent_name"] for r in (boss_run, first, second)] == ["boss", "worker", "worker"]
    assert (first["status"], first["error_message"]) == ("failed", "ValueError: worker failed")
    assert (first["attempt"], first["first_attempt_id"], first["retry_count"]) == (1, None, 0)
    assert second["status"] == "completed"
    assert (second["attempt"], second["first_attempt_id"], second["retry_count"]) == (
        2,
        first["id"],
        1,
    )
    assert first["parent_execution_id"] == second["parent_execution_id"] == boss_run["id"]
    assert boss_run["retry_count"] == 0
    [orchestration] = table(db_path, "orchestrations")
    # Two tasks (the boss's, the worker's, rescued by its second attempt), both completed.
    assert orchestration["status"] == "completed"
    assert (orchestration["total_tasks"], orchestration["completed_tasks"]) == (2, 2)
    assert orchestration["failed_tasks"] == 0


# -- LangGraph with OpenInference ------------------------------------------------------


@pytest.fixture
def langchain_instrumented(provider):
    from openinference.instrumentation.langchain import LangChainInstrumentor

    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield provider
    instrumentor.uninstrument()


def langgraph_app():
    from typing import TypedDict

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph

    @tool
    def search(query: str) -> str:
        """Search the web."""
        if query == "boom":
            raise RuntimeError("search is down")
        return f"results for {query}"

    def model(text, tokens_in, tokens_out):
        usage = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        return GenericFakeChatModel(messages=iter([AIMessage(content=text, usage_metadata=usage)]))

    class State(TypedDict, total=False):
        query: str
        notes: str
        answer: str

    # OpenInference marks a LangChain run whose name contains "agent" as an AGENT span.
    def researcher_agent(state: State) -> State:
        model("search for it", 10, 3).invoke(state["query"])
        return {"notes": search.invoke({"query": state["query"]})}

    def writer_agent(state: State) -> State:
        return {"answer": model("the answer", 20, 7).invoke(state["notes"]).content}

    graph = StateGraph(State)
    graph.add_node("researcher_agent", researcher_agent)
    graph.add_node("writer_agent", writer_agent)
    graph.add_edge(START, "researcher_agent")
    graph.add_edge("researcher_agent", "writer_agent")
    graph.add_edge("writer_agent", END)
    return graph.compile()


def test_langgraph_two_agents_and_a_failing_tool(db_path, langchain_instrumented):
    provider = langchain_instrumented
    app = langgraph_app()
    assert app.invoke({"query": "otel"}, config={"metadata": {"session_id": "chat-1"}}) == {
        "query": "otel",
        "notes": "results for otel",
        "answer": "the answer",
    }
    with pytest.raises(RuntimeError, match="search is down"):
        app.invoke({"query": "boom"})

    first, second = table(db_path, "orchestrations")
    assert (first["session_id"], first["task_description"], first["status"]) == (
        "chat-1",
        "LangGraph",
        "completed",
    )
    assert (first["total_tasks"], first["completed_tasks"], first["failed_tasks"]) == (2, 2, 0)
    assert (second["task_description"], second["status"]) == ("LangGraph", "failed")
    assert (second["total_tasks"], second["failed_tasks"]) == (1, 1)
    assert json.loads(second["metadata_json"])["error_message"] == "RuntimeError: search is down"

    runs = table(db_path, "agent_executions")
    assert [(r["agent_name"], r["status"]) for r in runs] == [
        ("researcher_agent", "completed"),
        ("writer_agent", "completed"),
        ("researcher_agent", "failed"),
    ]
    researcher, writer, failed = runs
    assert researcher["orchestration_id"] == writer["orchestration_id"] == first["id"]
    assert failed["orchestration_id"] == second["id"]
    assert (researcher["input_tokens"], researcher["output_tokens"]) == (10, 3)
    assert (writer["input_tokens"], writer["output_tokens"]) == (20, 7)
    assert (failed["input_tokens"], failed["output_tokens"]) == (10, 3)
    assert failed["error_message"] == "RuntimeError: search is down"
    assert researcher["error_message"] is None
    assert json.loads(researcher["metadata_json"])["tool_calls"] == 1
    assert json.loads(failed["metadata_json"])["tool_errors"] == 1
    assert "tool_calls" not in json.loads(writer["metadata_json"])
    spans = provider.memory.get_finished_spans()
    agent_spans = sorted(
        (s for s in spans if s.attributes.get("openinference.span.kind") == "AGENT"),
        key=lambda s: s.start_time,
    )
    assert [r["duration_ms"] for r in runs] == [
        round((s.end_time - s.start_time) / 1e6) for s in agent_spans
    ]
    assert provider.exporter.dropped == 0


def test_langgraph_retry_policy_runs_a_node_again_as_a_new_attempt(db_path, langchain_instrumented):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import RetryPolicy

    class State(TypedDict, total=False):
        answer: str

    calls = []

    def researcher_agent(state: State) -> State:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("flaky upstream")
        return {"answer": "found"}

    graph = StateGraph(State)
    retry = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    graph.add_node("researcher_agent", researcher_agent, retry_policy=retry)
    graph.add_edge(START, "researcher_agent")
    graph.add_edge("researcher_agent", END)
    assert graph.compile().invoke({}) == {"answer": "found"}

    # The node ran whole twice, each run an AGENT span under the graph's: two attempts.
    first, second = table(db_path, "agent_executions")
    assert (first["status"], first["error_message"]) == (
        "failed",
        "ConnectionError: flaky upstream",
    )
    assert (first["attempt"], first["first_attempt_id"], first["retry_count"]) == (1, None, 0)
    assert second["status"] == "completed"
    assert (second["attempt"], second["first_attempt_id"], second["retry_count"]) == (
        2,
        first["id"],
        1,
    )
    [orchestration] = table(db_path, "orchestrations")
    assert (orchestration["status"], orchestration["total_tasks"]) == ("completed", 1)
    assert (orchestration["completed_tasks"], orchestration["failed_tasks"]) == (1, 0)
