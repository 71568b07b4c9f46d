"""User mistakes: exit 2 with a message that names the file, the place and the fix."""

from __future__ import annotations

from pathlib import Path


class GateInputError(Exception):
    """The inputs are wrong (policy, model, data): never a traceback, always exit 2."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line else "") + ": "
        text = where + self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text
