"""Known answers: lookup-table models whose every prediction is chosen, run through `gate check`.

Each scenario fixes the base's and the candidates' prediction for every sample,
so accuracy, its drop, the flips (b = base right & candidate wrong, c = base
wrong & candidate right) and the decisions are known exactly; the intervals are
held to independent computations written here (scipy root finding and
numerical likelihood maximisation, not the gate's closed forms).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from conftest import (candidate, logits_for, lookup_model, make_scenario, read_report, rule_of, run_cli, softmax,
                      write_csv, write_npz, write_policy)

CONF = 0.95
Z = stats.norm.ppf(0.5 + CONF / 2)


# ------------------------------------------------------------------------------------------
# independent oracles
# ------------------------------------------------------------------------------------------

def _restricted_mle(b: int, c: int, n: int, delta: float) -> float:
    """argmax over x of b log x + c log(x + delta) + m log(1 - 2x - delta), found numerically."""
    m = n - b - c
    lo, hi = max(0.0, -delta), (1.0 - delta) / 2.0

    def nll(x):
        out = 0.0
        for count, p in ((b, x), (c, x + delta), (m, 1.0 - 2.0 * x - delta)):
            if count:
                out -= count * math.log(max(p, 1e-300))
        return out

    res = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13})
    # the bounded method never evaluates the ends; a boundary maximum shows as a point next to one
    candidates = [res.x] + [e for e in (lo, hi) if np.isfinite(nll(e))]
    return min(candidates, key=nll)


def _tango_z(b: int, c: int, n: int, delta: float) -> float:
    x = _restricted_mle(b, c, n, delta)
    var = (2.0 * x + delta - delta * delta) / n
    return ((c - b) / n - delta) / math.sqrt(var)


def tango_interval(b: int, c: int, n: int) -> tuple[float, float]:
    """Tango's (1998) score interval for (c - b) / n: every delta with |Z(delta)| <= z."""
    d = (c - b) / n
    low = optimize.brentq(lambda t: _tango_z(b, c, n, t) - Z, max(-1 + 1e-9, d - 0.5), d - 1e-12, xtol=1e-12)
    high = optimize.brentq(lambda t: _tango_z(b, c, n, t) + Z, d + 1e-12, min(1 - 1e-9, d + 0.5), xtol=1e-12)
    return low, high


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """Every p with |k/n - p| <= z sqrt(p (1 - p) / n), by root finding."""
    p_hat = k / n

    def f(p):
        return (p_hat - p) ** 2 - Z * Z * p * (1 - p) / n

    # f < 0 strictly inside the interval, so bracket from just inside p_hat
    low = 0.0 if k == 0 else optimize.brentq(f, 1e-15, min(p_hat, 1 - 1e-12), xtol=1e-14)
    high = 1.0 if k == n else optimize.brentq(f, max(p_hat, 1e-12), 1 - 1e-15, xtol=1e-14)
    return low, high


def test_oracles_agree_with_textbook_values():
    # Wilson 95% for 0/10 upper end is z^2 / (n + z^2); for 5/10 symmetric about 0.5
    assert wilson_interval(0, 10)[1] == pytest.approx(Z * Z / (10 + Z * Z), abs=1e-9)
    low, high = wilson_interval(5, 10)
    assert low + high == pytest.approx(1.0, abs=1e-9)
    # Tango with no discordant samples on one side is symmetric under swapping b and c
    lo1, hi1 = tango_interval(12, 2, 1000)
    lo2, hi2 = tango_interval(2, 12, 1000)
    assert (lo1, hi1) == pytest.approx((-hi2, -lo2), abs=1e-9)


# ------------------------------------------------------------------------------------------
# shared classification models: n = 1000, 3 classes, the base right on 900
# ------------------------------------------------------------------------------------------

N, BASE_RIGHT, K = 1000, 900, 3
FLIPS = {  # candidate -> (b, c)
    "same": (0, 0),
    "worse30": (30, 0),
    "straddle": (10, 2),  # drop 0.008 against max_drop 0.01: the interval straddles the bound
    "onbound": (12, 2),  # drop exactly 0.010 = max_drop: no sample size decides it
    "rel_small": (10, 0),
    "rel_big": (80, 0),
}


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    """One directory: base, every candidate of FLIPS, data.npz and data.csv."""
    d = tmp_path_factory.mktemp("cls")
    scenarios = {name: make_scenario(N, BASE_RIGHT, b, c, k=K) for name, (b, c) in FLIPS.items()}
    base_table = logits_for(scenarios["same"].base, K, seed=100)
    lookup_model(d / "base.onnx", base_table)
    for i, (name, s) in enumerate(scenarios.items()):
        # "same" is the base's own table: identical outputs, not just identical classes
        table = base_table if name == "same" else logits_for(s.cand, K, seed=i)
        lookup_model(d / f"{name}.onnx", table)
    y = scenarios["same"].y
    write_npz(d / "data.npz", y)
    write_csv(d / "data.csv", y)
    return d, scenarios


def check(d, policy, out, *extra):
    result = run_cli("check", "--policy", policy, "--out", d / out, *extra)
    assert result.code in (0, 1, 2, 3), result
    assert "Traceback" not in result.stderr, result
    return result, (read_report(d / out) if (d / out / "report.json").exists() else None)


IDENTICAL_RULES = [
    {"metric": "accuracy", "max_drop": 0.01},
    {"metric": "accuracy", "max_relative_drop": 0.01},
    {"metric": "top_2_accuracy", "max_drop": 0.01},
    {"metric": "balanced_accuracy", "max_drop": 0.01},
    {"metric": "f1_macro", "max_drop": 0.01},
    {"metric": "log_loss", "max_increase": 0.01},
    {"metric": "flip_rate", "max": 0.01},
    {"metric": "negative_flip_rate", "max": 0.01},
    {"metric": "positive_flip_rate", "min": 0.0},
    {"metric": "kl_divergence", "max": 0.001},
    {"metric": "cosine_similarity", "min": 0.999},
    {"metric": "max_abs_diff", "max": 0.0},
    {"metric": "model_size_mb", "max_increase": 0.0},
    {"metric": "parameters", "max_increase": 0},
]


@pytest.fixture(scope="module")
def identical(cls):
    d, _ = cls
    policy = write_policy(d / "identical.yaml", IDENTICAL_RULES, candidates={"same": "same.onnx"})
    return check(d, policy, "out-identical")


def test_identical_candidate_passes_every_rule_with_zero_change(identical):
    result, report = identical
    assert result.code == 0, result
    assert report["verdict"] == "pass"
    c = candidate(report, "same")
    assert c["verdict"] == "pass" and c["error"] is None
    assert [r["status"] for r in c["rules"]] == ["pass"] * len(IDENTICAL_RULES), c["rules"]
    assert not any(r["blocking"] for r in c["rules"])
    assert c["tally"]["passed"] == len(IDENTICAL_RULES) and c["tally"]["failed"] == c["tally"]["warned"] == 0
    acc = c["metrics"]["accuracy"]
    assert acc["base"] == acc["candidate"] == 0.9
    assert acc["delta"] == 0.0
    assert acc["evidence"]["b"] == acc["evidence"]["c"] == 0
    # "same" is the base's own file (the same bytes): compared exactly, not estimated from the samples
    assert acc["delta_interval"] == {"low": 0.0, "high": 0.0, "method": "same file as the base"}
    assert any("the base's own file" in note for note in c["notes"])
    assert c["metrics"]["flip_rate"]["candidate"] == 0.0
    assert c["metrics"]["negative_flip_rate"]["candidate"] == 0.0
    assert c["metrics"]["kl_divergence"]["candidate"] == pytest.approx(0.0, abs=1e-12)
    assert c["metrics"]["max_abs_diff"]["candidate"] == 0.0
    assert rule_of(c, "accuracy", "max_drop")["observed"] == 0.0


@pytest.fixture(scope="module")
def drops(cls):
    """Several candidates against max_drop 0.01 and max_relative_drop 0.05, inconclusive: fail."""
    d, _ = cls
    names = ["worse30", "straddle", "onbound", "rel_small", "rel_big"]
    policy = write_policy(d / "drops.yaml", [{"metric": "accuracy", "max_drop": 0.01},
                                             {"metric": "accuracy", "max_relative_drop": 0.05},
                                             {"metric": "flip_rate", "max": 0.2}],
                          candidates={n: f"{n}.onnx" for n in names}, inconclusive="fail")
    return check(d, policy, "out-drops")


def test_thirty_lost_samples_drop_accuracy_by_exactly_three_points(drops):
    result, report = drops
    assert result.code == 1, result
    assert report["verdict"] == "fail"
    c = candidate(report, "worse30")
    acc = c["metrics"]["accuracy"]
    assert acc["base"] == 0.9 and acc["candidate"] == 0.87
    assert acc["delta"] == -0.030
    assert (acc["evidence"]["b"], acc["evidence"]["c"], acc["evidence"]["n"]) == (30, 0, N)
    assert acc["discordant_rate"] == 0.03
    rule = rule_of(c, "accuracy", "max_drop")
    assert rule["status"] == "fail" and rule["blocking"]
    assert rule["observed"] == pytest.approx(0.03, abs=1e-15)
    assert rule["interval"][0] > 0.01, "the whole interval of the drop lies beyond the bound"
    assert c["verdict"] == "fail"


@pytest.mark.parametrize("name", ["worse30", "straddle", "onbound", "rel_small", "rel_big"])
def test_accuracy_interval_is_tangos_score_interval(drops, cls, name):
    _, report = drops
    _, scenarios = cls
    s = scenarios[name]
    acc = candidate(report, name)["metrics"]["accuracy"]
    low, high = tango_interval(s.b, s.c, s.n)
    assert acc["delta_interval"]["method"] == "tango"
    assert acc["delta_interval"]["low"] == pytest.approx(low, abs=1e-4)
    assert acc["delta_interval"]["high"] == pytest.approx(high, abs=1e-4)
    # and the drop rule reads the same interval, mirrored
    rule = rule_of(candidate(report, name), "accuracy", "max_drop")
    assert rule["interval"] == pytest.approx([-high, -low], abs=1e-4)


def test_tango_interval_is_tight_against_the_oracle(drops):
    """Much tighter than the brief's 1e-4: the gate bisects to 1e-10."""
    _, report = drops
    acc = candidate(report, "worse30")["metrics"]["accuracy"]
    low, high = tango_interval(30, 0, N)
    assert acc["delta_interval"]["low"] == pytest.approx(low, abs=1e-7)
    assert acc["delta_interval"]["high"] == pytest.approx(high, abs=1e-7)


def test_straddling_drop_is_inconclusive_and_says_how_many_samples_decide(drops):
    _, report = drops
    rule = rule_of(candidate(report, "straddle"), "accuracy", "max_drop")
    assert rule["observed"] == pytest.approx(0.008, abs=1e-15)
    low, high = rule["interval"]
    assert low < 0.01 < high
    assert rule["status"] == "inconclusive"
    assert rule["blocking"], "inconclusive: fail makes an undecided rule block"
    assert isinstance(rule["samples_needed"], int) and rule["samples_needed"] > N
    assert f"{rule['samples_needed']:,}" in rule["reason"]
    assert candidate(report, "straddle")["verdict"] == "fail"


def test_drop_exactly_on_the_bound_is_inconclusive_and_no_sample_size_is_promised(drops):
    _, report = drops
    rule = rule_of(candidate(report, "onbound"), "accuracy", "max_drop")
    assert rule["observed"] == pytest.approx(0.010, abs=1e-15)
    assert rule["interval"][0] < 0.01 < rule["interval"][1]
    assert rule["status"] == "inconclusive" and rule["blocking"]
    # the true drop may equal the bound: more data narrows the interval around it, never off it
    assert rule["samples_needed"] is None
    assert "more samples will not decide it" in rule["reason"]


@pytest.mark.parametrize("mode,code", [("fail", 1), ("warn", 0)])
def test_inconclusive_mode_sets_the_exit_code(cls, mode, code):
    d, _ = cls
    policy = write_policy(d / f"straddle-{mode}.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"straddle": "straddle.onnx"}, inconclusive=mode)
    result, report = check(d, policy, f"out-straddle-{mode}")
    assert result.code == code, result
    rule = rule_of(candidate(report, "straddle"), "accuracy", "max_drop")
    assert rule["status"] == "inconclusive"
    assert rule["blocking"] is (mode == "fail")
    assert isinstance(rule["samples_needed"], int) and rule["samples_needed"] > N
    assert report["inconclusive"] == mode
    assert report["verdict"] == ("fail" if mode == "fail" else "pass")


def test_relative_drop_resolves_against_the_base(drops):
    _, report = drops
    # 5% of a base accuracy of 0.9 is an absolute margin of 0.045: candidate >= 0.855
    small = rule_of(candidate(report, "rel_small"), "accuracy", "max_relative_drop")
    big = rule_of(candidate(report, "rel_big"), "accuracy", "max_relative_drop")
    for rule in (small, big):
        assert "0.855" in rule["bound_text"], rule["bound_text"]
        assert rule["base"] == 0.9
    # observed and interval are fractions of the base
    assert small["observed"] == pytest.approx(0.01 / 0.9, abs=1e-12)
    assert big["observed"] == pytest.approx(0.08 / 0.9, abs=1e-12)
    # The relative interval is a paired ratio with the base's own error in it (it used to be Tango's
    # delta interval over the base taken as exact). With c = 0 the relative drop is b / (a + b), whose
    # Jeffreys interval is Beta(b + 1/2, a + 1/2); the empty c cell moves it by about 1/(2 (a + b)).
    a = int(0.9 * N) - 80
    assert big["interval"] == pytest.approx(list(stats.beta.ppf([0.025, 0.975], 80.5, a + 0.5)), abs=2e-3)
    assert small["status"] == "pass" and big["status"] == "fail"
    # the absolute rule agrees where the margins do: a drop of 0.08 is beyond 0.01 too
    assert rule_of(candidate(report, "rel_big"), "accuracy", "max_drop")["status"] == "fail"


def test_relative_bound_is_the_same_decision_as_its_resolved_absolute_margin(cls, drops):
    """max_relative_drop 0.05 on a base of 0.9 decides exactly like max_drop 0.045."""
    d, _ = cls
    _, rel_report = drops
    names = ["worse30", "straddle", "rel_small", "rel_big"]
    policy = write_policy(d / "abs045.yaml", [{"metric": "accuracy", "max_drop": 0.045}],
                          candidates={n: f"{n}.onnx" for n in names})
    _, report = check(d, policy, "out-abs045")
    for name in names:
        absolute = rule_of(candidate(report, name), "accuracy", "max_drop")
        relative = rule_of(candidate(rel_report, name), "accuracy", "max_relative_drop")
        assert absolute["status"] == relative["status"], name
        assert "0.855" in absolute["bound_text"]


def test_paired_interval_is_narrower_than_an_unpaired_one(drops):
    """The reason for pairing: the same samples cancel their common difficulty."""
    _, report = drops
    for name in ("worse30", "straddle", "rel_big"):
        acc = candidate(report, name)["metrics"]["accuracy"]
        p1, p2 = acc["base"], acc["candidate"]
        unpaired_half = Z * math.sqrt(p1 * (1 - p1) / N + p2 * (1 - p2) / N)  # two independent samples
        paired_width = acc["delta_interval"]["high"] - acc["delta_interval"]["low"]
        assert paired_width < 2 * unpaired_half
        assert paired_width < 0.75 * 2 * unpaired_half, (name, paired_width, 2 * unpaired_half)


# ------------------------------------------------------------------------------------------
# a clear pass with flips; flip rates and their Wilson intervals
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flips(tmp_path_factory):
    d = tmp_path_factory.mktemp("flips")
    # b = 5, c = 5, and 7 more samples change from one wrong class to another
    s = make_scenario(2000, 1700, 5, 5, k=3, seed=7, extra_flips=7)
    lookup_model(d / "base.onnx", logits_for(s.base, 3, seed=1))
    lookup_model(d / "cand.onnx", logits_for(s.cand, 3, seed=2))
    write_npz(d / "data.npz", s.y)
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.02},
                                              {"metric": "flip_rate", "max": 0.05},
                                              {"metric": "negative_flip_rate", "max": 0.01},
                                              {"metric": "positive_flip_rate", "min": 0.0}],
                          candidates={"cand": "cand.onnx"})
    result, report = check(d, policy, "out")
    return s, result, report


def test_equal_gains_and_losses_pass_a_two_point_bound(flips):
    s, result, report = flips
    assert (s.b, s.c, s.flips) == (5, 5, 17)
    assert result.code == 0, result
    c = candidate(report, "cand")
    acc = c["metrics"]["accuracy"]
    assert acc["delta"] == 0.0 and acc["base"] == acc["candidate"] == 0.85
    low, high = tango_interval(5, 5, 2000)
    assert (acc["delta_interval"]["low"], acc["delta_interval"]["high"]) == pytest.approx((low, high), abs=1e-4)
    assert [r["status"] for r in c["rules"]] == ["pass"] * 4
    assert c["verdict"] == "pass"


@pytest.mark.parametrize("metric,count", [("flip_rate", 17), ("negative_flip_rate", 5), ("positive_flip_rate", 5)])
def test_flip_rates_are_exact_counts_with_wilson_intervals(flips, metric, count):
    _, _, report = flips
    m = candidate(report, "cand")["metrics"][metric]
    assert m["candidate"] == count / 2000
    assert m["evidence"] == {"k": count, "n": 2000}
    low, high = wilson_interval(count, 2000)
    assert m["candidate_interval"]["method"] == "wilson"
    assert m["candidate_interval"]["low"] == pytest.approx(low, abs=1e-9)
    assert m["candidate_interval"]["high"] == pytest.approx(high, abs=1e-9)
    rule = rule_of(candidate(report, "cand"), metric)
    assert rule["observed"] == count / 2000
    assert rule["interval"] == pytest.approx([low, high], abs=1e-9)


def test_wilson_interval_of_the_candidate_accuracy(flips):
    _, _, report = flips
    acc = candidate(report, "cand")["metrics"]["accuracy"]
    low, high = wilson_interval(1700, 2000)
    assert acc["candidate_interval"]["method"] == "wilson"
    assert (acc["candidate_interval"]["low"], acc["candidate_interval"]["high"]) == pytest.approx((low, high), abs=1e-9)


def test_paired_interval_is_narrower_with_equal_accuracies(flips):
    _, _, report = flips
    acc = candidate(report, "cand")["metrics"]["accuracy"]
    p = acc["base"]
    unpaired = 2 * Z * math.sqrt(2 * p * (1 - p) / 2000)
    assert acc["delta_interval"]["high"] - acc["delta_interval"]["low"] < unpaired / 3


# ------------------------------------------------------------------------------------------
# output kinds: logits, probabilities, one binary score, labels
# ------------------------------------------------------------------------------------------

KINDS = ["logits", "probabilities", "binary", "label"]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinds")
    s = make_scenario(600, 540, 20, 8, k=2, seed=3)
    lookup_model(d / "base.onnx", logits_for(s.base, 2, seed=4))
    cand_logits = logits_for(s.cand, 2, seed=5)
    lookup_model(d / "logits.onnx", cand_logits, kind="logits")
    lookup_model(d / "probabilities.onnx", cand_logits, kind="probabilities")
    lookup_model(d / "binary.onnx", softmax(cand_logits.astype(np.float64))[:, 1:], kind="binary")
    lookup_model(d / "label.onnx", cand_logits, kind="label")
    write_npz(d / "data.npz", s.y)
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.1},
                                              {"metric": "negative_flip_rate", "max": 0.2},
                                              {"metric": "kl_divergence", "max": 10.0}],
                          candidates={k: f"{k}.onnx" for k in KINDS})
    result, report = check(d, policy, "out")
    return s, result, report


def test_every_output_kind_gives_the_same_accuracy_numbers(kinds):
    s, _, report = kinds
    expected = None
    for kind in KINDS:
        c = candidate(report, kind)
        assert c["error"] is None, c["error"]
        acc = c["metrics"]["accuracy"]
        assert acc["evidence"] == {"b": 20, "c": 8, "n": 600, "k": 528}, kind
        assert acc["candidate"] == 528 / 600 and acc["base"] == 0.9
        numbers = (acc["base"], acc["candidate"], acc["delta"], acc["delta_interval"], acc["candidate_interval"])
        expected = expected or numbers
        assert numbers == expected, kind
        assert rule_of(c, "accuracy")["status"] == "pass", kind
        assert c["metrics"]["flip_rate"]["candidate"] == 28 / 600


def test_output_kinds_are_recognised(kinds):
    _, _, report = kinds
    seen = {c["name"]: c["model"]["output_kind"] for c in report["candidates"]}
    assert seen == {"logits": "logits", "probabilities": "probabilities", "binary": "binary_probability",
                    "label": "labels"}


def test_kl_divergence_on_a_label_output_is_an_error_never_a_pass(kinds):
    _, result, report = kinds
    label = candidate(report, "label")
    kl = rule_of(label, "kl_divergence")
    assert kl["status"] == "error" and kl["blocking"]
    assert "label" in kl["reason"]
    assert label["verdict"] == "fail"
    assert result.code == 1, result
    # the score outputs all give the same distribution, so the same KL
    values = [candidate(report, k)["metrics"]["kl_divergence"]["candidate"] for k in ("logits", "probabilities", "binary")]
    assert values[0] > 0
    assert values == pytest.approx([values[0]] * 3, rel=1e-4)
    for k in ("logits", "probabilities", "binary"):
        assert rule_of(candidate(report, k), "kl_divergence")["status"] == "pass"


# ------------------------------------------------------------------------------------------
# fixed batch sizes, float inputs, external data, several outputs
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    d = tmp_path_factory.mktemp("batches")
    s = make_scenario(998, 900, 20, 6, k=3, seed=11)  # 998: not a multiple of 4
    lookup_model(d / "base.onnx", logits_for(s.base, 3, seed=1))
    table = logits_for(s.cand, 3, seed=2)
    lookup_model(d / "dynamic.onnx", table)
    lookup_model(d / "fixed1.onnx", table, batch=1)
    lookup_model(d / "fixed4.onnx", table, batch=4)
    lookup_model(d / "external.onnx", table, external=True)
    write_npz(d / "data.npz", s.y)
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05},
                                              {"metric": "f1_macro", "max_drop": 0.05},
                                              {"metric": "kl_divergence", "max": 1.0},
                                              {"metric": "model_size_mb", "max": 1.0}],
                          candidates={n: f"{n}.onnx" for n in ("dynamic", "fixed1", "fixed4", "external")},
                          batch_size=10)  # 10 is not a multiple of 4 either
    result, report = check(d, policy, "out")
    return d, s, result, report


def _comparable(c: dict) -> dict:
    metrics = {k: v for k, v in c["metrics"].items() if k != "model_size_mb"}
    rules = [r for r in c["rules"] if r["metric"] != "model_size_mb"]
    return {"metrics": metrics, "rules": rules}


@pytest.mark.parametrize("name", ["fixed1", "fixed4", "external"])
def test_fixed_batch_and_external_models_give_the_dynamic_models_numbers(batches, name):
    _, s, result, report = batches
    assert result.code == 0, result
    dynamic = candidate(report, "dynamic")
    other = candidate(report, name)
    assert other["error"] is None, other["error"]
    assert dynamic["metrics"]["accuracy"]["evidence"] == {"b": 20, "c": 6, "n": 998, "k": 886}
    assert _comparable(other) == _comparable(dynamic)


def test_model_size_counts_external_data(batches):
    d, _, _, report = batches
    c = candidate(report, "external")
    onnx_bytes = (d / "external.onnx").stat().st_size
    data_bytes = (d / "external.onnx.data").stat().st_size
    assert data_bytes >= 998 * 3 * 4  # the table lives in the .data file
    assert c["model"]["size_bytes"] == onnx_bytes + data_bytes
    assert c["metrics"]["model_size_mb"]["candidate"] == pytest.approx((onnx_bytes + data_bytes) / 1e6, abs=1e-12)
    files = {f["path"].rsplit("/", 1)[-1]: f["size_bytes"] for f in c["model"]["files"]}
    assert files == {"external.onnx": onnx_bytes, "external.onnx.data": data_bytes}
    # the in-file model of the same table is about the same size in total
    inline = candidate(report, "dynamic")["metrics"]["model_size_mb"]["candidate"]
    assert c["metrics"]["model_size_mb"]["candidate"] == pytest.approx(inline, rel=0.05)


def test_float32_input_takes_float64_data(cls, drops):
    d, scenarios = cls
    f = d / "float"
    s = scenarios["worse30"]
    lookup_model(f / "base.onnx", logits_for(s.base, K, seed=100), input_dtype="float32")
    lookup_model(f / "worse30.onnx", logits_for(s.cand, K, seed=1), input_dtype="float32")
    write_npz(f / "data.npz", s.y, idx_dtype=np.float64)
    policy = write_policy(f / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"worse30": "worse30.onnx"})
    result, report = check(f, policy, "out")
    assert result.code == 1, result
    acc = candidate(report, "worse30")["metrics"]["accuracy"]
    assert acc == candidate(drops[1], "worse30")["metrics"]["accuracy"]


def test_csv_data_gives_the_npz_numbers(cls, drops):
    d, _ = cls
    policy = write_policy(d / "csv.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"worse30": "worse30.onnx"}, data="data.csv")
    result, report = check(d, policy, "out-csv")
    assert result.code == 1, result
    acc = candidate(report, "worse30")["metrics"]["accuracy"]
    assert acc == candidate(drops[1], "worse30")["metrics"]["accuracy"]


def test_csv_column_mapped_as_a_list_feeds_a_one_feature_input(cls, drops):
    d, _ = cls
    policy = write_policy(d / "csv-list.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"worse30": "worse30.onnx"},
                          data={"path": "data.csv", "inputs": {"idx": ["idx"]}, "labels": "label"})
    result, report = check(d, policy, "out-csv-list")
    assert result.code == 1, result
    acc = candidate(report, "worse30")["metrics"]["accuracy"]
    assert acc == candidate(drops[1], "worse30")["metrics"]["accuracy"]


def test_a_model_with_two_outputs_needs_output_in_the_policy(cls, drops):
    d, scenarios = cls
    s = scenarios["worse30"]
    lookup_model(d / "two.onnx", logits_for(s.cand, K, seed=1), kind="two_outputs")
    rules = [{"metric": "accuracy", "max_drop": 0.01}]
    bare = write_policy(d / "two-bare.yaml", rules, candidates={"two": "two.onnx"})
    result, report = check(d, bare, "out-two-bare")
    assert result.code == 2, result
    assert "two.onnx" in result.stderr and "output" in result.stderr
    assert "Traceback" not in result.stderr
    assert candidate(report, "two")["error"]

    named = write_policy(d / "two.yaml", rules,
                         candidates={"two": {"path": "two.onnx", "output": "probabilities"}})
    result, report = check(d, named, "out-two")
    assert result.code == 1, result
    c = candidate(report, "two")
    assert c["model"]["output"] == "probabilities"
    assert c["metrics"]["accuracy"] == candidate(drops[1], "worse30")["metrics"]["accuracy"]


# ------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    d = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(21)
    n = 500
    y = rng.normal(3.0, 2.0, size=n)
    base = (y + rng.normal(0, 0.1, size=n)).astype(np.float32)
    close = (base + rng.normal(0, 0.005, size=n)).astype(np.float32)
    far = (y + rng.normal(0, 0.6, size=n)).astype(np.float32)
    for name, values in (("base", base), ("close", close), ("far", far)):
        lookup_model(d / f"{name}.onnx", values, kind="regression")
    write_npz(d / "data.npz", y)
    policy = write_policy(d / "policy.yaml", [{"metric": "mae", "max_increase": 0.05},
                                              {"metric": "rmse", "max_relative_increase": 0.5},
                                              {"metric": "r2", "max_drop": 0.05}],
                          candidates={"close": "close.onnx", "far": "far.onnx"}, task="regression")
    result, report = check(d, policy, "out")
    return y, {"base": base, "close": close, "far": far}, result, report


def test_regression_metrics_match_sklearn(regression):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, preds, _, report = regression

    def expected(p):
        p = p.astype(np.float64)
        return {"mae": mean_absolute_error(y, p), "rmse": math.sqrt(mean_squared_error(y, p)), "r2": r2_score(y, p)}

    base = expected(preds["base"])
    for metric, value in base.items():
        assert report["base"]["metrics"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
    for name in ("close", "far"):
        m = candidate(report, name)["metrics"]
        for metric, value in expected(preds[name]).items():
            assert m[metric]["candidate"] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, metric)
            assert m[metric]["base"] == pytest.approx(base[metric], rel=1e-9, abs=1e-12)
            assert m[metric]["delta"] == pytest.approx(value - base[metric], rel=1e-8, abs=1e-12)
            assert m[metric]["delta_interval"]["method"] == "bootstrap"
            assert m[metric]["delta_interval"]["low"] <= m[metric]["delta"] <= m[metric]["delta_interval"]["high"]


def test_regression_rules_decide_right(regression):
    y, preds, result, report = regression
    assert result.code == 1, result
    close, far = candidate(report, "close"), candidate(report, "far")
    mae_close, mae_far = rule_of(close, "mae"), rule_of(far, "mae")
    true_far = np.abs(preds["far"] - y).mean() - np.abs(preds["base"] - y).mean()
    assert mae_far["observed"] == pytest.approx(true_far, rel=1e-6)
    assert true_far > 0.3
    assert mae_far["status"] == "fail" and mae_far["interval"][0] > 0.05
    assert mae_close["status"] == "pass" and mae_close["interval"][1] <= 0.05
    assert "base + 0.05" in mae_close["bound_text"]
    assert close["verdict"] == "pass" and far["verdict"] == "fail"
    assert [r["status"] for r in close["rules"]] == ["pass"] * 3
    assert report["task"] == "regression"


# ------------------------------------------------------------------------------------------
# determinism and broken candidates
# ------------------------------------------------------------------------------------------

def _blank_timestamps(text: str) -> str:
    """report.json text with the two provenance timestamps replaced, every other byte kept."""
    doc = json.loads(text)
    for key in ("started", "finished"):
        stamp = json.dumps(doc["provenance"][key])
        assert text.count(stamp) >= 1
        text = text.replace(f'"{key}": {stamp}', f'"{key}": "T"')
    return text


def test_two_runs_give_byte_identical_reports_apart_from_timestamps(cls):
    d, _ = cls
    policy = write_policy(d / "determinism.yaml", [{"metric": "accuracy", "max_drop": 0.01},
                                                   {"metric": "f1_macro", "max_drop": 0.01},
                                                   {"metric": "log_loss", "max_increase": 0.05},
                                                   {"metric": "kl_divergence", "max": 0.5},
                                                   {"metric": "cosine_similarity", "min": 0.5}],
                          candidates={"worse30": "worse30.onnx", "straddle": "straddle.onnx"})
    runs = []
    for _ in range(2):
        result, _ = check(d, policy, "out-determinism")  # same command, so the same provenance.command
        assert result.code == 1, result
        runs.append({name: (d / "out-determinism" / name).read_text(encoding="utf-8")
                     for name in ("report.json", "report.md", "junit.xml")})
    first, second = runs
    assert '"method": "bootstrap"' in first["report.json"], "bootstrap intervals are part of the comparison"
    assert _blank_timestamps(first["report.json"]) == _blank_timestamps(second["report.json"])
    assert first["report.md"] == second["report.md"]
    assert first["junit.xml"] == second["junit.xml"]


@pytest.mark.parametrize("bad", ["missing", "corrupt"])
def test_a_broken_candidate_is_reported_while_the_others_are_judged(cls, bad):
    d, _ = cls
    if bad == "corrupt":
        (d / "corrupt.onnx").write_bytes(b"\x08\x07this is not an onnx model" * 20)
    policy = write_policy(d / f"broken-{bad}.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"same": "same.onnx", bad: f"{bad}.onnx", "worse30": "worse30.onnx"})
    result, report = check(d, policy, f"out-broken-{bad}")
    assert result.code == 2, result
    assert f"{bad}.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    assert [c["name"] for c in report["candidates"]] == ["same", bad, "worse30"]
    assert candidate(report, "same")["verdict"] == "pass"
    assert rule_of(candidate(report, "same"), "accuracy")["status"] == "pass"
    assert candidate(report, "worse30")["metrics"]["accuracy"]["delta"] == -0.03
    assert rule_of(candidate(report, "worse30"), "accuracy")["status"] == "fail"
    broken = candidate(report, bad)
    assert broken["error"] and f"{bad}.onnx" in broken["error"]
    assert broken["verdict"] == "fail"
    assert [r["status"] for r in broken["rules"]] == ["error"]
    assert any(f"{bad}.onnx" in e for e in report["input_errors"])
    for name in ("report.md", "report.html", "junit.xml"):
        assert (d / f"out-broken-{bad}" / name).exists()
