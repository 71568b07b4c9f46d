"""`sequential:` with rules over subgroups (per: group, per: class, per: perturbation): each subgroup (or
perturbation) passes at the look's level, fails only at its Bonferroni share of the look's fail side
(gate/measure/sequential.py FamilyLook), the number of shares fixed from the whole data before the first look.
Known answers: a lookup-table candidate broken in one region only and the base's own outputs; the linear
candidate of tests/test_perturbations.py that equals the base on clean data and breaks under noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import (base_and_copy, candidate, logits_for, lookup_model, read_report, rule_of, run_main, write_npz,
                      write_policy)

N = 4000
REGIONS = np.array(list("abcd"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequential-groups")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, N)
    region = REGIONS[rng.integers(0, 4, N)]
    base = y.copy()
    wrong = rng.random(N) < 0.1
    base[wrong] = (y[wrong] + 1) % 3
    broken = base.copy()  # loses 30% of the base's right answers in region d, nothing elsewhere
    hit = (region == "d") & (base == y) & (rng.random(N) < 0.3)
    broken[hit] = (y[hit] + 1) % 3
    write_npz(root / "data.npz", y, region=region)
    lookup_model(root / "base.onnx", logits_for(base, 3, seed=1))
    lookup_model(root / "same.onnx", logits_for(base, 3, seed=2))
    lookup_model(root / "broken.onnx", logits_for(broken, 3, seed=2))
    drop_d = (hit.sum()) / (region == "d").sum()
    return root, {"drop_d": drop_d, "region": region}


def _policy(root, name: str, rules, **top):
    return write_policy(root / f"{name}.yaml", rules, candidates={name: f"{name}.onnx"}, batch_size=100,
                        data={"path": "data.npz", "groups": ["region"]}, **top)


def _check(root, name: str, out: str, rules, **top):
    result = run_main("check", "--policy", _policy(root, name, rules, **top), "--out", root / out, "--no-progress")
    assert "Traceback" not in result.stderr, result
    return result, read_report(root / out)


PER_GROUP = [{"metric": "accuracy", "max_drop": 0.05, "per": "group"}]


def test_a_candidate_broken_in_one_region_fails_early_on_that_region(lab):
    root, facts = lab
    result, report = _check(root, "broken", "broken", PER_GROUP, sequential=True)
    seq = report["provenance"]["sequential"]
    assert result.code == 1 and seq["stopped_early"] and seq["samples"] <= 0.4 * N
    assert seq["tests"] == {"1": 4}  # four regions, each with far more than min_samples in all
    rule = rule_of(candidate(report, "broken"), "accuracy")
    assert rule["status"] == "fail"
    failing = [g for g in rule["groups"] if g["status"] == "fail"]
    assert [g["group"] for g in failing] == ["d"]
    # a failing subgroup decides the rule: the others need not be decided by then, and none fails
    assert all(g["status"] in ("pass", "inconclusive") for g in rule["groups"] if g["group"] != "d")
    assert f"look {seq['look']}'s level over 4 subgroup tests" in failing[0]["reason"]
    assert sum(g["n"] for g in rule["groups"]) == seq["samples"]
    fixed_result, fixed = _check(root, "broken", "broken-fixed", PER_GROUP)
    fixed_rule = rule_of(candidate(fixed, "broken"), "accuracy")
    assert fixed_result.code == 1 and [g["group"] for g in fixed_rule["groups"] if g["status"] == "fail"] == ["d"]
    assert fixed_rule["observed"] == pytest.approx(facts["drop_d"])


def test_the_base_itself_passes_every_region_before_the_last_look(lab):
    root, _ = lab
    result, report = _check(root, "same", "same", PER_GROUP + [{"metric": "accuracy", "max_drop": 0.05,
                                                                "per": "class"}], sequential=True)
    seq = report["provenance"]["sequential"]
    assert result.code == 0 and seq["stopped_early"] and seq["samples"] < N
    assert seq["tests"] == {"1": 4, "2": 3}
    rules = candidate(report, "same")["rules"]
    assert [r["status"] for r in rules] == ["pass", "pass"]
    assert all(g["status"] == "pass" for r in rules for g in r["groups"])


def test_without_a_correction_each_subgroup_has_the_whole_fail_side(lab):
    root, _ = lab
    _, report = _check(root, "broken", "broken-none", PER_GROUP, sequential=True, correction="none")
    assert report["provenance"]["sequential"]["tests"] == {"1": 1}


def test_gate_judge_judges_measured_looks_like_gate_check(lab):
    root, _ = lab
    policy = _policy(root, "broken", PER_GROUP, sequential=True)
    measured = run_main("measure", "--policy", policy, "--out", root / "broken-results.json", "--no-progress")
    assert measured.code == 0, measured
    judged = run_main("judge", "--policy", policy, "--out", root / "broken-judged", root / "broken-results.json")
    assert judged.code == 1, judged
    _, checked = _check(root, "broken", "broken-again", PER_GROUP, sequential=True)
    a = rule_of(candidate(read_report(root / "broken-judged"), "broken"), "accuracy")
    b = rule_of(candidate(checked, "broken"), "accuracy")
    assert [(g["group"], g["status"], g["reason"]) for g in a["groups"]] == \
        [(g["group"], g["status"], g["reason"]) for g in b["groups"]]
    # a results file whose looks were edited is refused by name, not judged on a weaker share
    doc = json.loads((root / "broken-results.json").read_text())
    looks = doc["gate_results"]["provenance"]["sequential"]
    damages = [({"tests": {"1": 0}}, "tests"), ({"tests": {"1": True}}, "tests"), ({"tests": {"x": 2}}, "tests"),
               ({"tests": {"01": 2}}, "tests"), ({"tests": {"1": 10 ** 400}}, "tests"), ({"look": 9}, "look"),
               ({"look": looks["look"] - 1}, "samples"), ({"alpha": 0.49}, "alpha"),
               ({"fractions": [str(f) for f in looks["fractions"]]}, "fractions"), ({"spending": None}, "sequential")]
    for damage, where in damages:
        doc["gate_results"]["provenance"]["sequential"] = {**looks, **damage}
        (root / "damaged.json").write_text(json.dumps(doc))
        result = run_main("judge", "--policy", policy, "--out", root / "damaged", root / "damaged.json")
        assert result.code == 2 and where in result.stderr and "Traceback" not in result.stderr, (damage, result)


def test_a_subgroup_missing_from_a_look_keeps_the_rule_open():
    """Every subgroup the whole data can judge must be judged before the family passes: one absent from a
    look's samples (or too small in them) is not a pass."""
    from gate.judge import family_decided
    from gate.measure import sequential as sq
    from gate.measurements import (CandidateMeasurements, GroupResult, GroupingResult, Interval, MetricResult,
                                   ModelInfo)
    from gate.policy import Policy, Rule

    rule = Rule(index=1, line=None, metric="accuracy", bound_kind="max_drop", bound=0.05, per="group")
    within = MetricResult(metric="accuracy", n=500, base=0.9, candidate=0.9, delta=0.0,
                          delta_interval=Interval(low=-0.01, high=0.01, method="tango"),
                          evidence={"b": 0, "c": 0, "n": 500})
    cand = CandidateMeasurements(info=ModelInfo(name="c", path="c.onnx"), groupings=(GroupingResult(
        name="region", columns=("region",), groups=tuple(GroupResult(key=k, n=500, metrics={"accuracy": within})
                                                         for k in "ab")),))
    policy = Policy(source="p.yaml", text="", sha256="0" * 64, base=None, candidates=(), data=None, rules=(rule,))
    the_plan = sq.plan()
    both = frozenset({("region", "a"), ("region", "b")})
    assert family_decided(policy, rule, cand, sq.family_look(the_plan, 2, 2, required=both))
    missing = both | {("region", "c")}
    assert not family_decided(policy, rule, cand, sq.family_look(the_plan, 2, 3, required=missing))


def test_perturbed_copies_run_look_by_look_and_a_fragile_candidate_fails_early(tmp_path):
    """The perturbed passes run beside the clean one, look by look, so a per-perturbation rule decides a look
    too: the candidate that is the base on clean data and breaks under noise is failed before the last look,
    on the noise test alone, and the base's own weights pass early."""
    from test_perturbations import _linear, _weights

    n = 3000
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = np.zeros((n, 4), dtype=np.float32)
    x[:, 0] = np.where(y == 1, 1.0, -1.0) * rng.uniform(1, 2, n)
    x[:, 1] = rng.uniform(-0.5, 0.5, n)
    np.savez(tmp_path / "data.npz", x=x, label=y)
    w, w2 = _weights()
    _linear(tmp_path / "base.onnx", w)
    _linear(tmp_path / "fragile.onnx", w + w2)
    _linear(tmp_path / "same.onnx", w.copy())
    rules = [{"metric": "accuracy", "max_drop": 0.02}, {"metric": "accuracy", "per": "perturbation", "max_drop": 0.02}]
    # quantize reads each feature's observed range from the looks' reordered (lazy) column: it used to crash
    perturbations = [{"kind": "gaussian_noise", "snr_db": 10}, {"kind": "dropout", "rate": 0.2},
                     {"kind": "quantize", "bits": 4}]
    for name in ("fragile", "same"):
        policy = write_policy(tmp_path / f"{name}.yaml", rules, candidates={name: f"{name}.onnx"},
                              data={"path": "data.npz", "labels": "label"}, perturbations=perturbations,
                              sequential=True, batch_size=100)
        result = run_main("check", "--policy", policy, "--out", tmp_path / name, "--no-progress")
        report = read_report(tmp_path / name)
        seq = report["provenance"]["sequential"]
        assert seq["stopped_early"] and seq["tests"] == {"2": 3}, (name, seq)
        per = [r for r in candidate(report, name)["rules"] if r["rule"].endswith("per perturbation")][0]
        tests = {g["group"]: g for g in per["groups"]}
        assert all(g["n"] == seq["samples"] for g in tests.values())  # judged on the look's samples
        if name == "fragile":
            assert result.code == 1 and per["status"] == "fail", result
            assert tests["gaussian_noise snr 10 dB"]["status"] == "fail"
            assert tests["dropout rate 0.2"]["status"] != "fail"
        else:
            assert result.code == 0 and per["status"] == "pass", result


# ---- what a hostile review found (each test fails on the code before its fix) ----------------------------

def test_a_group_column_named_class_beside_a_per_class_rule_keeps_all_its_subgroups(tmp_path):
    """Subgroup sizes are taken per grouping, not per grouping name: a data column named "class" and the true
    classes' grouping no longer overwrite each other, so the column's small broken subgroup is planned for,
    must be judged, and fails the rule as on all the samples."""
    n = 20000
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    column = np.array(list("abc"))[rng.integers(0, 3, n)]
    small = rng.random(n) < 0.015  # about 300 samples in d
    column[small] = "d"
    broken = y.copy()
    hit = small & (rng.random(n) < 0.6)
    broken[hit] = (y[hit] + 1) % 3
    write_npz(tmp_path / "data.npz", y, **{"class": column})
    lookup_model(tmp_path / "base.onnx", logits_for(y, 3, seed=1))
    lookup_model(tmp_path / "broken.onnx", logits_for(broken, 3, seed=2))
    rules = [{"metric": "accuracy", "max_drop": 0.05, "per": "group", "min_samples": 100},
             {"metric": "accuracy", "max_drop": 0.05, "per": "class", "min_samples": 100}]
    policy = write_policy(tmp_path / "p.yaml", rules, candidates={"broken": "broken.onnx"}, batch_size=500,
                          data={"path": "data.npz", "groups": ["class"]}, sequential=True)
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    report = read_report(tmp_path / "out")
    assert result.code == 1 and report["provenance"]["sequential"]["tests"] == {"1": 4, "2": 3}, result
    per_group = candidate(report, "broken")["rules"][0]
    assert per_group["status"] == "fail" and any(g["group"] == "d" and g["status"] == "fail"
                                                 for g in per_group["groups"])


def test_subgroups_whose_names_collide_are_refused_by_name(tmp_path):
    y = np.zeros(200, dtype=np.int64)
    region = np.array(["a", "a × x"] * 100)
    device = np.array(["x × b", "b"] * 100)  # "a" + "x × b" and "a × x" + "b" both read "a × x × b"
    write_npz(tmp_path / "data.npz", y, region=region, device=device)
    lookup_model(tmp_path / "base.onnx", logits_for(y, 3, seed=1))
    policy = write_policy(tmp_path / "p.yaml", PER_GROUP, candidates={"c": "base.onnx"},
                          data={"path": "data.npz", "groups": [["region", "device"]]})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code == 2 and "both named 'a × x × b'" in result.stderr and "Traceback" not in result.stderr


def test_a_maximum_is_never_decided_before_the_last_look(tmp_path):
    """max_abs_diff over a look's samples is only a lower bound of the maximum over all of them: three bad
    outputs outside the first looks' samples must still fail the rule."""
    n = 4000
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, n)
    region = REGIONS[rng.integers(0, 4, n)]
    clean = logits_for(y, 3, seed=1)
    off = clean.copy()
    off[np.flatnonzero(region == "d")[:3]] += np.array([0.0, 0.0, 8.0], dtype=np.float32)
    write_npz(tmp_path / "data.npz", y, region=region)
    lookup_model(tmp_path / "base.onnx", clean)
    lookup_model(tmp_path / "cand.onnx", off)
    for rule in ({"metric": "max_abs_diff", "max": 0.5, "per": "group", "min_samples": 1},
                 {"metric": "max_abs_diff", "max": 0.5}):
        policy = write_policy(tmp_path / "p.yaml", [rule], candidates={"cand": "cand.onnx"}, batch_size=100,
                              data={"path": "data.npz", "groups": ["region"]}, sequential=True)
        result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
        report = read_report(tmp_path / "out")
        assert result.code == 1 and report["provenance"]["sequential"]["look"] == 5, (rule, result)
        assert candidate(report, "cand")["rules"][0]["status"] == "fail"


def test_results_of_other_looks_or_another_policy_are_not_judged_together(lab):
    """Each file's looks stopped where its own candidates were decided, under the policy that fixed the
    shares: files that stopped at different looks are not merged, and another policy cannot judge them."""
    root, _ = lab
    files = {}
    for name in ("same", "broken"):
        policy = write_policy(root / "both.yaml", PER_GROUP, batch_size=100, sequential=True,
                              candidates={"same": "same.onnx", "broken": "broken.onnx"},
                              data={"path": "data.npz", "groups": ["region"]})
        files[name] = root / f"only-{name}.json"
        measured = run_main("measure", "--policy", policy, "--candidate", f"{name}={root / (name + '.onnx')}",
                            "--out", files[name], "--no-progress")
        assert measured.code == 0, measured
    looks = {name: json.loads(path.read_text())["gate_results"]["provenance"]["sequential"]["look"]
             for name, path in files.items()}
    assert looks["same"] != looks["broken"]
    result = run_main("judge", "--policy", root / "both.yaml", "--out", root / "merged", *files.values())
    assert result.code == 2 and "sequential looks" in result.stderr, result
    other = write_policy(root / "other.yaml", PER_GROUP, candidates={"broken": "broken.onnx"}, batch_size=100,
                         data={"path": "data.npz", "groups": ["region"]}, sequential=True, correction="none")
    result = run_main("judge", "--policy", other, "--out", root / "other", files["broken"])
    assert result.code == 2 and "under another policy" in result.stderr, result


def test_a_p_value_off_a_grid_cannot_fail_a_subgroup_below_the_grids_reach():
    """A relative bound's p-value is read off a quantile grid that reaches 0.0005: beyond it the grid says 0
    whatever the truth, so at a look whose share is smaller the subgroup may not fail on it (it stays open);
    with Tango's exact statistic (an absolute bound) the same counts do fail."""
    from gate.judge import evaluate_grouped
    from gate.measure import sequential as sq
    from gate.measure.compare import compare
    from gate.measurements import CandidateMeasurements, GroupResult, GroupingResult, ModelInfo
    from gate.policy import Rule
    from gate.predictions import Predictions

    the_plan = sq.plan()
    family = sq.family_look(the_plan, 2, 4)  # look 3, four subgroups: a share of 1.5e-5
    assert family.fail_alpha < 0.0005
    b, m = 39, 400  # the candidate loses 39 of the base's 360 right answers
    y = np.zeros(m, dtype=np.int64)
    base = np.zeros(m, dtype=np.int64)
    base[360:] = 1
    cand = base.copy()
    cand[:b] = 1
    preds = [Predictions(kind="labels", pred=p, values=None, true_prob=None, true_rank=None, probs=None,
                         n_classes=2) for p in (base, cand)]
    metric = compare("accuracy", base=preds[0], cand=preds[1], agreement=None, y=y, task="classification",
                     confidence=family.confidence, bootstrap=1000, seed=0, with_interval=True)
    cm = CandidateMeasurements(info=ModelInfo(name="c", path="c.onnx"), groupings=(GroupingResult(
        name="region", columns=("region",), groups=(GroupResult(key="d", n=m, metrics={"accuracy": metric}),)),))
    statuses = {}
    for kind, bound in (("max_relative_drop", 0.06), ("max_drop", 0.03)):
        rule = Rule(index=1, line=None, metric="accuracy", bound_kind=kind, bound=bound, per="group")
        result = evaluate_grouped(rule, cm, confidence=0.95, inconclusive="fail", correction="holm",
                                  small_groups="warn", family=family)
        statuses[kind] = (result.groups[0]["status"], result.groups[0]["p_value"])
    assert statuses["max_relative_drop"][0] == "inconclusive" and statuses["max_relative_drop"][1] == 0.0
    assert statuses["max_drop"][0] == "fail" and statuses["max_drop"][1] <= family.fail_alpha


def test_a_strict_level_over_many_subgroups_advises_without_a_traceback(tmp_path):
    """confidence 0.99, 50 regions, sequential: the advice for an undecided subgroup at the first look is
    planned at the subgroup's share (about 1e-15), a level that used to round to 1 and crash."""
    n, regions = 20000, 50
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    base_and_copy(tmp_path, y, region=np.array([f"r{i:02d}" for i in range(regions)])[rng.integers(0, regions, n)])
    policy = write_policy(tmp_path / "p.yaml", PER_GROUP, candidates={"same": "same.onnx"}, batch_size=500,
                          data={"path": "data.npz", "groups": ["region"]}, sequential=True, confidence=0.99)
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code in (0, 1) and "Traceback" not in result.stderr, result
    assert read_report(tmp_path / "out")["provenance"]["sequential"]["tests"] == {"1": regions}


def test_subgroups_get_a_relative_interval_only_when_a_relative_rule_judges_them(lab):
    """The relative change of a paired proportion costs 16,000 posterior draws a subgroup: it is drawn where a
    relative bound judges the metric per subgroup, and nowhere else (5,000 subgroups: 20 s -> 3 s)."""
    root, _ = lab
    seen = {}
    for kind in ("max_drop", "max_relative_drop"):
        _, report = _check(root, "broken", f"relative-{kind}", [{"metric": "accuracy", kind: 0.05, "per": "group"}])
        (grouping,) = [g for g in candidate(report, "broken")["groupings"] if g["name"] == "region"]
        seen[kind] = [g["metrics"]["accuracy"]["relative_interval"] for g in grouping["groups"]]
    assert seen["max_drop"] == [None] * 4
    assert all(iv is not None and iv["low"] < iv["high"] for iv in seen["max_relative_drop"])


def test_a_relative_rule_judging_results_measured_without_it_gets_the_same_intervals(lab):
    """Results measured under an absolute per-group rule carry no relative interval for the subgroups; a
    policy with a relative per-group rule judging them derives the one the measurement would have drawn (a
    function of the counts), so gate judge says what gate check says, not the delta over a fixed base."""
    root, _ = lab
    absolute = _policy(root, "broken", [{"metric": "accuracy", "max_drop": 0.05, "per": "group"}])
    relative_rules = [{"metric": "accuracy", "max_relative_drop": 0.06, "per": "group"}]
    measured = run_main("measure", "--policy", absolute, "--out", root / "absolute.json", "--no-progress")
    assert measured.code == 0, measured
    relative = write_policy(root / "relative.yaml", relative_rules, candidates={"broken": "broken.onnx"},
                            batch_size=100, data={"path": "data.npz", "groups": ["region"]})
    run_main("judge", "--policy", relative, "--out", root / "relative-judged", root / "absolute.json")
    _, checked = _check(root, "broken", "relative-checked", relative_rules)
    judged = read_report(root / "relative-judged")
    a, b = candidate(judged, "broken")["rules"][0], candidate(checked, "broken")["rules"][0]
    assert [(g["group"], g["status"], g["interval"]) for g in a["groups"]] == \
        [(g["group"], g["status"], g["interval"]) for g in b["groups"]]


def _gap_lab(root, n: int = 8000, small: int = 0):
    """Binary labels, regions a-c (and d with `small` samples), a base right on 90%: `broken` says 1 for 40% of
    the samples the base calls 0 in region c (or for all of them in d, when there is one) and nowhere else: its
    accuracy and its rate of 1s move there; `same` is the base's outputs."""
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, n)
    region = np.array(list("abc"))[rng.integers(0, 3, n)]
    if small:
        region[rng.choice(n, small, replace=False)] = "d"
    base = y.copy()
    wrong = rng.random(n) < 0.1
    base[wrong] = 1 - y[wrong]
    broken = base.copy()
    hit = ((region == "d") & (base == 0)) if small else ((region == "c") & (base == 0) & (rng.random(n) < 0.4))
    broken[hit] = 1
    write_npz(root / "data.npz", y, region=region)
    lookup_model(root / "base.onnx", logits_for(base, 2, seed=1))
    lookup_model(root / "same.onnx", logits_for(base, 2, seed=2))
    lookup_model(root / "broken.onnx", logits_for(broken, 2, seed=2))


GAP = {"metric": "accuracy", "per": "group", "scope": "gap", "max_increase": 0.05}
PARITY = {"metric": "demographic_parity_difference", "max_increase": 0.05}


@pytest.mark.parametrize("rule", [GAP, PARITY], ids=["gap", "fairness"])
def test_a_gap_and_a_fairness_rule_are_decided_at_looks(tmp_path, rule):
    """One test per grouping, decided only at looks whose tail the resamples reach (with 1,000, the 70% and
    100% looks): the base's own outputs pass there, a candidate broken in one region fails, as on all the
    samples."""
    _gap_lab(tmp_path)
    for name, code in (("same", 0), ("broken", 1)):
        policy = write_policy(tmp_path / f"{name}.yaml", [rule], candidates={name: f"{name}.onnx"},
                              batch_size=200, data={"path": "data.npz", "groups": ["region"]}, sequential=True)
        result = run_main("check", "--policy", policy, "--out", tmp_path / name, "--no-progress")
        report = read_report(tmp_path / name)
        seq = report["provenance"]["sequential"]
        assert result.code == code and seq["tests"] == {"1": 1} and seq["look"] >= 4, (name, result)
        (judged,) = candidate(report, name)["rules"]
        assert judged["status"] == ("pass" if code == 0 else "fail")
        if name == "same":
            assert seq["stopped_early"] and seq["look"] == 4


def _fails_at_the_last_look(root, rules: list[dict], name: str, data: dict | None = None, batch: int = 200):
    """gate check with sequential looks: the run must go to the last look and fail `name` on its one rule."""
    policy = write_policy(root / "p.yaml", rules, candidates={name: f"{name}.onnx"}, batch_size=batch,
                          data=data or {"path": "data.npz", "groups": ["region"]}, sequential=True)
    result = run_main("check", "--policy", policy, "--out", root / "out", "--no-progress")
    report = read_report(root / "out")
    assert result.code == 1 and report["provenance"]["sequential"]["look"] == 5, result
    assert candidate(report, name)["rules"][0]["status"] == "fail"


def test_a_gap_waits_for_every_subgroup_that_counts_on_all_the_samples(tmp_path):
    """Region d holds 60 samples, over min_samples (50) on all of them but under it at the 70% look: a gap
    taken there would leave d, the broken region, out and pass. The look waits for d, and the rule fails."""
    _gap_lab(tmp_path, small=60)
    _fails_at_the_last_look(tmp_path, [{**GAP, "min_samples": 50}], "broken")


def _late_subgroup(root, *, positives: int, negatives: int, text_labels: bool = False):
    """20,000 samples, regions a-d, and a small region e whose positives all come after the 70% look in the
    looks' order (seed 0): at that look e has no positive at all. -> (y, e_pos, e_neg)."""
    from gate.measure.sequential import look_order

    n = 20000
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    region = np.array(list("abcd"))[rng.integers(0, 4, n)]
    order = look_order(n, 0)
    e_neg = order[:14000][::14000 // negatives][:negatives]
    e_pos = order[-6000:][::6000 // positives][:positives]
    y[e_neg], y[e_pos] = 0, 1
    region[e_neg], region[e_pos] = "e", "e"
    labels = np.where(y == 1, "pos", "neg") if text_labels else y
    write_npz(root / "data.npz", labels, region=region)
    return y, e_pos, e_neg


@pytest.mark.parametrize("text_labels", [False, True], ids=["class indices", "class names"])
def test_a_fairness_rule_waits_for_a_subgroups_late_positives(tmp_path, text_labels):
    """Equalized odds over regions; e's 8 positives come only after the 70% look, and the candidate misses all
    of them. The look must wait for e's (subgroup, positive) cell, also when the labels are class names mapped
    by data.classes (the cells are taken from the class indices, not the file's text)."""
    y, e_pos, _ = _late_subgroup(tmp_path, positives=8, negatives=52, text_labels=text_labels)
    cand = y.copy()
    cand[e_pos] = 0
    lookup_model(tmp_path / "base.onnx", logits_for(y, 2, seed=1))
    lookup_model(tmp_path / "cand.onnx", logits_for(cand, 2, seed=2))
    data = {"path": "data.npz", "groups": ["region"], **({"classes": ["neg", "pos"]} if text_labels else {})}
    _fails_at_the_last_look(tmp_path, [{"metric": "equalized_odds_difference", "max_increase": 0.1}], "cand",
                            data=data, batch=500)


def test_a_gap_waits_for_every_class_a_counted_subgroup_holds(tmp_path):
    """A roc_auc gap over regions: e has 400 negatives early and 100 positives only after the 70% look, where
    its AUC has no value and the gap would leave it out. The candidate ranks e's positives below its
    negatives: the look waits for e's positives and the rule fails, as on all the samples."""
    y, e_pos, e_neg = _late_subgroup(tmp_path, positives=100, negatives=400)
    base = logits_for(y, 2, seed=1)
    cand = base.copy()
    cand[e_pos] = np.array([3.0, -3.0], dtype=np.float32)
    cand[e_neg] = np.array([0.5, -0.5], dtype=np.float32)
    lookup_model(tmp_path / "base.onnx", base)
    lookup_model(tmp_path / "cand.onnx", cand)
    rule = {"metric": "roc_auc", "per": "group", "scope": "gap", "max_increase": 0.05, "min_samples": 30}
    _fails_at_the_last_look(tmp_path, [rule], "cand", batch=500)
