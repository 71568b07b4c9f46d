"""Policy x Measurements -> Verdict. Pure: no I/O, no models, no printing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gate.fmt import number
from gate.measure.registry import EXACT, PAIRED_PROPORTION, get_metric
from gate.measure.stats import samples_to_decide, samples_to_decide_from_interval
from gate.measurements import CandidateMeasurements, Measurements, MetricResult
from gate.policy import DROP_BOUNDS, Policy, Rule

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

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class CandidateVerdict:
    name: str
    verdict: str
    rules: tuple[RuleResult, ...]
    error: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASS, FAIL, WARN, INCONCLUSIVE, ERROR)}
        for r in self.rules:
            out[r.status] += 1
        out["blocking"] = sum(r.blocking for r in self.rules)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "error": self.error, "counts": self.counts,
                "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True, kw_only=True)
class Verdict:
    verdict: str
    candidates: tuple[CandidateVerdict, ...]
    confidence: float
    inconclusive: str
    input_errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def counts(self) -> dict[str, int]:
        total = {s: 0 for s in (PASS, FAIL, WARN, INCONCLUSIVE, ERROR, "blocking")}
        for c in self.candidates:
            for k, v in c.counts.items():
                total[k] += v
        return total

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "confidence": self.confidence, "inconclusive": self.inconclusive,
                "counts": self.counts, "candidates": [c.to_dict() for c in self.candidates]}


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


def evaluate(rule: Rule, m: MetricResult | None, *, confidence: float, inconclusive: str) -> RuleResult:
    """One rule against one measured metric."""
    if m is None:
        return _error(rule, f"{rule.metric} was not measured for this candidate", None)
    if m.unavailable:
        return _error(rule, f"{rule.metric} could not be measured: {m.unavailable}", m)
    spec = get_metric(rule.metric)
    name, kind, bound = rule.metric, rule.bound_kind, rule.bound
    needed = m.candidate_interval if kind in ("min", "max") else m.delta_interval
    if needed is None and spec.method != EXACT:
        # never judge a sampled number as if it were exact
        return _error(rule, f"{name} was measured without an interval; measure again with this rule in the policy", m)
    if kind in ("min", "max"):
        observed = m.candidate
        iv = m.candidate_interval
        low, high = (iv.low, iv.high) if iv else (observed, observed)
        margin = bound
        upper = kind == "max"
        bound_text = f"candidate {name} {'<=' if upper else '>='} {fmt(name, bound)}"
        what = name
    else:
        if m.base is None or m.delta is None:
            return _error(rule, f"{name} has no base value to compare with", m)
        relative = "relative" in kind
        scale = abs(m.base) if relative else 1.0
        drop = kind in DROP_BOUNDS
        sign = -1.0 if drop else 1.0  # a drop is -delta, an increase is +delta
        iv = m.delta_interval
        d_low, d_high = (iv.low, iv.high) if iv else (m.delta, m.delta)
        low, high = sorted((sign * d_low, sign * d_high))
        observed = sign * m.delta
        margin = bound * scale
        upper = True
        limit = m.base - margin if drop else m.base + margin
        op = ">=" if drop else "<="
        shown = f"base {'-' if drop else '+'} {fmt(name, bound)}" if not relative else \
            f"base x (1 {'-' if drop else '+'} {bound:g})"
        bound_text = f"candidate {name} {op} {shown} = {fmt(name, limit)}"
        if relative:
            # relative to the base: shown as a fraction, decided on the absolute scale
            if scale == 0:
                bound_text += " (the base is 0, so any change in the wrong direction fails)"
            observed = observed / scale if scale else (math.inf if observed > 0 else 0.0)
            low, high = (low / scale, high / scale) if scale else (low, high)
            margin = bound if scale else 0.0
        what = f"{'relative ' if relative else ''}{'drop' if drop else 'increase'} of {name}"

    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (observed, low, high)):
        return _error(rule, f"{rule.metric}: the interval could not be computed on these samples", m)
    decision = _decide(low, high, margin, upper)
    pct = f"{confidence:.0%}"
    shown_iv = f"{pct} CI {fmt(name, low, margin)} to {fmt(name, high, margin)}" if low != high else "exact"
    side = "at most" if upper else "at least"
    samples = None
    if decision == PASS:
        reason = f"{what} is {fmt(name, observed, margin)} ({shown_iv}), within the bound: {side} {fmt(name, margin)}"
    elif decision == FAIL:
        reason = f"{what} is {fmt(name, observed, margin)} ({shown_iv}), beyond the bound: {side} {fmt(name, margin)}"
    else:
        samples = _samples(spec, m, observed=observed, low=low, high=high, margin=margin,
                           confidence=confidence, relative="relative" in kind, scale=abs(m.base or 0))
        advice = f"; about {samples:,} samples would decide it (measured on {m.n:,})" if samples else \
            "; it sits on the bound, more samples will not decide it"
        reason = f"{what} is {fmt(name, observed)} but its {shown_iv} straddles the bound {fmt(name, margin)}{advice}"
    if decision == PASS:
        status, blocking = PASS, False
    elif decision == FAIL:
        status = FAIL if rule.severity == "fail" else WARN
        blocking = rule.severity == "fail"
    else:
        status = INCONCLUSIVE
        blocking = rule.severity == "fail" and inconclusive == "fail"
    return RuleResult(rule=rule.text, index=rule.index, metric=name, bound_kind=kind, threshold=bound,
                      severity=rule.severity, status=status, blocking=blocking, observed=observed,
                      interval=[low, high], base=m.base, candidate=m.candidate, bound_text=bound_text,
                      reason=reason, samples_needed=samples, n=m.n)


def _samples(spec, m: MetricResult, *, observed, low, high, margin, confidence, relative, scale) -> int | None:
    if spec.method == PAIRED_PROPORTION and m.discordant_rate is not None and not relative and \
            m.delta_interval is not None and observed is not None:
        # paired proportions: the discordant share sets the variance (Connor 1987)
        psi = max(m.discordant_rate, 1.0 / m.n)
        return samples_to_decide(discordant_rate=min(psi, 1.0), observed_diff=observed, margin=margin,
                                 confidence=confidence)
    return samples_to_decide_from_interval(n=m.n, estimate=observed, half_width=(high - low) / 2,
                                           bound=margin, confidence=confidence)


def judge_candidate(policy: Policy, cand: CandidateMeasurements, *, confidence: float) -> CandidateVerdict:
    if cand.error:
        rules = tuple(_error(rule, "the candidate could not be measured", None) for rule in policy.rules)
        return CandidateVerdict(name=cand.name, verdict=FAIL, rules=rules, error=cand.error)
    results = [evaluate(rule, cand.metrics.get(rule.metric), confidence=confidence,
                        inconclusive=policy.inconclusive) for rule in policy.rules]
    verdict = FAIL if any(r.blocking for r in results) else PASS
    return CandidateVerdict(name=cand.name, verdict=verdict, rules=tuple(results))


def judge(policy: Policy, measurements: Measurements) -> Verdict:
    candidates = tuple(judge_candidate(policy, c, confidence=measurements.confidence)
                       for c in measurements.candidates)
    verdict = PASS if candidates and all(c.verdict == PASS for c in candidates) else FAIL
    input_errors = tuple(c.error for c in measurements.candidates if c.error and c.error_kind == "input")
    return Verdict(verdict=verdict, candidates=candidates, confidence=measurements.confidence,
                   inconclusive=policy.inconclusive, input_errors=input_errors)
