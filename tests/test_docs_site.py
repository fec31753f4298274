"""The docs site (docs/): it builds without a warning, its generated parts are current,
and its code blocks are run (docs/conftest.py; pytest collects docs/*.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = ["docs/cli.md", "docs/reports.md"]  # by their cog blocks


def test_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert pages <= {path.stem for path in (tmp_path / "html").glob("*.html")}
    # The contract comes from the reports' docstring, the examples from their files.
    reports = (tmp_path / "html" / "reports.html").read_text()
    assert "A run is in the window when" in reports and ".. py:module::" not in reports
    otel = (tmp_path / "html" / "opentelemetry.html").read_text()
    assert "Agent.instrument_all" in otel and "LangChainInstrumentor" in otel


def test_generated_parts_are_current(monkeypatch):
    """`cog --check`: the CLI reference and the report columns are what the code gives."""
    from cogapp import Cog

    monkeypatch.chdir(ROOT)
    status = Cog().main(["cog", "--check", *GENERATED])
    assert status == 0, f"out of date: run `cog -r {' '.join(GENERATED)}`"


def test_cli_reference_has_every_command():
    from test_docs import all_commands

    reference = (DOCS / "cli.md").read_text()
    missing = [p for p, _ in all_commands() if f"### agentmetrics {' '.join(p)}\n" not in reference]
    assert not missing


BROKEN = """\
# Broken

```python
1 / 0
```

```bash
agentmetrics no-such-command
```

```bash
agentmetrics --help
```

```bash
agentmetrics health --max-p95 fast || echo "a usage error is no failed gate"
```

```console
$ agentmetrics --version
not this
```

```shell
ls
```

<!-- raises: ValueError: x -->

```python
x = 1
```
"""


def test_a_broken_block_fails(pytester):
    """The runner is no rubber stamp: each kind of broken block fails its test."""
    pytester.makeconftest((DOCS / "conftest.py").read_text())
    pytester.makefile(".md", broken=BROKEN)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-o", "addopts=")
    failed = sorted(
        int(line.split("line:")[1].split(",")[0])
        for line in result.outlines
        if line.startswith("FAILED")
    )
    assert failed == [3, 7, 15, 19, 24, 30], result.outlines  # all but `--help`
    result.assert_outcomes(failed=6, passed=2)  # `--help` and the raises marker
