"""Where the shipped templates and policy presets are.

In a wheel they sit inside the package (gate/templates, gate/policies); in a
source checkout or an editable install they sit at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the gate installation has no {name}/ directory")


def templates_dir() -> Path:
    return resource_dir("templates")


def policies_dir() -> Path:
    return resource_dir("policies")
