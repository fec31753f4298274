"""README and CI stay true: the commands they name exist and match."""

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agentmetrics import DISTRIBUTION
from agentmetrics.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


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


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_distribution_name_is_not_the_unrelated_agentmetrics():
    project = _pyproject()["project"]
    assert project["name"] == DISTRIBUTION != "agentmetrics"
    # The extras that include the test extra name this distribution, not PyPI's.
    extras = project["optional-dependencies"]
    assert extras["dev"] == [f"{DISTRIBUTION}[test]"]


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
    files += ROOT.glob("agentmetrics/**/*.py")
    for path in files:
        if path.suffix in (".md", ".py", ".ipynb", ""):
            text = path.read_text().replace("{DISTRIBUTION}", DISTRIBUTION)
            for match in PIP_INSTALL.finditer(text):
                yield path.relative_to(ROOT), match.group(2).strip("'\"`")


def test_every_pip_install_line_names_this_distribution():
    targets = list(_pip_install_lines())
    assert len(targets) >= 6  # README's commands, CI, the parquet hint
    # A checkout (`.`, `./agentmetrics`) or this distribution: never PyPI's agentmetrics.
    wrong = [
        (str(path), target)
        for path, target in targets
        if target != "pip" and not target.startswith((".", DISTRIBUTION))
    ]
    assert not wrong
    assert any(target.startswith(DISTRIBUTION) for _, target in targets)
