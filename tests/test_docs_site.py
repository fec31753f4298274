"""The docs site (docs/): it builds without a warning, its generated parts are current,
and its code blocks are run (docs/conftest.py; pytest collects docs/*.md)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "A run is in the window when" in reports
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
agentmetrics demo --db t.db --now 2026-11-01T12:00:00Z
```

```console
$ agentmetrics --db t.db failures 1
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


def test_a_broken_block_fails(tmp_path):
    """The runner is no rubber stamp: each kind of broken block fails its test."""
    shutil.copy(DOCS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "broken.md").write_text(BROKEN)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
        + ["--rootdir", str(tmp_path), str(tmp_path / "broken.md")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    failed = sorted(
        int(line.split("line:")[1].split(",")[0])
        for line in result.stdout.splitlines()
        if line.startswith("FAILED")
    )
    assert failed == [3, 7, 15, 20, 26], result.stdout  # all but the demo build
    assert "5 failed, 2 passed" in result.stdout  # the demo build and the raises marker
