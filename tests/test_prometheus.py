import math

import pytest
from click.testing import CliRunner
from dashboard_data import NOW, build
from prometheus_client.parser import text_string_to_metric_families

from agentmetrics.cli import cli
from agentmetrics.errors import InvalidValue
from agentmetrics.outputs.prometheus import DURATION_BUCKETS, metrics_text


@pytest.fixture
def text(db_path):
    build(db_path)
    return metrics_text(db_path, now=NOW)


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name=None):
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


def test_help_and_type_lines(text):
    names = [
        "agentmetrics_executions_total",
        "agentmetrics_execution_duration_seconds",
        "agentmetrics_success_ratio",
        "agentmetrics_orchestrations",
        "agentmetrics_running",
        "agentmetrics_stale",
    ]
    types = ["counter", "histogram", "gauge", "gauge", "gauge", "gauge"]
    lines = text.splitlines()
    for name, kind in zip(names, types, strict=True):
        help_line = next(i for i, line in enumerate(lines) if line.startswith(f"# HELP {name} "))
        assert lines[help_line + 1] == f"# TYPE {name} {kind}"
        # Every sample of the family follows its TYPE line, before the next family.
        body = []
        for line in lines[help_line + 2 :]:
            if line.startswith("#"):
                break
            body.append(line)
        assert body and all(line.startswith(name) for line in body)
    assert text.endswith("\n")


def test_counters_and_ratio(text):
    parsed = families(text)
    assert parsed["agentmetrics_executions"].type == "counter"
    assert samples(parsed["agentmetrics_executions"]) == {
        (("agent", "coder"), ("status", "completed")): 3,
        (("agent", "reviewer"), ("status", "failed")): 1,
        (("agent", "tester"), ("status", "completed")): 1,
    }
    assert samples(parsed["agentmetrics_success_ratio"]) == {
        (("agent", "coder"),): 1.0,
        (("agent", "reviewer"),): 0.0,
        (("agent", "tester"),): 1.0,
    }


def test_histogram(text):
    family = families(text)["agentmetrics_execution_duration_seconds"]
    assert family.type == "histogram"
    durations = {"coder": [60, 30, 600], "reviewer": [120], "tester": [10]}
    for agent, values in durations.items():
        buckets = {
            s.labels["le"]: s.value
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels["agent"] == agent
        }
        assert [buckets[str(b)] for b in DURATION_BUCKETS] == [
            sum(v <= b for v in values) for b in DURATION_BUCKETS
        ]
        counts = [buckets[k] for k in buckets]
        assert counts == sorted(counts), "buckets must be cumulative"
        count = samples(family, "agentmetrics_execution_duration_seconds_count")[
            (("agent", agent),)
        ]
        assert buckets["+Inf"] == count == len(values)
        total = samples(family, "agentmetrics_execution_duration_seconds_sum")[(("agent", agent),)]
        assert total == sum(values)


def test_gauges(text):
    parsed = families(text)
    assert samples(parsed["agentmetrics_orchestrations"]) == {
        (("status", "running"),): 1,
        (("status", "completed"),): 1,
        (("status", "failed"),): 1,
        (("status", "partial"),): 0,
    }
    assert samples(parsed["agentmetrics_running"]) == {
        (("kind", "orchestration"),): 1,
        (("kind", "execution"),): 2,
    }
    # At NOW, s-3 and a-6 started 7h ago (stale after 6h); a-7 started 10 minutes ago.
    assert samples(parsed["agentmetrics_stale"]) == {
        (("kind", "orchestration"),): 1,
        (("kind", "execution"),): 1,
    }


def test_label_escaping(monitor, db_path):
    monitor.start_agent_execution("x", 'we"ird\\agent\nname')
    monitor.complete_agent_execution("x", "completed")
    parsed = families(metrics_text(db_path))
    assert samples(parsed["agentmetrics_executions"]) == {
        (("agent", 'we"ird\\agent\nname'), ("status", "completed")): 1
    }


def test_empty_database(db_path, db):
    parsed = families(metrics_text(db_path))
    assert samples(parsed["agentmetrics_executions"]) == {}
    assert all(v == 0 for v in samples(parsed["agentmetrics_running"]).values())


def test_cli_stdout_and_file(db_path, tmp_path):
    build(db_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(db_path), "metrics"], catch_exceptions=False)
    assert result.exit_code == 0
    assert math.isclose(
        samples(families(result.stdout)["agentmetrics_success_ratio"])[(("agent", "coder"),)], 1
    )
    out = tmp_path / "agentmetrics.prom"
    result = runner.invoke(
        cli, ["--db", str(db_path), "metrics", "-o", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert out.read_text() == metrics_text(db_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "args, message, code",
    [
        (
            ["--stale-after", "soon"],
            "Error: Invalid value for '--stale-after': not a duration: 'soon'",
            2,  # a bad option value is a usage error
        ),
        (["-o", "missing-dir/x.prom"], "Error: Cannot write missing-dir/x.prom", 1),
    ],
)
def test_cli_errors(db_path, db, args, message, code):
    result = CliRunner().invoke(cli, ["--db", str(db_path), "metrics", *args])
    assert result.exit_code == code
    assert result.output.startswith(message)


def test_cli_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "none.db"), "metrics"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found")


def series(text):
    """Every sample as node_exporter keys it: (name, sorted labels)."""
    return [
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_constant_labels_keep_two_files_apart(db_path, tmp_path):
    build(db_path)
    other = tmp_path / "other.db"
    build(other)
    runner = CliRunner()
    plain = [runner.invoke(cli, ["--db", str(path), "metrics"]).stdout for path in (db_path, other)]
    # Without labels the two files share every series: node_exporter drops them.
    assert set(series(plain[0])) == set(series(plain[1]))
    folder = tmp_path / "textfile"
    folder.mkdir()
    for path, name in ((db_path, "runner-1"), (other, "runner-2")):
        result = runner.invoke(
            cli,
            ["metrics", "--db", str(path), "--label", f"db={name}", "--label", "team=ci",
             "-o", str(folder / f"{name}.prom")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    both = [series((folder / f"runner-{i}.prom").read_text()) for i in (1, 2)]
    assert len(both[0]) == len(series(plain[0])) and not set(both[0]) & set(both[1])
    for number, samples_ in enumerate(both, 1):
        for _, labels in samples_:
            assert ("db", f"runner-{number}") in labels
            assert ("team", "ci") in labels
    # The series' own labels and values are untouched.
    parsed = families((folder / "runner-1.prom").read_text())
    assert samples(parsed["agentmetrics_running"]) == {
        (("db", "runner-1"), ("kind", "orchestration"), ("team", "ci")): 1,
        (("db", "runner-1"), ("kind", "execution"), ("team", "ci")): 2,
    }


def test_constant_label_values_are_escaped(db_path, db):
    value = 'a "quoted"\\path\nnext'
    text = metrics_text(db_path, labels={"where": value})
    assert all(dict(labels)["where"] == value for _, labels in series(text))
    assert len(series(text)) == 8  # orchestrations (4), running (2), stale (2)


@pytest.mark.parametrize(
    "label, message",
    [
        ("db", "label 'db' is not NAME=VALUE"),
        ("1db=x", "label name '1db' is not allowed"),
        ("my-db=x", "label name 'my-db' is not allowed"),
        ("__name__=x", "label name '__name__' is not allowed"),
        ("=x", "label name '' is not allowed"),
        ("agent=x", "label name 'agent' is already used by the series"),
        ("le=1", "label name 'le' is already used by the series"),
        # Prometheus reads an empty value as no label: the files would collide again.
        ("db=", "label 'db' has an empty value, which Prometheus reads as no label"),
    ],
)
def test_bad_labels(db_path, db, tmp_path, label, message):
    """A bad --label is a bad option value: exit 2, as docs/cli.md's exit-code table says."""
    out = tmp_path / "x.prom"
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "metrics", "--label", label, "-o", str(out)]
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: Invalid value for '--label': {message}")
    assert len(result.output.splitlines()) == 1
    assert not out.exists()


def test_an_empty_label_value_is_refused_in_python(db_path, db):
    with pytest.raises(InvalidValue, match="label 'db' has an empty value"):
        metrics_text(db_path, labels={"db": ""})


def test_a_label_given_twice(db_path, db):
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "metrics", "--label", "db=a", "--label", "db=b"]
    )
    assert result.exit_code == 2
    assert result.output == "Error: Invalid value for '--label': label 'db' is given twice\n"
