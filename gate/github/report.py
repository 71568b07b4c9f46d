"""The report as the pull request sees it: read through gate.contract, counted, annotated, and cut to size.

- read_report: report.json and report.md through the one validated loader (gate/contract.py);
- tally and rule_outcomes: what passed, failed and warned (a damaged report is never read as a pass);
- report_annotations / log_annotations: one ::error or ::warning per failed or warned rule, on the
  policy's rule line when the policy is in the workspace, or per `error:` block of the gate's log;
- comment_body / error_markdown: the summary and the comment, within GitHub's 65,536-character limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gate.contract import ContractError, load_report_dir
from gate.errors import EXIT_INPUT
from gate.errors import EXIT_MEANING as GATE_EXIT_MEANING
from gate.github.commands import Annotation
from gate.tally import Tally, count, outcome

MARKER = "<!-- compression-gate -->"
COMMENT_LIMIT = 65_536  # GitHub refuses comment bodies longer than this


# ---------------------------------------------------------------- reading the report

class ReportError(Exception):
    """report.json / report.md missing, unreadable, of another format or damaged."""


def read_report(report_dir: Path) -> tuple[dict, str]:
    """(report.json as a dict, report.md text), through the one validated loader (gate/contract.py).
    Raises ReportError with the file, the problem and the fix."""
    try:
        return load_report_dir(report_dir)
    except ContractError as exc:
        raise ReportError(exc.render()) from None


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    candidate: str
    rule: str
    metric: str
    status: str
    blocking: bool
    reason: str
    bound_text: str
    index: int | None
    line: int | None  # of the rule in the policy file

    @property
    def kind(self) -> str:
        """passed | failed | warned: what the pull request should make of it."""
        return outcome(self.status, self.blocking)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rule_outcomes(report: dict) -> list[RuleOutcome]:
    out = []
    for cand in report.get("candidates") or []:
        if not isinstance(cand, dict):
            continue
        for r in cand.get("rules") or []:
            if not isinstance(r, dict):
                continue
            status = str(r.get("status", "error"))
            out.append(RuleOutcome(
                candidate=str(cand.get("name", "?")), rule=str(r.get("rule", r.get("metric", "?"))),
                metric=str(r.get("metric", "?")), status=status,
                # a report without the flag: anything but pass/warn blocks (never turn doubt into a pass)
                blocking=bool(r.get("blocking", status not in ("pass", "warn"))),
                reason=str(r.get("reason") or ""), bound_text=str(r.get("bound_text") or ""),
                index=_int(r.get("index")), line=_int(r.get("line"))))
    return out


def tally(report: dict) -> Tally:
    """The report's own tally (the one the gate printed and rendered); counted the same way when absent."""
    stored = report.get("tally")
    if isinstance(stored, dict):
        try:
            return Tally.from_dict(stored)
        except (TypeError, ValueError, KeyError):
            pass  # a damaged tally: count from the rules, never trust it
    total = Tally()
    outcomes = rule_outcomes(report)
    for cand in report.get("candidates") or []:
        if not isinstance(cand, dict):
            continue
        name = str(cand.get("name", "?"))
        total += count(((o.rule, o.status, o.blocking) for o in outcomes if o.candidate == name),
                       candidate=name, error=cand.get("error"))
    return total


def _in_workspace(path: str | None, workspace: Path | None) -> str | None:
    """The path relative to the workspace, or None (annotations only land on files of the repository)."""
    if not path or workspace is None:
        return None
    try:
        rel = Path(path).resolve().relative_to(workspace.resolve())
    except (ValueError, OSError):
        return None
    return rel.as_posix()


def report_annotations(report: dict, workspace: Path | None = None) -> list[Annotation]:
    """One annotation per failed (::error) or warned (::warning) rule, plus one per input error."""
    policy = (report.get("provenance") or {}).get("policy") or {}
    file = _in_workspace(policy.get("path"), workspace)
    out = []
    for o in rule_outcomes(report):
        if o.kind == "passed":
            continue
        verb = {"fail": "fails", "error": "could not check", "warn": "warns on",
                "inconclusive": "is inconclusive on"}.get(o.status, o.status)
        message = o.reason or o.status
        if o.bound_text:
            message += f"\nbound: {o.bound_text}"
        out.append(Annotation(level="error" if o.kind == "failed" else "warning",
                              title=f"gate: {o.candidate} {verb} {o.rule}", message=message,
                              file=file, line=o.line if file else None))
    for cand in report.get("candidates") or []:
        if cand.get("error") and not cand.get("rules"):
            out.append(Annotation(level="error", title=f"gate: {cand.get('name', '?')} could not be measured",
                                  message=str(cand["error"])))
    for error in report.get("input_errors") or []:
        out.append(log_annotation(str(error), workspace) or Annotation(level="error", title="gate: wrong input",
                                                                      message=str(error)))
    return out


_ERROR_LINE = re.compile(r"^(?P<path>[^\s:][^:]*?)(?::(?P<line>\d+))?: (?P<message>.+)$")


def log_annotation(error: str, workspace: Path | None = None) -> Annotation | None:
    """`PATH[:LINE]: message` (how the gate names the file and place) -> an annotation on that file."""
    first, _, rest = error.partition("\n")
    m = _ERROR_LINE.match(first)
    if not m:
        return None
    file = _in_workspace(m.group("path"), workspace)
    message = (m.group("message") + ("\n" + rest if rest else "")).strip()
    if file is None:
        message = f"{m.group('path')}: {message}"
    return Annotation(level="error", title="gate: wrong input", message=message,
                      file=file, line=int(m.group("line")) if file and m.group("line") else None)


def log_annotations(log: str, gate_exit: int, workspace: Path | None = None) -> list[Annotation]:
    """The gate's stderr when it wrote no report: every `error: ...` block becomes one ::error."""
    blocks: list[str] = []
    for line in log.splitlines():
        if line.startswith("error: "):
            blocks.append(line[len("error: "):])
        elif blocks and line.startswith("  "):  # the "  fix: ..." continuation of an error
            blocks[-1] += "\n" + line.strip()
    out = []
    for block in blocks:
        ann = log_annotation(block, workspace) if gate_exit == EXIT_INPUT else None
        out.append(ann or Annotation(level="error", title=f"gate: exit {gate_exit}", message=block))
    if not out:
        tail = "\n".join(log.strip().splitlines()[-5:]) or "(no output)"
        out.append(Annotation(level="error", title=f"gate: exit {gate_exit}",
                              message=f"the gate exited {gate_exit} "
                                      f"({GATE_EXIT_MEANING.get(gate_exit, 'unexpected')}):\n{tail}"))
    return out


# ---------------------------------------------------------------- the summary and the comment body

def marker_for(comment_id: str = "") -> str:
    """The hidden marker that finds our comment again; an id keeps several gates of one PR apart."""
    comment_id = re.sub(r"[^A-Za-z0-9_.-]", "-", comment_id.strip())
    return f"<!-- compression-gate:{comment_id} -->" if comment_id else MARKER


def github_length(text: str) -> int:
    """Length as GitHub may count it (UTF-16 code units: never less than the code points)."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, room: int) -> str:
    """The longest prefix of text whose GitHub length is at most room."""
    used, end = 0, 0
    for ch in text:
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > room:
            break
        used += size
        end += 1
    return text[:end]


def artifact_pointer(*, artifact_name: str, artifact_url: str | None, run_url: str | None) -> str:
    name = artifact_name or "gate-report"
    if artifact_url:
        return f"The full report (every rule, every measurement, provenance) is `report.html` in the " \
               f"[**{name}** artifact]({artifact_url})."
    if run_url:
        return f"The full report (every rule, every measurement, provenance) is `report.html` in the " \
               f"artifact **{name}** of [this workflow run]({run_url})."
    return f"The full report (every rule, every measurement, provenance) is `report.html` in the artifact **{name}**."


def comment_body(markdown: str, *, marker: str = MARKER, pointer: str = "", limit: int = COMMENT_LIMIT) -> str:
    """Marker + report + pointer, cut at a line boundary to fit GitHub's limit."""
    head = marker + "\n"
    tail = f"\n\n<sub>{pointer}</sub>\n" if pointer else "\n"
    body = head + markdown.rstrip("\n") + tail
    if github_length(body) <= limit:
        return body
    note = ("\n\n> [!WARNING]\n> This report was cut here: GitHub limits a comment to "
            f"{limit:,} characters. {pointer}".rstrip())
    room = limit - github_length(head) - github_length(note) - github_length(tail)
    if room <= 0:
        raise ValueError(f"limit {limit} is too small for the marker and the pointer")
    cut = _prefix_within(markdown, room)
    if "\n" in cut:
        cut = cut[:cut.rfind("\n")]  # never a half table row
    return head + cut.rstrip("\n") + note + tail


def error_markdown(*, command: str, gate_exit: int | None, problem: str, log: str = "") -> str:
    """Summary/comment when there is no report to show: what failed and the gate's own words."""
    meaning = GATE_EXIT_MEANING.get(gate_exit, "unexpected exit") if gate_exit is not None else "no report"
    lines = ["## ❌ Compression gate: ERROR", "",
             f"`gate {command}` exited {gate_exit if gate_exit is not None else '?'}: {meaning}. {problem}".rstrip()]
    log = log.strip()
    if log:
        tail = "\n".join(log.splitlines()[-40:])
        fence = "```"
        while fence in tail:
            fence += "`"
        lines += ["", f"{fence}text", tail, fence]
    return "\n".join(lines) + "\n"
