"""How many rules passed, failed and warned: counted once, read by every output.

The CLI summary, report.md, report.html, junit.xml, report.json and the Action's
outputs and annotations all read one Tally, so they can never disagree about
whether something failed or warned (they once counted four ways: with
`inconclusive: warn` the step failed on warnings while the report showed none).

A rule is *failed* when it blocks the candidate (fail, error, or inconclusive
under `inconclusive: fail`) and *warned* when it did not pass but does not block
(warn, or inconclusive under `inconclusive: warn`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

STATUSES = ("pass", "fail", "warn", "inconclusive", "error")


def outcome(status: str, blocking: bool) -> str:
    """passed | failed | warned: what a pull request should make of one rule result."""
    if status == "pass":
        return "passed"
    return "failed" if blocking else "warned"


@dataclass(frozen=True, kw_only=True)
class Tally:
    passed: int = 0
    failed: int = 0  # blocking: these fail the candidate
    warned: int = 0  # did not pass, does not block
    errors: int = 0  # of the failed: rules that could not be judged at all (junit's <error>)
    inconclusive: int = 0  # of the failed and warned: rules the data could not decide
    rules: int = 0
    failed_rules: tuple[str, ...] = ()
    warned_rules: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((k, getattr(self, k)) for k in self.__dataclass_fields__)}

    @classmethod
    def from_dict(cls, d: dict) -> Tally:
        return cls(**{k: (tuple(d[k]) if k.endswith("_rules") else int(d[k]))
                      for k in cls.__dataclass_fields__ if k in d})

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})


def count(rules: Iterable[tuple[str, str, bool]], *, candidate: str, error: str | None = None) -> Tally:
    """rules: (rule text, status, blocking). A candidate that could not be measured and has no rule
    to carry it still counts as one failure."""
    passed = failed = warned = errors = inconclusive = total = 0
    failed_rules, warned_rules = [], []
    for text, status, blocking in rules:
        total += 1
        kind = outcome(status, blocking)
        errors += status == "error"
        inconclusive += status == "inconclusive"
        if kind == "passed":
            passed += 1
        elif kind == "failed":
            failed += 1
            failed_rules.append(f"{candidate}: {text} ({status})")
        else:
            warned += 1
            warned_rules.append(f"{candidate}: {text} ({status})")
    if error and not total:
        failed, errors = 1, 1
        failed_rules.append(f"{candidate}: could not be measured")
    return Tally(passed=passed, failed=failed, warned=warned, errors=errors, inconclusive=inconclusive,
                 rules=total, failed_rules=tuple(failed_rules), warned_rules=tuple(warned_rules))
