"""Per-subgroup measurement and judging, on predictions whose answers are known exactly."""

from pathlib import Path

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from gate.judge import judge_candidate
from gate.measure.groups import groupings_for, make_grouping, measure_groupings
from gate.measurements import CandidateMeasurements, ModelInfo
from gate.policy import parse_policy
from gate.predictions import Agreement, Predictions


def preds(pred, k=2):
    pred = np.asarray(pred, dtype=np.int64)
    return Predictions(kind="labels", pred=pred, values=None, true_prob=None, true_rank=None, probs=None,
                       n_classes=None)


def no_agreement(n):
    return Agreement(kl=None, cosine=np.ones(n), max_abs=np.zeros(n))


def hidden_harm():
    """3,000 samples, base right on 90% everywhere; the candidate loses 30 of the 300 samples of
    group 'rare' (10 points there) and wins back 6 elsewhere: overall drop 0.8 points."""
    n = 3000
    y = np.zeros(n, dtype=np.int64)
    group = np.array(["rare"] * 300 + ["common"] * 2700)
    base = y.copy()
    base[np.arange(0, n, 10)] = 1  # wrong on every tenth sample: 90% accuracy in both groups
    cand = base.copy()
    right_in_rare = [i for i in range(300) if base[i] == y[i]][:30]
    cand[right_in_rare] = 1
    wrong_in_common = [i for i in range(300, n) if base[i] != y[i]][:6]
    cand[wrong_in_common] = 0
    return y, group, preds(base), preds(cand)


def measure(policy_text, y, columns, base, cand, tiny=None):
    policy = parse_policy(policy_text, "p.yaml", Path("."))
    from gate.measure.groups import wanted
    each, gaps, fairness, per_class = wanted(policy.rules)
    groupings = groupings_for(columns, tuple(columns), y, per_class=per_class)
    grouped = measure_groupings(groupings, base=base, cand=cand, agreement=no_agreement(len(y)), y=y,
                                task="classification", each=each, gaps=gaps, fairness=fairness,
                                confidence=policy.confidence, bootstrap=300, seed=0)
    from gate.measure.compare import compare
    overall = {m: compare(m, base=base, cand=cand, agreement=no_agreement(len(y)), y=y, task="classification",
                          confidence=0.95, bootstrap=300, seed=0, with_interval=True)
               for m in {r.metric for r in policy.rules if not r.grouped}}
    cand_m = CandidateMeasurements(info=ModelInfo(name="c", path="c.onnx"), metrics=overall, groupings=grouped)
    return policy, judge_candidate(policy, cand_m, confidence=policy.confidence), grouped


RULES = """\
version: 1
rules:
  - metric: accuracy
    max_drop: 0.02
  - metric: accuracy
    per: group
    max_drop: 0.03
"""


def test_a_group_that_loses_ten_points_fails_while_the_average_passes():
    y, group, base, cand = hidden_harm()
    _, verdict, grouped = measure(RULES, y, {"segment": group}, base, cand)
    overall, per_group = verdict.rules
    assert overall.status == "pass" and overall.observed == pytest.approx(0.008)
    assert per_group.status == "fail" and verdict.verdict == "fail"
    rare = next(e for e in per_group.groups if e["group"] == "rare")
    assert rare["observed"] == pytest.approx(0.10) and rare["status"] == "fail" and rare["n"] == 300
    common = next(e for e in per_group.groups if e["group"] == "common")
    assert common["status"] == "pass"
    table = {g.key: g for g in grouped[0].groups}
    assert table["rare"].negative_flips == 30 and table["common"].negative_flips == 0


def test_too_small_groups_are_reported_never_passed():
    y, group, base, cand = hidden_harm()
    group = group.copy()
    group[300:312] = "tiny"  # 12 samples, all unchanged
    _, verdict, _ = measure(RULES.replace("max_drop: 0.03", "max_drop: 0.03\n    min_samples: 30"),
                            y, {"segment": group}, base, cand)
    tiny = next(e for e in verdict.rules[1].groups if e["group"] == "tiny")
    assert tiny["status"] == "too_small" and tiny["n"] == 12
    assert "too small" in verdict.rules[1].reason and "segment=tiny (12)" in verdict.rules[1].reason
    # with the harmful group unchanged, the only non-pass is the small group: a warning by default ...
    clean = preds(base.pred.copy())
    _, verdict, _ = measure(RULES, y, {"segment": group}, base, clean)
    assert verdict.rules[1].status == "warn" and not verdict.rules[1].blocking
    # ... and a failure when the policy says so
    _, verdict, _ = measure(RULES.replace("rules:", "small_groups: fail\nrules:"), y, {"segment": group}, base, clean)
    assert verdict.rules[1].status == "fail" and verdict.rules[1].blocking


def test_holm_keeps_a_marginal_group_inconclusive_that_alone_would_fail():
    # 20 groups of 100; one loses 9 of its 100 samples (b=9, c=0): beyond 0.03 at 95% on its own,
    # but not after correcting for 20 tests
    n_groups, size = 20, 100
    y = np.zeros(n_groups * size, dtype=np.int64)
    group = np.repeat([f"g{i:02d}" for i in range(n_groups)], size)
    base = preds(y.copy())
    cand_pred = y.copy()
    cand_pred[:9] = 1
    cand = preds(cand_pred)
    rules = RULES.replace("max_drop: 0.02", "max_drop: 0.5")
    _, alone, _ = measure(rules.replace("rules:", "correction: none\nrules:"), y, {"g": group}, base, cand)
    _, holm, _ = measure(rules, y, {"g": group}, base, cand)
    _, bonf, _ = measure(rules.replace("rules:", "correction: bonferroni\nrules:"), y, {"g": group}, base, cand)
    assert alone.rules[1].status == "fail"
    assert holm.rules[1].status == "inconclusive" and bonf.rules[1].status == "inconclusive"
    g0 = next(e for e in holm.rules[1].groups if e["group"] == "g00")
    # the interval quoted is g00's own (it lies beyond the bound): the reason says the correction decided
    assert "(95% CI 0.0481 to 0.1623), beyond the bound" in g0["reason"]
    assert "but not after the holm correction over 20 tests (p = " in g0["reason"]
    # an undecided rule is headlined by the subgroup that left it undecided, never by a passing one
    assert holm.rules[1].reason.startswith("worst inconclusive of 20 subgroup test(s): g=g00:")
    # advice for a test held by the correction plans at the corrected level: more than measured
    assert g0["samples_needed"] > 100


def test_an_inconclusive_rule_is_never_headlined_by_a_passing_subgroup():
    # g00 is clearly fine but has the largest observed drop among the passing; g01 (few samples) is undecided
    y = np.zeros(1100, dtype=np.int64)
    group = np.array(["g00"] * 1000 + ["g01"] * 100)
    cand_pred = y.copy()
    cand_pred[:5] = 1  # g00 loses 5 of 1000: a drop of 0.005, well within 0.05
    cand_pred[1000:1003] = 1  # g01 loses 3 of 100: 0.03, its interval reaches past 0.05
    _, verdict, _ = measure(RULES.replace("max_drop: 0.02", "max_drop: 0.5").replace("max_drop: 0.03", "max_drop: 0.05"),
                            y, {"g": group}, preds(y.copy()), preds(cand_pred))
    rule = verdict.rules[1]
    statuses = {e["group"]: e["status"] for e in rule.groups}
    assert statuses == {"g00": "pass", "g01": "inconclusive"}, rule.groups
    assert rule.status == "inconclusive"
    assert "g=g01" in rule.reason and "g=g00" not in rule.reason


def test_clear_failures_survive_the_correction():
    y, group, base, cand = hidden_harm()
    _, verdict, _ = measure(RULES.replace("rules:", "correction: bonferroni\nrules:"), y, {"segment": group},
                            base, cand)
    assert verdict.rules[1].status == "fail"


def test_intersections_and_classes_are_groupings_too():
    columns = {"region": np.array(["EU", "EU", "US", "US", "US"]), "device": np.array(["a", "b", "a", "a", "b"])}
    g = make_grouping(columns, ("region", "device"))
    assert g.name == "region × device"
    assert list(g.keys) == ["EU × a", "EU × b", "US × a", "US × b"]
    assert list(g.codes) == [0, 1, 2, 2, 3]
    by_class = groupings_for(columns, (), np.array([1, 0, 1, 1, 2]), per_class=True)
    assert by_class[-1].name == "class" and list(by_class[-1].keys) == ["0", "1", "2"]


def test_gap_rule_measures_best_minus_worst_against_the_base():
    y, group, base, cand = hidden_harm()
    text = RULES.replace("    per: group\n    max_drop: 0.03", "    per: group\n    scope: gap\n    max_increase: 0.02")
    _, verdict, grouped = measure(text, y, {"segment": group}, base, cand)
    gap = grouped[0].gaps["accuracy"]
    # base: 0.9 in both groups; candidate: 0.8 in rare, 0.9 + 6/2700 in common
    assert gap.base == pytest.approx(0.0)
    assert gap.candidate == pytest.approx((0.9 + 6 / 2700) - 0.8)
    assert verdict.rules[1].status == "fail"


def test_fairness_differences_match_fairlearn():
    rng = np.random.default_rng(4)
    n = 1200
    y = rng.integers(0, 2, n)
    sex = rng.choice(["f", "m", "x"], size=n, p=[0.45, 0.45, 0.1])
    base_pred = np.where(rng.random(n) < 0.85, y, 1 - y)
    cand_pred = base_pred.copy()
    flip = (sex == "x") & (rng.random(n) < 0.8)  # most of group x becomes positive
    cand_pred[flip] = 1
    text = """\
version: 1
rules:
  - metric: demographic_parity_difference
    max_increase: 0.05
  - metric: equalized_odds_difference
    max: 0.5
"""
    _, verdict, grouped = measure(text, y, {"sex": sex}, preds(base_pred), preds(cand_pred))
    fair = grouped[0].fairness
    assert fair["demographic_parity_difference"].candidate == pytest.approx(
        demographic_parity_difference(y, cand_pred, sensitive_features=sex))
    assert fair["demographic_parity_difference"].base == pytest.approx(
        demographic_parity_difference(y, base_pred, sensitive_features=sex))
    assert fair["equalized_odds_difference"].candidate == pytest.approx(
        equalized_odds_difference(y, cand_pred, sensitive_features=sex))
    assert verdict.rules[0].status == "fail"  # parity moved far beyond 0.05
    assert verdict.rules[0].groups[0]["where"] == "sex (between subgroups)"
