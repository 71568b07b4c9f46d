"""One results contract: results.json and report.json against their committed JSON Schemas and the one loader.

- what the writers write (a real `gate measure`, `gate check` and `gate judge`, in-process) validates against
  gate/schemas/*.schema.json with the `jsonschema` package, and the loader (gate/contract.py) reads it;
- the schemas describe every field the writers write (held against the dataclasses);
- a corpus of damaged documents is refused by BOTH the schema and the loader (they agree), and is exit 2
  through `gate judge` (results) or the Action (reports);
- files of another format are refused with "this gate reads format N".
"""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from conftest import ROOT, logits_for, lookup_model, make_scenario, run_main, write_npz, write_policy

import gate.github as gh
from gate import contract
from gate.contract import ContractError, load_report_dir, load_results_file

RESULTS_SCHEMA = json.loads(contract.RESULTS_SCHEMA.read_text(encoding="utf-8"))
REPORT_SCHEMA = json.loads(contract.REPORT_SCHEMA.read_text(encoding="utf-8"))


def schema_errors(schema: dict, text: str) -> list[str]:
    """As check-jsonschema validates a file: Python's json reads it (NaN literals included)."""
    return [f"{e.json_path}: {e.message}" for e in Draft202012Validator(schema).iter_errors(json.loads(text))]


# ---------------------------------------------------------------- one real run, shared

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract")
    s = make_scenario(120, 100, 6, 2, k=3)
    lookup_model(d / "base.onnx", logits_for(s.base, 3))
    lookup_model(d / "c.onnx", logits_for(s.cand, 3, seed=1))
    (d / "broken.onnx").write_bytes(b"not an onnx model")  # a candidate that cannot be measured
    write_npz(d / "data.npz", s.y, region=np.array(["EU", "US"] * 60))
    rules = [{"metric": "accuracy", "max_drop": 0.01},
             {"metric": "accuracy", "per": "group", "max_drop": 0.05, "min_samples": 10},
             {"metric": "accuracy", "per": "group", "scope": "gap", "max": 0.5},
             {"metric": "flip_rate", "max": 0.2},
             {"metric": "latency_p95_ms", "max": 50, "severity": "warn"},
             {"metric": "model_size_mb", "max": 4}]
    policy = write_policy(d / "policy.yaml", rules, candidates={"c": "c.onnx", "broken": "broken.onnx"},
                          data={"path": "data.npz", "labels": "label", "groups": ["region"]}, bootstrap=100,
                          latency={"min_runs": 20, "warmup": 2, "min_time_s": 0.05, "max_time_s": 0.3})
    measure = run_main("measure", "--policy", policy, "--out", d / "results.json", "--no-progress")
    assert measure.code == 0, measure
    check = run_main("check", "--policy", policy, "--out", d / "checked", "--no-progress")
    assert check.code == 2, check  # the broken candidate is a wrong input; the report is written all the same
    judge = run_main("judge", d / "results.json", "--policy", policy, "--out", d / "judged")
    assert judge.code == 2, judge
    return SimpleNamespace(dir=d, policy=policy, results=d / "results.json", checked=d / "checked",
                           judged=d / "judged", results_doc=json.loads(_text(d / "results.json")),
                           report_doc=json.loads(_text(d / "checked" / "report.json")))


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the schemas themselves

def test_the_schemas_are_draft_2020_12_versioned_and_where_the_types_point():
    from gate.measurements import FORMAT, SCHEMA as MEASUREMENTS_SCHEMA
    from gate.report import REPORT_FORMAT, SCHEMA as REPORT_SCHEMA_PATH

    for schema in (RESULTS_SCHEMA, REPORT_SCHEMA):
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] and schema["title"]
    assert RESULTS_SCHEMA["$defs"]["body"]["properties"]["format"] == {
        "const": FORMAT, "description": RESULTS_SCHEMA["$defs"]["body"]["properties"]["format"]["description"]}
    assert REPORT_SCHEMA["properties"]["report_format"]["const"] == REPORT_FORMAT
    assert (contract.RESULTS_FORMAT, contract.REPORT_FORMAT) == (FORMAT, REPORT_FORMAT)
    assert MEASUREMENTS_SCHEMA == contract.RESULTS_SCHEMA and REPORT_SCHEMA_PATH == contract.REPORT_SCHEMA
    assert contract.RESULTS_SCHEMA.is_file() and contract.REPORT_SCHEMA.is_file()


def test_the_schemas_describe_every_field_the_types_write():
    from gate.judge import RuleResult
    from gate.measurements import CandidateMeasurements, GroupingResult, GroupResult, Measurements, MetricResult
    from gate.measurements import ModelInfo, TargetResult
    from gate.tally import STATUSES, Tally

    def props(schema, name):
        return set(schema["$defs"][name]["properties"])

    for schema in (RESULTS_SCHEMA, REPORT_SCHEMA):
        assert props(schema, "metric") == set(MetricResult.__dataclass_fields__)
        assert props(schema, "model") == set(ModelInfo.__dataclass_fields__)
        assert props(schema, "group") == set(GroupResult.__dataclass_fields__)
        assert props(schema, "grouping") == set(GroupingResult.__dataclass_fields__)
        assert props(schema, "target") == set(TargetResult.__dataclass_fields__)
    assert props(RESULTS_SCHEMA, "body") == set(Measurements.__dataclass_fields__)
    assert props(RESULTS_SCHEMA, "candidate") == set(CandidateMeasurements.__dataclass_fields__)
    assert props(REPORT_SCHEMA, "rule") == set(RuleResult.__dataclass_fields__) == set(contract.RULE_FIELDS)
    assert props(REPORT_SCHEMA, "tally") == set(Tally.__dataclass_fields__)
    assert set(contract.TALLY_COUNTS + contract.TALLY_LISTS) == set(Tally.__dataclass_fields__)
    assert tuple(REPORT_SCHEMA["$defs"]["rule"]["properties"]["status"]["enum"]) == STATUSES == contract.STATUSES
    assert set(REPORT_SCHEMA["required"]) == set(REPORT_SCHEMA["properties"]) == set(contract.REPORT_FIELDS)
    assert set(props(REPORT_SCHEMA, "candidate")) == set(contract.REPORT_CANDIDATE_FIELDS)


# ---------------------------------------------------------------- what the writers write

def test_the_writers_output_validates_against_the_schemas_and_the_loader_reads_it(made):
    results = _text(made.results)
    assert schema_errors(RESULTS_SCHEMA, results) == []
    measurements = load_results_file(made.results)
    assert {c.name for c in measurements.candidates} == {"c", "broken"}
    for out in (made.checked, made.judged):
        text = _text(out / "report.json")
        assert schema_errors(REPORT_SCHEMA, text) == []
        report, markdown = load_report_dir(out)
        assert report == json.loads(text) and markdown == _text(out / "report.md")
    # what this run covers: a per-group rule with subgroup tests, a candidate error, timed metrics
    report = json.loads(_text(made.checked / "report.json"))
    by_name = {c["name"]: c for c in report["candidates"]}
    assert by_name["broken"]["error"] and by_name["c"]["speed"]
    assert any(r["groups"] for r in by_name["c"]["rules"])
    assert by_name["c"]["groupings"] and by_name["c"]["metrics"]["latency_p95_ms"]["evidence"]


def test_check_jsonschema_validates_both_files_as_the_docs_say(made):
    exe = Path(sys.executable).with_name("check-jsonschema")
    for schema, files in ((contract.RESULTS_SCHEMA, [made.results]),
                          (contract.REPORT_SCHEMA, [made.checked / "report.json", made.judged / "report.json"])):
        proc = subprocess.run([str(exe), "--schemafile", str(schema), *map(str, files)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- damaged documents: schema and loader agree

@dataclass(frozen=True)
class Damage:
    id: str
    damage: object  # doc -> None (changes it in place)
    says: str = ""  # in the loader's message


def _metric(doc, name="accuracy"):
    return next(c for c in doc["gate_results"]["candidates"] if c["info"]["name"] == "c")["metrics"][name]


def _cand(doc, name="c"):
    return next(c for c in doc["gate_results"]["candidates"] if c["info"]["name"] == name)


def _set(getter, key, value):
    def damage(doc):
        getter(doc)[key] = value
    return damage


def _del(getter, key):
    def damage(doc):
        del getter(doc)[key]
    return damage


def _body(doc):
    return doc["gate_results"]


RESULTS_DAMAGE = [
    Damage("no-gate-results", lambda doc: doc.update(results=doc.pop("gate_results")), "not a gate results file"),
    Damage("body-is-a-number", _set(lambda d: d, "gate_results", 5), "must be an object"),
    Damage("format-2", _set(_body, "format", 2), "this gate reads format 1"),
    Damage("format-as-text", _set(_body, "format", "1"), "this gate reads format 1"),
    Damage("no-format", _del(_body, "format"), "this gate reads format 1"),
    Damage("no-task", _del(_body, "task"), "'task'"),
    Damage("unknown-task", _set(_body, "task", "segmentation"), "segmentation"),
    Damage("n-samples-as-text", _set(_body, "n_samples", "120"), "n_samples"),
    Damage("n-samples-zero", _set(_body, "n_samples", 0), "n_samples"),
    Damage("n-samples-infinite", _set(_body, "n_samples", math.inf), "n_samples"),
    Damage("confidence-nan", _set(_body, "confidence", math.nan), "confidence"),
    Damage("confidence-above-1", _set(_body, "confidence", 1.5), "confidence"),
    Damage("seed-negative", _set(_body, "seed", -1), "seed"),
    Damage("bootstrap-bool", _set(_body, "bootstrap", True), "bootstrap"),
    Damage("unknown-top-field", _set(_body, "judged", True), "'judged'"),
    Damage("candidates-a-mapping", lambda doc: _body(doc).update(candidates={"c": _body(doc)["candidates"][0]}),
           "candidates"),
    Damage("candidate-a-string", lambda doc: _body(doc)["candidates"].append("c2"), "candidates[2]"),
    Damage("candidate-without-info", _del(_cand, "info"), "'info'"),
    Damage("metric-value-as-text", _set(_metric, "candidate", "0.9"), "candidate"),
    Damage("metric-value-bool", _set(_metric, "delta", True), "delta"),
    Damage("metric-a-string", lambda doc: _cand(doc)["metrics"].update(accuracy="high"), "accuracy"),
    Damage("metrics-a-list", _set(_cand, "metrics", [1, 2]), "metrics"),
    Damage("metric-unknown-field", _set(_metric, "p_value", 0.2), "'p_value'"),
    Damage("metric-n-negative", _set(_metric, "n", -5), ".n"),
    Damage("interval-without-method", lambda doc: _metric(doc)["delta_interval"].pop("method"), "'method'"),
    Damage("interval-low-as-text", lambda doc: _metric(doc)["delta_interval"].update(low="-0.1"), "low"),
    Damage("evidence-count-as-text", lambda doc: _metric(doc)["evidence"].update(k="many"), "evidence.k"),
    Damage("evidence-count-negative", lambda doc: _metric(doc)["evidence"].update(b=-1), "evidence.b"),
    Damage("evidence-grid-of-text", lambda doc: _metric(doc)["evidence"].update(delta_grid=["a"]), "delta_grid"),
    Damage("evidence-level-nan", lambda doc: _metric(doc)["evidence"].update(interval_confidence=math.nan),
           "interval_confidence"),
    Damage("subgroup-n-as-text", lambda doc: _cand(doc)["groupings"][0]["groups"][0].update(n="60"), ".n"),
    Damage("subgroup-key-a-number", lambda doc: _cand(doc)["groupings"][0]["groups"][0].update(key=3), "key"),
    Damage("unknown-error-kind", _set(lambda d: _cand(d, "broken"), "error_kind", "oops"), "oops"),
    Damage("error-a-number", _set(lambda d: _cand(d, "broken"), "error", 7), "error"),
    Damage("nonfinite-without-first", _set(_cand, "nonfinite", {"count": 1, "n": 120}), "'first'"),
    Damage("flip-kind-unknown", lambda doc: _cand(doc)["flips"]["rows"][0].update(kind="worse"), "worse"),
    Damage("flips-capped-as-text", lambda doc: _cand(doc)["flips"].update(capped="no"), "capped"),
    Damage("thumbnail-not-base64", lambda doc: _cand(doc)["flips"].update(thumbnails=[{
        "index": 0, "input": "x", "label": 0, "base": 0, "candidate": 1, "png": '"><script>'}]), "png"),
    Damage("reliability-count-as-text", lambda doc: _cand(doc)["calibration"]["base"][0].update(count="many"),
           "count"),
    Damage("target-a-list", _set(_cand, "targets", {"phone": []}), "targets.phone"),
    Damage("sha256-not-hex", _set(lambda d: _body(d)["base"], "sha256", "zzz"), "sha256"),
    Damage("model-unknown-field", _set(lambda d: _body(d)["base"], "weights", [1]), "'weights'"),
    Damage("provenance-a-list", _set(_body, "provenance", []), "provenance"),
    Damage("base-metric-as-text", lambda doc: _body(doc)["base_metrics"].update(accuracy="0.8"), "base_metrics"),
]


def _results_doc(made) -> dict:
    return copy.deepcopy(made.results_doc)


@pytest.mark.parametrize("case", RESULTS_DAMAGE, ids=[c.id for c in RESULTS_DAMAGE])
def test_damaged_results_are_refused_by_the_schema_and_the_loader(made, tmp_path, case):
    doc = _results_doc(made)
    case.damage(doc)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert schema_errors(RESULTS_SCHEMA, _text(path)), f"the schema accepts {case.id}"
    with pytest.raises(ContractError) as info:
        load_results_file(path)
    assert str(path) in str(info.value) and case.says in info.value.problem, info.value


def test_damaged_results_are_exit_2_through_gate_judge(made, tmp_path):
    """Every damaged file of the corpus, through the CLI: exit 2 naming the file, never a traceback."""
    for case in RESULTS_DAMAGE:
        doc = _results_doc(made)
        case.damage(doc)
        path = tmp_path / f"{case.id}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        result = run_main("judge", path, "--policy", made.policy, "--out", tmp_path / "out")
        assert result.code == 2, (case.id, result)
        assert path.name in result.stderr and "Traceback" not in result.stderr, (case.id, result)
        assert not (tmp_path / "out" / "report.json").exists(), case.id


def test_results_the_writer_may_write_are_read_by_both(made, tmp_path):
    """A metric that could not be computed is NaN in results.json (Python's json writes it): both accept it,
    and the judge makes an error of the rule, never a pass."""
    doc = _results_doc(made)
    _metric(doc).update(candidate=math.nan, delta=math.nan)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert "NaN" in _text(path)
    assert schema_errors(RESULTS_SCHEMA, _text(path)) == []
    assert math.isnan(next(c for c in load_results_file(path).candidates if c.name == "c")
                      .metrics["accuracy"].candidate)


def _rule(doc, index=0, cand="c"):
    return next(c for c in doc["candidates"] if c["name"] == cand)["rules"][index]


def _rcand(doc, name="c"):
    return next(c for c in doc["candidates"] if c["name"] == name)


def _grouped(doc):
    return next(r for r in _rcand(doc)["rules"] if r["groups"])


REPORT_DAMAGE = [
    Damage("no-report-format", lambda doc: doc.pop("report_format"), "no report_format"),
    Damage("report-format-1", _set(lambda d: d, "report_format", 1), "this gate reads format 2"),
    Damage("report-format-3", _set(lambda d: d, "report_format", 3), "this gate reads format 2"),
    Damage("unknown-verdict", _set(lambda d: d, "verdict", "maybe"), "maybe"),
    Damage("pass-over-failing-candidates", _set(lambda d: d, "verdict", "pass"), "verdict pass"),
    Damage("candidate-passes-with-a-blocking-rule", _set(_rcand, "verdict", "pass"), "candidates[0]"),
    Damage("no-tally", lambda doc: doc.pop("tally"), "'tally'"),
    Damage("tally-count-as-text", lambda doc: doc["tally"].update(failed="2"), "tally.failed"),
    Damage("tally-without-failed", lambda doc: _rcand(doc)["tally"].pop("failed"), "'failed'"),
    Damage("tally-rules-of-numbers", lambda doc: doc["tally"].update(failed_rules=[1]), "failed_rules"),
    Damage("candidates-a-mapping", lambda doc: doc.update(candidates={"c": doc["candidates"][0]}), "candidates"),
    Damage("candidate-a-string", lambda doc: doc["candidates"].append("c2"), "candidates[2]"),
    Damage("candidate-without-name", lambda doc: _rcand(doc).pop("name"), "'name'"),
    Damage("unknown-status", _set(_rule, "status", "skipped"), "skipped"),
    Damage("status-missing", lambda doc: _rule(doc).pop("status"), "'status'"),
    Damage("blocking-as-text", _set(_rule, "blocking", "yes"), "blocking"),
    Damage("pass-that-blocks", lambda doc: _rule(doc).update(status="pass", blocking=True), "passes and blocks"),
    Damage("observed-nan", _set(_rule, "observed", math.nan), "NaN"),
    Damage("threshold-infinite", _set(_rule, "threshold", math.inf), "Infinity"),
    Damage("threshold-null", _set(_rule, "threshold", None), "threshold"),
    Damage("interval-of-one", _set(_rule, "interval", [0.1]), "interval"),
    Damage("unknown-bound-kind", _set(_rule, "bound_kind", "max_dropp"), "max_dropp"),
    Damage("unknown-severity", _set(_rule, "severity", "error"), "severity"),
    Damage("line-zero", _set(_rule, "line", 0), "line"),
    Damage("rule-unknown-field", _set(_rule, "hidden", True), "'hidden'"),
    Damage("rule-without-text", lambda doc: _rule(doc).pop("rule"), "'rule'"),
    Damage("rule-a-number", lambda doc: _rcand(doc)["rules"].append(7), "rules"),
    Damage("unknown-subgroup-status", lambda doc: _grouped(doc)["groups"][0].update(status="maybe"), "maybe"),
    Damage("input-errors-of-numbers", _set(lambda d: d, "input_errors", [1]), "input_errors"),
    Damage("no-policy-provenance", lambda doc: doc["provenance"].pop("policy"), "'policy'"),
    Damage("policy-path-a-number", lambda doc: doc["provenance"]["policy"].update(path=3), "policy.path"),
    Damage("confidence-as-text", _set(lambda d: d, "confidence", "0.95"), "confidence"),
    Damage("unknown-task", _set(lambda d: d, "task", "vision"), "vision"),
    Damage("unknown-inconclusive", _set(lambda d: d, "inconclusive", "ignore"), "ignore"),
    Damage("unknown-top-field", _set(lambda d: d, "extra", 1), "'extra'"),
    Damage("results-instead-of-a-report", lambda doc: (doc.clear(), doc.update(gate_results={"format": 1})),
           "results file"),
]


def _report_doc(made) -> dict:
    return copy.deepcopy(made.report_doc)


def _write_report(tmp_path: Path, doc: dict) -> Path:
    d = tmp_path / "report"
    d.mkdir(exist_ok=True)
    (d / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    (d / "report.md").write_text("# gate report\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("case", REPORT_DAMAGE, ids=[c.id for c in REPORT_DAMAGE])
def test_damaged_reports_are_refused_by_the_schema_the_loader_and_the_action(made, tmp_path, case):
    doc = _report_doc(made)
    case.damage(doc)
    d = _write_report(tmp_path, doc)
    assert schema_errors(REPORT_SCHEMA, _text(d / "report.json")), f"the schema accepts {case.id}"
    with pytest.raises(ContractError) as info:
        load_report_dir(d)
    assert str(d / "report.json") in str(info.value) and case.says in info.value.problem, info.value
    # the Action: exit 2 with the problem, and never read as a pass
    out = io.StringIO()
    env = {"GITHUB_WORKSPACE": str(tmp_path)}
    code = gh.main(["--report-dir", str(d), "--gate-exit", "0"], env, out=out)
    assert code == 2, out.getvalue()
    assert case.says in out.getvalue() and "verdict PASS" not in out.getvalue()


def test_an_old_report_format_says_which_format_this_gate_reads(made, tmp_path):
    doc = _report_doc(made)
    doc["report_format"] = 1
    doc["counts"] = doc.pop("tally")  # format 1 had `counts`
    d = _write_report(tmp_path, doc)
    with pytest.raises(ContractError) as info:
        load_report_dir(d)
    assert info.value.problem == "has report_format 1; this gate reads format 2"
    assert "make the report again with this version of the gate" in info.value.render()


def test_old_and_new_results_formats_say_which_format_this_gate_reads(made, tmp_path):
    doc = _results_doc(made)
    doc["gate_results"]["format"] = 2
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = run_main("judge", path, "--policy", made.policy, "--out", tmp_path / "out")
    assert result.code == 2
    assert f"{path}: has results format 2; this gate reads format 1" in result.stderr


# ---------------------------------------------------------------- reading safely

@pytest.mark.parametrize("text, says", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"gate_results": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
    ("", "not readable JSON"),
    ('{"gate_results": {"format": 1, "n_samples": 1' + "0" * 5000 + "}}", "not readable JSON"),
])
def test_unreadable_files_are_refused_with_the_reason(tmp_path, text, says):
    path = tmp_path / "results.json"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    with pytest.raises(ContractError) as info:
        load_results_file(path)
    assert says in info.value.problem


def test_the_size_is_checked_before_reading(tmp_path, monkeypatch, made):
    monkeypatch.setattr(contract, "MAX_JSON_BYTES", 1000)
    opened = []
    real_open = Path.open
    monkeypatch.setattr(contract.Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    with pytest.raises(ContractError) as info:
        load_results_file(made.results)
    assert "more than the 1,000 bytes" in info.value.problem and not opened  # refused on its size, unread
    with pytest.raises(ContractError) as info:
        load_report_dir(made.checked)
    assert "more than the 1,000 bytes" in info.value.problem


def test_missing_files_and_folders_name_the_file(tmp_path):
    with pytest.raises(ContractError, match="not found"):
        load_results_file(tmp_path / "nothing.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ContractError, match="is not a file"):
        load_results_file(tmp_path / "dir.json")
    with pytest.raises(ContractError, match="report.json: not found"):
        load_report_dir(tmp_path)


def test_the_action_reads_reports_with_the_standard_library_only():
    code = ("import sys, gate.github, gate.contract; heavy = {'numpy', 'onnx', 'onnxruntime', 'yaml', 'jinja2', "
            "'sklearn', 'matplotlib', 'jsonschema'}; print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
