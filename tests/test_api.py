"""The Python API (gate.check / measure / judge) and the pytest plugin (gate_check, @pytest.mark.gate).

The API is what the command line runs, so on the same inputs it must give the command line's verdict,
tally, rules and report files; wrong inputs raise GateInputError (never exit). The plugin is driven with
pytest's own `pytester`: an inner test file, as a model repository would write it, run against a passing
and a failing policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import gate
import gate.api
from conftest import logits_for, lookup_model, make_scenario, read_report, run_main, write_npz, write_policy
from gate.errors import GateInputError

pytest_plugins = ["pytester"]

N = 300
RULES = [{"metric": "accuracy", "max_drop": 0.01}, {"metric": "flip_rate", "max": 0.2},
         {"metric": "kl_divergence", "max": 1.0}]
REPORTS = {"report.md", "report.html", "report.json", "junit.xml"}


def _models(d: Path) -> Path:
    """base (right on 270 of 300), `same` (its copy), `worse` (loses 15: fails accuracy max_drop 0.01)."""
    same = make_scenario(N, 270, 0, 0, k=3, seed=1)
    worse = make_scenario(N, 270, 15, 0, k=3, seed=1)
    table = logits_for(same.base, 3, seed=10)
    lookup_model(d / "base.onnx", table)
    lookup_model(d / "same.onnx", table)
    lookup_model(d / "worse.onnx", logits_for(worse.cand, 3, seed=11))
    write_npz(d / "data.npz", same.y)
    write_policy(d / "pass.yaml", RULES, candidates={"same": "same.onnx"})
    write_policy(d / "fail.yaml", RULES, candidates={"same": "same.onnx", "worse": "worse.onnx"})
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return _models(tmp_path_factory.mktemp("api"))


def _judged(report: dict) -> list:
    return [(c["name"], c["verdict"], c["tally"], c["rules"], c["metrics"]) for c in report["candidates"]]


# ------------------------------------------------------------------------------------------ the API

def test_check_gives_the_verdict_tally_and_reports_of_the_command_line(models):
    cli = run_main("check", "--policy", models / "fail.yaml", "--out", models / "out-cli")
    result = gate.check(models / "fail.yaml", out=models / "out-api")
    assert isinstance(result, gate.GateResult)
    assert cli.code == result.exit_code == 1, cli
    assert not result.passed and result.verdict.verdict == "fail"
    assert {p.name for p in (models / "out-api").iterdir()} >= REPORTS
    one, two = read_report(models / "out-cli"), read_report(models / "out-api")
    assert one["verdict"] == two["verdict"] == "fail"
    assert one["tally"] == two["tally"] == result.tally.to_dict()
    assert _judged(one) == _judged(two)
    # what the command line prints is the result's summary
    from gate.api import summary_lines

    assert cli.stdout == "\n".join(summary_lines(result.verdict, models / "out-cli")) + "\n"
    assert result.summary().splitlines()[-1].startswith("reports: ")
    assert result.report == models / "out-api" / "report.md"
    failing = result.failing_rules()
    assert [(f.candidate, f.status) for f in failing] == [("worse", "fail")]
    assert str(failing[0]).startswith("worse: accuracy") and failing[0].reason in str(failing[0])
    assert failing[0].line is not None
    assert result.tally.failed_rules == tuple(f"{f.candidate}: {f.rule} ({f.status})" for f in failing)


def test_a_passing_policy_passes_and_out_none_writes_nothing(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = gate.check(str(models / "pass.yaml"))
    assert result.passed and result.exit_code == 0
    assert result.failing_rules() == () and result.tally.failed == 0 and result.tally.passed == len(RULES)
    assert result.report_dir is None and result.report is None
    assert list(tmp_path.iterdir()) == []
    assert result.measurements.n_samples == N and result.policy.source.endswith("pass.yaml")


def test_overrides_name_the_candidates_as_the_flags_do(models):
    result = gate.check(models / "pass.yaml", candidates={"w": models / "worse.onnx"})
    assert [c.name for c in result.candidates] == ["w"] and not result.passed
    listed = gate.check(models / "pass.yaml", candidates=[f"w={models / 'worse.onnx'}", models / "same.onnx"])
    assert [c.name for c in listed.candidates] == ["w", "same"]


def test_measure_then_judge_gives_the_verdict_of_check(models):
    from gate.measurements import Measurements

    measured = gate.api.measure(models / "fail.yaml", out=models / "results.json")
    assert isinstance(measured, Measurements) and "gate_results" in json.loads((models / "results.json").read_text())
    from_file = gate.api.judge(models / "results.json", models / "fail.yaml", out=models / "out-judge")
    in_memory = gate.api.judge([measured], models / "fail.yaml")
    checked = gate.check(models / "fail.yaml", out=models / "out-check")
    for result in (from_file, in_memory):
        assert result.exit_code == 1 and result.tally == checked.tally
        assert [str(f) for f in result.failing_rules()] == [str(f) for f in checked.failing_rules()]
    assert _judged(read_report(models / "out-judge")) == _judged(read_report(models / "out-check"))


@pytest.mark.parametrize("call, needle", [
    (lambda d: gate.check(d / "missing.yaml"), "no such policy file"),
    (lambda d: gate.check(d / "typo.yaml"), "did you mean"),
    (lambda d: gate.check(d / "pass.yaml", base=d / "nope.onnx"), "nope.onnx"),
    (lambda d: gate.check(d / "pass.yaml", templates=d), "no report folder"),
    (lambda d: gate.check(d / "pass.yaml", out=d / "data.npz"), "not a folder"),
    (lambda d: gate.check(d / "pass.yaml", candidates=42), "candidates"),
    (lambda d: gate.check(42), "policy"),
    (lambda d: gate.api.measure(d / "pass.yaml", out=d), "is a folder"),
    (lambda d: gate.api.judge([], d / "pass.yaml"), "no results"),
    (lambda d: gate.api.judge(d / "pass.yaml", d / "pass.yaml"), "pass.yaml"),
], ids=["missing-policy", "unknown-key", "missing-base", "templates-without-out", "out-is-a-file",
        "candidates-not-paths", "policy-not-a-path", "results-file-is-a-folder", "no-results", "not-results"])
def test_wrong_inputs_raise_gate_input_error_never_exit(models, call, needle):
    (models / "typo.yaml").write_text("version: 1\nrulez: []\n", encoding="utf-8")
    with pytest.raises(GateInputError) as caught:
        call(models)
    assert needle.lower() in str(caught.value).lower(), caught.value
    assert caught.value.fix  # the message says how to fix it


def test_a_bad_policy_names_the_file_and_line(models):
    bad = models / "bad.yaml"
    bad.write_text("version: 1\nbase: base.onnx\nrules:\n  - metric: acuracy\n    max_drop: 0.01\n",
                   encoding="utf-8")
    with pytest.raises(GateInputError) as caught:
        gate.check(bad)
    assert caught.value.path == str(bad) and caught.value.line == 4, caught.value


def test_import_gate_is_light_and_the_names_are_the_api():
    code = ("import sys, gate; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'onnxruntime', 'yaml', 'jinja2', 'gate') and m != 'gate'); "
            "import gate.pytest_plugin; plugin = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'onnxruntime', 'yaml', 'jinja2')); "
            "from gate import check; from gate.api import measure, judge; import gate.api, gate.measure.stats; "
            "import gate.judge as j; "
            "print(heavy, plugin, callable(measure), callable(judge), "
            "callable(j.judge) and j.judge.__module__ == 'gate.judge', check is gate.api.check)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "[]", "True", "True", "True", "True"], proc.stdout


# ------------------------------------------------------------------------------------------ the plugin

def test_the_plugin_is_registered_as_a_pytest11_entry_point(pytestconfig):
    points = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "gate.pytest_plugin"]
    assert [ep.name for ep in points] == ["gate"], "reinstall the gate (pip install -e .) to register the plugin"
    assert pytestconfig.pluginmanager.has_plugin("gate")  # loaded in this repository's own run too
    assert "gate" in " ".join(pytestconfig.getini("markers"))


INNER = '''
import pytest


def test_fixture_passes(gate_check):
    result = gate_check("pass.yaml")
    assert result.passed and result.tally.failed == 0


def test_fixture_fails(gate_check):
    gate_check("fail.yaml")
    raise AssertionError("not reached: the gate fails the test first")


@pytest.mark.gate("pass.yaml")
def test_marker_passes():
    pass


@pytest.mark.gate("fail.yaml")
def test_marker_fails():
    raise AssertionError("not reached: the body runs only when the gate passes")


@pytest.mark.gate("pass.yaml", candidates={"w": "worse.onnx"})
def test_marker_with_overrides():
    pass


def test_fixture_with_a_bad_policy(gate_check):
    gate_check("bad.yaml")
'''


def test_the_fixture_and_the_marker_gate_a_model_repository(pytester, pytestconfig):
    _models(pytester.path)
    (pytester.path / "bad.yaml").write_text("version: 1\nrules: [{metric: acuracy, max: 1}]\n", encoding="utf-8")
    pytester.makepyfile(test_model_gate=INNER)
    plugin = [] if pytestconfig.pluginmanager.has_plugin("gate") else ["-p", "gate.pytest_plugin"]
    run = pytester.runpytest(*plugin, "--strict-markers", "-p", "no:cacheprovider", "-rf",
                             "--gate-report-dir", "gate-reports")
    run.assert_outcomes(passed=2, failed=4)
    out = run.stdout.str()
    failures = {name: out.split(f"_ {name} _", 1)[1].split("\n_", 1)[0]
                for name in ("test_fixture_fails", "test_marker_fails", "test_marker_with_overrides",
                             "test_fixture_with_a_bad_policy")}
    for name in ("test_fixture_fails", "test_marker_fails"):
        text = failures[name]
        assert "1 of 2 candidate(s) fail the policy" in text, text
        assert "worse: accuracy" in text and "report: " in text, text
        assert "not reached" not in text, text
        assert "Traceback" not in text and "def test_" not in text, text  # pytrace=False: the message only
    assert "w: accuracy" in failures["test_marker_with_overrides"]
    assert "the inputs are wrong" in failures["test_fixture_with_a_bad_policy"]
    assert "acuracy" in failures["test_fixture_with_a_bad_policy"]
    # --gate-report-dir: one folder per test, under the working directory
    folder = pytester.path / "gate-reports" / "test_model_gate.py_test_marker_fails"
    assert REPORTS <= {p.name for p in folder.iterdir()}, out
    assert f"report: {folder / 'report.md'}" in failures["test_marker_fails"]


def test_without_a_report_dir_the_reports_go_to_the_tests_tmp_path(pytester, pytestconfig):
    _models(pytester.path)
    pytester.makepyfile(test_one='''
def test_fails(gate_check, tmp_path):
    try:
        gate_check("fail.yaml")
    finally:
        assert (tmp_path / "gate-report" / "report.json").is_file()
''')
    plugin = [] if pytestconfig.pluginmanager.has_plugin("gate") else ["-p", "gate.pytest_plugin"]
    run = pytester.runpytest(*plugin, "-p", "no:cacheprovider")
    run.assert_outcomes(failed=1)
    assert "gate-report/report.md" in run.stdout.str()


def test_a_candidate_that_cannot_be_opened_is_reported_not_raised(models):
    result = gate.check(models / "pass.yaml", candidates={"same": models / "same.onnx", "gone": models / "gone.onnx"})
    assert result.exit_code == 2 and not result.passed
    assert len(result.input_errors) == 1 and "gone.onnx" in result.input_errors[0]
    assert {f.candidate for f in result.failing_rules()} == {"gone"}
    assert [c.verdict for c in result.candidates] == ["pass", "fail"]


def test_a_broken_template_raises_after_the_other_reports_are_written(models, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "report.md.j2").write_text("{{ broken", encoding="utf-8")
    with pytest.raises(GateInputError, match="failed to render report.md"):
        gate.check(models / "pass.yaml", out=tmp_path / "out", templates=templates)
    assert {p.name for p in (tmp_path / "out").iterdir()} >= REPORTS - {"report.md"}
