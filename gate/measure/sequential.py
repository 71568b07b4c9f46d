"""Sequential looks: judge on growing, nested random subsets of the samples and stop once every rule is decided.

A rule is two one-sided tests at the margin (pass: the candidate is within it; fail: beyond it), each at
alpha = (1 - confidence) / 2. Looking at the data several times and stopping at the first decision would
spend alpha once per look, so each look k gets a stricter nominal level alpha_k, chosen with a Lan-DeMets
spending function alpha(t) (the error allowed by the time a share t of the samples is seen) such that,
for the canonical joint distribution of the looks' statistics (Brownian motion in the information time
t = samples seen / samples in all; independent increments), the chance of ever crossing is exactly alpha:

    P(Z_1 >= c_1 or ... or Z_k >= c_k) = alpha(t_k)   for every k.

A look's interval is then the ordinary interval at the two-sided level 1 - 2 alpha_k (Plan.confidence_at),
computed with the existing interval functions, and decided exactly as a fixed-sample rule is.
The same boundaries serve both sides: stopping on one side only lowers the other side's error.

The boundaries c_k come from the recursive numerical integration of Armitage, McPherson & Rowe (1969)
(as laid out by Jennison & Turnbull 2000, ch. 19): the sub-density of the score S_k = Z_k sqrt(t_k) on the
continuation region is propagated look to look by a convolution with the increment's normal density, and
c_k is the root of "crossing probability at look k = alpha(t_k) - alpha(t_{k-1})".

Pure functions of their arguments; numpy, and scipy.special imported only when a plan is built (the gate
is a command-line tool and a fixed-sample run should not pay for scipy's import).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["Plan", "LookDecision", "FamilyLook", "plan", "spend", "look_order", "look_sizes", "decide_at_looks",
           "family_look", "SPENDING", "DEFAULT_FRACTIONS", "MAX_LOOKS"]

OBRIEN_FLEMING, POCOCK = "obrien_fleming", "pocock"
SPENDING = (OBRIEN_FLEMING, POCOCK)
DEFAULT_FRACTIONS = (0.1, 0.2, 0.4, 0.7, 1.0)
MAX_LOOKS = 10

# Looks closer than this (in share of the samples) add almost nothing, and the integration grid is sized for
# increments at least this large (its step is a tenth of the smallest increment's standard deviation).
MIN_STEP = 0.01

# The judge's word for "not decided": decide_at_looks goes on to the next look on it (judge.INCONCLUSIVE).
UNDECIDED = "inconclusive"

_STD_NORMAL = NormalDist()

# Integration: the score's sub-density is kept on [-_REACH sd, boundary]; beyond 9 sd lies < 1e-18 of it.
_REACH = 9.0
_POINTS_PER_SD = 10  # grid points per standard deviation of the smallest increment (Simpson's rule)

# A look whose level is stricter than this decides nothing in practice; flooring it keeps the interval
# level strictly below 1 (the interval functions require it) and spends at most this much more alpha.
_ALPHA_FLOOR = 1e-15

# Keeps ceil() from turning a float that is an integer up to rounding noise into the next integer.
_CEIL_SLACK = 1e-9


# --------------------------------------------------------------------------
# spending functions (Lan & DeMets 1983, Biometrika 70: 659-663), one-sided alpha
# --------------------------------------------------------------------------

def spend(t: float, alpha: float, spending: str = OBRIEN_FLEMING) -> float:
    """The one-sided error spent by information time t, alpha(t), with alpha(0) = 0 and alpha(1) = alpha.

    O'Brien-Fleming type: alpha(t) = 2 - 2 Phi(Phi^-1(1 - alpha/2) / sqrt(t)), Lan & DeMets' form written for a
    one-sided alpha (as gsDesign's sfLDOF and Jennison & Turnbull 2000, sec. 7.2, use it): almost nothing early,
    so the final look is nearly the fixed-sample test. Pocock type: alpha(t) = alpha ln(1 + (e - 1) t).
    """
    _check_alpha(alpha)
    _check_spending(spending)
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    if spending == OBRIEN_FLEMING:
        return 2.0 * _upper_tail(-_STD_NORMAL.inv_cdf(alpha / 2.0) / math.sqrt(t))
    return alpha * math.log(1.0 + (math.e - 1.0) * t)


def _upper_tail(x: float) -> float:
    """1 - Phi(x), accurate far into the tail (NormalDist.cdf goes through erf and reaches 0 near x = 8.3)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


# --------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Plan:
    """When to look and how strictly: look k sees fractions[k] of the samples and decides at nominal
    one-sided level alphas[k] (its standard-normal boundary is boundaries[k]); over all looks each side's
    error is alpha."""
    fractions: tuple[float, ...]
    alphas: tuple[float, ...]
    boundaries: tuple[float, ...]
    spent: tuple[float, ...]  # alpha(t_k): the error spent by look k, cumulative
    alpha: float
    spending: str

    @property
    def looks(self) -> int:
        return len(self.fractions)

    def confidence_at(self, index: int) -> float:
        """The two-sided interval level whose one-sided tail is alpha at look `index` (0-based)."""
        return 1.0 - 2.0 * max(self.alphas[index], _ALPHA_FLOOR)

    def resolved_by(self, index: int, resamples: int, *, tail_draws: int = 5) -> bool:
        """Whether a percentile interval from `resamples` bootstrap draws reaches look `index`'s tail.

        The default plan's first three looks ask for tails of 1e-12, 5e-7 and 4e-4: 1000 resamples have
        (almost) no draw that far out, so the percentile end is about the most extreme draw, some 3.2
        standard errors out instead of 7.0, 4.9 and 3.4, and such a look spends more than its share. A look
        whose tail holds fewer than `tail_draws` draws should not decide a bootstrap rule; skipping a look
        never raises the errors.
        """
        return self.alphas[index] * resamples >= tail_draws

    def to_dict(self) -> dict:
        # a look that can decide nothing has an infinite boundary, which JSON cannot hold: None
        return {"fractions": list(self.fractions), "alphas": list(self.alphas),
                "boundaries": [c if math.isfinite(c) else None for c in self.boundaries],
                "spent": list(self.spent), "alpha": self.alpha, "spending": self.spending}


def plan(fractions: Sequence[float] = DEFAULT_FRACTIONS, alpha: float = 0.025,
         spending: str = OBRIEN_FLEMING) -> Plan:
    """The looks' nominal levels for a one-sided error alpha per side, spent by a Lan-DeMets function.

    Raises ValueError, naming the value, for fractions that are not increasing shares in (0, 1] ending at 1
    (at most MAX_LOOKS, each at least MIN_STEP beyond the last), alpha outside (0, 0.5) or an unknown spending.
    """
    fr = _check_fractions(fractions)
    _check_alpha(alpha)
    _check_spending(spending)
    spent = [spend(t, alpha, spending) for t in fr]
    bounds = _boundaries(fr, spent)
    alphas = tuple(_upper_tail(c) for c in bounds)
    return Plan(fractions=fr, alphas=alphas, boundaries=tuple(bounds), spent=tuple(spent), alpha=float(alpha),
                spending=spending)


@functools.lru_cache(maxsize=64)
def _shared_plan(fractions: tuple[float, ...], alpha: float, spending: str) -> Plan:
    return plan(fractions, alpha, spending)


# --------------------------------------------------------------------------
# rules over subgroups
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FamilyLook:
    """How a rule over `tests` subgroups is decided at one look.

    Pass side: each subgroup's interval at the look's level (Plan.confidence_at), as for a rule over all the
    samples. The family passes only when every subgroup passes (an intersection-union test), so a false pass
    needs the one subgroup truly beyond the margin to cross its own pass boundary at some look: at most alpha,
    with no correction for the number of subgroups.

    Fail side: the family fails when any subgroup fails, so each subgroup gets the share alpha / tests of the
    fail side (Bonferroni), spent over the looks by its own plan; a subgroup fails at look k only when its
    one-sided p-value is at most fail_alpha, that plan's nominal level at k. The chance that any subgroup
    within the margin is ever failed is then at most alpha. (Holm's step-down, used on all the samples at once,
    does not carry over to looks without a joint boundary for every step; Bonferroni does.)

    required: (grouping, subgroup) pairs that must be judged before the family can pass at this look, the
    subgroups large enough to judge on all the samples: one that is absent or too small in a look's samples
    keeps the family undecided (empty on the look that judges the report).
    """
    tests: int
    fail_alpha: float
    look: int  # 1-based
    confidence: float  # the look's interval level
    required: frozenset = frozenset()


def family_look(the_plan: Plan, index: int, tests: int, *, required: frozenset = frozenset()) -> FamilyLook:
    """The FamilyLook of a rule over `tests` subgroups at look `index` (0-based) of the_plan, whose alpha is
    each side's error for the whole family."""
    if not (isinstance(tests, int) and tests >= 1):
        raise ValueError(f"a family has at least one test, got {tests!r}")
    shared = the_plan if tests == 1 else _shared_plan(the_plan.fractions, the_plan.alpha / tests,
                                                        the_plan.spending)
    return FamilyLook(tests=tests, fail_alpha=max(shared.alphas[index], _ALPHA_FLOOR), look=index + 1,
                      confidence=the_plan.confidence_at(index), required=required)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be a list of numbers, got {fractions!r}") from None
    if not fr:
        raise ValueError("fractions must name at least one look, e.g. [0.1, 0.2, 0.4, 0.7, 1.0]")
    if len(fr) > MAX_LOOKS:
        raise ValueError(f"at most {MAX_LOOKS} looks are allowed, got {len(fr)}")
    for f in fr:
        if not (0.0 < f <= 1.0):  # also rejects NaN
            raise ValueError(f"every fraction must be a share of the samples in (0, 1], got {f!r}")
    if fr[-1] != 1.0:
        raise ValueError(f"the last look must see all the samples (fraction 1.0), got {fr[-1]!r}")
    for prev, f in zip((0.0, *fr), fr):
        if f <= prev:
            raise ValueError(f"fractions must be strictly increasing, got {f!r} after {prev!r}")
        if f - prev < MIN_STEP - 1e-12:
            raise ValueError(f"looks must be at least {MIN_STEP:g} of the samples apart, got {f!r} after {prev!r}")
    return fr


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 0.5):  # also rejects NaN
        raise ValueError(f"alpha (the one-sided error of each side) must be in (0, 0.5), got {alpha!r}")


def _check_spending(spending: str) -> None:
    if spending not in SPENDING:
        raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got {spending!r}")


# --------------------------------------------------------------------------
# boundaries by recursive numerical integration
# --------------------------------------------------------------------------

def _simpson_grid(low: float, high: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and composite Simpson weights covering [low, high] with spacing at most `step`."""
    intervals = max(2, 2 * math.ceil((high - low) / (2.0 * step)))
    x = np.linspace(low, high, intervals + 1)
    h = (high - low) / intervals
    w = np.full(intervals + 1, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return x, w * (h / 3.0)


def _boundaries(fractions: tuple[float, ...], spent: list[float]) -> list[float]:
    """Standard-normal boundaries c_k with P(first crossing at look k) = spent[k] - spent[k-1] under H0."""
    from scipy.special import ndtr  # the normal cdf on arrays, accurate far into the tails

    times = np.asarray(fractions)
    incr_sd = np.sqrt(np.diff(times, prepend=0.0))
    step = float(incr_sd.min()) / _POINTS_PER_SD
    bounds: list[float] = []
    # mass: Simpson weight x sub-density of S_{k-1} on the continuation region (None before the first look)
    points: np.ndarray | None = None
    mass: np.ndarray | None = None
    for k, t in enumerate(fractions):
        sd_t, sd_inc = math.sqrt(t), float(incr_sd[k])
        target = spent[k] - (spent[k - 1] if k else 0.0)

        def crossing(c: float) -> float:
            """P(S_k >= c sqrt(t_k), no earlier crossing)."""
            if mass is None:
                return float(ndtr(-c))
            return float(mass @ ndtr((points - c * sd_t) / sd_inc))

        c = _solve_boundary(crossing, target)
        bounds.append(c)
        if k == len(fractions) - 1:
            break
        # the sub-density of S_k below its boundary, on a fresh grid
        top = min(c * sd_t, _REACH * sd_t) if math.isfinite(c) else _REACH * sd_t
        new_points, weights = _simpson_grid(-_REACH * sd_t, top, step)
        if mass is None:
            density = np.exp(-0.5 * (new_points / sd_t) ** 2) / (sd_t * math.sqrt(2.0 * math.pi))
        else:
            kernel = np.exp(-0.5 * ((new_points[:, None] - points[None, :]) / sd_inc) ** 2)
            density = kernel @ mass / (sd_inc * math.sqrt(2.0 * math.pi))
        points, mass = new_points, weights * density
    return bounds


def _solve_boundary(crossing: Callable[[float], float], target: float) -> float:
    """The c at which the (decreasing) crossing probability equals target, by bisection.

    Bisection on comparisons works at any scale, including the 1e-80 an O'Brien-Fleming look at 1% spends.
    """
    if target <= 0.0:
        return math.inf
    low, high = -10.0, 40.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if crossing(mid) > target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12:
            break
    return 0.5 * (low + high)


# --------------------------------------------------------------------------
# which samples each look sees
# --------------------------------------------------------------------------

def look_order(n: int, seed: int) -> np.ndarray:
    """A seeded random order of the sample indices; look k sees its first look_sizes(n, plan)[k].

    Data files are often sorted (by class, by source), so a look must be a random subset; taking prefixes
    of one permutation makes the looks nested, as the spending boundaries assume.
    """
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive number of samples, got {n!r}")
    return np.random.Generator(np.random.PCG64(seed)).permutation(int(n))


def look_sizes(n: int, the_plan: Plan) -> tuple[int, ...]:
    """Samples seen at each look: ceil(fraction x n), at least 1, the last one n.

    Raises ValueError when n is too small for the looks to differ (two looks on the same samples).
    """
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive number of samples, got {n!r}")
    sizes = tuple(max(1, math.ceil(f * n - _CEIL_SLACK)) for f in the_plan.fractions[:-1]) + (int(n),)
    for prev, size in zip(sizes, sizes[1:]):
        if size <= prev:
            need = math.ceil(1.0 / min(b - a for a, b in zip((0.0, *the_plan.fractions), the_plan.fractions)))
            raise ValueError(f"{n} samples are too few for looks at {_shares(the_plan.fractions)} of them "
                             f"(two looks would see the same samples); sequential looks need at least {need} "
                             "samples, or judge once on all of them")
    return sizes


def _shares(fractions: tuple[float, ...]) -> str:
    return ", ".join(f"{100 * f:g}%" for f in fractions)


# --------------------------------------------------------------------------
# deciding a rule look by look
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LookDecision:
    """A rule's sequential decision: its status and the look (1-based) and sample count that decided it.
    When no look decides, the status is the last look's (inconclusive) and look is the last one."""
    status: str
    look: int
    samples: int
    looks: int

    @property
    def decided(self) -> bool:
        return self.status != UNDECIDED

    def to_dict(self) -> dict:
        return {"status": self.status, "look": self.look, "samples": self.samples, "looks": self.looks}


def decide_at_looks(intervals: Iterable[tuple[float, float] | None], sizes: Sequence[int],
                    decide: Callable[[float, float], str]) -> LookDecision:
    """The first look whose interval decides the rule, or the last look's status when none does.

    intervals: one (low, high) per look, each at that look's plan.confidence_at(k), for any metric; None
    for a look that may not decide this rule (see Plan.resolved_by). It is read lazily, so a generator
    computes no interval beyond the deciding look. decide: the judge's decision for one interval against
    the rule's bound (pass, fail, or inconclusive); anything but inconclusive ends the looking.
    """
    looks = len(sizes)
    if looks == 0:
        raise ValueError("a sequential decision needs at least one look")
    status, seen = UNDECIDED, 0
    for k, interval in enumerate(intervals):
        if k >= looks:
            raise ValueError(f"more intervals than the {looks} looks of the plan")
        seen = k + 1
        if interval is None:
            status = UNDECIDED
            continue
        status = decide(float(interval[0]), float(interval[1]))
        if status != UNDECIDED:
            return LookDecision(status=status, look=seen, samples=int(sizes[k]), looks=looks)
    if seen < looks:
        raise ValueError(f"undecided after {seen} of {looks} looks: the intervals of the remaining looks are "
                         "needed, the last one on all the samples")
    return LookDecision(status=status, look=looks, samples=int(sizes[-1]), looks=looks)
