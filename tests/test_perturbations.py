"""Robustness to bad inputs: the policy's `perturbations:` and rules with `per: perturbation`.

Known answer: a base linear classifier with wide margins reads features 0 and 1 only; every clean sample
has features 2 and 3 exactly zero (the clean data lies in a subspace). The FRAGILE candidate's weights are
the base's plus a large W2 on features 2 and 3: W2 @ x = 0 for every clean sample, so its clean outputs are
the base's to the last bit (no accuracy change, no flip), but noise leaves the subspace and W2 amplifies
it. Only the per-perturbation rule can see that, and it must fail, under noise and nowhere else (dropout and
quantization keep features 2 and 3 at zero). The same candidate as TorchScript shows the torch runner
perturbed alike; a candidate with the base's weights passes; one that gives NaN off the subspace is an
error, never a pass; a base that gives NaN there fails every comparison under that perturbation.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import candidate, lookup_model, read_report, rule_of, run_main, save_graph, write_npz, write_policy
from gate.errors import GateInputError
from gate.measure import perturb
from gate.policy import load_policy

N = 400
PERTURBATIONS = [{"kind": "gaussian_noise", "snr_db": 10}, {"kind": "dropout", "rate": 0.2},
                 {"kind": "quantize", "bits": 4}]
NOISE, DROPOUT, QUANTIZE = "gaussian_noise snr 10 dB", "dropout rate 0.2", "quantize 4 bits"
RULES = [{"metric": "accuracy", "max_drop": 0.02},
         {"metric": "flip_rate", "max": 0.02},
         {"metric": "accuracy", "per": "perturbation", "max_drop": 0.02}]


def _weights() -> tuple[np.ndarray, np.ndarray]:
    w = np.zeros((4, 2), dtype=np.float32)
    w[0] = [-2, 2]  # class 1 when feature 0 is positive; |feature 0| >= 1: a margin noise at 10 dB rarely crosses
    w2 = np.zeros((4, 2), dtype=np.float32)
    w2[2], w2[3] = [20, -20], [-20, 20]  # zero on clean samples, 20x the noise off the subspace
    return w, w2


def _linear(path: Path, w: np.ndarray, *, nan_off_subspace: bool = False) -> Path:
    """logits = x @ w; with nan_off_subspace, plus sqrt(-|x[:, 2:4]|): -0.0 on clean samples, NaN off them."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    inits = [numpy_helper.from_array(np.asarray(w, dtype=np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["linear" if nan_off_subspace else "logits"])]
    if nan_off_subspace:
        inits += [numpy_helper.from_array(np.array([v], dtype=np.int64), k) for k, v in (("s", 2), ("e", 4), ("a", 1))]
        nodes += [helper.make_node("Slice", ["x", "s", "e", "a"], ["off"]), helper.make_node("Abs", ["off"], ["abs"]),
                  helper.make_node("Neg", ["abs"], ["neg"]), helper.make_node("Sqrt", ["neg"], ["root"]),
                  helper.make_node("Add", ["linear", "root"], ["logits"])]
    return save_graph(helper.make_graph(nodes, path.stem, [x], [out], initializer=inits), path)


def _torchscript(path: Path, w: np.ndarray) -> Path:
    import torch

    linear = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(w.T))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.script(linear.eval()).save(str(path))
    return path


def _data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    x = np.zeros((N, 4), dtype=np.float32)
    x[:, 0] = np.where(y == 1, 1.0, -1.0) * rng.uniform(1, 2, N)
    x[:, 1] = rng.uniform(-0.5, 0.5, N)
    np.savez(path, x=x, label=y)  # one feature key: it feeds the one input of every model (x, torch's input)
    return path


def _groups(report: dict, name: str) -> dict[str, dict]:
    (grouping,) = [g for g in candidate(report, name)["groupings"] if g["kind"] == "perturbation"]
    assert grouping["name"] == "perturbation"
    return {g["key"]: g for g in grouping["groups"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("perturbations")
    w, w2 = _weights()
    _linear(d / "base.onnx", w)
    _linear(d / "fragile.onnx", w + w2)
    _linear(d / "same.onnx", w.copy())  # the base's weights in a file of its own (another graph name)
    _linear(d / "nan.onnx", w, nan_off_subspace=True)
    _torchscript(d / "fragile_torch.pt", w + w2)
    _data(d / "data.npz")
    data = {"path": "data.npz", "labels": "label"}
    candidates = {"fragile": "fragile.onnx", "same": "same.onnx", "nan": "nan.onnx",
                  "fragile_torch": "fragile_torch.pt"}
    policy = write_policy(d / "policy.yaml", RULES, candidates=candidates, data=data, perturbations=PERTURBATIONS)
    check = run_main("check", "--policy", policy, "--out", d / "out", "--no-progress")
    # measured again (no reports: rendering is the slow part), and at another batch size: every perturbed
    # sample is drawn by its index, not by its batch
    again = write_policy(d / "again.yaml", RULES, candidates=candidates, data=data, perturbations=PERTURBATIONS,
                         batch_size=50)
    measured = {name: run_main("measure", "--policy", path, "--out", d / f"{name}.json", "--no-progress")
                for name, path in (("results", policy), ("again", again))}
    # the NaN model as the base: the base itself fails under noise
    broken = write_policy(d / "broken.yaml", RULES, base="nan.onnx", candidates={"base": "base.onnx"}, data=data,
                          perturbations=PERTURBATIONS)
    measured["broken"] = run_main("measure", "--policy", broken, "--out", d / "broken.json", "--no-progress")
    return SimpleNamespace(dir=d, check=check, report=read_report(d / "out"), measured=measured)


def _measured(run, name: str):
    from gate.contract import load_results_file

    assert run.measured[name].code == 0, run.measured[name]
    return load_results_file(run.dir / f"{name}.json")


def _perturbation_grouping(measurements, name: str):
    (cand,) = [c for c in measurements.candidates if c.name == name]
    (grouping,) = [g for g in cand.groupings if g.kind == "perturbation"]
    return grouping


# ---------------------------------------------------------------- the known answer

@pytest.mark.parametrize("name", ["fragile", "fragile_torch"])
def test_equal_on_clean_data_worse_under_noise_fails_only_the_perturbation_rule(run, name):
    assert run.check.code == 1, run.check
    cand = candidate(run.report, name)
    assert cand["verdict"] == "fail"
    assert rule_of(cand, "flip_rate")["observed"] == 0.0
    per = [r for r in cand["rules"] if r["rule"].endswith("per perturbation")]
    clean = [r for r in cand["rules"] if not r["rule"].endswith("per perturbation")]
    assert [r["status"] for r in clean] == ["pass", "pass"] and len(per) == 1
    assert cand["metrics"]["accuracy"]["delta"] == 0.0 and cand["metrics"]["flip_rate"]["candidate"] == 0.0
    (rule,) = per
    assert rule["status"] == "fail" and "under every perturbation" in rule["bound_text"]
    tests = {t["group"]: t for t in rule["groups"]}
    assert tests[NOISE]["status"] == "fail" and tests[NOISE]["observed"] > 0.2
    assert tests[DROPOUT]["status"] == tests[QUANTIZE]["status"] == "pass"
    groups = _groups(run.report, name)
    assert groups[NOISE]["metrics"]["accuracy"]["base"] > 0.99  # the base keeps its margin under the noise
    assert groups[NOISE]["metrics"]["accuracy"]["delta"] < -0.2 and groups[NOISE]["negative_flips"] > 80
    for key in (DROPOUT, QUANTIZE):  # features 2 and 3 stay zero: the candidate is the base there
        assert groups[key]["metrics"]["accuracy"]["delta"] == 0.0 and groups[key]["flips"] == 0
    assert groups[NOISE]["parameters"] == {"kind": "gaussian_noise", "snr_db": 10, "seed": 0, "index": 1}


def test_torch_and_onnx_candidates_see_the_same_perturbed_samples(run):
    onnx_groups, torch_groups = _groups(run.report, "fragile"), _groups(run.report, "fragile_torch")
    for key in (NOISE, DROPOUT, QUANTIZE):
        a, b = onnx_groups[key]["metrics"]["accuracy"], torch_groups[key]["metrics"]["accuracy"]
        assert (a["base"], a["candidate"]) == (b["base"], b["candidate"]), key


def test_a_candidate_with_the_base_weights_passes_under_every_perturbation(run):
    cand = candidate(run.report, "same")
    assert cand["verdict"] == "pass"
    for key, group in _groups(run.report, "same").items():
        assert group["flips"] == 0 and group["metrics"]["accuracy"]["delta"] == 0.0, key


def test_nan_outputs_under_a_perturbation_are_an_error_never_a_pass(run):
    cand = candidate(run.report, "nan")
    rule = [r for r in cand["rules"] if r["rule"].endswith("per perturbation")][0]
    assert rule["status"] == "error" and rule["blocking"] and "NaN" in rule["reason"]
    assert {t["group"]: t["status"] for t in rule["groups"]} == {NOISE: "error", DROPOUT: "pass", QUANTIZE: "pass"}
    assert [r["status"] for r in cand["rules"] if r is not rule] == ["pass", "pass"]


def test_a_base_that_fails_under_a_perturbation_is_reported_not_exit_2(run):
    from gate.judge import judge

    verdict = judge(load_policy(run.dir / "broken.yaml"), _measured(run, "broken"))
    (cand,) = verdict.candidates
    per, *clean = sorted(cand.rules, key=lambda r: not r.rule.endswith("per perturbation"))
    assert per.status == "error" and per.blocking and "the base itself fails under " + NOISE in per.reason
    assert [r.status for r in clean] == ["pass", "pass"] and cand.verdict == "fail"


def test_same_seed_same_numbers_at_any_batch_size(run):
    first, again = _measured(run, "results"), _measured(run, "again")
    for name in ("fragile", "same", "nan", "fragile_torch"):
        assert _perturbation_grouping(first, name) == _perturbation_grouping(again, name), name
    reported = _groups(run.report, "fragile")[NOISE]["metrics"]["accuracy"]
    measured = _perturbation_grouping(first, "fragile").groups[0].metrics["accuracy"]
    assert (reported["base"], reported["candidate"], reported["delta"]) == \
        (measured.base, measured.candidate, measured.delta)


def test_reports_show_the_perturbations_with_their_parameters(run):
    md = (run.dir / "out" / "report.md").read_text(encoding="utf-8")
    html = (run.dir / "out" / "report.html").read_text(encoding="utf-8")
    assert "fragile under perturbations, worst change first (3)" in md
    assert "gaussian\\_noise, snr\\_db 10, seed 0" in md
    assert "<h3>Under perturbations, worst change first</h3>" in html and "dropout, rate 0.2, value 0, seed 0" in html
    assert "not compared" in html  # the NaN candidate's lost comparison is shown, not dropped
    junit = (run.dir / "out" / "junit.xml").read_text(encoding="utf-8")
    assert "per perturbation" in junit


# ---------------------------------------------------------------- the transforms

def _signal(shape=(2000, 256)) -> np.ndarray:
    return np.random.default_rng(1).normal(0.3, 1.0, shape).astype(np.float32)


def _perturber(kind: str, columns: dict, **parameters) -> perturb.Perturber:
    return perturb.Perturber(SimpleNamespace(kind=kind, index=1, parameters=parameters), seed=0, columns=columns)


def test_gaussian_noise_has_the_asked_signal_to_noise_ratio():
    x = _signal()
    for snr in (0.0, 20.0, 40.0):
        noisy = _perturber("gaussian_noise", {"x": x}, snr_db=snr)("x", x, 0)
        per_sample = 10 * np.log10(np.mean(np.square(x.astype(np.float64)), axis=1) /
                                   np.mean(np.square((noisy - x).astype(np.float64)), axis=1))
        assert abs(float(np.mean(per_sample)) - snr) < 0.5 and noisy.dtype == np.float32


def test_dropout_replaces_the_asked_share_with_the_fill_value():
    x = _signal()
    out = _perturber("dropout", {"x": x}, rate=0.1, value=-7.0)("x", x, 0)
    dropped = out == -7.0
    assert abs(dropped.mean() - 0.1) < 0.005 and np.array_equal(out[~dropped], x[~dropped])


def test_quantization_rounds_to_the_levels_of_each_feature_range():
    x = _signal((3000, 5))
    x[:, 4] = 2.5  # a constant feature stays as it is
    out = _perturber("quantize", {"x": x}, bits=3)("x", x, 0)
    for j in range(4):
        low, high = float(x[:, j].min()), float(x[:, j].max())
        step = (high - low) / 7
        levels = np.unique(out[:, j])
        assert len(levels) <= 8
        assert np.allclose((levels - low) / step, np.round((levels - low) / step), atol=1e-3)
        assert np.max(np.abs(out[:, j] - x[:, j])) <= step / 2 + 1e-5
    assert np.array_equal(out[:, 4], x[:, 4])


def test_brightness_and_contrast_keep_the_observed_range():
    images = np.random.default_rng(2).uniform(0.2, 0.8, (50, 3, 8, 8)).astype(np.float32)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0.0, 1.0  # observed range 0..1
    bright = _perturber("brightness", {"img": images}, delta=0.1)("img", images, 0)
    assert np.allclose(bright[1:], images[1:] + 0.1) and bright.max() == 1.0
    flat = _perturber("contrast", {"img": images}, factor=0.5)("img", images, 0)
    assert np.allclose(flat[1:].mean(axis=(1, 2, 3)), images[1:].mean(axis=(1, 2, 3)), atol=1e-5)
    assert np.allclose(flat[1:].std(axis=(1, 2, 3)), 0.5 * images[1:].std(axis=(1, 2, 3)), atol=1e-5)


def test_draws_depend_on_the_sample_not_on_the_batch_nor_on_other_keys():
    x = _signal((300, 6))
    whole = _perturber("gaussian_noise", {"x": x}, snr_db=5)("x", x, 0)
    pieces = _perturber("gaussian_noise", {"x": x}, snr_db=5)
    batched = np.concatenate([pieces("x", x[s:s + 7], s) for s in range(0, len(x), 7)])
    assert np.array_equal(whole, batched)
    assert np.array_equal(_perturber("gaussian_noise", {"x": x}, snr_db=5)("other", x, 0), x)  # not perturbed
    other_index = perturb.Perturber(SimpleNamespace(kind="gaussian_noise", index=2, parameters={"snr_db": 5}),
                                    seed=0, columns={"x": x})("x", x, 0)
    assert not np.array_equal(whole, other_index)


# ---------------------------------------------------------------- hostile policies and inputs

def _policy_text(perturbations: str) -> str:
    return "version: 1\nperturbations:\n" + perturbations + \
        "rules:\n  - metric: accuracy\n    per: perturbation\n    max_drop: 0.02\n"


@pytest.mark.parametrize("text, line, needle", [
    (_policy_text("  - kind: blur\n"), 3, "must be one of gaussian_noise"),
    (_policy_text("  - kind: gaussian_noise\n    snr_db: .nan\n"), 4, "must be a finite number"),
    (_policy_text("  - {kind: dropout, rate: 2}\n"), 3, "must be a number > 0 and < 1"),
    (_policy_text("  - {kind: dropout, rate: 0.1, value: .nan}\n"), 3, "must be a finite number"),
    (_policy_text("  - {kind: dropout, rate: 0.1, value: 1.0e+308}\n"), 3, "<= 3.4e+38"),
    (_policy_text("  - {kind: quantize, bits: 0}\n"), 3, "must be an integer >= 1 and <= 16"),
    (_policy_text("  - {kind: quantize, bits: 8}\n  - {kind: quantize, bits: 8}\n"), 4, "as perturbations[0] is"),
    (_policy_text("  - {kind: quantize, bits: 8, name: a}\n  - {kind: dropout, rate: 0.1, name: a}\n"), 4,
     "is named 'a'"),
    (_policy_text("  - {kind: brightness, rate: 0.1}\n"), 3, "is not a parameter of brightness"),
    (_policy_text("  - {kind: contrast}\n"), 3, "missing its parameter 'factor'"),
    (_policy_text("  - {kind: gaussian_noise, snr_db: 90}\n"), 3, "<= 80"),
    ("version: 1\nrules:\n  - metric: accuracy\n    per: perturbation\n    max_drop: 0.02\n", 4,
     "the policy lists none"),
    ("version: 1\nperturbations: [{kind: quantize, bits: 8}]\nrules:\n  - metric: accuracy\n    per: perturbation\n"
     "    scope: gap\n    max: 0.1\n", 6, "under perturbations use scope"),
    ("version: 1\nperturbations: []\nrules:\n  - metric: accuracy\n    max_drop: 0.02\n", 2, "at least 1 item"),
])
def test_hostile_perturbations_name_the_line(tmp_path, text, line, needle):
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GateInputError) as info:
        load_policy(path)
    assert info.value.line == line and needle in info.value.message, info.value.render()


def test_a_hostile_policy_is_exit_2_through_the_cli(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(_policy_text("  - kind: gaussian_noise\n    snr_db: .nan\n"), encoding="utf-8")
    result = run_main("policy", "check", path)
    assert result.code == 2 and f"{path}:4:" in result.stderr, result


def test_lighting_on_a_flat_input_and_noise_on_token_ids_are_refused_with_the_line(run, tmp_path):
    data = {"path": str(run.dir / "data.npz"), "labels": "label"}
    policy = write_policy(tmp_path / "light.yaml", RULES, base=str(run.dir / "base.onnx"),
                          candidates={"same": str(run.dir / "same.onnx")}, data=data,
                          perturbations=[{"kind": "quantize", "bits": 8}, {"kind": "brightness", "delta": 0.1}])
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    line = next(i for i, t in enumerate(policy.read_text().splitlines(), 1) if "brightness" in t)
    assert result.code == 2 and f"{policy}:{line}:" in result.stderr and "image-shaped" in result.stderr, result
    table = np.zeros((N, 2), dtype=np.float32)
    lookup_model(tmp_path / "ids.onnx", table)
    write_npz(tmp_path / "ids.npz", np.zeros(N, dtype=np.int64))
    ids = write_policy(tmp_path / "ids.yaml", RULES, base="ids.onnx", candidates={"c": "ids.onnx"}, data="ids.npz",
                       perturbations=[{"kind": "gaussian_noise", "snr_db": 20}])
    result = run_main("check", "--policy", ids, "--out", tmp_path / "ids", "--no-progress")
    line = next(i for i, t in enumerate(ids.read_text().splitlines(), 1) if "gaussian_noise" in t)
    assert result.code == 2 and f"{ids}:{line}:" in result.stderr and "integer" in result.stderr, result


def test_each_per_rule_judges_its_own_kind_of_grouping_whatever_it_is_named():
    from gate.judge import _family
    from gate.measurements import CandidateMeasurements, GroupingResult, GroupResult, MetricResult, ModelInfo
    from gate.policy import Rule

    def grouping(name: str, kind: str) -> GroupingResult:
        return GroupingResult(name=name, kind=kind, columns=(), groups=(
            GroupResult(key=kind, n=50, metrics={"accuracy": MetricResult(metric="accuracy", n=50)}),))

    # data.groups columns named like the other kinds must not be taken for them
    cand = CandidateMeasurements(info=ModelInfo(name="c", path="c"), groupings=(
        grouping("perturbation", "group"), grouping("class", "group"), grouping("class", "class"),
        grouping("perturbation", "perturbation")))
    for per in ("group", "class", "perturbation"):
        rule = Rule(index=1, line=1, metric="accuracy", bound_kind="max_drop", bound=0.01, per=per)
        assert {key for _, key, *_ in _family(rule, cand)} == {per}, per
    old = GroupingResult.from_dict({"name": "class", "columns": ["class"], "groups": []})
    assert old.kind == "class"  # results written before `kind` existed


def test_results_and_report_with_perturbations_meet_their_schemas_and_read_back(run):
    from jsonschema import Draft202012Validator

    from gate import contract

    out = run.dir / "results.json"
    for schema, path in ((contract.RESULTS_SCHEMA, out), (contract.REPORT_SCHEMA, run.dir / "out" / "report.json")):
        validator = Draft202012Validator(json.loads(schema.read_text(encoding="utf-8")))
        assert [e.message for e in validator.iter_errors(json.loads(path.read_text(encoding="utf-8")))] == []
    grouping = _perturbation_grouping(_measured(run, "results"), "fragile")
    assert [g.key for g in grouping.groups] == [NOISE, DROPOUT, QUANTIZE]
    assert grouping.groups[1].parameters == {"kind": "dropout", "rate": 0.2, "value": 0.0, "seed": 0, "index": 2}
    assert contract.load_report_dir(run.dir / "out")[0]["verdict"] == "fail"


def test_observed_ranges_of_lazy_columns_are_the_arrays_own(monkeypatch):
    """quantize, brightness and contrast read the clean data's range per feature or overall; a column read
    lazily (the looks' reordering, a reshaped Fortran-order map) gives the same ranges, a chunk at a time."""
    from gate import columns
    from gate.views import Reordered

    monkeypatch.setattr(columns, "CHUNK_VALUES", 60)  # ten rows a chunk: many chunks
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1003, 6)).astype(np.float32)
    order = rng.permutation(len(x))
    for lazy in (Reordered(x, order), columns.Reshaped(np.asfortranarray(x), (6,))):
        for per_feature in (True, False):
            low, high = perturb.observed_range(lazy, per_feature=per_feature)
            want_low, want_high = perturb.observed_range(x, per_feature=per_feature)
            assert np.array_equal(low, want_low) and np.array_equal(high, want_high)
