"""reports.timeline(spans=True) on random traces, against a plain walk written here.

Each trace mixes agent spans with and without an execution, LLM and tool calls under
them directly or through other spans, calls whose parent is missing or in a cycle, and
data with or without a model, tokens, a cost and an error. The expected rows come from
the stored spans alone: ``json.loads`` of each span's data and a walk up its parents,
span by span. The frame is read through pyarrow, through SQLite's JSON (a model stored
as a number makes pyarrow refuse the data) and through sqlite3 (no Arrow).
"""

import json
import random
import uuid

import numpy as np
import pandas as pd
import pytest

import agentmetrics
from agentmetrics import reports
from agentmetrics.reports import _arrow, run

T0_NS = 1_780_000_000_000_000_000
MS = 1_000_000
TRACES = ("a1" * 16, "b2" * 16)


def build(path, seed, odd_models):
    """An orchestration ``random`` over two traces; returns its stored spans as rows."""
    rng = random.Random(seed)
    spans, executions = [], []
    for trace in TRACES:
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(rng.randint(40, 120))]
        for i, span_id in enumerate(ids):
            role = rng.choice(["agent", "agent", "llm", "llm", "tool", None, "workflow"])
            parent = rng.choice(ids[:i]) if i and rng.random() < 0.9 else None
            if rng.random() < 0.03:
                parent = "feedfeedfeedfeed"  # not stored
            start = T0_NS + rng.randint(0, 60_000) * MS
            spans.append([trace, span_id, parent, role, start, start + rng.randint(0, 5000) * MS])
            spans[-1].append(data(rng, role, i, odd_models))
            if role == "agent" and rng.random() < 0.8:
                executions.append(execution(trace, span_id, len(executions), start))
        # Two linking spans in a cycle, a call under them: it belongs to no execution.
        first, second, call = "c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2", "c3c3c3c3c3c3c3c3"
        spans += [
            [trace, first, second, None, T0_NS, T0_NS, None],
            [trace, second, first, "workflow", T0_NS, T0_NS, "{}"],
            [trace, call, first, "llm", T0_NS, T0_NS + MS, '{"name": "lost"}'],
        ]
    db = agentmetrics.open_database(path)
    with db.atomic():
        db["orchestrations"].insert(
            {
                "id": "o",
                "session_id": "random",
                "status": "completed",
                "started_at": "2026-05-28T20:26:40.000Z",
            }
        )
        db["agent_executions"].insert_all(executions)
        db.conn.executemany("INSERT INTO otel_spans VALUES (?, ?, ?, ?, ?, ?, ?)", spans)
    db.close()
    return spans


def data(rng, role, i, odd_models):
    if role is None and rng.random() < 0.5:
        return None
    found = {"name": f"{role}-{i}", "extra": {"nested": [1, 2]}}
    if rng.random() < 0.6:
        found["model"] = rng.choice(["m-1", "m-2", "ünï"])
        if odd_models and rng.random() < 0.2:
            found["model"] = rng.choice([7, 2.5, True, ["a", "b"]])
    for key in ("input_tokens", "output_tokens", "cost"):
        if rng.random() < 0.5:
            found[key] = rng.choice([rng.randint(0, 10_000), rng.random() * 100])
    if rng.random() < 0.25:
        found["error"] = rng.choice(["", "boom", 'a "quoted"\nline'])
    return json.dumps(found)


def execution(trace, span_id, i, start_ns):
    start = pd.Timestamp(start_ns, unit="ns", tz="UTC")
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "orchestration_id": "o",
        "agent_session_id": f"s{i}",
        "agent_name": f"agent-{i % 3}",
        "task_number": i,
        "status": "completed",
        "started_at": start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "metadata_json": json.dumps({"trace_id": trace, "span_id": span_id}),
    }


def expected(spans, executions):
    """The calls' rows, by walking each call's parents one at a time."""
    by_id = {(s[0], s[1]): s for s in spans}
    keys = zip(executions.trace, executions.span, strict=True)
    row_of = {key: i for i, key in enumerate(keys)}
    base = executions.attrs["orchestration"]["started_at"].value
    rows = []
    for trace, span_id, parent, role, start, end, text in spans:
        if role not in ("llm", "tool"):
            continue
        owner, seen = None, set()
        while (trace, parent) in by_id and parent not in seen:
            seen.add(parent)
            if by_id[trace, parent][3] == "agent":
                owner = row_of.get((trace, parent))
                break
            parent = by_id[trace, parent][2]
        if owner is None:
            continue
        run = executions.iloc[owner]
        d = json.loads(text or "{}")
        model = d.get("model")
        rows.append(
            {
                "kind": role,
                "id": span_id,
                "parent_execution_id": run["id"],
                "depth": run["depth"] + 1,
                "lane": run["lane"],
                "agent_name": run["agent_name"],
                "name": d.get("name"),
                "task_id": run["task_id"],
                "task_number": run["task_number"],
                "attempt": run["attempt"],
                "first_attempt_id": run["first_attempt_id"],
                "status": "failed" if "error" in d else "completed",
                "started_at": pd.Timestamp(start, unit="ns", tz="UTC"),
                "completed_at": pd.Timestamp(end, unit="ns", tz="UTC"),
                "start_offset_ms": (start - base) / 1e6,
                "end_offset_ms": (end - base) / 1e6,
                "duration_ms": (end - start) / 1e6,
                "model": None if model is None else str(model),
                "input_tokens": float(d.get("input_tokens", np.nan)),
                "output_tokens": float(d.get("output_tokens", np.nan)),
                "cost_usd": float(d.get("cost", np.nan)),
                "error_message": d.get("error") or None,
                "_order": (owner, 1, start, span_id),
            }
        )
    for i in range(len(executions)):
        rows.append({**executions.iloc[i].to_dict(), "_order": (i, 0, 0, "")})
    rows.sort(key=lambda row: row["_order"])
    return [{k: v for k, v in row.items() if k != "_order"} for row in rows]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("odd_models", [False, True])
@pytest.mark.parametrize("arrow", [True, False])
def test_spans_match_a_plain_walk(tmp_path, monkeypatch, seed, odd_models, arrow):
    path = tmp_path / "random.db"
    spans = build(path, seed, odd_models)
    runs = reports.timeline(path, "random")
    with agentmetrics.open_database(path) as db:
        keys = db.execute(
            "SELECT id, json_extract(metadata_json, '$.trace_id'),"
            " json_extract(metadata_json, '$.span_id') FROM agent_executions"
        ).fetchall()
    where = {id_: (trace, span) for id_, trace, span in keys}
    runs.attrs = dict(runs.attrs)
    runs = runs.assign(
        trace=[where[i][0] for i in runs["id"]], span=[where[i][1] for i in runs["id"]]
    )
    want = expected(spans, runs)
    if not arrow:
        monkeypatch.setattr(_arrow, "adbc", None)
    parsed = []
    real = run.json_columns
    monkeypatch.setattr(run, "json_columns", lambda *a: parsed.append(real(*a)) or parsed[-1])
    frame = reports.timeline(path, "random", spans=True)
    # pyarrow parses the data unless a model is no text (then SQLite does) or no Arrow.
    assert [p is not None for p in parsed] == [arrow and not odd_models] * len(TRACES)
    assert len(frame) >= len(runs) + 10  # calls were found
    assert "lost" not in set(frame["name"])  # the call under a cycle
    assert frame[frame["kind"] == "execution"]["model"].tolist() == runs["model"].tolist()
    got = frame.to_dict("records")
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        theirs = {k: theirs[k] for k in frame.columns}
        assert mine.keys() == theirs.keys()
        for key in mine:
            a, b = mine[key], theirs[key]
            assert (a == b) or (pd.isna(a) and pd.isna(b) and type(a) is type(b)), (key, a, b)
    # Text columns hold str or None, never NaN.
    for column in ("id", "name", "model", "error_message", "first_attempt_id", "task_id"):
        assert not any(isinstance(v, float) for v in frame[column]), column
