"""Sphinx configuration: MyST Markdown pages, the furo theme.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (tests/test_docs_site.py
builds it with warnings as errors). The CLI reference and the report columns are written
into their pages by cog (``cog -r docs/cli.md docs/reports.md``).
"""

import importlib.metadata

project = "agentmetrics"
author = "agentmetrics contributors"
copyright = "agentmetrics contributors"
release = importlib.metadata.version("agentmetrics-sqlite")
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "conftest.py"]

# `[text](page.md#a-heading)` links: anchors for headings down to ###.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

html_theme = "furo"
html_title = f"agentmetrics {release}"
pygments_style = "default"
