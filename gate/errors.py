"""User mistakes: exit 2 with a message that names the file, the place and the fix."""

from __future__ import annotations

from pathlib import Path

# The exit codes are the contract with CI; every command and the Action read them from here.
EXIT_PASS = 0  # every candidate passes
EXIT_FAIL = 1  # a candidate fails the policy
EXIT_INPUT = 2  # the inputs are wrong: the message names the file, the place and the fix
EXIT_BUG = 3  # the gate itself broke
EXIT_MEANING = {EXIT_PASS: "every candidate passes", EXIT_FAIL: "a candidate fails the policy",
                EXIT_INPUT: "the inputs are wrong", EXIT_BUG: "the gate itself failed (a bug)"}


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
            # a path from a policy may hold control characters (a NUL, an escape code): never print them raw
            shown = self.path if self.path.isprintable() else repr(self.path)
            where = shown + (f":{self.line}" if self.line else "") + ": "
        text = where + self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text
