"""README, the docs pages and CI stay true: the commands they name exist and match, and
their examples do what the text around them says (docs/conftest.py runs every block)."""

import importlib.util
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import pyproject

from agentmetrics import DISTRIBUTION
from agentmetrics.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
README_MAX_LINES = 250  # issue 20: a short README, links into the docs


def page(name):
    """The text of ``docs/NAME.md``."""
    return (ROOT / "docs" / f"{name}.md").read_text()


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", README)


def test_readme_opens_with_main_job_then_test_command():
    main_job, test_command = readme_commands()[:2]
    assert "agentmetrics demo" in main_job and "health" in main_job
    assert test_command == "pip install -e '.[test]' && pytest"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def all_commands(group=cli, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    command = dict(all_commands())[path]
    assert command.help, f"{' '.join(path)} has no docstring"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "agentmetrics", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Usage: agentmetrics" in result.stdout


def test_original_commands_all_exist():
    original = {"list", "show", "agent", "executions", "health", "performance", "failures"}
    original |= {"export", "cleanup"}
    assert original <= set(cli.commands)


def test_readme_names_every_command():
    missing = [name for name in cli.commands if f"`{name}" not in README]
    assert not missing, f"README does not mention: {missing}"


def test_readme_stays_short():
    assert len(README.splitlines()) <= README_MAX_LINES


def _docs_runner():
    """docs/conftest.py, which runs the docs' code blocks, loaded on its own."""
    spec = importlib.util.spec_from_file_location("docs_blocks", ROOT / "docs" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_code_blocks_run_as_the_docs_do():
    """Every README block runs by the docs' rules; only the first two (they install) skip."""
    docs = _docs_runner()
    document = docs.SYBIL.parse(ROOT / "README.md")
    docs.setup(document.namespace)
    skipped = []
    try:
        for example in document.examples():
            try:
                example.evaluate()
            except unittest.SkipTest:
                skipped.append(example.parsed)
    finally:
        docs.teardown(document.namespace)
    assert [block.strip() for block in skipped] == readme_commands()[:2]


def test_distribution_name_is_not_the_unrelated_agentmetrics():
    project = pyproject()["project"]
    assert project["name"] == DISTRIBUTION != "agentmetrics"
    # The extras that include the test extra name this distribution, not PyPI's.
    extras = project["optional-dependencies"]
    assert extras["dev"] == [f"{DISTRIBUTION}[test]"]


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_readme_requirements_are_the_pyproject_lower_bounds(page):
    project = pyproject()["project"]
    text = (ROOT / page).read_text()
    sentence = re.split(r"\.\s", text.split("Requirements: ", 1)[1], maxsplit=1)[0]
    stated = dict(re.findall(r"([\w-]+)\s+([\d.]+)\+", sentence))
    bounds = {"Python": project["requires-python"].removeprefix(">=")}
    for requirement in project["dependencies"]:
        if ";" not in requirement:  # tomli is for Python 3.10 only
            name, version = re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement).groups()
            bounds[name] = version
    assert stated == bounds


def test_installed_distribution_provides_the_package():
    import importlib.metadata

    providers = importlib.metadata.packages_distributions().get("agentmetrics", [])
    assert DISTRIBUTION in providers, (
        f"agentmetrics is installed as {providers}: reinstall with pip install -e ."
    )
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert f"version {importlib.metadata.version(DISTRIBUTION)}" in result.output


PIP_INSTALL = re.compile(r"pip install ((?:-[-\w]+ )*)(\S+)")


def _pip_install_lines():
    files = [ROOT / "README.md", ROOT / ".ci" / "run", *ROOT.glob("notebooks/*")]
    files += ROOT.glob("docs/*.md")
    files += ROOT.glob("agentmetrics/**/*.py")
    for path in files:
        if path.suffix in (".md", ".py", ".ipynb", ""):
            text = path.read_text().replace("{DISTRIBUTION}", DISTRIBUTION)
            for match in PIP_INSTALL.finditer(text):
                yield path.relative_to(ROOT), match.group(2).strip("'\"`")


def test_every_pip_install_line_names_this_distribution():
    targets = list(_pip_install_lines())
    assert len(targets) >= 6  # README's and the docs' commands, CI, the parquet hint
    # A checkout (`.`, `./agentmetrics`) or this distribution: never PyPI's agentmetrics.
    wrong = [
        (str(path), target)
        for path, target in targets
        if target != "pip" and not target.startswith((".", DISTRIBUTION))
    ]
    assert not wrong
    assert any(target.startswith(DISTRIBUTION) for _, target in targets)


def _section(text, title):
    """The ``## title`` section of a page, up to the next ``## `` heading."""
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _run(line):
    """Run one command line (``agentmetrics ...``, comment stripped) in-process."""
    args = shlex.split(line, comments=True)
    assert args[0] == "agentmetrics", line
    return CliRunner().invoke(cli, args[1:], catch_exceptions=False)


def _console(block):
    """``(command, shown output lines)`` for each ``$ `` line of a console block."""
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line)
    return steps


def test_quick_tour_gives_the_output_shown(tmp_path, monkeypatch):
    tour = _section(page("getting-started"), "A quick tour")
    build = re.search(r"^(agentmetrics demo .+)$", tour, re.M).group(1)
    database = re.search(r"^export AGENTMETRICS_DB=(\S+)$", tour, re.M).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("AGENTMETRICS_DB", database)
    assert _run(build).exit_code == 0
    steps = _console(re.search(r"```console\n(.+?)\n```", tour, re.S).group(1))
    assert any(command.startswith("agentmetrics trends") for command, _ in steps)
    exit_code = None
    for command, shown in steps:
        if command == "echo $?":
            assert shown == [str(exit_code)]
            continue
        result = _run(command)
        exit_code = result.exit_code
        shown = [line for line in shown if line != "..."]
        assert len(shown) >= 2, command  # a header and rows: never an empty answer
        assert result.stdout.splitlines()[: len(shown)] == shown, command


def test_retries_example_gives_the_output_shown(tmp_path, monkeypatch):
    section = _section(page("reports"), "Retries")
    example = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    exec(example, {})
    ((command, shown),) = _console(re.search(r"```console\n(.+?)\n```", section, re.S).group(1))
    result = _run(command)
    assert result.exit_code == 0
    assert [line for line in result.stdout.splitlines() if line] == shown


def test_demo_block_commands_give_non_empty_answers(tmp_path, monkeypatch):
    getting_started = page("getting-started")
    sections = [_section(getting_started, title) for title in ("The main job", "More of the demo")]
    blocks = [b for text in sections for b in re.findall(r"```bash\n(.+?)\n```", text, re.S)]
    lines = [line for block in blocks for line in block.splitlines() if "demo" in block]
    assert sum("trends" in line for line in lines) >= 3 and any(" report" in line for line in lines)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for line in lines:
        result = _run(line)
        assert result.exit_code == 0, (line, result.output)
        args = shlex.split(line, comments=True)
        if "trends" in args:
            # Every period of the window, as JSON: most of them must hold executions.
            table = [arg for arg in args if arg not in ("--csv", "--json")] + ["--json"]
            periods = json.loads(_run(" ".join(map(shlex.quote, table))).stdout)
            busy = [period["executions"] > 0 for period in periods]
            assert periods and sum(busy) >= len(busy) / 2, line
        if "report" in args:
            html = Path(args[args.index("-o") + 1]).read_text()
            executions = re.search(r'"label">Executions</div><div class="value">([\d,]+)<', html)
            assert int(executions.group(1).replace(",", "")) > 0, line


def test_tracking_examples_run_twice_and_record_what_they_say(tmp_path, monkeypatch):
    tracking = page("tracking").split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", tracking, re.S)
    assert len(blocks) == 2 and 'Monitor("monitoring.db")' in blocks[0]
    assert f"```python\n{blocks[0]}\n```" in README  # README's tracking in 15 lines
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # session ids are generated: no DuplicateSession the second time
        namespace = {}
        for block in blocks:
            exec(block, namespace)
        namespace["monitor"].close()
    db = sqlite3.connect(tmp_path / "monitoring.db")
    rows = db.execute(
        "SELECT agent_name, status, attempt, retry_count, model, input_tokens, output_tokens,"
        " cost_usd, files_created, error_message FROM agent_executions ORDER BY rowid"
    ).fetchall()
    first_run = [  # a first attempt's attempt stays NULL, as on every older row: it is 1
        ("planner", "completed", None, 0, "claude-sonnet-4", 12000, 3400, 0.087, 0, None),
        ("coder", "failed", None, 0, None, None, None, None, 0, "tests failed"),
        ("test-runner", "failed", None, 0, None, None, None, None, 0, "2 tests failed"),
        ("coder", "completed", 2, 1, None, None, None, None, 3, None),
        ("backend-agent", "failed", None, 0, None, None, None, None, 0, "tests failed"),
        ("backend-agent", "completed", 2, 1, None, None, None, None, 3, None),
    ]
    assert rows == first_run * 2
    # The test runner ran inside the coder's first attempt; attempt 2 points at attempt 1.
    links = db.execute(
        "SELECT e.agent_name, p.agent_name, p.attempt FROM agent_executions e"
        " JOIN agent_executions p ON p.id = e.parent_execution_id"
        " UNION ALL SELECT e.agent_name || ' attempt 2', f.agent_name, f.attempt"
        " FROM agent_executions e JOIN agent_executions f ON f.id = e.first_attempt_id"
    ).fetchall()
    assert sorted(set(links)) == [
        ("backend-agent attempt 2", "backend-agent", None),
        ("coder attempt 2", "coder", None),
        ("test-runner", "coder", None),
    ]
    assert len(links) == 6
    # Three tasks, two completed, one failed: partial, as the page says.
    orchestrations = db.execute(
        "SELECT status, total_tasks, completed_tasks, failed_tasks FROM orchestrations"
        " ORDER BY rowid"
    ).fetchall()
    assert orchestrations == [("partial", 3, 2, 1), ("completed", 1, 1, 0)] * 2
    assert "three tasks, two completed, the test run failed: `partial`" in tracking


def _git(*args, cwd):
    # protocol.file: git refuses local-path submodules by default since 2.38.
    command = ["git", "-c", "protocol.file.allow=always", *args]
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def _step_env(step, target):
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "AGENTMETRICS_"))},
        **{k: str(v) for k, v in step.get("env", {}).items()},
        # Built offline from the submodule, installed beside this environment's packages.
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_TARGET": str(target),
        "PYTHONPATH": str(target),
        "PATH": os.pathsep.join([str(target / "bin"), str(Path(sys.executable).parent)])
        + os.pathsep
        + os.environ["PATH"],
    }


def _run_workflow(steps, user, runner, target, record):
    """Run the docs' workflow steps the way GitHub does; ``record(db)`` is the user's own step
    (their orchestrator) before the gate. Returns ``(step, exit code, output)`` per step."""
    outcomes, failed = [], False
    for step in steps:
        uses = step.get("uses", "")
        if failed and step.get("if") != "always()":
            outcomes.append((step, None, "skipped"))
        elif uses.startswith("actions/checkout@"):
            assert step["with"]["submodules"] is True
            _git("clone", "-q", "--recurse-submodules", str(user), str(runner), cwd=user.parent)
            record(str(runner / "monitoring.db"))
            outcomes.append((step, 0, ""))
        elif uses.startswith("actions/setup-python@"):
            assert sys.version_info >= (3, 10)
            outcomes.append((step, 0, ""))
        elif uses.startswith("actions/upload-artifact@"):
            missing = [p for p in step["with"]["path"].split() if not list(runner.glob(p))]
            outcomes.append((step, 1 if missing else 0, " ".join(missing)))
        else:
            assert not uses, uses
            script = re.sub(r"\$\{\{ secrets\.\w+ \}\}", "", step["run"])
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                cwd=runner,
                env=_step_env(step, target),
                capture_output=True,
                text=True,
                timeout=300,
            )
            outcomes.append((step, result.returncode, result.stdout + result.stderr))
        failed = failed or outcomes[-1][1] not in (0, None)
    return outcomes


def _healthy(db, fail_one=False):
    from agentmetrics import Monitor

    monitor = Monitor(db)
    for n in range(25):
        with monitor.orchestration(f"ci-{n}", "Build") as orch, orch.agent("code-writer"):
            pass
    if fail_one:
        orch_id = monitor.start_orchestration("ci-broken", "Build")
        monitor.start_agent_execution("ci-broken-1", "tester", orchestration_id=orch_id)
        monitor.complete_agent_execution("ci-broken-1", "failed", error_message="boom")
        monitor.complete_orchestration("ci-broken", "failed")
    monitor.close()


_IDENTITY = ("user.name=u", "-c", "user.email=u@example.com")
_NOT_SOURCE = (".git", ".venv", "*.db", "*.db-*", "__pycache__", "*.egg-info", "build", ".*cache")


def test_ci_example_runs_as_written(tmp_path):
    """docs/ci.md's workflow, on fresh clones of a repository with agentmetrics as a submodule
    and the page's rules: the `run:` scripts verbatim (an unset secret is empty, as on GitHub)."""
    ci = page("ci")
    block = re.search(r"```yaml\n(.+?)\n```", _section(ci, "GitHub Actions"), re.S).group(1)
    assert "OWNER" not in block and "<" not in block  # nothing to fill in
    steps = yaml.safe_load(textwrap.dedent(block))
    hosted, user = tmp_path / "hosted", tmp_path / "user"
    # Where the user cloned agentmetrics from: this tree as a repository of its own (it
    # may have uncommitted changes, or be no git checkout at all).
    shutil.copytree(ROOT, hosted, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    _git("init", "-q", cwd=hosted)
    _git("add", "-A", cwd=hosted)
    _git("-c", *_IDENTITY, "commit", "-qm", "agentmetrics", cwd=hosted)
    user.mkdir()
    (user / "agentmetrics.toml").write_text(re.search(r"```toml\n(.+?)\n```", ci, re.S)[1])
    _git("init", "-q", cwd=user)
    _git("submodule", "add", "-q", str(hosted), "agentmetrics", cwd=user)
    _git("add", "agentmetrics.toml", cwd=user)
    _git("-c", *_IDENTITY, "commit", "-qm", "gate", cwd=user)
    names = [step.get("name", step.get("uses")) for step in steps]
    gate = names.index("Agent metrics gate")

    runs = {}
    for label, record in (("ok", _healthy), ("failed", lambda db: _healthy(db, True))):
        runner, target = tmp_path / f"run-{label}", tmp_path / f"site-{label}"
        runs[label] = _run_workflow(steps, user, runner, target, record)
        dist_info = f"{DISTRIBUTION.replace('-', '_')}-{pyproject()['project']['version']}"
        assert (target / f"{dist_info}.dist-info").is_dir()  # installed from ./agentmetrics
        with (runner / "agentmetrics-export.jsonl").open() as export:
            lines = [json.loads(line) for line in export]
        assert len(lines) == 2 * (25 + (label == "failed"))  # each orchestration, its run

    # Every step passes on a healthy database; the gate names the alert and fails the job
    # on a failed orchestration, and the export and the artifacts still happen (`always()`).
    assert [code for _, code, _ in runs["ok"]] == [0] * len(steps)
    codes = [code for _, code, _ in runs["failed"]]
    assert codes[gate] == 1 and codes[gate + 1 :] == [0] * (len(steps) - gate - 1)
    assert "no failed orchestrations" in runs["failed"][gate][2]
    assert "no failed orchestrations" in runs["ok"][gate][2]
