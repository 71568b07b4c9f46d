"""The CLI contract with CI: exit codes, messages that name the file and the fix, and the reports.

The tests drive the real command, gate.cli.main, in this process (conftest.run_main: no terminal, output
captured, CI variables removed) on tiny lookup-table ONNX models built by conftest.py. A subprocess
(`python -m gate ...`) is kept where the process is what is tested: the module entry's exit status and a
reader that closes the pipe early.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import (ROOT, candidate, logits_for, lookup_model, make_scenario, read_report, rule_of, run_cli,
                      run_main, write_csv, write_npz, write_policy)

N = 300


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base (right on 270 of 300), `same` (identical), `worse` (loses 15), a float-input base, data."""
    d = tmp_path_factory.mktemp("cli")
    same = make_scenario(N, 270, 0, 0, k=3, seed=1)
    worse = make_scenario(N, 270, 15, 0, k=3, seed=1)
    base_table = logits_for(same.base, 3, seed=10)
    lookup_model(d / "base.onnx", base_table)
    lookup_model(d / "same.onnx", base_table)
    lookup_model(d / "worse.onnx", logits_for(worse.cand, 3, seed=11))
    lookup_model(d / "fbase.onnx", base_table, input_dtype="float32")
    lookup_model(d / "fsame.onnx", base_table, input_dtype="float32")
    write_npz(d / "data.npz", same.y)
    # the same samples with other labels: "measured on different data"
    write_npz(d / "other.npz", (same.y + 1) % 3)
    return d


def no_traceback(result):
    assert "Traceback" not in result.stderr, result
    assert "Traceback" not in result.stdout, result


def assert_input_error(result, *needles):
    """Exit 2, no traceback, and the message names what it must."""
    assert result.code == 2, result
    no_traceback(result)
    for needle in needles:
        assert needle.lower() in result.stderr.lower(), (needle, str(result))


# ------------------------------------------------------------------------------------------
# help, version, usage
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--help"], ["check", "--help"], ["measure", "--help"], ["judge", "--help"], ["demo", "--help"],
    ["policy", "--help"], ["policy", "check", "--help"], ["policy", "schema", "--help"], ["bless", "--help"],
    ["verify", "--help"], ["history", "--help"],
])
def test_help_exits_zero(args):
    result = run_main(*args)
    assert result.code == 0, result
    assert result.stdout.startswith("usage: gate"), result
    assert result.stderr == ""


def test_top_level_help_lists_commands_and_exit_codes():
    out = run_main("--help").stdout
    for command in ("check", "measure", "judge", "demo", "policy"):
        assert command in out
    assert "exit codes" in out and "2 the inputs are wrong" in out


def test_version():
    from gate import __version__

    result = run_main("--version")
    assert result.code == 0 and result.stdout.strip() == f"gate {__version__}", result


def test_the_module_entry_exits_with_mains_code():
    """`python -m gate` in a fresh process: its exit status is main's code (0 and 2 here; 1 in the pipe test)."""
    from gate import __version__

    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"gate {__version__}", result
    result = run_cli("check")
    assert result.code == 2 and "usage: gate" in result.stderr, result


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["check"], ["check", "--policy"], ["judge", "--policy", "x"]])
def test_usage_mistakes_exit_two(args):
    result = run_main(*args)
    assert result.code == 2, result
    no_traceback(result)
    assert "usage: gate" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------
# gate policy schema / check
# ------------------------------------------------------------------------------------------

def test_policy_schema_prints_the_committed_schema():
    schema_file = ROOT / "policies" / "schema.json"
    assert schema_file.is_file(), "policies/schema.json is missing"
    result = run_main("policy", "schema")
    assert result.code == 0, result
    assert json.loads(result.stdout) == json.loads(schema_file.read_text(encoding="utf-8"))


VALID = """\
version: 1
base: base.onnx
candidates:
  int8: same.onnx
data:
  path: data.npz
  labels: label
inconclusive: warn
rules:
  - metric: accuracy
    max_drop: 0.01
  - metric: flip_rate
    max: 0.05
"""


def test_policy_check_accepts_a_valid_policy(models):
    path = models / "valid.yaml"
    path.write_text(VALID, encoding="utf-8")
    result = run_main("policy", "check", path)
    assert result.code == 0, result
    assert "valid" in result.stdout and "2 rule(s)" in result.stdout


@pytest.mark.parametrize("name", ["default", "release", "regression"])
def test_policy_check_accepts_the_presets(name):
    result = run_main("policy", "check", name)
    assert result.code == 0, result


@pytest.mark.parametrize("case,old,new,line,needles", [
    ("unknown-key", "  labels: label", "  labls: label", 7, ["labls", "did you mean 'labels'"]),
    ("unknown-top-key", "inconclusive: warn", "inconclusiv: warn", 8, ["inconclusiv", "did you mean 'inconclusive'"]),
    ("bad-number", "    max_drop: 0.01", "    max_drop: one percent", 11, ["one percent", "number"]),
    ("unknown-metric", "  - metric: accuracy", "  - metric: acuracy", 10, ["acuracy", "did you mean 'accuracy'"]),
    ("two-bounds", "    max_drop: 0.01", "    max_drop: 0.01\n    min: 0.5", 10, ["exactly one bound", "min, max_drop"]),
    ("drop-on-lower-is-better", "  - metric: accuracy\n    max_drop: 0.01", "  - metric: log_loss\n    max_drop: 0.01",
     11, ["log_loss", "lower-is-better", "max_increase"]),
    ("yaml-syntax", "    max: 0.05", "    max: [0.05", 14, ["not valid YAML"]),
    ("bad-indent", "  - metric: flip_rate", " - metric: flip_rate", 12, ["not valid YAML"]),
])
def test_policy_check_names_the_file_line_and_fix(models, case, old, new, line, needles):
    assert old in VALID
    path = models / f"bad-{case}.yaml"
    path.write_text(VALID.replace(old, new, 1), encoding="utf-8")
    result = run_main("policy", "check", path)
    assert_input_error(result, f"{path}:{line}:", *needles)
    assert "fix:" in result.stderr
    # the policy is refused the same way by `gate check`
    check = run_main("check", "--policy", path, "--out", models / f"out-bad-{case}")
    assert_input_error(check, f"{path}:{line}:")
    assert not (models / f"out-bad-{case}" / "report.json").exists()


def test_policy_check_refuses_missing_files(models):
    path = models / "missing-files.yaml"
    path.write_text(VALID.replace("same.onnx", "nowhere.onnx"), encoding="utf-8")
    assert_input_error(run_main("policy", "check", path), str(path), "nowhere.onnx")


def test_unknown_policy_file_or_preset(models):
    assert_input_error(run_main("check", "--policy", models / "nope.yaml"), "nope.yaml")
    assert_input_error(run_main("policy", "check", "relase"), "release")


# ------------------------------------------------------------------------------------------
# data and models that do not fit: exit 2, the data file named
# ------------------------------------------------------------------------------------------

RULES = [{"metric": "accuracy", "max_drop": 0.05}]


def _check(d: Path, name: str, **policy):
    policy.setdefault("candidates", {"same": "same.onnx"})
    path = write_policy(d / f"{name}.yaml", RULES, **policy)
    return run_main("check", "--policy", path, "--out", d / f"out-{name}")


def test_missing_data_file(models):
    assert_input_error(_check(models, "no-data", data="nowhere.npz"), "nowhere.npz", "not found")


def test_wrong_feature_count(models):
    np.savez(models / "wide.npz", idx=np.zeros((N, 3), dtype=np.int64), label=np.zeros(N, dtype=np.int64))
    result = _check(models, "wide", data="wide.npz")
    assert_input_error(result, str(models / "wide.npz"), "(3,)")


def test_string_data_for_a_float_input(models):
    np.savez(models / "strings.npz", idx=np.array([["a"]] * N), label=np.zeros(N, dtype=np.int64))
    result = _check(models, "strings", base="fbase.onnx", candidates={"same": "fsame.onnx"}, data="strings.npz")
    assert_input_error(result, str(models / "strings.npz"), "sample 0", "'a'", "not a number")


def test_string_csv_column_for_a_float_input(models):
    write_csv(models / "strings.csv", np.zeros(N, dtype=np.int64))
    text = (models / "strings.csv").read_text().splitlines()
    rows = [text[0]] + [f"x{i},{line.split(',')[1]}" for i, line in enumerate(text[1:])]
    (models / "strings.csv").write_text("\n".join(rows) + "\n")
    result = _check(models, "strings-csv", base="fbase.onnx", candidates={"same": "fsame.onnx"},
                    data={"path": "strings.csv", "inputs": {"idx": ["idx"]}, "labels": "label"})
    assert_input_error(result, str(models / "strings.csv"))


def test_data_arrays_of_different_lengths(models):
    np.savez(models / "ragged.npz", idx=np.zeros((N, 1), dtype=np.int64), label=np.zeros(N - 1, dtype=np.int64))
    assert_input_error(_check(models, "ragged", data="ragged.npz"), str(models / "ragged.npz"))


def test_labels_out_of_range_name_the_data_file(models):
    labels = np.zeros(N, dtype=np.int64)
    labels[17] = 5  # the models give 3 class scores
    write_npz(models / "label5.npz", labels)
    result = _check(models, "label5", data="label5.npz")
    assert_input_error(result, "5", "0..2")
    assert "label5.npz" in result.stderr, f"the data file holds the bad label, but is not named:\n{result.stderr}"


@pytest.mark.parametrize("where", ["base", "candidate"])
def test_unsupported_model_extension(models, where):
    (models / "model.tflite").write_bytes(b"TFL3" * 10)
    if where == "base":
        result = _check(models, "ext-base", base="model.tflite")
    else:
        result = _check(models, "ext-cand", candidates={"tfl": "model.tflite", "same": "same.onnx"})
    assert_input_error(result, "model.tflite", ".tflite", "fix:")


def test_missing_base_model(models):
    assert_input_error(_check(models, "no-base", base="nowhere.onnx"), "nowhere.onnx", "not found")


def test_base_model_that_crashes_on_the_data_is_an_input_error(models):
    """A base that fails at inference (here: the table has fewer rows than the data has samples)
    is a model/data mismatch, a user mistake: exit 2 naming the model, never a traceback."""
    s = make_scenario(N, 270, 0, 0, k=3, seed=1)
    lookup_model(models / "short-base.onnx", logits_for(s.base[:200], 3, seed=10))
    result = _check(models, "short-base", base="short-base.onnx", batch_size=64)
    assert_input_error(result, "short-base.onnx")


def test_candidate_that_crashes_mid_run_is_recorded_and_the_others_judged(models):
    s = make_scenario(N, 270, 0, 0, k=3, seed=1)
    lookup_model(models / "short.onnx", logits_for(s.base[:200], 3, seed=10))  # fails on the 4th batch of 64
    result = _check(models, "short-cand", candidates={"same": "same.onnx", "short": "short.onnx",
                                                      "worse": "worse.onnx"}, batch_size=64)
    assert result.code in (1, 2), result
    no_traceback(result)
    report = read_report(models / "out-short-cand")
    assert candidate(report, "same")["verdict"] == "pass"
    assert candidate(report, "worse")["metrics"]["accuracy"]["evidence"]["b"] == 15
    short = candidate(report, "short")
    assert short["verdict"] == "fail" and short["error"]
    assert [r["status"] for r in short["rules"]] == ["error"]


# ------------------------------------------------------------------------------------------
# exit codes 0, 1 and 3
# ------------------------------------------------------------------------------------------

def test_exit_zero_and_one_and_quiet_stderr(models):
    passing = _check(models, "pass-run")
    assert passing.code == 0, passing
    assert passing.stderr == "", "no progress bar or warnings without a terminal"
    assert "verdict: PASS" in passing.stdout
    path = write_policy(models / "fail-run.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                        candidates={"worse": "worse.onnx"}, inconclusive="warn")
    failing = run_main("check", "--policy", path, "--out", models / "out-fail-run")
    assert failing.code == 1, failing
    assert "verdict: FAIL" in failing.stdout and "worse" in failing.stdout
    no_traceback(failing)


def test_output_piped_into_a_reader_that_stops_early_keeps_the_exit_code(models):
    path = write_policy(models / "pipe-run.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                        candidates={"worse": "worse.onnx"}, inconclusive="warn")
    proc = subprocess.Popen([sys.executable, "-m", "gate", "check", "--policy", str(path), "--out",
                             str(models / "out-pipe-run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: every write to stdout now breaks the pipe
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=180) == 1, stderr
    assert "Traceback" not in stderr
    assert (models / "out-pipe-run" / "report.json").exists()


def test_preset_with_flags(models):
    result = run_main("check", "--policy", "default", "--base", models / "base.onnx",
                     "--candidate", f"w={models / 'worse.onnx'}", "--candidate", str(models / "same.onnx"),
                     "--data", models / "data.npz", "--out", models / "out-preset")
    assert result.code == 1, result
    report = read_report(models / "out-preset")
    assert [c["name"] for c in report["candidates"]] == ["w", "same"]
    assert candidate(report, "same")["verdict"] == "pass"
    assert report["provenance"]["policy"]["path"] == "preset:default"


def test_internal_bug_exits_three_with_the_trace(monkeypatch):
    import gate.pipeline

    def boom(*a, **k):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(gate.pipeline, "measure", boom)
    result = run_main("check", "--policy", "default", "--base", "b.onnx", "--candidate", "c.onnx", "--data", "d.npz")
    assert result.code == 3, result
    assert "Traceback" in result.stderr and "simulated bug" in result.stderr and "a bug" in result.stderr, result


# ------------------------------------------------------------------------------------------
# reports
# ------------------------------------------------------------------------------------------

def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row; a backslash escapes the next character (so `\\|` is text)."""
    cells, cell, i = [], "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cell += line[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += ch
        i += 1
    cells.append(cell)
    return cells[1:-1]  # outside the leading and trailing pipes


def markdown_tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def assert_tables_intact(text: str) -> None:
    tables = markdown_tables(text)
    assert tables
    for table in tables:
        width = len(split_row(table[0]))
        assert re.fullmatch(r"\|(:?-+:?\|)+", table[1]), table[1]
        for row in table:
            assert row.endswith("|"), row
            assert len(split_row(row)) == width, (row, width)


HOSTILE = {
    "xss": "| <img src=x onerror=alert(1)>",
    "long": "candidate-" + "with-a-very-long-descriptive-name-" * 12 + "end",
    "unicode": "модель-int8 量子化 🚀 ñ é",
    "markup": "**bold** `code` [link](http://example.com) <script>alert(2)</script> # x",
}


@pytest.fixture(scope="module")
def hostile(models):
    names = list(HOSTILE.values())
    cands = {names[0]: "worse.onnx", names[1]: "same.onnx", names[2]: "worse.onnx", names[3]: "same.onnx"}
    rules = [{"metric": "accuracy", "max_drop": 0.01}, {"metric": "flip_rate", "max": 0.2},
             {"metric": "kl_divergence", "max": 1.0, "name": "kl | <b>bold</b>"}]
    path = write_policy(models / "hostile.yaml", rules, candidates=cands, inconclusive="warn")
    result = run_main("check", "--policy", path, "--out", models / "out-hostile")
    return result, models / "out-hostile"


def test_hostile_names_are_escaped_in_markdown(hostile):
    result, out = hostile
    assert result.code == 1, result
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "<img" not in md and "<script" not in md and "<b>" not in md
    assert_tables_intact(md)
    assert "модель-int8 量子化 🚀 ñ é" in md
    # every candidate is a row of the summary table
    summary = markdown_tables(md)[0]
    assert len(summary) == 2 + len(HOSTILE)


def test_hostile_names_are_escaped_in_html(hostile):
    _, out = hostile
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img" not in html and "<script>alert" not in html and "<b>bold" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "модель-int8 量子化 🚀 ñ é" in html
    assert HOSTILE["long"] in html, "the HTML report keeps full names"


def test_hostile_names_survive_report_json_and_junit(hostile):
    _, out = hostile
    report = read_report(out)
    assert [c["name"] for c in report["candidates"]] == list(HOSTILE.values())
    tree = ET.parse(out / "junit.xml")
    suites = tree.getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == list(HOSTILE.values())


def test_junit_has_one_testcase_per_rule_per_candidate(hostile):
    _, out = hostile
    report = read_report(out)
    root = ET.parse(out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == len(report["candidates"])
    total = 0
    for suite, cand in zip(suites, report["candidates"]):
        cases = suite.findall("testcase")
        assert len(cases) == len(cand["rules"]) == 3
        total += len(cases)
        assert int(suite.get("tests")) == len(cases)
        for case, rule in zip(cases, cand["rules"]):
            failed = case.find("failure") is not None
            errored = case.find("error") is not None
            assert failed == (rule["blocking"] and rule["status"] != "error"), (cand["name"], rule)
            assert errored == (rule["status"] == "error")
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
    assert int(root.get("tests")) == total
    # `worse` loses 15 of 300: accuracy max_drop 0.01 fails, so junit shows failures
    worse = suites[0]
    assert worse.findall("testcase")[0].find("failure") is not None
    assert int(root.get("failures")) >= 2


def test_junit_survives_control_characters_in_names(models):
    name = "ansi \x1b[31mred\x1b[0m and bell \x07"
    path = write_policy(models / "control.yaml", RULES, candidates={name: "same.onnx"})
    result = run_main("check", "--policy", path, "--out", models / "out-control")
    assert result.code == 0, result
    # a report CI cannot parse is no report: XML 1.0 has no ESC or BEL, not even as &#27;
    ET.parse(models / "out-control" / "junit.xml")


def test_sixty_candidates_with_long_names_fit_githubs_limit(models):
    cands = {}
    for i in range(60):
        name = f"candidate-{i:02d}-" + "quantized-pruned-distilled-" * 6
        cands[name] = "worse.onnx" if i % 2 else "same.onnx"
    rules = [{"metric": "accuracy", "max_drop": 0.01}, {"metric": "flip_rate", "max": 0.2},
             {"metric": "negative_flip_rate", "max": 0.2}, {"metric": "top_2_accuracy", "max_drop": 0.01},
             {"metric": "model_size_mb", "max": 5}]
    path = write_policy(models / "sixty.yaml", rules, candidates=cands, inconclusive="warn")
    result = run_main("check", "--policy", path, "--out", models / "out-sixty")
    assert result.code == 1, result
    md = (models / "out-sixty" / "report.md").read_text(encoding="utf-8")
    assert len(md) < 65_000
    assert "cut to fit" not in md
    assert_tables_intact(md)
    summary = markdown_tables(md)[0]
    assert len(summary) == 2 + 60, "every candidate keeps its summary row"
    for i in range(60):
        assert f"candidate-{i:02d}-" in md
    report = read_report(models / "out-sixty")
    assert len(report["candidates"]) == 60


# ------------------------------------------------------------------------------------------
# measure + judge
# ------------------------------------------------------------------------------------------

SPLIT_RULES = [{"metric": "accuracy", "max_drop": 0.01}, {"metric": "f1_macro", "max_drop": 0.05},
               {"metric": "flip_rate", "max": 0.2}, {"metric": "kl_divergence", "max": 1.0}]


def _judged(report: dict) -> list:
    return [(c["name"], c["verdict"], c["rules"], c["metrics"]) for c in report["candidates"]]


def test_measure_then_judge_gives_the_verdict_of_check(models):
    path = write_policy(models / "split.yaml", SPLIT_RULES,
                        candidates={"same": "same.onnx", "worse": "worse.onnx"}, inconclusive="warn")
    check = run_main("check", "--policy", path, "--out", models / "out-split-check")
    measure = run_main("measure", "--policy", path, "--out", models / "results.json")
    assert measure.code == 0, measure
    assert (models / "results.json").is_file()
    judge = run_main("judge", models / "results.json", "--policy", path, "--out", models / "out-split-judge")
    assert check.code == judge.code == 1, (check, judge)
    one, two = read_report(models / "out-split-check"), read_report(models / "out-split-judge")
    assert one["verdict"] == two["verdict"] == "fail"
    assert _judged(one) == _judged(two)
    assert one["provenance"]["data"]["sha256"] == two["provenance"]["data"]["sha256"]


def test_judge_merges_results_of_the_same_base_and_data(models):
    a = write_policy(models / "part-a.yaml", SPLIT_RULES, candidates={"same": "same.onnx"}, inconclusive="warn")
    b = write_policy(models / "part-b.yaml", SPLIT_RULES, candidates={"worse": "worse.onnx"})
    assert run_main("measure", "--policy", a, "--out", models / "part-a.json").code == 0
    assert run_main("measure", "--policy", b, "--out", models / "part-b.json").code == 0
    result = run_main("judge", models / "part-a.json", models / "part-b.json", "--policy", a,
                     "--out", models / "out-merged")
    assert result.code == 1, result
    report = read_report(models / "out-merged")
    assert [c["name"] for c in report["candidates"]] == ["same", "worse"]
    assert candidate(report, "same")["verdict"] == "pass"
    assert rule_of(candidate(report, "worse"), "accuracy")["status"] == "fail"


def test_judging_results_measured_on_different_data_is_refused(models):
    a = write_policy(models / "data-a.yaml", SPLIT_RULES, candidates={"same": "same.onnx"})
    b = write_policy(models / "data-b.yaml", SPLIT_RULES, candidates={"worse": "worse.onnx"}, data="other.npz")
    assert run_main("measure", "--policy", a, "--out", models / "data-a.json").code == 0
    assert run_main("measure", "--policy", b, "--out", models / "data-b.json").code == 0
    result = run_main("judge", models / "data-a.json", models / "data-b.json", "--policy", a,
                     "--out", models / "out-mixed")
    assert_input_error(result, "data-b.json", "data")
    assert not (models / "out-mixed" / "report.json").exists()


def test_judge_refuses_a_rule_the_measurement_cannot_support(models):
    """Measured without a bootstrap rule, judged with one: an `error`, never a silent pass.
    (A candidate that is the base's own file is compared exactly, so the case needs another model.)"""
    measured = write_policy(models / "narrow.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                            candidates={"worse": "worse.onnx"})
    assert run_main("measure", "--policy", measured, "--out", models / "narrow.json").code == 0
    wider = write_policy(models / "wider.yaml", [{"metric": "accuracy", "max_drop": 0.5},
                                                 {"metric": "f1_macro", "max_drop": 0.5}],
                         candidates={"worse": "worse.onnx"})
    result = run_main("judge", models / "narrow.json", "--policy", wider, "--out", models / "out-wider")
    assert result.code == 1, result
    rule = rule_of(candidate(read_report(models / "out-wider"), "worse"), "f1_macro")
    assert rule["status"] == "error" and rule["blocking"]


@pytest.mark.parametrize("tag,content,needle", [
    ("missing", None, "not found"),
    ("not-json", "{not json", "JSON"),
    ("a-report", '{"verdict": "pass", "candidates": []}', "not a gate results file"),
    ("null-body", '{"gate_results": null}', "results"),
    ("future-format", '{"gate_results": {"format": 99}}', "format"),
])
def test_judge_refuses_files_that_are_not_results(models, tag, content, needle):
    path = models / f"bogus-{tag}.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = run_main("judge", path, "--policy", "default", "--out", models / "out-bogus")
    assert_input_error(result, path.name, needle)


def test_a_rule_name_with_line_breaks_stays_on_one_console_line(models, tmp_path):
    """A label is text from the policy: in a CI log a line of its own starting with :: would be a command."""
    policy = write_policy(tmp_path / "p.yaml", [{"metric": "accuracy", "max_drop": 0.001,
                                                 "name": "drop\n::error file=x::fake\r\nend"}],
                          base=str(models / "base.onnx"), candidates={"worse": str(models / "worse.onnx")},
                          data=str(models / "data.npz"))
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code == 1
    assert not any(line.lstrip().startswith("::") for line in result.stdout.splitlines()), result.stdout
