"""Every code block of the docs runs under pytest (Sybil collects the pages).

Each page runs top to bottom in a fresh temporary folder, in one namespace, so a block can
use what an earlier one built (a demo database, ``export AGENTMETRICS_DB=...``):

- ``python``: executed (Sybil). ``<!-- raises: Type: message -->`` before a block says it
  ends in that exception; ``<!-- invisible-code-block: python -->`` runs checks unseen.
- ``bash``: each line an ``agentmetrics`` command run in process (``> FILE``, ``|| cmd``
  and ``&& cmd`` as in a shell; exit 0, or 1 when ``||`` follows), ``export NAME=VALUE`` or
  ``echo``. Anything else cannot run here: precede the block with
  ``<!-- skip: next "why" -->``.
- ``console``: ``$ `` lines run as above; the lines shown after each must be its output
  (blank lines aside; ``...`` stands for any lines); ``$ echo $?`` shows the exit code.
- ``toml``: written to ``agentmetrics.toml`` and loaded as the CLI loads it (rules,
  ``[costs]``), so later blocks use it; ``yaml``: parsed.
- ``text`` is output or a diagram, not run. Any other language fails.
"""

import os
import shlex
import shutil
import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from sybil import Region, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer
from sybil.parsers.myst import CodeBlockParser, PythonCodeBlockParser, SkipParser

from agentmetrics.cli import cli

NOT_RUN = {"text"}  # output and diagrams
DOCS = Path(__file__).resolve().parent


def run_agentmetrics(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False, prog_name="agentmetrics")


def _commands(source: str) -> list[str]:
    """Logical lines: continuations joined, comments and blank lines dropped."""
    joined = source.replace("\\\n", " ")
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def _run_simple(words: list[str], namespace: dict) -> tuple[int, str]:
    """Run one simple command; ``(exit code, output)``."""
    if words[0] == "echo":
        return 0, " ".join(words[1:]) + "\n"
    if words[0] == "export" and len(words) == 2 and "=" in words[1]:
        name, value = words[1].split("=", 1)
        namespace["__environ__"].setdefault(name, os.environ.get(name))
        os.environ[name] = value
        return 0, ""
    if words[0] != "agentmetrics":
        raise ValueError(f'cannot run {words[0]!r} here: add <!-- skip: next "why" -->')
    target = None
    if ">" in words:
        i = words.index(">")
        words, target = words[:i], words[i + 1 :]
        assert len(target) == 1, f"one file after '>': {target}"
    result = run_agentmetrics(words[1:])
    if target:
        Path(target[0]).write_text(result.stdout)
        return result.exit_code, result.stderr
    return result.exit_code, result.output


def run_line(line: str, namespace: dict) -> tuple[int, str]:
    """Run one shell line of simple commands joined by ``&&`` and ``||``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    for word in words:
        if word in ("|", "&", ";", "<", ">>", "|&"):
            raise ValueError(f'cannot run {word!r} here: add <!-- skip: next "why" -->')
    code, output, operator = 0, "", None
    while words:
        ends = [i for i, word in enumerate(words) if word in ("&&", "||")] + [len(words)]
        command, words = words[: ends[0]], words[ends[0] :]
        if operator is None or (operator == "&&") == (code == 0):
            code, out = _run_simple(command, namespace)
            output += out
            if code and (words[:1] != ["||"] or code != 1):  # `||` takes a failed gate only
                return code, output
        if words:
            operator, words = words[0], words[1:]
    return code, output


def evaluate_bash(example) -> str | None:
    for line in _commands(example.parsed):
        code, output = run_line(line, example.namespace)
        if code:
            return f"{line}\nexited {code}:\n{output}"
    return None


def _matches(shown: list[str], actual: list[str]) -> bool:
    """``shown`` lines, where a ``...`` line stands for any lines, are all of ``actual``."""
    chunks: list[list[str]] = [[]]
    for line in shown:
        if line == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    first, *rest = chunks
    at = len(first)
    if actual[:at] != first:
        return False
    if not rest:
        return at == len(actual)
    *middle, last = rest
    for chunk in middle:
        starts = [i for i in range(at, len(actual) + 1) if actual[i : i + len(chunk)] == chunk]
        if not starts:
            return False
        at = starts[0] + len(chunk)
    return len(actual) - len(last) >= at and actual[len(actual) - len(last) :] == last


def evaluate_console(example) -> str | None:
    steps: list[tuple[str, list[str]]] = []
    for line in example.parsed.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line.rstrip())
    code = None
    for command, shown in steps:
        if command == "echo $?":
            output = f"{code}\n"
        else:
            code, output = run_line(command, example.namespace)
        actual = [line.rstrip() for line in output.splitlines() if line.strip()]
        if not _matches(shown, actual):
            return f"$ {command}\nshown:\n" + "\n".join(shown) + "\ngot:\n" + "\n".join(actual)
    return None


def evaluate_toml(example) -> None:
    from agentmetrics.alerting.config import load_config
    from agentmetrics.alerting.rules import load_rules
    from agentmetrics.reports.cost import cost_rates

    path = Path("agentmetrics.toml")
    path.write_text(example.parsed)
    config = load_config(path)
    if "rules" in config:
        load_rules(path)
    cost_rates(config)


def evaluate_yaml(example) -> None:
    yaml.safe_load(example.parsed)


def _unknown_language(example) -> str:
    return f"a ```{example.parsed} block cannot be run: see docs/conftest.py"


class UnknownLanguageParser:
    """Fails on fenced blocks no evaluator here takes (a typo'd or unsupported language)."""

    def __init__(self, known: set[str]):
        self.known = known
        self.lexer = FencedCodeBlockLexer(language=r".+", mapping={"language": "language"})

    def __call__(self, document):
        for region in self.lexer(document):
            language = region.lexemes["language"].strip()
            if language not in self.known and not language.startswith("{"):
                yield Region(region.start, region.end, language, _unknown_language)


class RaisesParser:
    """``<!-- raises: Type: message -->``: the next python block must end in that error."""

    lexer = DirectiveInHTMLCommentLexer(directive="raises", arguments=".+?")

    def __call__(self, document):
        for region in self.lexer(document):
            yield Region(region.start, region.end, region.lexemes["arguments"], self.expect)

    @staticmethod
    def expect(example) -> None:
        example.namespace["__raises__"] = example.parsed.strip()


class ReasonedSkipParser(SkipParser):
    """Sybil's skip, which must say why: ``<!-- skip: next "needs a running Phoenix" -->``."""

    def __call__(self, document):
        for region in super().__call__(document):
            action, reason = region.parsed
            if action != "end" and not (reason and reason.startswith('"')):
                raise ValueError(f"{document.path}: 'skip: {action}' needs a quoted reason")
            yield region


_python = PythonEvaluator()


def evaluate_python(example) -> str | None:
    expected = example.namespace.pop("__raises__", None)
    if expected is None:
        return _python(example)
    try:
        _python(example)
    except Exception as error:
        if f"{type(error).__name__}: {error}" == expected:
            return None
        raise
    return f"expected {expected}, and nothing was raised"


def setup(namespace: dict) -> None:
    """Each page in its own temporary folder, with a ``data/`` folder as in a checkout."""
    folder = Path(tempfile.mkdtemp(prefix="agentmetrics-docs-"))
    (folder / "data").mkdir()
    namespace["__folder__"], namespace["__cwd__"] = folder, os.getcwd()
    namespace["__environ__"] = {"AGENTMETRICS_DB": os.environ.pop("AGENTMETRICS_DB", None)}
    os.chdir(folder)


def teardown(namespace: dict) -> None:
    os.chdir(namespace["__cwd__"])
    for name, value in namespace["__environ__"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(namespace["__folder__"], ignore_errors=True)
    namespace.clear()  # a page's objects (a Monitor) go now, not at exit


class _PythonBlocks(PythonCodeBlockParser):
    def __init__(self):
        super().__init__()
        self.codeblock_parser = CodeBlockParser("python", evaluate_python)


EVALUATORS = {
    "bash": evaluate_bash,
    "console": evaluate_console,
    "toml": evaluate_toml,
    "yaml": evaluate_yaml,
}
SYBIL = Sybil(
    parsers=[
        _PythonBlocks(),
        *[CodeBlockParser(language, evaluator) for language, evaluator in EVALUATORS.items()],
        UnknownLanguageParser({"python", *EVALUATORS, *NOT_RUN}),
        RaisesParser(),
        ReasonedSkipParser(),
    ],
    patterns=["*.md"],
    setup=setup,
    teardown=teardown,
)
pytest_collect_file = SYBIL.pytest()
