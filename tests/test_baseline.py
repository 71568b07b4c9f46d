"""Blessed baselines: `gate bless` and rules with `vs: baseline` / `vs: first_baseline`, with known answers.

Every model is a lookup table (tests/conftest.py), so each release is worse than the one before by an exact
number of samples, and the paired comparison with a blessed release is checked against those counts.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import candidate, logits_for, lookup_model, read_report, rule_of, run_main, write_npz, write_policy

N, K = 2000, 3
STEP = 20  # each release loses 20 more samples (one point of accuracy) than the one before it


def _predictions(y: np.ndarray, lost: int) -> np.ndarray:
    """Right on every sample but the first `lost` (in a fixed order), which get the next class."""
    pred = y.copy()
    pred[:lost] = (y[:lost] + 1) % K
    return pred


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Path:
    """base (perfect), r1..r4 losing 20, 40, 60, 0 samples; data of 2,000 samples; r1 blessed as release 1."""
    root = tmp_path_factory.mktemp("baseline")
    y = np.random.default_rng(3).integers(0, K, size=N).astype(np.int64)
    write_npz(root / "data.npz", y)
    lookup_model(root / "base.onnx", logits_for(y, K, seed=1))
    for name, lost in (("r1", STEP), ("r2", 2 * STEP), ("r3", 3 * STEP), ("good", 0)):
        lookup_model(root / f"{name}.onnx", logits_for(_predictions(y, lost), K, seed=2))
    first = write_policy(root / "check.yaml", [{"metric": "accuracy", "max_drop": 0.05}], candidates={"r1": "r1.onnx"})
    result = run_main("check", "--policy", first, "--out", root / "report-r1", "--no-progress")
    assert result.code == 0, result
    result = run_main("bless", root / "report-r1", "--candidate", "r1", "--baseline", root / "baseline",
                      "--no-progress")
    assert result.code == 0, result
    return root


def _against(root: Path, name: str, rules: list[dict], out: str, **top) -> tuple[dict, int]:
    policy = write_policy(root / f"{out}.yaml", rules, candidates={name: f"{name}.onnx"},
                          baseline=top.pop("baseline", "baseline"), **top)
    result = run_main("check", "--policy", policy, "--out", root / out, "--no-progress")
    assert "Traceback" not in result.stderr, result
    return candidate(read_report(root / out), name), result.code


def test_bless_records_the_release_and_its_outputs(releases):
    doc = json.loads((releases / "baseline" / "blessings.json").read_text())
    [record] = doc["blessings"]
    report = read_report(releases / "report-r1")
    r1 = candidate(report, "r1")
    assert record["index"] == 1 and record["name"] == "r1" and not record["forced"] and record["reason"] is None
    assert record["model_sha256"] == r1["model"]["sha256"]
    assert record["data_sha256"] == report["provenance"]["data"]["sha256"] and record["n_samples"] == N
    assert record["metrics"]["accuracy"] == pytest.approx(1 - STEP / N)
    with np.load(releases / "baseline" / record["outputs"], allow_pickle=False) as npz:
        assert int((npz["pred"] != np.load(releases / "data.npz")["label"]).sum()) == STEP


def test_a_release_worse_by_exactly_k_samples_is_judged_paired_against_the_baseline(releases):
    rules = [{"metric": "accuracy", "max_drop": 0.005, "vs": "baseline"},
             {"metric": "flip_rate", "max": 0.05, "vs": "baseline"}]
    cand, code = _against(releases, "r2", rules, "vs-r2")
    acc = rule_of(cand, "accuracy")
    # r2 loses 40 samples, r1 lost 20 of those same samples: paired, 20 more losses and no gains
    assert acc["observed"] == pytest.approx(STEP / N) and acc["base"] == pytest.approx(1 - STEP / N)
    assert acc["status"] == "fail" and code == 1
    assert "against release 1 (r1" in acc["reason"]
    assert rule_of(cand, "flip_rate")["observed"] == pytest.approx(STEP / N)
    assert cand["releases"]["baseline"]["release"]["name"] == "r1"
    assert acc["vs"] == "baseline" and "vs baseline" in acc["rule"]
    html = (releases / "vs-r2" / "report.html").read_text()
    summary = html.split("Against the last release")[1].split("</section>")[0]
    assert "r2" in summary and "1: r1" in summary and "-0.0100" in summary


def test_the_blessed_model_itself_is_exactly_equal_to_the_baseline(releases):
    cand, code = _against(releases, "r1", [{"metric": "accuracy", "max_drop": 0.0, "vs": "baseline"}], "vs-r1")
    acc = rule_of(cand, "accuracy")
    assert code == 0 and acc["status"] == "pass" and acc["observed"] == 0 and acc["interval"] == [0, 0]


def test_cumulative_drift_fails_against_the_first_release_though_each_step_passes(tmp_path, releases):
    root = tmp_path / "drift"
    shutil.copytree(releases, root)
    for previous, name in (("r1", "r2"), ("r2", "r3")):
        rules = [{"metric": "accuracy", "max_drop": 0.02, "vs": "baseline"}]
        cand, code = _against(root, name, rules, f"step-{name}")
        assert code == 0 and rule_of(cand, "accuracy")["status"] == "pass", cand
        assert cand["releases"]["baseline"]["release"]["name"] == previous
        result = run_main("bless", root / f"step-{name}", "--candidate", name, "--baseline", root / "baseline",
                          "--no-progress")
        assert result.code == 0, result
    # one more point below r3: the step passes like every step before it, the drift of 3 points does not
    rules = [{"metric": "accuracy", "max_drop": 0.02, "vs": "baseline"},
             {"metric": "accuracy", "max_drop": 0.02, "vs": "first_baseline", "name": "drift since the first"}]
    y = np.load(root / "data.npz")["label"]
    lookup_model(root / "r4.onnx", logits_for(_predictions(y, 4 * STEP), K, seed=2))
    cand, code = _against(root, "r4", rules, "vs-r4")
    step, drift = cand["rules"]
    assert step["observed"] == pytest.approx(STEP / N) and step["status"] == "pass"
    assert drift["observed"] == pytest.approx(3 * STEP / N) and drift["status"] == "fail"
    assert "release 1 (r1" in drift["reason"] and code == 1


def test_no_blessed_release_yet_is_reported_not_fatal_unless_required(tmp_path, releases):
    rules = [{"metric": "accuracy", "max_drop": 0.01, "vs": "baseline"}, {"metric": "accuracy", "max_drop": 0.05}]
    shutil.copy(releases / "good.onnx", tmp_path / "good.onnx")
    shutil.copy(releases / "data.npz", tmp_path / "data.npz")
    shutil.copy(releases / "base.onnx", tmp_path / "base.onnx")
    cand, code = _against(tmp_path, "good", rules, "none", baseline="empty")
    first = cand["rules"][0]
    assert code == 0 and first["status"] == "warn" and not first["blocking"]
    assert "no blessed release yet" in first["reason"]
    cand, code = _against(tmp_path, "good", rules, "required", baseline={"path": "empty", "required": True})
    assert code == 1 and cand["rules"][0]["status"] == "error" and cand["rules"][0]["blocking"]


def test_changed_outputs_are_never_trusted(tmp_path, releases):
    root = tmp_path / "tampered"
    shutil.copytree(releases, root)
    record = json.loads((root / "baseline" / "blessings.json").read_text())["blessings"][0]
    path = root / "baseline" / record["outputs"]
    arrays = dict(np.load(path))
    arrays["pred"] = np.load(root / "data.npz")["label"]  # a perfect "release": every candidate would look worse
    np.savez(path, **arrays)
    cand, code = _against(root, "good", [{"metric": "accuracy", "max_drop": 0.01, "vs": "baseline"}], "t")
    rule = cand["rules"][0]
    assert code == 1 and rule["status"] == "error" and "do not match the sha256" in rule["reason"]
    (root / "baseline" / "blessings.json").write_text('{"format": 1, "blessings": [{"index": "one"}]}')
    cand, code = _against(root, "good", [{"metric": "accuracy", "max_drop": 0.01, "vs": "baseline"}], "t2")
    assert code == 1 and "damaged" in cand["rules"][0]["reason"]


def test_other_data_leaves_the_baseline_comparison_undecided(tmp_path, releases):
    root = tmp_path / "other"
    shutil.copytree(releases, root)
    y = np.load(root / "data.npz")["label"]
    write_npz(root / "data.npz", y, note=np.zeros(N))  # the same samples, but not the same file
    cand, code = _against(root, "good", [{"metric": "accuracy", "max_drop": 0.01, "vs": "baseline"}], "o",
                          inconclusive="warn")
    rule = cand["rules"][0]
    assert rule["status"] == "inconclusive" and "other calibration data" in rule["reason"] and code == 0


def test_bless_refuses_what_was_not_judged_or_did_not_pass(tmp_path, releases):
    root = tmp_path / "refuse"
    shutil.copytree(releases, root)
    policy = write_policy(root / "strict.yaml", [{"metric": "accuracy", "max_drop": 0.001}],
                          candidates={"r3": "r3.onnx"})
    assert run_main("check", "--policy", policy, "--out", root / "rep", "--no-progress").code == 1
    bless = ("bless", root / "rep", "--candidate", "r3", "--baseline", root / "baseline", "--no-progress")
    refused = run_main(*bless)
    assert refused.code == 2 and "did not pass" in refused.stderr and "--force" in refused.stderr
    assert run_main(*bless, "--force").code == 2  # a reason is required
    unknown = run_main("bless", root / "rep", "--candidate", "r33", "--baseline", root / "baseline")
    assert unknown.code == 2 and "'r3'" in unknown.stderr
    shutil.copy(root / "r2.onnx", root / "r3.onnx")  # the file changed since it was judged
    swapped = run_main(*bless, "--force", "--reason", "hotfix")
    assert swapped.code == 2 and "not the model the report judged" in swapped.stderr
    lookup_model(root / "r3.onnx", logits_for(_predictions(np.load(root / "data.npz")["label"], 3 * STEP), K, seed=2))
    forced = run_main(*bless, "--force", "--reason", "hotfix for customer X")
    assert forced.code == 0, forced
    record = json.loads((root / "baseline" / "blessings.json").read_text())["blessings"][-1]
    assert record["index"] == 2 and record["forced"] and record["reason"] == "hotfix for customer X"
    assert run_main("bless", root / "nowhere", "--candidate", "r3", "--baseline", root / "baseline").code == 2
    (root / "afile").write_text("x")
    assert run_main("bless", root / "rep", "--candidate", "r3", "--baseline", root / "afile").code == 2


@pytest.mark.parametrize("rule, problem", [
    ({"metric": "accuracy", "max_drop": 0.01, "vs": "release"}, "must be one of"),
    ({"metric": "kl_divergence", "max": 0.01, "vs": "baseline"}, "cannot be judged against a blessed release"),
    ({"metric": "accuracy", "max_drop": 0.01, "vs": "baseline", "per": "class"}, "drop per"),
])
def test_policy_refuses_rules_a_baseline_cannot_judge(tmp_path, rule, problem):
    policy = write_policy(tmp_path / "p.yaml", [rule], candidates={"c": "c.onnx"}, baseline="b")
    result = run_main("policy", "check", policy)
    assert result.code == 2 and problem in result.stderr and re.search(r"p\.yaml:\d+: rules\[1\]", result.stderr), result
    no_baseline = write_policy(tmp_path / "q.yaml", [{"metric": "accuracy", "max_drop": 0.01, "vs": "baseline"}])
    result = run_main("policy", "check", no_baseline)
    assert result.code == 2 and "names no baseline" in result.stderr


def test_bless_refuses_an_edited_report_and_two_blessings_at_once_both_land(tmp_path, releases):
    root = tmp_path / "edited"
    shutil.copytree(releases, root)
    report = root / "report-r1" / "report.json"
    doc = json.loads(report.read_text())
    doc["candidates"][0]["verdict"] = "pass"  # any edit: the manifest's hash no longer matches
    doc["candidates"][0]["model"]["path"] = str(root / "r3.onnx")
    report.write_text(json.dumps(doc))
    refused = run_main("bless", root / "report-r1", "--candidate", "r1", "--baseline", root / "b2")
    assert refused.code == 2 and "not as the gate wrote it" in refused.stderr and "report.json" in refused.stderr
    # concurrent blessings (two release jobs): each appends its own record under the folder's lock
    import threading

    from gate.baseline import append_blessing, read_blessings
    from gate.predictions import Predictions

    record = json.loads((releases / "baseline" / "blessings.json").read_text())["blessings"][0]
    fields = {k: record[k] for k in ("name", "model_sha256", "model_path", "data_sha256", "n_samples", "task",
                                     "policy_sha256", "gate_version", "blessed_at", "report_sha256", "verdict",
                                     "forced", "reason", "metrics")}
    pred = Predictions(kind="logits", pred=np.zeros(N, dtype=np.int64), values=None, true_prob=None, true_rank=None,
                       probs=None, n_classes=K)
    threads = [threading.Thread(target=append_blessing, args=(root / "many", fields, pred)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [b.index for b in read_blessings(root / "many")] == [1, 2, 3, 4, 5, 6]


def test_a_bound_against_the_release_names_the_release(releases):
    cand, _ = _against(releases, "r2", [{"metric": "accuracy", "max_drop": 0.005, "vs": "baseline"}], "bound")
    assert "release 1" in cand["rules"][0]["bound_text"] and "base" not in cand["rules"][0]["bound_text"]


def test_a_release_is_compared_on_the_samples_a_sequential_look_saw(releases):
    """Sequential looks read the samples in one random order and may stop early: the release's outputs, stored
    in the file's order, are taken at the samples the look saw. good is right where r1 (blessed) is wrong on
    its first 20 samples, so the observed change is exactly the share of those 20 among the samples seen."""
    from gate.measure.sequential import look_order

    rules = [{"metric": "accuracy", "max_drop": 0.03, "vs": "baseline"}]
    cand, code = _against(releases, "good", rules, "seq-good", sequential=True)
    report = read_report(releases / "seq-good")
    seq = report["provenance"]["sequential"]
    rule = rule_of(cand, "accuracy")
    assert code == 0 and rule["status"] == "pass" and seq["stopped_early"], rule
    seen = look_order(N, 0)[:seq["samples"]]
    gained = int((seen < STEP).sum())  # the samples where r1 is wrong and good is right
    measured = cand["releases"]["baseline"]["metrics"]["accuracy"]
    assert measured["n"] == seq["samples"] and measured["delta"] == pytest.approx(gained / seq["samples"])
    worse, code = _against(releases, "r3", [{"metric": "accuracy", "max_drop": 0.005, "vs": "baseline"}], "seq-r3",
                           sequential=True)
    assert code == 1 and rule_of(worse, "accuracy")["status"] == "fail"
