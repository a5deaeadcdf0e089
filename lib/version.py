"""The version of otaudit: ONE source, ``pyproject.toml``'s ``[project] version``.

Installed (also editable): read from the distribution's metadata (``importlib.metadata``);
a source tree that is not installed: parsed from the ``pyproject.toml`` next to ``lib/``.
Imports nothing of otaudit, so any layer may use it.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

__all__ = ["__version__", "pyproject_version"]


def pyproject_version(path: Path | None = None) -> str:
    """``[project] version`` of ``pyproject.toml`` (default: the one next to ``lib/``)."""
    path = path or Path(__file__).resolve().parents[1] / "pyproject.toml"
    in_project = False
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s.startswith("["):
            in_project = s == "[project]"
        elif in_project and (m := re.match(r'version\s*=\s*"([^"]+)"', s)):
            return m.group(1)
    raise RuntimeError(f"no [project] version in {path}")


def _version() -> str:
    try:
        return metadata.version("otaudit")
    except metadata.PackageNotFoundError:
        return pyproject_version()


__version__: str = _version()
