"""Workflow commands: what the step prints (`::error file=..,line=..::message`) and writes to GITHUB_OUTPUT.

The escaping follows GitHub's toolkit (`escapeData`, `escapeProperty`); a multi-line output value uses
the `name<<DELIMITER` form with a random delimiter, as the runner reads it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


def escape_data(text: str) -> str:
    """The message of a workflow command: %, CR and LF are escaped (GitHub's toolkit `escapeData`)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value (file=, title=): also ':' and ',' (toolkit `escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True, kw_only=True)
class Annotation:
    level: str  # "error" | "warning" | "notice"
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None

    def render(self) -> str:
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
            if self.line:
                props.append(f"line={self.line}")
        if self.title:
            props.append(f"title={escape_property(self.title)}")
        head = f"::{self.level}" + (" " + ",".join(props) if props else "")
        return f"{head}::{escape_data(self.message)}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def format_outputs(values: dict[str, object]) -> str:
    """GITHUB_OUTPUT lines; a value with a line break uses the `name<<DELIMITER` form."""
    lines = []
    for name, value in values.items():
        text = "" if value is None else str(value)
        if "\n" in text or "\r" in text:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in text:  # pragma: no cover - a 128-bit collision
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{delimiter}\n{text}\n{delimiter}")
        else:
            lines.append(f"{name}={text}")
    return "\n".join(lines) + "\n"


def parse_outputs(text: str) -> dict[str, str]:
    """The reverse of format_outputs, as the runner reads GITHUB_OUTPUT (used by tests and checks)."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"GITHUB_OUTPUT: no closing delimiter {delimiter!r} for {name!r}")
            i += 1
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise ValueError(f"GITHUB_OUTPUT: unparsable line {line!r}")
    return out
