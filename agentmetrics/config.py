"""The agentmetrics configuration file, shared by alert rules and cost rates.

Settings live in ``agentmetrics.toml`` or, failing that, in the ``[tool.agentmetrics]``
table of ``pyproject.toml``; both are looked up in the current folder, then its parents
up to the project root (the first folder holding ``.git`` or a ``pyproject.toml``).
Every feature reads its own top-level table from the one dict :func:`load_config`
returns (``[costs]`` for cost estimation; alert rules use their own tables), so one
loader serves them all. Example::

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
import sys
from pathlib import Path
from typing import Any

from .errors import InvalidValue

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "agentmetrics.toml"


def find_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``agentmetrics.toml``, or ``pyproject.toml`` with a
    ``[tool.agentmetrics]`` table, from ``start`` (default: cwd) up to the project root."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "agentmetrics" in _read(pyproject).get("tool", {}):
            return pyproject
        # Never read a stray config from above the project (a shared /tmp, a home folder).
        if pyproject.is_file() or (candidate / ".git").exists():
            return None
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the configuration as a dict (empty when no file is found).

    :param path: a TOML file to read; None searches as :func:`find_config` does. A
      ``pyproject.toml`` contributes only its ``[tool.agentmetrics]`` table.
    :raises InvalidValue: the given file is missing or is not valid TOML
    """
    if path is None:
        found = find_config()
        if found is None:
            return {}
        file = found
    else:
        file = Path(path)
        if not file.is_file():
            raise InvalidValue(f"Config file {file} not found")
    data = _read(file)
    if file.name == "pyproject.toml":
        return data.get("tool", {}).get("agentmetrics", {})
    return data


def _read(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InvalidValue(f"{file} is not valid TOML: {e}") from None
    except OSError as e:
        raise InvalidValue(f"Cannot read {file}: {e.strerror}") from None
