"""Known answers for what the gate's outputs can be trusted on: one tally everywhere, per-class macro
metrics, NaN / Inf outputs, class-count mismatches, relative bounds, the Holm correction's wording and
a bad --out caught before any model runs.

Every model is a lookup table (conftest.lookup_model), so every prediction, and so every count, is
chosen here; every run is the real CLI in this process (run_main) or gate.github.main in this process.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import (candidate, logits_for, lookup_model, make_scenario, read_report, rule_of, run_main,
                      write_npz, write_policy)

N = 400


# ------------------------------------------------------------------------------------------
# helpers: reading every output
# ------------------------------------------------------------------------------------------

class _Tables(HTMLParser):
    """Every <table> of an HTML page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(text: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def html_candidate_counts(out: Path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (failed, warned, passed, undecided) from report.html's candidate table."""
    tables = html_tables((out / "report.html").read_text(encoding="utf-8"))
    [table] = [t for t in tables if t and t[0][:6] == ["verdict", "candidate", "failed", "warned", "passed",
                                                      "of which undecided"]]
    rows = {}
    for row in table[1:]:
        if row[1] == "base":
            continue
        rows[row[1]] = tuple(int(x) for x in row[2:6])
    return rows


def md_candidate_counts(out: Path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (failed, warned, passed, undecided) from report.md's candidate table."""
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    head = next(i for i, line in enumerate(lines)
                if line.startswith("| | candidate | failed | warned | passed | of which undecided |"))
    rows = {}
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[1]] = tuple(int(x) for x in cells[2:6])
    return rows


def cli_counts(stdout: str) -> dict[str, tuple[int, int, int, int]]:
    """name -> (failed, warned, passed, undecided) from the CLI summary lines."""
    found = {}
    for m in re.finditer(r"^  (PASS|FAIL)\s+(\S+): (\d+) passed, (\d+) failed, (\d+) warned"
                         r"(?: \((\d+) of them undecided\))?", stdout, re.M):
        found[m.group(2)] = (int(m.group(4)), int(m.group(5)), int(m.group(3)), int(m.group(6) or 0))
    return found


def json_counts(report: dict) -> dict[str, tuple[int, int, int, int]]:
    return {c["name"]: (c["tally"]["failed"], c["tally"]["warned"], c["tally"]["passed"], c["tally"]["inconclusive"])
            for c in report["candidates"]}


def run_action(tmp: Path, out: Path, code: int, fail_on: str) -> tuple[int, dict, list[str]]:
    """gate.github.main in this process: (its exit code, GITHUB_OUTPUT values, the lines it printed)."""
    from gate import github as gh

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "output.txt").write_text("")
    (tmp / "summary.md").write_text("")
    env = {"GITHUB_OUTPUT": str(tmp / "output.txt"), "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
           "GITHUB_WORKSPACE": str(tmp)}
    printed = io.StringIO()
    step = gh.main(["--report-dir", str(out), "--gate-exit", str(code), "--fail-on", fail_on], env, out=printed)
    return step, gh.parse_outputs((tmp / "output.txt").read_text()), printed.getvalue().splitlines()


# ------------------------------------------------------------------------------------------
# 1. one tally, read by every output
# ------------------------------------------------------------------------------------------

TALLY_RULES = [
    {"metric": "model_size_mb", "max": 100},  # 0: pass
    {"metric": "accuracy", "max_drop": 0.01},  # 1: fail (A drops 0.10, B 0.05)
    {"metric": "flip_rate", "max": 0.02, "severity": "warn"},  # 2: warn (beyond, severity warn)
    {"metric": "accuracy", "max_drop": 0.1},  # 3: A: exactly on the bound -> inconclusive (warn); B passes
    {"metric": "latency_p95_ms", "max": 10, "target": "phone"},  # 4: error: never measured on `phone`
    {"metric": "roc_auc", "max_drop": 0.5},  # 5: A passes; B gives labels only -> error
]
# (failed, warned, passed, undecided) and errors, by construction
EXPECTED = {"A": (2, 2, 2, 1), "B": (3, 1, 2, 0)}
EXPECTED_ERRORS = {"A": 1, "B": 2}


@pytest.fixture(scope="module")
def tally_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tally")
    s = make_scenario(N, 360, 40, 0, k=3, seed=1)
    lost = np.flatnonzero((s.base == s.y) & (s.cand != s.y))
    cand_b = s.base.copy()
    cand_b[lost[:20]] = s.cand[lost[:20]]  # B loses 20 of A's 40
    lookup_model(d / "base.onnx", logits_for(s.base, 3))
    lookup_model(d / "a.onnx", logits_for(s.cand, 3, seed=1))
    lookup_model(d / "b.onnx", logits_for(cand_b, 3, seed=2), kind="label")
    write_npz(d / "data.npz", s.y)
    cands = {"A": "a.onnx", "B": "b.onnx"}
    latency = {"targets": {"phone": {"threads": 1}}}
    runs = {}
    for name, rules in (("mixed", TALLY_RULES), ("warned", [TALLY_RULES[0], TALLY_RULES[2], TALLY_RULES[3]]),
                        ("clean", [TALLY_RULES[0]])):
        extra = {"latency": latency, "bootstrap": 100} if name == "mixed" else {}
        policy = write_policy(d / f"{name}.yaml", rules, candidates=cands, inconclusive="warn", **extra)
        out = d / f"out-{name}"
        runs[name] = (run_main("check", "--policy", policy, "--out", out), out)
    runs["tmp"] = d
    return runs


def test_the_mixed_policy_ends_as_constructed(tally_runs):
    result, out = tally_runs["mixed"]
    assert result.code == 1, result
    report = read_report(out)
    statuses = {c["name"]: [r["status"] for r in c["rules"]] for c in report["candidates"]}
    assert statuses == {"A": ["pass", "fail", "warn", "inconclusive", "error", "pass"],
                        "B": ["pass", "fail", "warn", "pass", "error", "error"]}, report["candidates"]
    a, b = candidate(report, "A"), candidate(report, "B")
    assert a["rules"][3]["blocking"] is False  # inconclusive: warn
    assert "roc_auc could not be measured" in b["rules"][5]["reason"], b["rules"][5]
    assert "target 'phone' was not measured" in a["rules"][4]["reason"], a["rules"][4]


def test_every_output_reads_the_same_tally(tally_runs):
    result, out = tally_runs["mixed"]
    report = read_report(out)
    # report.json per candidate
    assert json_counts(report) == EXPECTED
    for c in report["candidates"]:
        assert c["tally"]["errors"] == EXPECTED_ERRORS[c["name"]]
        assert c["tally"]["rules"] == len(TALLY_RULES)
    # report.json top level: the sum
    top = report["tally"]
    assert (top["failed"], top["warned"], top["passed"], top["inconclusive"], top["errors"]) == (5, 3, 4, 1, 3)
    # the CLI summary
    assert cli_counts(result.stdout) == EXPECTED, result.stdout
    # report.md and report.html candidate tables
    assert md_candidate_counts(out) == EXPECTED
    assert html_candidate_counts(out) == EXPECTED
    # junit.xml: failures = failed - errors, errors = errors
    root = ET.parse(out / "junit.xml").getroot()
    assert (int(root.get("failures")), int(root.get("errors"))) == (top["failed"] - top["errors"], top["errors"])
    assert int(root.get("tests")) == 2 * len(TALLY_RULES)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"A", "B"}
    for name, suite in suites.items():
        failed, warned, passed, _ = EXPECTED[name]
        errors = EXPECTED_ERRORS[name]
        assert (int(suite.get("failures")), int(suite.get("errors"))) == (failed - errors, errors)
        assert len(suite.findall("testcase/failure")) == failed - errors
        assert len(suite.findall("testcase/error")) == errors
        assert len(suite.findall("testcase/system-out")) == warned


@pytest.mark.parametrize("which", ["mixed", "warned", "clean"])
def test_the_action_reads_the_same_tally(tally_runs, which):
    result, out = tally_runs[which]
    report = read_report(out)
    t = report["tally"]
    if which == "mixed":
        assert result.code == 1 and t["failed"] and t["warned"]
    elif which == "warned":
        # the step must fail on warnings alone, so the gate itself passed here
        assert result.code == 0 and report["verdict"] == "pass" and t["failed"] == 0 and t["warned"] == 3, result
    else:
        assert result.code == 0 and t["failed"] == 0 and t["warned"] == 0, result
    for fail_on in ("warn", "fail"):
        step, outputs, printed = run_action(tally_runs["tmp"] / f"gh-{which}-{fail_on}", out, result.code, fail_on)
        assert (int(outputs["passed"]), int(outputs["failed"]), int(outputs["warned"])) == \
            (t["passed"], t["failed"], t["warned"])
        assert outputs["failed-rules"].splitlines() == t["failed_rules"]
        blocked = t["failed"] > 0 or (fail_on == "warn" and t["warned"] > 0)
        assert step == (1 if blocked else 0), (which, fail_on, printed)
        warnings = [line for line in printed if line.startswith("::warning")]
        errors = [line for line in printed if line.startswith("::error")]
        assert (len(errors), len(warnings)) == (t["failed"], t["warned"]), printed
        assert f"{t['passed']} passed, {t['failed']} failed, {t['warned']} warned" in "\n".join(printed)


# ------------------------------------------------------------------------------------------
# 2. per-class macro metrics
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def per_class_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("perclass")
    y = np.repeat(np.arange(3), 100).astype(np.int64)
    base = y.copy()
    cand = y.copy()
    cand[150] = 0  # one sample of class 1 now reads class 0
    lookup_model(d / "base.onnx", logits_for(base, 3))
    lookup_model(d / "cand.onnx", logits_for(cand, 3, seed=1))
    write_npz(d / "data.npz", y)
    rules = [{"metric": "recall_macro", "per": "class", "max_drop": 0.5},
             {"metric": "f1_macro", "per": "class", "max_drop": 0.5},
             {"metric": "recall_macro", "max_drop": 0.5},
             {"metric": "f1_macro", "max_drop": 0.5}]
    # point values only are checked here: few resamples keep it quick
    policy = write_policy(d / "policy.yaml", rules, candidates={"c": "cand.onnx"}, bootstrap=200)
    result = run_main("check", "--policy", policy, "--out", d / "out")
    # every rule passes (max_drop 0.5): any other exit is itself a finding, shown with the report's rules
    assert (d / "out" / "report.json").is_file(), result
    cand = candidate(read_report(d / "out"), "c")
    assert result.code == 0, (result, [(r["rule"], r["status"], r["reason"]) for r in cand["rules"]])
    return cand


def _per_class(rule: dict) -> dict[str, dict]:
    return {e["group"]: e for e in rule["groups"]}


def _grouped(cand: dict, metric: str) -> dict:
    [rule] = [r for r in cand["rules"] if r["metric"] == metric and r["groups"]]
    return rule


def _overall(cand: dict, metric: str) -> dict:
    [rule] = [r for r in cand["rules"] if r["metric"] == metric and not r["groups"]]
    return rule


def test_recall_macro_per_class_is_each_class_own_recall(per_class_report):
    groups = _per_class(_grouped(per_class_report, "recall_macro"))
    assert sorted(groups) == ["0", "1", "2"], groups
    for key in "012":
        assert groups[key]["n"] == 100
        assert groups[key]["base"] == pytest.approx(1.0, abs=1e-12)
    assert groups["1"]["candidate"] == pytest.approx(0.99, abs=1e-12)
    # class 0 gained a false positive from class 1, but its recall over its own samples is untouched
    assert groups["0"]["candidate"] == pytest.approx(1.0, abs=1e-12)
    assert groups["2"]["candidate"] == pytest.approx(1.0, abs=1e-12)
    # observed is the drop (base - candidate)
    assert groups["1"]["observed"] == pytest.approx(0.01, abs=1e-12)
    assert groups["0"]["observed"] == pytest.approx(0.0, abs=1e-12)
    assert groups["2"]["observed"] == pytest.approx(0.0, abs=1e-12)


def test_recall_macro_overall_drops_by_a_third_of_one_class_change(per_class_report):
    rule = _overall(per_class_report, "recall_macro")
    assert rule["base"] == pytest.approx(1.0, abs=1e-12)
    assert rule["candidate"] == pytest.approx((1.0 + 0.99 + 1.0) / 3, abs=1e-12)
    assert rule["observed"] == pytest.approx(0.01 / 3, abs=1e-12)


def test_f1_macro_per_class_by_hand(per_class_report):
    groups = _per_class(_grouped(per_class_report, "f1_macro"))
    # slice of class 1: 99 right, 1 read as class 0. Over the slice's own class (1):
    # precision 99/99 = 1, recall 99/100, F1 = 2 * 0.99 / 1.99
    f1_class1 = 2 * 1.0 * 0.99 / (1.0 + 0.99)
    assert groups["1"]["candidate"] == pytest.approx(f1_class1, abs=1e-12)
    assert groups["1"]["observed"] == pytest.approx(1.0 - f1_class1, abs=1e-12)
    # slices of class 0 and 2: every sample right, no false positive inside the slice
    for key in "02":
        assert groups[key]["base"] == pytest.approx(1.0, abs=1e-12)
        assert groups[key]["candidate"] == pytest.approx(1.0, abs=1e-12)
        assert groups[key]["observed"] == pytest.approx(0.0, abs=1e-12)
    # over all samples (scikit-learn's definition): class 0 precision 100/101, class 1 recall 99/100
    f1_0 = 2 * (100 / 101) * 1.0 / (100 / 101 + 1.0)
    overall = _overall(per_class_report, "f1_macro")
    assert overall["candidate"] == pytest.approx((f1_0 + f1_class1 + 1.0) / 3, abs=1e-12)
    assert overall["observed"] == pytest.approx(1.0 - (f1_0 + f1_class1 + 1.0) / 3, abs=1e-12)


# ------------------------------------------------------------------------------------------
# 3. NaN and Inf outputs
# ------------------------------------------------------------------------------------------

NAN_AT = [3, 17, 256]
NAN_RULES = [{"metric": "accuracy", "max_drop": 0.05},
             {"metric": "flip_rate", "max": 0.1},
             {"metric": "kl_divergence", "max": 1.0},
             {"metric": "accuracy", "per": "class", "max_drop": 0.2},
             {"metric": "model_size_mb", "max": 100}]


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("nan")
    s = make_scenario(N, 360, 0, 0, k=3, seed=3)
    table = logits_for(s.base, 3)
    lookup_model(d / "base.onnx", table)
    nan = table.copy()
    nan[NAN_AT, 1] = np.nan
    lookup_model(d / "nan.onnx", nan)
    lookup_model(d / "inf.onnx", np.full_like(table, np.inf))
    lookup_model(d / "clean.onnx", logits_for(s.base, 3, seed=7))
    write_npz(d / "data.npz", s.y)
    policy = write_policy(d / "policy.yaml", NAN_RULES,
                          candidates={"nan": "nan.onnx", "inf": "inf.onnx", "clean": "clean.onnx"})
    result = run_main("check", "--policy", policy, "--out", d / "out")
    return result, d / "out"


def test_nan_outputs_fail_and_name_the_samples(nan_run):
    result, out = nan_run
    assert result.code == 1, result
    report = read_report(out)
    assert report["verdict"] == "fail"
    nan = candidate(report, "nan")
    assert nan["verdict"] == "fail"
    assert nan["nonfinite"] == {"count": 3, "n": N, "first": NAN_AT}
    for r in nan["rules"]:
        if r["metric"] == "model_size_mb":
            assert r["status"] == "pass", r  # the file is still judged
        else:
            assert r["status"] == "error" and r["blocking"], r
            assert "3 of 400" in r["reason"] and "3, 17, 256" in r["reason"], r["reason"]


def test_all_inf_outputs_fail(nan_run):
    result, out = nan_run
    inf = candidate(read_report(out), "inf")
    assert inf["verdict"] == "fail"
    assert inf["nonfinite"]["count"] == N and inf["nonfinite"]["n"] == N
    assert inf["nonfinite"]["first"] == list(range(len(inf["nonfinite"]["first"])))
    assert len(inf["nonfinite"]["first"]) >= 1
    for r in inf["rules"]:
        if r["metric"] == "model_size_mb":
            assert r["status"] == "pass", r
        else:
            assert r["status"] == "error", r
            assert "400 of 400" in r["reason"] and "first sample indices: 0, 1, 2" in r["reason"], r["reason"]


def test_a_clean_candidate_alongside_still_passes(nan_run):
    _, out = nan_run
    clean = candidate(read_report(out), "clean")
    assert clean["verdict"] == "pass" and not clean.get("nonfinite")
    assert [r["status"] for r in clean["rules"]] == ["pass"] * len(NAN_RULES), clean["rules"]


def test_reports_say_nan_or_infinite(nan_run):
    _, out = nan_run
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "NaN or infinite outputs" in md and "NaN or infinite outputs" in html
    assert "3 of 400 samples (first sample indices: 3, 17, 256)" in md
    assert "3 of 400 samples (first sample indices: 3, 17, 256)" in html


def test_a_base_with_a_nan_is_an_input_error(tmp_path):
    s = make_scenario(N, 360, 0, 0, k=3, seed=3)
    table = logits_for(s.base, 3)
    bad = table.copy()
    bad[123, 0] = np.nan
    lookup_model(tmp_path / "base.onnx", bad)
    lookup_model(tmp_path / "cand.onnx", table)
    write_npz(tmp_path / "data.npz", s.y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}],
                          candidates={"c": "cand.onnx"})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out")
    assert result.code == 2, result
    assert "base.onnx" in result.stderr and "123" in result.stderr, result
    assert "NaN or infinite" in result.stderr, result
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------
# 4. class-count mismatch
# ------------------------------------------------------------------------------------------

def test_a_candidate_with_more_classes_is_an_input_error(tmp_path):
    s = make_scenario(N, 360, 10, 0, k=3, seed=4)
    lookup_model(tmp_path / "base.onnx", logits_for(s.base, 3))
    lookup_model(tmp_path / "four.onnx", logits_for(s.cand, 4))
    lookup_model(tmp_path / "ok.onnx", logits_for(s.cand, 3, seed=2))
    write_npz(tmp_path / "data.npz", s.y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"four": "four.onnx", "ok": "ok.onnx"})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out")
    assert result.code == 2, result
    assert "gives 4 class scores" in result.stderr, result
    assert re.search(r"base \S*base\.onnx gives 3\b", result.stderr), result
    assert "four.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    report = read_report(tmp_path / "out")
    four = candidate(report, "four")
    assert four["verdict"] == "fail" and "gives 4 class scores" in (four["error"] or "")
    ok = candidate(report, "ok")
    assert ok["error"] is None and ok["verdict"] == "pass", ok
    assert rule_of(ok, "accuracy")["observed"] == pytest.approx(10 / N, abs=1e-12)


# ------------------------------------------------------------------------------------------
# 5. relative bounds never reach below -100%
# ------------------------------------------------------------------------------------------

_CI = re.compile(r"CI (-?\d+(?:\.\d+)?)%? to (-?\d+(?:\.\d+)?)%?")


def _shown_interval(reason: str) -> tuple[float, float] | None:
    m = _CI.search(reason)
    return (float(m.group(1)), float(m.group(2))) if m else None


@pytest.fixture(scope="module")
def better_log_loss(tmp_path_factory):
    """A base that is unsure (small margins, wrong on 100 of 400) and a candidate right and sure everywhere."""
    d = tmp_path_factory.mktemp("relative")
    s = make_scenario(N, 300, 0, 100, k=3, seed=5)
    lookup_model(d / "base.onnx", logits_for(s.base, 3, margin=0.2))
    lookup_model(d / "cand.onnx", logits_for(s.y, 3, seed=1, margin=8.0))
    write_npz(d / "data.npz", s.y)
    policy = write_policy(d / "policy.yaml", [{"metric": "log_loss", "max_relative_increase": 0.05}],
                          candidates={"c": "cand.onnx"})
    return d, policy


def _assert_relative_within_minus_one(rule: dict) -> None:
    assert rule["status"] == "pass", rule
    low, high = rule["interval"]
    assert -1.0 <= low <= high <= 0.0, rule
    assert -1.0 <= rule["observed"] < -0.9, rule  # much better: close to -100%
    shown = _shown_interval(rule["reason"])
    assert shown is not None, rule["reason"]
    scale = 100.0 if "%" in rule["reason"].split("CI", 1)[1].split(")", 1)[0] else 1.0
    assert shown[0] >= -1.0 * scale and shown[1] >= -1.0 * scale, rule["reason"]


def test_a_much_better_candidate_changes_log_loss_by_no_less_than_minus_100_percent(better_log_loss):
    d, policy = better_log_loss
    result = run_main("check", "--policy", policy, "--out", d / "out")
    assert result.code == 0, result
    _assert_relative_within_minus_one(rule_of(candidate(read_report(d / "out"), "c"), "log_loss"))


def test_relative_bound_without_a_ratio_interval_is_held_at_minus_100_percent(better_log_loss):
    # a results file without the paired ratio interval (older files): judged on delta / |base|, whose
    # low end here is below -1 (the delta's interval reaches past the base); it must be held at -1
    d, policy = better_log_loss
    result = run_main("measure", "--policy", policy, "--out", d / "results.json")
    assert result.code == 0, result
    doc = json.loads((d / "results.json").read_text(encoding="utf-8"))
    [cand] = doc["gate_results"]["candidates"]
    m = cand["metrics"]["log_loss"]
    assert m["delta_interval"]["low"] / m["base"] < -1.0, m  # the unclamped ratio would go below -100%
    m["relative_interval"] = None
    (m.get("evidence") or {}).pop("relative_grid", None)
    (d / "old.json").write_text(json.dumps(doc), encoding="utf-8")
    result = run_main("judge", d / "old.json", "--policy", policy, "--out", d / "judged")
    assert result.code == 0, result
    rule = rule_of(candidate(read_report(d / "judged"), "c"), "log_loss")
    _assert_relative_within_minus_one(rule)
    assert rule["interval"][0] == -1.0, rule


# ------------------------------------------------------------------------------------------
# 6. a subgroup held undecided by the Holm correction
# ------------------------------------------------------------------------------------------

def test_holm_wording_through_the_cli(tmp_path):
    # 20 groups of 100; g00 loses 9 of its 100 (b=9, c=0): beyond 0.04 on its own at 95%, but not
    # after correcting for 20 tests; the other 19 lose nothing, and at 0.04 their intervals (+-0.037) pass
    n_groups, size = 20, 100
    y = np.zeros(n_groups * size, dtype=np.int64)
    group = np.repeat([f"g{i:02d}" for i in range(n_groups)], size)
    cand = y.copy()
    cand[:9] = 1
    lookup_model(tmp_path / "base.onnx", logits_for(y, 2))
    lookup_model(tmp_path / "cand.onnx", logits_for(cand, 2, seed=1))
    write_npz(tmp_path / "data.npz", y, g=group)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "per": "group", "max_drop": 0.04}],
                          candidates={"c": "cand.onnx"}, data={"path": "data.npz", "groups": ["g"]})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out")
    assert result.code == 1, result  # inconclusive: fail by default
    rule = rule_of(candidate(read_report(tmp_path / "out"), "c"), "accuracy")
    assert rule["status"] == "inconclusive" and rule["blocking"], rule
    groups = {e["group"]: e for e in rule["groups"]}
    assert groups["g00"]["status"] == "inconclusive"
    assert all(groups[f"g{i:02d}"]["status"] == "pass" for i in range(1, n_groups))
    reason = groups["g00"]["reason"]
    # its own interval, beyond the bound, and that the correction decided
    assert "(95% CI 0.0481 to 0.1623), beyond the bound" in reason, reason
    assert "but not after the holm correction over 20 tests" in reason, reason
    assert groups["g00"]["interval"] == pytest.approx([0.0481, 0.1623], abs=1e-4)
    # the headline is the undecided subgroup, never a passing one
    assert rule["reason"].startswith("worst inconclusive of 20 subgroup test(s): g=g00:"), rule["reason"]
    assert not re.search(r"g=g(0[1-9]|1\d)\b", rule["reason"]), rule["reason"]
    assert rule["observed"] == pytest.approx(0.09, abs=1e-12)
    assert rule["interval"] == groups["g00"]["interval"]


# ------------------------------------------------------------------------------------------
# 7. a bad --out is caught before any model runs
# ------------------------------------------------------------------------------------------

@pytest.fixture
def no_measuring(monkeypatch, tmp_path):
    import gate.pipeline

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was run although --out was wrong")

    monkeypatch.setattr(gate.pipeline, "measure", refuse)
    s = make_scenario(50, 40, 0, 0, k=3, seed=6)
    lookup_model(tmp_path / "base.onnx", logits_for(s.base, 3))
    lookup_model(tmp_path / "cand.onnx", logits_for(s.base, 3, seed=1))
    write_npz(tmp_path / "data.npz", s.y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}],
                          candidates={"c": "cand.onnx"})
    return policy, calls


def test_check_out_a_regular_file(no_measuring, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    policy, calls = no_measuring
    result = run_main("check", "--policy", policy, "--out", target)
    assert result.code == 2, result
    assert "report.txt" in result.stderr and "not a folder" in result.stderr, result
    assert "Traceback" not in result.stderr and "a model was run" not in result.stderr + result.stdout
    assert calls == [] and target.read_text() == "keep me"


def test_measure_out_a_directory(no_measuring, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    policy, calls = no_measuring
    result = run_main("measure", "--policy", policy, "--out", folder)
    assert result.code == 2, result
    assert "results" in result.stderr and "folder" in result.stderr, result
    assert "Traceback" not in result.stderr and "a model was run" not in result.stderr + result.stdout
    assert calls == [] and list(folder.iterdir()) == []
