"""Policy x Measurements -> Verdict. Pure: no I/O, no models, no printing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from gate.fmt import number
from gate.measure import stats
from gate.measure.groups import FAIRNESS_TEST, GAP_TEST
from gate.measure.registry import (AGREEMENT, BOOTSTRAP, EXACT, FAIRNESS, PAIRED_PROPORTION, PERCENTILES, QUALITY,
                                   TIMED, MetricSpec, get_metric)
from gate.measure.stats import samples_to_decide, samples_to_decide_from_interval
from gate.measurements import CandidateMeasurements, Measurements, MetricResult
from gate.policy import DROP_BOUNDS, Policy, Rule
from gate.tally import Tally, count

PASS, FAIL, WARN, INCONCLUSIVE, ERROR = "pass", "fail", "warn", "inconclusive", "error"


@dataclass(frozen=True, kw_only=True)
class RuleResult:
    rule: str
    index: int
    metric: str
    bound_kind: str
    threshold: float
    severity: str
    status: str
    blocking: bool  # does this result fail the candidate?
    observed: float | None  # the quantity held against the threshold (a drop, an increase, or the value)
    interval: list[float] | None  # its confidence interval [low, high]
    base: float | None
    candidate: float | None
    bound_text: str  # the resolved bound in plain words
    reason: str
    samples_needed: int | None = None
    n: int | None = None
    groups: tuple[dict, ...] = ()  # per-subgroup tests of a per-group rule
    line: int | None = None  # of the rule in the policy file (annotations point there)
    vs: str = "base"  # what the candidate was compared with: base, baseline or first_baseline (policy.VS)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class CandidateVerdict:
    name: str
    verdict: str
    rules: tuple[RuleResult, ...]
    tally: Tally
    error: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "error": self.error, "tally": self.tally.to_dict(),
                "rules": [r.to_dict() for r in self.rules]}


def _candidate_verdict(name: str, rules: tuple[RuleResult, ...], error: str | None = None) -> CandidateVerdict:
    """The one place a candidate's rules are counted and its verdict decided."""
    tally = count(((r.rule, r.status, r.blocking) for r in rules), candidate=name, error=error)
    return CandidateVerdict(name=name, verdict=FAIL if tally.failed else PASS, rules=rules, tally=tally,
                            error=error)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    verdict: str
    candidates: tuple[CandidateVerdict, ...]
    confidence: float
    inconclusive: str
    input_errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tally(self) -> Tally:
        return sum((c.tally for c in self.candidates), Tally())

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "confidence": self.confidence, "inconclusive": self.inconclusive,
                "tally": self.tally.to_dict(), "candidates": [c.to_dict() for c in self.candidates]}


def fmt(metric: str, x: float | None, ref: float | None = None) -> str:
    return number(x, ref, metric=metric)


def _decide(low: float, high: float, bound: float, upper: bool) -> str:
    """Upper bound: pass when the whole interval is at or below it, fail when wholly above."""
    if upper:
        return PASS if high <= bound else FAIL if low > bound else INCONCLUSIVE
    return PASS if low >= bound else FAIL if high < bound else INCONCLUSIVE


def _error(rule: Rule, reason: str, m: MetricResult | None) -> RuleResult:
    return RuleResult(rule=rule.text, index=rule.index, metric=rule.metric, bound_kind=rule.bound_kind,
                      threshold=rule.bound, severity=rule.severity, status=ERROR, blocking=True, observed=None,
                      interval=None, base=m.base if m else None, candidate=m.candidate if m else None,
                      bound_text="", reason=reason, n=m.n if m else None)


@dataclass(frozen=True, kw_only=True)
class Frame:
    """A rule's bound and a measurement put on one scale: observed and its interval against a margin."""
    observed: float
    low: float
    high: float
    margin: float  # on the observed's scale (a fraction for relative bounds)
    abs_margin: float  # on the metric's scale
    upper: bool  # the bound is an upper bound
    bound_text: str
    what: str


def _frame(rule: Rule, m: MetricResult, *, label: str) -> Frame | str:
    """The rule's quantity for m, or why it cannot be judged."""
    name, kind, bound = rule.metric, rule.bound_kind, rule.bound
    if kind in ("min", "max"):
        iv = m.candidate_interval
        low, high = (iv.low, iv.high) if iv else (m.candidate, m.candidate)
        upper = kind == "max"
        return Frame(observed=m.candidate, low=low, high=high, margin=bound, abs_margin=bound, upper=upper,
                     bound_text=f"candidate {label} {'<=' if upper else '>='} {fmt(name, bound)}", what=label)
    if m.base is None or m.delta is None:
        return f"{label} has no base value to compare with"
    relative = "relative" in kind
    scale = abs(m.base) if relative else 1.0
    drop = kind in DROP_BOUNDS
    sign = -1.0 if drop else 1.0  # a drop is -delta, an increase is +delta
    iv = m.delta_interval
    d_low, d_high = (iv.low, iv.high) if iv else (m.delta, m.delta)
    low, high = sorted((sign * d_low, sign * d_high))
    observed = sign * m.delta + 0.0
    abs_margin = bound * scale
    limit = m.base - abs_margin if drop else m.base + abs_margin
    shown = f"base {'-' if drop else '+'} {fmt(name, bound)}" if not relative else \
        f"base x (1 {'-' if drop else '+'} {bound:g})"
    bound_text = f"candidate {label} {'>=' if drop else '<='} {shown} = {fmt(name, limit)}"
    margin = abs_margin
    if relative:
        # shown as a fraction of the base, decided on the same scale
        ev = m.evidence or {}
        rel_iv = m.relative_interval
        if scale == 0:
            # no ratio to a base of 0: a change in the wrong direction is infinitely large, none is 0
            bound_text += " (the base is 0, so any change in the wrong direction fails)"
            observed = math.inf if observed > 0 else 0.0
            low, high = (math.inf if low > 0 else 0.0), (math.inf if high > 0 else 0.0)
            margin = bound
        elif ev.get("relative_unavailable"):
            return f"{label}: a relative bound cannot be judged: {ev['relative_unavailable']}"
        elif rel_iv is not None:
            # a paired ratio interval (stats.relative_change_from_bootstrap or
            # paired_proportion_relative_change): the base's own error is in it
            low, high = sorted((sign * rel_iv.low + 0.0, sign * rel_iv.high + 0.0))
            observed, margin = observed / scale, bound
        else:
            # results without a relative interval (older files, timed metrics): the delta
            # interval over |base|, the base taken as exact. A metric whose values are all
            # non-negative cannot change by less than -100%, so the ends are held there.
            r_low, r_high = d_low / scale, d_high / scale
            if m.base > 0 and m.candidate is not None and m.candidate >= 0 and \
                    (m.candidate_interval is None or not m.candidate_interval.low < 0):
                r_low, r_high = max(r_low, -1.0), max(r_high, -1.0)
            low, high = sorted((sign * r_low + 0.0, sign * r_high + 0.0))
            observed, margin = observed / scale, bound
    what = f"{'relative ' if relative else ''}{'drop' if drop else 'increase'} of {label}"
    return Frame(observed=observed, low=low, high=high, margin=margin, abs_margin=abs_margin, upper=True,
                 bound_text=bound_text, what=what)


# the smallest p-value a quantile grid resolves: beyond its last level grid_p_* says 0 whatever the truth
_GRID_FLOOR = stats.QUANTILE_LEVELS[0]


def _p_within(rule: Rule, m: MetricResult, f: Frame) -> float:
    """One-sided p-value of "the rule holds" (small: evidence that it is broken)."""
    return _p_and_floor(rule, m, f)[0]


def _p_and_floor(rule: Rule, m: MetricResult, f: Frame) -> tuple[float, float]:
    """(_p_within, the smallest p-value its method can tell apart from 0): 0 for a statistic computed exactly
    (Wilson, Tango), the grid's first level for a p-value read off a quantile grid, and 1 for one that is only
    the interval's own decision at its level (it says nothing about a stricter level)."""
    ev = m.evidence or {}
    kind = rule.bound_kind
    decided = _decide(f.low, f.high, f.margin, f.upper)
    by_interval = (0.0 if decided == FAIL else 1.0, 0.0 if get_metric(rule.metric).method == EXACT else 1.0)
    if kind in ("min", "max"):
        if "k" in ev:
            return (stats.wilson_p_above if kind == "max" else stats.wilson_p_below)(ev["k"], ev["n"],
                                                                                    rule.bound), 0.0
        if ev.get("candidate_grid"):
            return (stats.grid_p_above if kind == "max" else stats.grid_p_below)(ev["candidate_grid"],
                                                                                rule.bound), _GRID_FLOOR
        return by_interval
    drop = kind in DROP_BOUNDS
    if "relative" in kind and m.base and m.relative_interval is not None:
        # the same paired-ratio distribution the frame's interval comes from; for paired
        # proportions a function of the counts, re-derived here (stats.paired_proportion_relative_change)
        grid = ev.get("relative_grid")
        if grid is None and all(key in ev for key in ("b", "c", "n", "k")):
            grid = stats.paired_proportion_relative_change(ev["b"], ev["c"], ev["n"], ev["k"],
                                                           confidence=0.95).grid
        if grid:
            return (stats.grid_p_below(grid, -rule.bound) if drop else stats.grid_p_above(grid, rule.bound)), \
                _GRID_FLOOR
    if "b" in ev:
        if drop:
            return stats.tango_p_below(ev["b"], ev["c"], ev["n"], -f.abs_margin), 0.0
        return stats.tango_p_above(ev["b"], ev["c"], ev["n"], f.abs_margin), 0.0
    if ev.get("delta_grid"):
        if drop:
            return stats.grid_p_below(ev["delta_grid"], -f.abs_margin), _GRID_FLOOR
        return stats.grid_p_above(ev["delta_grid"], f.abs_margin), _GRID_FLOOR
    return by_interval


def _status(decision: str, rule: Rule, inconclusive: str) -> tuple[str, bool]:
    if decision == PASS:
        return PASS, False
    if decision == FAIL:
        return (FAIL, True) if rule.severity == "fail" else (WARN, False)
    return INCONCLUSIVE, rule.severity == "fail" and inconclusive == "fail"


def _unjudgeable(rule: Rule, m: MetricResult | None, method: str, label: str) -> str | None:
    if m is None:
        return f"{label} was not measured for this candidate"
    if m.unavailable:
        return f"{label} could not be measured: {m.unavailable}"
    needed = m.candidate_interval if rule.bound_kind in ("min", "max") else m.delta_interval
    if needed is None and method != EXACT:
        # never judge a sampled number as if it were exact
        return f"{label} was measured without an interval; measure again with this rule in the policy"
    return None


def _finite_frame(f: Frame) -> bool:
    return not any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (f.observed, f.low, f.high))


def _not_here(rule: Rule, m: MetricResult) -> RuleResult:
    """A metric this machine cannot measure (energy without RAPL): a warning, never a made-up number."""
    return RuleResult(rule=rule.text, index=rule.index, metric=rule.metric, bound_kind=rule.bound_kind,
                      threshold=rule.bound, severity=rule.severity, status=WARN, blocking=False, observed=None,
                      interval=None, base=None, candidate=None, bound_text="",
                      reason=f"{rule.metric} is unavailable where it was measured: {m.unavailable}; not judged",
                      n=m.n)


def _too_few_runs(rule: Rule, m: MetricResult, inconclusive: str) -> RuleResult:
    """A timed metric with fewer runs than it needs is claimed neither way."""
    runs = m.evidence["insufficient_runs"]
    status, blocking = _status(INCONCLUSIVE, rule, inconclusive)
    what = "its percentile (MLPerf's binomial minimum, and a finite upper bound)" \
        if rule.metric in PERCENTILES else "an interval"
    return RuleResult(rule=rule.text, index=rule.index, metric=rule.metric, bound_kind=rule.bound_kind,
                      threshold=rule.bound, severity=rule.severity, status=status, blocking=blocking,
                      observed=m.candidate, interval=None, base=m.base, candidate=m.candidate, bound_text="",
                      reason=f"{rule.metric} needs at least {runs['needed']:,} timed runs for {what} to be "
                             f"claimed, and {runs['runs']:,} were measured; raise latency.min_runs (or max_time_s)",
                      samples_needed=runs["needed"], n=m.n)


def evaluate(rule: Rule, m: MetricResult | None, *, confidence: float, inconclusive: str) -> RuleResult:
    """One rule against one measured metric over all samples."""
    spec = get_metric(rule.metric)
    name = rule.metric
    evidence = (m.evidence or {}) if m is not None else {}
    if m is not None and m.unavailable and evidence.get("not_on_this_machine"):
        return _not_here(rule, m)
    if m is not None and not m.unavailable and evidence.get("insufficient_runs"):
        return _too_few_runs(rule, m, inconclusive)
    # timed metrics may carry wider intervals than the policy's level (re-measured: see measure/speed.py)
    confidence = evidence.get("interval_confidence", confidence)
    problem = _unjudgeable(rule, m, spec.method, name)
    f = problem or _frame(rule, m, label=name)
    if isinstance(f, str):
        return _error(rule, f, m)
    if not _finite_frame(f):
        return _error(rule, f"{name}: the interval could not be computed on these samples", m)
    decision = _decide(f.low, f.high, f.margin, f.upper)
    samples = None
    if decision == INCONCLUSIVE:
        samples = _samples(spec, m, observed=f.observed, low=f.low, high=f.high, margin=f.margin,
                           confidence=confidence, relative="relative" in rule.bound_kind, scale=abs(m.base or 0))
    status, blocking = _status(decision, rule, inconclusive)
    return RuleResult(rule=rule.text, index=rule.index, metric=name, bound_kind=rule.bound_kind,
                      threshold=rule.bound, severity=rule.severity, status=status, blocking=blocking,
                      observed=f.observed, interval=[f.low, f.high], base=m.base, candidate=m.candidate,
                      bound_text=f.bound_text, reason=_reason(f, decision, confidence, name, samples, m.n,
                                                              unit="timed runs" if spec.method == TIMED else "samples"),
                      samples_needed=samples, n=m.n)


def _reason(f: Frame, decision: str, confidence: float, metric: str, samples: int | None, n: int,
            corrected: str = "", unit: str = "samples") -> str:
    level = level_text(confidence)
    shown_iv = f"{level} CI {fmt(metric, f.low, f.margin)} to {fmt(metric, f.high, f.margin)}" \
        if f.low != f.high else "exact"
    side = "at most" if f.upper else "at least"
    if decision == PASS:
        return f"{f.what} is {fmt(metric, f.observed, f.margin)} ({shown_iv}), within the bound: {side} " \
               f"{fmt(metric, f.margin)}"
    if decision == FAIL:
        return f"{f.what} is {fmt(metric, f.observed, f.margin)} ({shown_iv}), beyond the bound: {side} " \
               f"{fmt(metric, f.margin)}{corrected}"
    return f"{f.what} is {fmt(metric, f.observed)} but its {shown_iv} straddles the bound " \
           f"{fmt(metric, f.margin)}{corrected}{_advice(samples, n, unit)}"


def level_text(confidence: float) -> str:
    """95%, 97.5%, and a sequential look's 99.99989%: never rounded up to 100%."""
    for digits in range(0, 10):
        text = f"{100 * confidence:.{digits}f}"
        if float(text) < 100 and abs(float(text) / 100 - confidence) <= (1 - confidence) / 20:
            return f"{text}%"
    return f"{100 * confidence:.10f}%"


def _advice(samples: int | None, n: int, unit: str = "samples") -> str:
    if samples:
        return f"; about {samples:,} {unit} would decide it (measured on {n:,})"
    return "; it sits on the bound, more samples will not decide it"


def _p_text(p: float | None) -> str:
    return "unknown" if p is None else "< 0.0001" if p < 1e-4 else f"= {p:.4f}"


# ---- rules over subgroups ----------------------------------------------------------------

_GAP_SPEC = MetricSpec(name="gap", higher_is_better=False, kind="gap", tasks=("classification", "regression"),
                       method=BOOTSTRAP)


_Member = tuple[str, str, int, MetricResult | None, MetricSpec]  # (grouping, subgroup, n, measurement, spec)


def _family(rule: Rule, cand: CandidateMeasurements) -> list[_Member]:
    """(grouping, subgroup, n, measurement, spec) of every test this rule makes."""
    spec = get_metric(rule.metric)
    # which groupings a rule judges, by their kind: per: group the data.groups columns, per: class the true
    # classes, per: perturbation the perturbed copies; fairness metrics compare the data.groups subgroups
    wanted = "group" if spec.kind == FAIRNESS else rule.per
    out = []
    for grouping in cand.groupings:
        if grouping.kind != wanted:
            continue
        if spec.kind == FAIRNESS:
            out.append((grouping.name, FAIRNESS_TEST, sum(g.n for g in grouping.groups),
                        grouping.fairness.get(rule.metric), spec))
            continue
        if rule.scope == "gap":
            out.append((grouping.name, GAP_TEST, sum(g.n for g in grouping.groups),
                        grouping.gaps.get(rule.metric), _GAP_SPEC))
            continue
        for group in grouping.groups:
            out.append((grouping.name, group.key, group.n, group.metrics.get(rule.metric), spec))
    return out


class _Test(NamedTuple):
    """One test of a rule's family: the subgroup's row of RuleResult.groups and what judging it needs.
    frame is None for a subgroup too small to judge or one that could not be judged (entry["status"] says).
    p_floor: the smallest p-value its method resolves (see _p_and_floor)."""
    entry: dict
    frame: Frame | None
    m: MetricResult | None
    spec: MetricSpec
    p_floor: float = 0.0


def _test_entries(rule: Rule, members: list[_Member], label: str) -> list[_Test]:
    """Each subgroup's frame and one-sided p-value, or its too_small / error state (status None: to decide)."""
    out = []
    for grouping, key, n, m, spec in members:
        where = f"{grouping} {key}" if key.startswith("(") else f"{grouping}={key}"
        entry = {"grouping": grouping, "group": key, "where": where, "n": n, "status": None, "observed": None,
                 "interval": None, "base": m.base if m else None, "candidate": m.candidate if m else None,
                 "p_value": None, "reason": ""}
        too_small = spec.kind not in (FAIRNESS, "gap") and n < rule.min_samples
        problem = None if too_small else _unjudgeable(rule, m, spec.method, label)
        f = None if too_small or problem else _frame(rule, m, label=label)
        floor = 0.0
        if too_small:
            entry.update(status="too_small", reason=f"{n} samples, fewer than min_samples {rule.min_samples}: "
                                                    "too small to judge")
        elif problem or isinstance(f, str) or not _finite_frame(f):
            entry.update(status=ERROR, reason=problem or (f if isinstance(f, str) else
                                                          "the interval could not be computed"))
            f = None
        else:
            p, floor = _p_and_floor(rule, m, f)
            entry.update(observed=f.observed, interval=[f.low, f.high], p_value=p)
        out.append(_Test(entry, f, m, spec, floor))
    return out


def _correct(rule: Rule, tests: list[_Test], *, label: str, confidence: float, correction: str,
             family=None) -> list[_Test]:
    """The family-wise correction over the judged tests: each one's decision, samples_needed and reason.
    A subgroup beyond the bound on its own but not after the correction is undecided, and says so.
    family: a sequential look's FamilyLook (gate/measure/sequential.py): a subgroup fails only at its
    Bonferroni share of the look's fail-side level, planned over the family's size on all the samples."""
    judged = [t for t in tests if t.frame is not None]
    if family is not None:
        # a p-value its method cannot resolve at the share's level (a grid's 0 beyond its last level) fails nothing
        rejected = iter([t.entry["p_value"] is not None and t.entry["p_value"] <= family.fail_alpha and
                         family.fail_alpha >= t.p_floor for t in judged])
        size = family.tests
    else:
        alpha = (1.0 - confidence) / 2.0  # each side of a two-sided interval
        rejected = iter(stats.holm_rejections([t.entry["p_value"] for t in judged], alpha, correction)
                        if judged else [])
        size = len(judged)
    corrected = family is not None or (correction != "none" and size >= 2)
    out = []
    for t in tests:
        if t.frame is None:
            out.append(t)
            continue
        f, m, spec = t.frame, t.m, t.spec
        reject = next(rejected)
        decision = _decide(f.low, f.high, f.margin, f.upper)
        alone_beyond = decision == FAIL and not reject
        if alone_beyond:
            decision = INCONCLUSIVE  # beyond the bound alone, not after the family-wise correction
        samples = None
        if decision == INCONCLUSIVE:
            # at a look: planned at the subgroup's own share of the fail side (never a level that rounds to 1)
            samples = _samples(spec, m, observed=f.observed, low=f.low, high=f.high, margin=f.margin,
                               confidence=1.0 - 2.0 * family.fail_alpha if family else confidence,
                               relative="relative" in rule.bound_kind, scale=abs(m.base or 0),
                               tests=1 if family else size if corrected else 1)
        p_text = f"p {_p_text(t.entry['p_value'])}"
        if alone_beyond:
            # the printed interval is this subgroup's own; say plainly that the correction decided
            reason = _reason(f, FAIL, confidence, label, samples, m.n) + \
                f", but not {_corrected(correction, size, p_text, family, _noun(rule))}, so undecided" + \
                _advice(samples, m.n)
        else:
            suffix = f"; still beyond {_corrected(correction, size, p_text, family, _noun(rule))}" \
                if corrected and decision == FAIL else ""
            reason = _reason(f, decision, confidence, label, samples, m.n, suffix)
        out.append(t._replace(entry={**t.entry, "status": decision, "samples_needed": samples, "reason": reason}))
    return out


def _corrected(correction: str, size: int, p_text: str, family, noun: str) -> str:
    if family is None:
        return f"after the {correction} correction over {size} tests ({p_text})"
    share = f"its share of look {family.look}'s level" + (f" over {size} {noun} tests" if size >= 2 else "")
    return f"at {share} ({p_text}, at most {family.fail_alpha:.2g} needed)"


def _noun(rule: Rule) -> str:
    return "perturbation" if rule.per == "perturbation" else "subgroup"


def _with_relative(m: MetricResult | None, confidence: float) -> MetricResult | None:
    """A paired proportion measured without its relative change's interval (its subgroups are measured
    without one unless a relative rule judges them there: gate judge given another policy) gets the one the
    measurement would have drawn, a function of the counts, instead of the delta over the base."""
    ev = (m.evidence or {}) if m is not None else {}
    if m is None or m.relative_interval is not None or m.unavailable or \
            get_metric(m.metric).method != PAIRED_PROPORTION or not all(k in ev for k in ("b", "c", "n", "k")):
        return m
    rel = stats.paired_proportion_relative_change(ev["b"], ev["c"], ev["n"], ev["k"], confidence=confidence)
    return replace(m, relative_interval=rel.interval)


def _family_decision(statuses: list[str]) -> str:
    """The rule's decision from its subgroups': a failure first, then an error, undecided, too small."""
    for decision in (FAIL, ERROR, INCONCLUSIVE, "too_small"):
        if decision in statuses:
            return decision
    return PASS


def _group_status(decision: str, rule: Rule, *, inconclusive: str, small_groups: str) -> tuple[str, bool]:
    """(status, blocking) of the rule; subgroups too small to judge follow the policy's small_groups."""
    if decision == ERROR:
        return ERROR, True
    if decision == "too_small":
        status, blocking = (WARN, False) if small_groups == "warn" else (FAIL, rule.severity == "fail")
        return (WARN if rule.severity == "warn" else status), blocking
    return _status(decision, rule, inconclusive)


def _headline(tests: list[_Test], decision: str) -> _Test | None:
    """The subgroup that decided the rule: the worst of those with the rule's decision (never a passing one
    for a rule that did not pass); None when no judged subgroup decided it."""
    judged = [t for t in tests if t.frame is not None]
    deciding = [t for t in judged if t.entry["status"] == decision] or (judged if decision == PASS else [])
    return max(deciding, key=lambda t: t.frame.observed if t.frame.upper else -t.frame.observed, default=None)


def _family_reason(rule: Rule, entries: list[dict], decision: str, worst: _Test | None, size: int) -> str:
    """The rule's reason: unjudgeable subgroups, the headline, how many failed, which were too small."""
    small = [e for e in entries if e["status"] == "too_small"]
    errors = [e for e in entries if e["status"] == ERROR]
    noun = _noun(rule)
    parts = []
    if errors:
        parts.append(f"{len(errors)} {noun}(s) could not be judged: {errors[0]['where']}: {errors[0]['reason']}")
    if worst:
        w = worst.entry
        which = "worst" if decision == PASS else f"worst {w['status']}"
        parts.append(f"{which} of {size} {noun} test(s): {w['where']}: {w['reason']}")
    failing = [e for e in entries if e["status"] == FAIL]
    if len(failing) > 1:
        parts.append(f"{len(failing)} {noun}s beyond the bound")
    if small:
        shown = ", ".join(f"{e['where']} ({e['n']})" for e in small[:5])
        parts.append(f"{len(small)} {noun}(s) too small to judge (< {rule.min_samples} samples): {shown}"
                     + (" …" if len(small) > 5 else ""))
    if decision == "too_small":
        parts.insert(0, parts.pop())
    return "; ".join(parts)


def _aggregate(rule: Rule, tests: list[_Test], *, inconclusive: str, small_groups: str) -> RuleResult:
    """The rule's result from its decided subgroups: status, the headline subgroup's numbers, the reason."""
    entries = [t.entry for t in tests]
    decision = _family_decision([e["status"] for e in entries])
    status, blocking = _group_status(decision, rule, inconclusive=inconclusive, small_groups=small_groups)
    worst = _headline(tests, decision)
    size = sum(t.frame is not None for t in tests)
    w_frame = worst.frame if worst else None
    return RuleResult(rule=rule.text, index=rule.index, metric=rule.metric, bound_kind=rule.bound_kind,
                      threshold=rule.bound, severity=rule.severity, status=status, blocking=blocking,
                      observed=w_frame.observed if w_frame else None,
                      interval=[w_frame.low, w_frame.high] if w_frame else None,
                      base=worst.entry["base"] if worst else None,
                      candidate=worst.entry["candidate"] if worst else None,
                      bound_text=(w_frame.bound_text + (_every(rule) if rule.scope != "gap" and
                                                         get_metric(rule.metric).kind != FAIRNESS else ""))
                      if w_frame else "",
                      reason=_family_reason(rule, entries, decision, worst, size),
                      n=sum(e["n"] for e in entries) if rule.scope != "gap" else None,
                      groups=tuple(entries))


def _every(rule: Rule) -> str:
    return " under every perturbation" if rule.per == "perturbation" else " in every subgroup"


def evaluate_grouped(rule: Rule, cand: CandidateMeasurements, *, confidence: float, inconclusive: str,
                     correction: str, small_groups: str, family=None) -> RuleResult:
    """A rule over many subgroups: one family of tests, family-wise error held by `correction`, or at a
    sequential look by `family` (a FamilyLook: its level, and each subgroup's share of the fail side).
    _family (the tests) -> _test_entries (frames, p-values) -> _correct (decisions) -> _aggregate (the rule)."""
    if family is not None:
        confidence = family.confidence
    members = _family(rule, cand)
    if not members and rule.per == "perturbation":
        return _error(rule, f"{rule.text}: nothing was measured under perturbations (list them under "
                            "perturbations: in the policy, and measure again with it)", None)
    if not members:
        return _error(rule, f"{rule.text}: there are no subgroups to judge (check data.groups)", None)
    label = f"{rule.metric} gap" if rule.scope == "gap" else rule.metric
    if "relative" in rule.bound_kind:
        members = [(g, key, n, _with_relative(m, confidence), spec) for g, key, n, m, spec in members]
    tests = _test_entries(rule, members, label)
    decided = _correct(rule, tests, label=label, confidence=confidence, correction=correction, family=family)
    return _aggregate(rule, decided, inconclusive=inconclusive, small_groups=small_groups)


def family_decided(policy: Policy, rule: Rule, cand: CandidateMeasurements, family) -> bool:
    """Whether a rule over subgroups is decided at a sequential look (family: its FamilyLook): a subgroup
    failed, or every subgroup judgeable on all the samples passed. A subgroup the look could not judge (too
    small or absent in its samples, or no interval yet) keeps the family open."""
    result = evaluate_grouped(rule, cand, confidence=policy.confidence, inconclusive=policy.inconclusive,
                              correction=policy.correction, small_groups=policy.small_groups, family=family)
    if any(e["status"] == FAIL for e in result.groups):
        return True
    passed = {(e["grouping"], e["group"]) for e in result.groups if e["status"] == PASS}
    undecided = {(e["grouping"], e["group"]) for e in result.groups if e["status"] != PASS}
    return all(pair in passed and pair not in undecided for pair in family.required)


def _samples(spec, m: MetricResult, *, observed, low, high, margin, confidence, relative, scale,
             tests: int = 1) -> int | None:
    """Samples that would decide an undecided rule: always more than were measured (m.n), or
    None when the estimate sits on the bound (more samples narrow the interval around it, never off it).

    tests: the size of the family a multiplicity correction judged this test in; the advice is then
    planned at the Bonferroni level (Holm's strictest step), since the interval may clear the bound
    at the per-test level and still be held undecided by the correction.
    """
    if observed is None or not all(v is not None and math.isfinite(v) for v in (observed, low, high, margin)):
        return None
    n = m.n
    # the interval's reach from the estimate towards the bound: bootstrap and ratio intervals are
    # lopsided, and their mean half-width can be shorter than the gap while the interval straddles
    near = max(high - observed, 0.0) if margin >= observed else max(observed - low, 0.0)
    if tests > 1:
        level = 1.0 - (1.0 - confidence) / tests
        near *= stats.z_two_sided(level) / stats.z_two_sided(confidence)
        confidence = level
    # drop / increase frames observe +-delta; min / max frames observe the candidate's value
    on_delta = m.delta is not None and observed in (m.delta, -m.delta) and observed != m.candidate
    if spec.method == PAIRED_PROPORTION and m.discordant_rate is not None and not relative and on_delta and \
            m.delta_interval is not None:
        # paired proportions: the discordant share sets the variance (Connor 1987)
        psi = max(m.discordant_rate, 1.0 / n)
        need = samples_to_decide(discordant_rate=min(psi, 1.0), observed_diff=observed, margin=margin,
                                 confidence=confidence, n=n, half_width=near)
    else:
        need = samples_to_decide_from_interval(n=n, estimate=observed, half_width=near, bound=margin,
                                               confidence=confidence)
    # `need` is > n whenever the interval straddles the bound; the floor covers an interval held
    # undecided only by a correction whose size the caller did not pass
    return None if need is None else max(need, n + 1)


def _from_samples(rule: Rule) -> bool:
    """Judged on the model's outputs over the data (not on the file or a timing run)."""
    return rule.grouped or get_metric(rule.metric).kind in (QUALITY, AGREEMENT, FAIRNESS)


def nonfinite_text(nonfinite: dict) -> str:
    first = ", ".join(str(i) for i in nonfinite["first"])
    more = ", ..." if nonfinite["count"] > len(nonfinite["first"]) else ""
    return (f"the candidate gave NaN or infinite outputs for {nonfinite['count']:,} of {nonfinite['n']:,} samples "
            f"(first sample indices: {first}{more})")


def _judge_rule(policy: Policy, rule: Rule, cand: CandidateMeasurements, confidence: float,
                looked=None) -> RuleResult:
    if cand.nonfinite and _from_samples(rule):
        # a NaN row would count as class 0 and pass unnoticed: nothing computed from outputs is trusted
        return _error(rule, f"{nonfinite_text(cand.nonfinite)}; {rule.metric} cannot be judged", None)
    if rule.grouped:
        return evaluate_grouped(rule, cand, confidence=confidence, inconclusive=policy.inconclusive,
                                correction=policy.correction, small_groups=policy.small_groups,
                                family=looked(rule, cand) if looked else None)
    if rule.target:
        return _on_target(rule, cand, confidence=confidence, inconclusive=policy.inconclusive)
    if rule.vs != "base":
        return against_release(policy, rule, cand, confidence=confidence)
    return evaluate(rule, cand.metrics.get(rule.metric), confidence=confidence, inconclusive=policy.inconclusive)


def judge_candidate(policy: Policy, cand: CandidateMeasurements, *, confidence: float,
                    looked=None) -> CandidateVerdict:
    """looked(rule, cand): the FamilyLook a rule over subgroups is judged by when the samples were judged in
    sequential looks (see _sequential_families), or None."""
    if cand.error:
        rules = tuple(replace(_error(rule, "the candidate could not be measured", None), line=rule.line, vs=rule.vs)
                      for rule in policy.rules)
        return _candidate_verdict(cand.name, rules, error=cand.error)
    results = tuple(replace(_judge_rule(policy, rule, cand, confidence, looked), line=rule.line, vs=rule.vs)
                    for rule in policy.rules)
    return _candidate_verdict(cand.name, results)


def against_release(policy: Policy, rule: Rule, cand: CandidateMeasurements, *, confidence: float) -> RuleResult:
    """A rule against a blessed release: judged like any rule on the paired comparison with that release's
    stored outputs; without a usable release it says why, and only a damaged one (or a missing one the policy
    requires) blocks."""
    against = rule.vs.replace("_", " ")
    comparison = cand.releases.get(rule.vs)
    if comparison is None:
        return _error(rule, f"{rule.metric} was not measured against the {against}: measure again with this "
                            "policy (its baseline: and this rule)", None)
    release = comparison.release or {}
    which = f"release {release.get('index')} ({release.get('name')}, blessed {release.get('blessed_at')})" \
        if release else f"the {against}"
    if comparison.status == "missing":
        required = policy.baseline is not None and policy.baseline.required
        result = _error(rule, f"{comparison.reason}; the policy requires a baseline (baseline: required: true)"
                        if required else f"not judged: {comparison.reason}", None)
        return result if required else replace(result, status=WARN, blocking=False)
    if comparison.status == "different_data":
        status, blocking = _status(INCONCLUSIVE, rule, policy.inconclusive)
        return replace(_error(rule, comparison.reason, None), status=status, blocking=blocking)
    if comparison.status != "compared":
        return _error(rule, f"the {against} cannot be trusted: {comparison.reason}", None)
    result = evaluate(rule, comparison.metrics.get(rule.metric), confidence=confidence,
                      inconclusive=policy.inconclusive)
    # the bound reads "base - 0.005 = 0.81": here the number it is taken from is the release's
    release_name = f"release {release.get('index')}" if release else "the release"
    return replace(result, reason=f"against {which}: {result.reason}",
                   bound_text=re.sub(r"\bbase\b", release_name, result.bound_text))


def _on_target(rule: Rule, cand: CandidateMeasurements, *, confidence: float, inconclusive: str) -> RuleResult:
    measured = cand.targets.get(rule.target)
    if measured is None:
        return _error(rule, f"{rule.metric} on target '{rule.target}' was not measured: run `gate measure "
                            f"--target {rule.target} --out {rule.target}.json` on that device and pass its results "
                            "file to `gate judge` with the others", None)
    return evaluate(rule, measured.metrics.get(rule.metric), confidence=confidence, inconclusive=inconclusive)


def _sequential_families(policy: Policy, measurements: Measurements):
    """For samples judged in sequential looks (provenance.sequential): rule, candidate -> the FamilyLook of the
    look that stopped the run, with the number of tests fixed before the first look (provenance.sequential.
    tests). A rule the measuring run did not plan for (another policy) shares the fail side among the
    subgroups judged here. None without looks."""
    seq = (measurements.provenance or {}).get("sequential")
    if not seq:
        return None
    from gate.measure.sequential import family_look, plan

    the_plan = plan(tuple(seq["fractions"]), seq["alpha"], seq["spending"])
    planned = seq.get("tests") or {}

    def looked(rule: Rule, cand: CandidateMeasurements):
        tests = planned.get(str(rule.index))
        if tests is None:  # gate judge refuses other policies (merge.check_against_policy): every member, then
            tests = 1 if policy.correction == "none" else max(1, len(_family(rule, cand)))
        return family_look(the_plan, int(seq["look"]) - 1, int(tests))
    return looked


def judge(policy: Policy, measurements: Measurements) -> Verdict:
    looked = _sequential_families(policy, measurements)
    candidates = tuple(judge_candidate(policy, c, confidence=measurements.confidence, looked=looked)
                       for c in measurements.candidates)
    verdict = PASS if candidates and all(c.verdict == PASS for c in candidates) else FAIL
    input_errors = tuple(c.error for c in measurements.candidates if c.error and c.error_kind == "input")
    return Verdict(verdict=verdict, candidates=candidates, confidence=measurements.confidence,
                   inconclusive=policy.inconclusive, input_errors=input_errors)
