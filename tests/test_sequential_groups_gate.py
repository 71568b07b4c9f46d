"""`sequential:` with rules over subgroups (per: group, per: class, per: perturbation): each subgroup (or
perturbation) passes at the look's level, fails only at its Bonferroni share of the look's fail side
(gate/measure/sequential.py FamilyLook), the number of shares fixed from the whole data before the first look.
Known answers: a lookup-table candidate broken in one region only and the base's own outputs; the linear
candidate of tests/test_perturbations.py that equals the base on clean data and breaks under noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import candidate, logits_for, lookup_model, read_report, rule_of, run_main, write_npz, write_policy

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
    for damage, where in (({"1": 0}, "tests"), ({"1": True}, "tests"), ({"x": 2}, "tests")):
        doc["gate_results"]["provenance"]["sequential"]["tests"] = damage
        (root / "damaged.json").write_text(json.dumps(doc))
        result = run_main("judge", "--policy", policy, "--out", root / "damaged", root / "damaged.json")
        assert result.code == 2 and f"provenance.sequential.{where}" in result.stderr, (damage, result)
    doc["gate_results"]["provenance"]["sequential"].update(tests={"1": 4}, look=9)
    (root / "damaged.json").write_text(json.dumps(doc))
    result = run_main("judge", "--policy", policy, "--out", root / "damaged", root / "damaged.json")
    assert result.code == 2 and "provenance.sequential.look" in result.stderr, result


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
    perturbations = [{"kind": "gaussian_noise", "snr_db": 10}, {"kind": "dropout", "rate": 0.2}]
    for name in ("fragile", "same"):
        policy = write_policy(tmp_path / f"{name}.yaml", rules, candidates={name: f"{name}.onnx"},
                              data={"path": "data.npz", "labels": "label"}, perturbations=perturbations,
                              sequential=True, batch_size=100)
        result = run_main("check", "--policy", policy, "--out", tmp_path / name, "--no-progress")
        report = read_report(tmp_path / name)
        seq = report["provenance"]["sequential"]
        assert seq["stopped_early"] and seq["tests"] == {"2": 2}, (name, seq)
        per = [r for r in candidate(report, name)["rules"] if r["rule"].endswith("per perturbation")][0]
        tests = {g["group"]: g for g in per["groups"]}
        assert all(g["n"] == seq["samples"] for g in tests.values())  # judged on the look's samples
        if name == "fragile":
            assert result.code == 1 and per["status"] == "fail", result
            assert tests["gaussian_noise snr 10 dB"]["status"] == "fail"
            assert tests["dropout rate 0.2"]["status"] != "fail"
        else:
            assert result.code == 0 and per["status"] == "pass", result
