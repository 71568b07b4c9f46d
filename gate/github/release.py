"""The Action's release commands: `command: verify` (gate verify) and `command: bless` (gate bless).

action.yml builds their command lines and runs them; then `python -m gate.github --command verify|bless`
calls publish: the outputs (verdict verified / not-verified / blessed / refused / error, exit-code), the
gate's own lines in the step summary, one ::error per model or file that is not verified, and the step's
exit code (wrong inputs and gate bugs always fail; `fail-on: never` only reports a refusal).
"""

from __future__ import annotations

from pathlib import Path

from gate.errors import EXIT_FAIL, EXIT_PASS
from gate.github.commands import Annotation
from gate.github.report import log_annotations

RELEASE_COMMANDS = ("verify", "bless")
_OUTCOME = {"verify": ("verified", "not-verified"), "bless": ("blessed", "refused")}
# what `gate verify` prints for a file or model that is not verified (gate.verify.Verification.lines)
_NOT_OK = ("CHANGED", "MISSING", "EXTRA", "FAILED", "WARNED", "UNJUDGED", "UNKNOWN", "BASE", "UNCHECKED")


def not_verified(stdout: str) -> list[str]:
    """The lines of gate verify's output that say what is not verified."""
    return [line.strip() for line in stdout.splitlines() if line.startswith("  ") and
            line.strip().split(" ", 1)[0] in _NOT_OK]


def publish(step, *, command: str, gate_exit: int | None, stdout: str, log: str, report_dir: Path,
            workspace: Path | None, fail_on: str) -> int:
    ok, refused = _OUTCOME[command]
    verdict = ok if gate_exit == EXIT_PASS else refused if gate_exit == EXIT_FAIL else "error"
    step.outputs({"verdict": verdict, "exit-code": "" if gate_exit is None else gate_exit,
                  "report-dir": str(report_dir.resolve())})
    if gate_exit == EXIT_FAIL:
        lines = not_verified(stdout) if command == "verify" else []
        for line in lines or [stdout.strip().splitlines()[-1] if stdout.strip() else log.strip() or refused]:
            step.annotate(Annotation(level="error", title=f"gate {command}: {refused}", message=line))
    elif gate_exit != EXIT_PASS:
        for ann in log_annotations(log, gate_exit if gate_exit is not None else 3, workspace):
            step.annotate(ann)
    icon = "✅" if verdict == ok else "❌"
    body = stdout.strip() or "(no output)"
    summary = f"## {icon} gate {command}: {verdict.upper()}\n\n```text\n{body}\n```\n"
    if log.strip():
        summary += f"\n```text\n{log.strip()}\n```\n"
    step.summary(summary)
    step.log(f"gate: {command} {verdict} (exit {gate_exit}) for {report_dir}")
    if gate_exit == EXIT_PASS:
        return EXIT_PASS
    if gate_exit == EXIT_FAIL:
        return EXIT_PASS if fail_on == "never" else EXIT_FAIL
    return gate_exit if isinstance(gate_exit, int) and 0 < gate_exit < 256 else 3
