"""The docs site: pages in docs/*.md, run as tests by docs/conftest.py (a package, so that
its conftest does not shadow tests/conftest.py, which tests import as ``conftest``)."""
