"""Policy parsing: every error names the file, the line and the fix."""

import json
from pathlib import Path

import pytest

from gate.errors import GateInputError
from gate.policy import json_schema, load_policy, parse_policy, presets, with_overrides

ROOT = Path(__file__).resolve().parents[1]

VALID = """\
version: 1
base: models/base.onnx
candidates:
  int8: models/int8.onnx
  fp16: {path: models/fp16.onnx, output: logits}
data:
  path: data/cal.npz
  inputs: {input: pixels}
  labels: label
rules:
  - metric: accuracy
    max_drop: 0.01
  - metric: log_loss
    max_relative_increase: 0.05
    severity: warn
"""


def parse(text):
    return parse_policy(text, "p.yaml", Path("/root/repo"))


def error_of(text) -> GateInputError:
    with pytest.raises(GateInputError) as info:
        parse(text)
    return info.value


def test_valid_policy_resolves_paths_against_the_policy_file():
    policy = parse(VALID)
    assert policy.base.path == Path("/root/repo/models/base.onnx")
    assert [c.name for c in policy.candidates] == ["int8", "fp16"]
    assert policy.candidates[1].output == "logits"
    assert policy.data.inputs == {"input": "pixels"}
    assert [(r.metric, r.bound_kind, r.bound, r.severity) for r in policy.rules] == [
        ("accuracy", "max_drop", 0.01, "fail"), ("log_loss", "max_relative_increase", 0.05, "warn")]
    assert policy.rules[0].line == 11
    assert policy.inconclusive == "fail" and policy.confidence == 0.95


@pytest.mark.parametrize("old,new,line,needle", [
    ("  labels: label", "  label: label", 9, "did you mean 'labels'"),
    ("    max_drop: 0.01", "    max_drop: one percent", 12, "must be a number >= 0. got 'one percent'"),
    ("  - metric: accuracy", "  - metric: acuracy", 11, "did you mean 'accuracy'"),
    ("    max_drop: 0.01", "    max_drop: 0.01\n    min: 0.5", 11, "exactly one bound"),
    ("    max_relative_increase: 0.05", "    max_relative_drop: 0.05", 14, "use max_relative_increase"),
    ("version: 1", "version: 2", 1, "must be an integer >= 1 and <= 1"),
    ("  - metric: accuracy", "  - metric: mae", 11, "regression metric"),
    ("  - metric: accuracy\n    max_drop: 0.01", "  - metric: flip_rate\n    max_drop: 0.01", 12, "use min or max"),
    ("rules:", "inconclusive: maybe\nrules:", 10, "must be one of fail, warn"),
    ("  labels: label", "  labels: label\n  labels: y", 10, "duplicate key 'labels'"),
])
def test_errors_name_the_line_and_the_fix(old, new, line, needle):
    assert old in VALID
    err = error_of(VALID.replace(old, new, 1))
    assert err.path == "p.yaml"
    assert err.line == line, err.render()
    assert needle.lower() in err.render().lower()
    assert "fix:" in err.render()


def test_all_errors_are_reported_at_once():
    text = VALID.replace("  labels: label", "  label: label").replace("max_drop: 0.01", "max_drop: -1")
    rendered = error_of(text).render()
    assert "labels" in rendered and "max_drop" in rendered


def test_yaml_syntax_error_names_the_line():
    err = error_of("version: 1\nrules:\n  - metric: [accuracy\n")
    assert err.line is not None and err.line >= 3
    assert "not valid YAML" in err.render()


def test_empty_and_non_mapping_documents_are_errors():
    assert "empty" in error_of("").render()
    assert "must be a mapping" in error_of("- 1\n- 2\n").render()


def test_schema_command_matches_the_committed_schema():
    committed = json.loads((ROOT / "policies" / "schema.json").read_text())
    assert committed == json_schema()


def test_schema_and_validator_agree_on_the_keys():
    schema = json_schema()
    assert set(schema["properties"]) >= {"version", "base", "candidates", "data", "rules", "confidence"}
    rule = schema["properties"]["rules"]["items"]
    assert rule["additionalProperties"] is False
    assert {"max_drop", "max_relative_drop", "max_increase", "max_relative_increase", "min", "max"} <= set(
        rule["properties"])


@pytest.mark.parametrize("name", ["default", "release", "regression"])
def test_presets_load_by_name(name):
    assert name in presets()
    policy = load_policy(name)
    assert policy.source == f"preset:{name}" and policy.rules


def test_unknown_preset_suggests_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GateInputError) as info:
        load_policy("relase")
    assert "release" in info.value.render()


def test_flags_override_the_policy_and_name_candidates(tmp_path):
    policy = with_overrides(parse(VALID), base="b.onnx", candidates=["q=x/q.onnx", "y/fp16.onnx"], data="d.csv")
    assert policy.base.path == Path("b.onnx")
    assert [(c.name, str(c.path)) for c in policy.candidates] == [("q", "x/q.onnx"), ("fp16", "y/fp16.onnx")]
    assert policy.data.path == Path("d.csv") and policy.data.labels == "label"
    with pytest.raises(GateInputError):
        with_overrides(parse(VALID), candidates=["a/m.onnx", "b/m.onnx"])
