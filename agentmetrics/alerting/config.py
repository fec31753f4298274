"""The agentmetrics configuration file, shared by alert rules and cost rates.

Settings live in ``agentmetrics.toml`` or, failing that, in the ``[tool.agentmetrics]``
table of ``pyproject.toml``; both are looked up in the current folder, then its parents
up to the project root (the first folder holding ``.git`` or a ``pyproject.toml``).
Every feature reads its own top-level table from the one dict :func:`load_config`
returns (``[costs]`` for cost estimation, ``[[rules]]`` for alerting), so one loader
serves them all; :meth:`ConfigFile.error` names the file and line of a bad setting. Example::

    [costs]
    default_hourly_rate = 6.0

    [costs.agents]
    reviewer = 12.0

    [costs.models."claude-sonnet-4"]
    input_per_million = 3.0
    output_per_million = 15.0
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "agentmetrics.toml"


@dataclass(frozen=True)
class ConfigFile:
    """A config file read and parsed: ``data`` holds the agentmetrics settings (for a
    ``pyproject.toml``, its ``[tool.agentmetrics]`` table)."""

    path: Path
    text: str
    data: dict[str, Any]

    @property
    def in_pyproject(self) -> bool:
        return self.path.name == "pyproject.toml"

    def table_name(self, table: str) -> str:
        """How ``table`` is spelt in this file: ``rules`` or ``tool.agentmetrics.rules``."""
        return f"tool.agentmetrics.{table}" if self.in_pyproject else table

    def line(self, table: str, index: int | None, key: str | None) -> int | None:
        """The line of ``key`` in the ``index``-th ``[[table]]`` (``index`` None: the
        first ``key =`` line in the file); tomllib reports lines for syntax errors only."""
        lines = self.text.splitlines()
        if index is None:
            return _key_line(lines, 0, len(lines), key) if key else None
        dotted = r"\s*\.\s*".join(map(re.escape, self.table_name(table).split(".")))
        header = re.compile(rf"^\[\[\s*{dotted}\s*\]\]")
        starts = [n for n, text in enumerate(lines) if header.match(text.strip())]
        if index >= len(starts):
            return None
        start = starts[index]
        end = next(
            (n for n in range(start + 1, len(lines)) if lines[n].lstrip().startswith("[")),
            len(lines),
        )
        found = _key_line(lines, start + 1, end, key) if key else None
        return found or start + 1

    def error(
        self,
        problem: str,
        *,
        table: str = "",
        index: int | None = None,
        key: str | None = None,
        label: str = "",
    ) -> ConfigError:
        """A :class:`ConfigError` naming this file, the line of ``key`` and ``label``."""
        line = self.line(table, index, key)
        where = f"{self.path}, line {line}" if line else str(self.path)
        return ConfigError(f"{where}: {label}{key + ': ' if key else ''}{problem}")


def _key_line(lines: list[str], start: int, end: int, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
    return next((n + 1 for n in range(start, end) if pattern.match(lines[n])), None)


def find_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``agentmetrics.toml``, or ``pyproject.toml`` with a
    ``[tool.agentmetrics]`` table, from ``start`` (default: cwd) up to the project root.

    :raises ConfigError: a ``pyproject.toml`` on the way is not valid TOML
    """
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "agentmetrics" in _parse(pyproject)[1].get("tool", {}):
            return pyproject
        # Never read a stray config from above the project (a shared /tmp, a home folder).
        if pyproject.is_file() or (candidate / ".git").exists():
            return None
    return None


def read_config(path: str | os.PathLike[str] | None = None) -> ConfigFile | None:
    """Read and parse ``path``, or the file :func:`find_config` finds (None if none).

    A found file is named relative to the current folder, as the user would type it.

    :raises ConfigError: the given file is missing, unreadable or not valid TOML
    """
    if path is None:
        found = find_config()
        if found is None:
            return None
        file = Path(os.path.relpath(found))
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"Config file {file} not found")
    text, data = _parse(file)
    if file.name == "pyproject.toml":
        data = data.get("tool", {}).get("agentmetrics", {})
    return ConfigFile(file, text, data)


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The settings of :func:`read_config` as a dict (empty when no file is found).

    :raises ConfigError: the given file is missing, unreadable or not valid TOML
    """
    config = read_config(path)
    return {} if config is None else config.data


def _parse(file: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read {file}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Cannot read {file}: not a UTF-8 text file") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None
