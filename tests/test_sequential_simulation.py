"""Simulation of sequential judging of a paired accuracy rule (max_drop), against the fixed-sample test.

Each simulated run is a paired data set: every sample is a base-right/candidate-wrong flip (share p_b), a
base-wrong/candidate-right flip (p_c), or neither; flips = p_b + p_c, true drop = p_b - p_c. The looks
(10, 20, 40, 70, 100% of the samples, O'Brien-Fleming spending, 0.025 per side) see nested random subsets:
the counts of each look are the previous look's plus a multinomial draw for the new samples, which is
exactly the distribution of a random subset of i.i.d. samples. The fixed-sample test judges the same
runs' full counts at 95%.

The gate decides an accuracy rule with Tango's interval (stats.paired_proportion_diff_interval). Locating
its ends by bisection for millions of looks would take minutes, so the decisions here use the score statistic that
interval inverts: a max_drop rule passes at level c when Tango's Z at delta = -margin is >= z(c), and
fails when it is <= -z(c). The first two tests check that the vectorised statistic is the gate's to 1e-9
and that deciding by it is deciding by the gate's interval and the judge's _decide.

Figures with these seeds (10,000 runs a cell; n 2,000, 5,000, 10,000, 20,000; flips 2, 5, 10%;
margins 0.01 and 0.02; a rule on its own):
- false pass at a true drop equal to the margin: 2.37% pooled over 24 cells (fixed test 2.40%), cells
  1.96-2.72% (fixed 1.84-2.78%);
- false fail at a true drop equal to the margin: 2.58% pooled (fixed test 2.55%), at most 3.26% (fixed
  3.00%) where every flip is a loss (2% flips, margin 0.02): Tango's own excess with few discordant samples;
- false fail at a true drop of 0: at most 0.06% (fixed test 0.05%);
- power (pass rate at a true drop of 0 or half the margin): at most 0.86 and 1.02 points below the fixed
  test (0.20 and 0.37 on average); with no drop at 20,000 samples the rule is decided on 20-64% of them
  on average;
- the demo's pruned-90 (drop 0.166, 18.4% flips, margin 0.02): failed in every run; on 719 samples at 20%
  of them in 14.7% of runs and by 40% in all; on 2,000 at 20% in 99.9%; on 5,000 at 10% in 92.2%; on
  20,000 at 10% in all. Pocock spending decides it on 719 samples by 20% in 98.5% of runs but loses up to
  11.0 points of power.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.judge import FAIL, INCONCLUSIVE, PASS, _decide
from gate.measure import sequential as sq
from gate.measure import stats

CONF = 0.95
ALPHA = (1 - CONF) / 2
SIMS = 10_000  # a cell's rate near 2.5% has a standard error of 0.16 points, near 50% of 0.5 points
N_VALUES = (2_000, 5_000, 10_000, 20_000)
FLIPS = (0.02, 0.05, 0.10)
MARGINS = (0.01, 0.02)


def tango_z(b: np.ndarray, c: np.ndarray, n, delta: float) -> np.ndarray:
    """stats._tango_z on arrays (the same formulas: restricted MLE as the larger root, clipped)."""
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a2 = 2.0 * n
    bq = (2.0 * n + b - c) * delta - (b + c)
    cq = -b * delta * (1.0 - delta)
    x = (-bq + np.sqrt(np.maximum(bq * bq - 4.0 * a2 * cq, 0.0))) / (2.0 * a2)
    x = np.clip(x, max(0.0, -delta), (1.0 - delta) / 2.0)
    var = (2.0 * x + delta - delta * delta) / n
    diff = (c - b) / n - delta
    safe = np.where(var > 0.0, var, 1.0)
    z = np.where(var > 0.0, diff / np.sqrt(safe), np.copysign(np.inf, diff))
    return np.where(diff == 0.0, 0.0, z)


def _status(z: np.ndarray, crit: float) -> np.ndarray:
    """+1 pass, -1 fail, 0 inconclusive, for a max_drop rule tested at delta = -margin."""
    return np.where(z >= crit, 1, np.where(z <= -crit, -1, 0)).astype(np.int8)


# --------------------------------------------------------------------------
# the shortcut is the gate's own decision
# --------------------------------------------------------------------------

def test_vectorised_statistic_is_the_gates():
    rng = np.random.Generator(np.random.PCG64(1))
    n = rng.integers(1, 20_000, size=3000)
    b = (rng.random(3000) * 0.3 * n).astype(np.int64)
    c = np.minimum((rng.random(3000) * 0.1 * n).astype(np.int64), n - b)
    b[:50], c[50:100] = 0, 0  # empty cells, where the restricted MLE sits on a boundary
    for delta in (-0.01, -0.02, -0.165, 0.0, 0.03):
        ours = tango_z(b, c, n, delta)
        gates = np.array([stats._tango_z(int(bi), int(ci), int(ni), delta) for bi, ci, ni in zip(b, c, n)])
        assert np.allclose(ours, gates, rtol=1e-9, atol=1e-9, equal_nan=False)


def test_deciding_by_the_statistic_is_deciding_by_the_gates_interval():
    """For every look's level: z >= z(c) is a pass and z <= -z(c) a fail exactly when Tango's interval at c,
    judged by the judge's _decide against the max_drop bound, says so."""
    p = sq.plan()
    rng = np.random.Generator(np.random.PCG64(2))
    seen = set()
    for _ in range(400):
        n = int(rng.integers(50, 20_000))
        margin = float(rng.choice(MARGINS))
        psi = float(rng.uniform(0.02, 0.2))
        drop = float(rng.uniform(-0.5, 3.0)) * margin
        pb, pc = max((psi + drop) / 2, 0.0), max((psi - drop) / 2, 0.0)
        b, c, _ = rng.multinomial(n, [pb, pc, 1 - pb - pc])
        k = int(rng.integers(0, p.looks))
        conf = p.confidence_at(k)
        z = float(tango_z(np.array([b]), np.array([c]), n, -margin)[0])
        by_z = {1: PASS, -1: FAIL, 0: INCONCLUSIVE}[int(_status(np.array([z]), stats.z_two_sided(conf))[0])]
        iv = stats.paired_proportion_diff_interval(int(b), int(c), n, conf)
        # the judge's frame of a drop rule: the drop is -delta, an upper bound at the margin
        by_interval = _decide(-iv.high, -iv.low, margin, True)
        assert by_z == by_interval, (n, b, c, margin, k, z)
        seen.add(by_z)
    assert seen == {PASS, FAIL, INCONCLUSIVE}


# --------------------------------------------------------------------------
# the simulation
# --------------------------------------------------------------------------

def _simulate(*, n: int, flips: float, drop: float, margin: float, the_plan: sq.Plan, seed: tuple[int, ...],
              sims: int = SIMS) -> dict:
    """Sequential status and deciding look, and the fixed-sample status, of `sims` runs."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    pb, pc = (flips + drop) / 2, (flips - drop) / 2
    sizes = sq.look_sizes(n, the_plan)
    b = np.zeros(sims, dtype=np.int64)
    c = np.zeros(sims, dtype=np.int64)
    status = np.zeros(sims, dtype=np.int8)
    look = np.zeros(sims, dtype=np.int8)
    seen = 0
    for k, size in enumerate(sizes):
        draw = rng.multinomial(size - seen, [pb, pc, 1.0 - pb - pc], size=sims)
        b += draw[:, 0]
        c += draw[:, 1]
        seen = size
        open_ = status == 0
        now = _status(tango_z(b, c, size, -margin), stats.z_two_sided(the_plan.confidence_at(k)))
        decided = open_ & (now != 0)
        status[decided] = now[decided]
        look[decided] = k + 1
    fixed = _status(tango_z(b, c, n, -margin), stats.z_two_sided(CONF))
    return {"status": status, "look": look, "fixed": fixed, "sizes": sizes}


def _cells(truths: tuple[str, ...]):
    for mi, margin in enumerate(MARGINS):
        for truth in truths:
            drop = {"margin": margin, "zero": 0.0, "half": margin / 2}[truth]
            for n in N_VALUES:
                for fi, flips in enumerate(FLIPS):
                    yield (margin, truth, n, flips), dict(n=n, flips=flips, drop=drop, margin=margin,
                                                          seed=(mi, len(truth), n, fi))


@pytest.fixture(scope="module")
def runs() -> dict:
    p = sq.plan(alpha=ALPHA)
    return {key: _simulate(the_plan=p, **kw) for key, kw in _cells(("margin", "zero", "half"))}


def _se(rate: float, sims: int) -> float:
    return math.sqrt(max(rate * (1 - rate), 1e-12) / sims)


def _table(runs: dict, truth: str, what) -> str:
    rows = [f"  margin={m} n={n:>6} flips={f:.2f}: {what(r)}" for (m, t, n, f), r in runs.items() if t == truth]
    return "\n".join(rows)


def test_false_pass_at_the_margin_is_at_most_alpha(runs):
    at_margin = {k: r for k, r in runs.items() if k[1] == "margin"}
    seq = np.concatenate([r["status"] == 1 for r in at_margin.values()])
    fixed = np.concatenate([r["fixed"] == 1 for r in at_margin.values()])
    pooled, pooled_se = seq.mean(), _se(ALPHA, seq.size)
    msg = (f"false pass at a true drop equal to the margin: {pooled:.4f} pooled over {seq.size} runs "
           f"(se {pooled_se:.4f}; fixed test {fixed.mean():.4f})\n"
           + _table(at_margin, "margin", lambda r: f"sequential {np.mean(r['status'] == 1):.4f} "
                                                   f"fixed {np.mean(r['fixed'] == 1):.4f}"))
    assert pooled <= ALPHA + 2 * pooled_se, msg
    # each cell on its own, with room for 24 cells' worth of chance (3 standard errors)
    for r in at_margin.values():
        assert np.mean(r["status"] == 1) <= ALPHA + 3 * _se(ALPHA, SIMS), msg


def test_false_fail_is_the_fixed_tests(runs):
    """The fail side spends the same way: at a true drop equal to the margin the sequential false fail
    rate is the fixed test's (whose own rate is Tango's: up to 3.0% when every flip is a loss); at no
    drop, false fails stay as rare as the fixed test's."""
    at_margin = [r for k, r in runs.items() if k[1] == "margin"]
    seq = np.concatenate([r["status"] == -1 for r in at_margin])
    fixed = np.concatenate([r["fixed"] == -1 for r in at_margin])
    zero = {k: r for k, r in runs.items() if k[1] == "zero"}
    msg = (f"false fail at a true drop equal to the margin: sequential {seq.mean():.4f}, fixed {fixed.mean():.4f}"
           f" (pooled over {seq.size} runs)\nat a true drop of 0:\n"
           + _table(runs, "zero", lambda r: f"sequential {np.mean(r['status'] == -1):.4f} "
                                            f"fixed {np.mean(r['fixed'] == -1):.4f}"))
    assert seq.mean() <= fixed.mean() + 0.005, msg
    for r in zero.values():
        assert np.mean(r["status"] == -1) <= np.mean(r["fixed"] == -1) + 0.002, msg


@pytest.mark.parametrize("truth", ["zero", "half"])
def test_power_is_within_3_points_of_the_fixed_test(runs, truth):
    cells = {k: r for k, r in runs.items() if k[1] == truth}
    losses = [np.mean(r["fixed"] == 1) - np.mean(r["status"] == 1) for r in cells.values()]
    msg = (f"pass rate at a true drop of {'0' if truth == 'zero' else 'half the margin'}, largest loss "
           f"{max(losses):.4f}:\n"
           + _table(runs, truth, lambda r: f"sequential {np.mean(r['status'] == 1):.4f} "
                                           f"fixed {np.mean(r['fixed'] == 1):.4f} "
                                           f"mean deciding look {r['look'][r['status'] != 0].mean():.2f}"))
    assert max(losses) <= 0.03, msg


def _broken(n: int, spending: str = "obrien_fleming") -> dict:
    """The demo's pruned-90: accuracy drop 0.166 with 18.4% of samples flipped, against max_drop 0.02."""
    return _simulate(n=n, flips=0.184, drop=0.166, margin=0.02, the_plan=sq.plan(spending=spending),
                     seed=(9, n, len(spending)), sims=4000)


def _by_look(r: dict) -> str:
    shares = np.bincount(r["look"], minlength=len(r["sizes"]) + 1)[1:] / r["look"].size
    return ", ".join(f"{size} samples: {share:.4f}" for size, share in zip(r["sizes"], shares))


def test_a_broken_candidate_fails_on_a_fraction_of_the_samples():
    """Decided (fail, in every run) by the look at 20% of the samples from 2,000 samples on, at the first
    look (10%) in most runs from 5,000 on. On the demo's 719 samples O'Brien-Fleming spending needs 40%:
    its 20% look asks for z >= 4.88 and pruned-90 gives about 4.3 there (the issue's "at most 20%" holds
    there in 15% of runs); Pocock spending meets it, at the cost of power (test below)."""
    for n, look, share in ((719, 3, 0.95), (2_000, 2, 0.95), (5_000, 1, 0.85), (20_000, 1, 0.95)):
        r = _broken(n)
        msg = f"n={n}: decided at {_by_look(r)}"
        assert np.all(r["status"] == -1), msg
        assert np.mean(r["look"] <= look) >= share, msg


def test_pocock_spending_decides_the_broken_candidate_by_20_percent_of_719_samples_but_costs_power():
    r = _broken(719, "pocock")
    assert np.all(r["status"] == -1)
    assert np.mean(r["look"] <= 2) >= 0.95, _by_look(r)
    # the price: at 5,000 samples, 2% flips, half the margin of 0.01, Pocock passes far less than the fixed test
    g = _simulate(n=5_000, flips=0.02, drop=0.005, margin=0.01, the_plan=sq.plan(spending="pocock"), seed=(10,))
    loss = np.mean(g["fixed"] == 1) - np.mean(g["status"] == 1)
    assert loss > 0.05, f"Pocock power loss {loss:.4f}"
