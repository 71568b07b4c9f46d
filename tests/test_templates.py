"""--templates DIR: user templates override the shipped ones, sandboxed."""

import json

import pytest

from conftest import logits_for, lookup_model, make_scenario, run_cli, write_npz, write_policy


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("tpl")
    s = make_scenario(400, 360, 0, 0, k=3)
    lookup_model(root / "base.onnx", logits_for(s.base, 3))
    lookup_model(root / "cand.onnx", logits_for(s.cand, 3, seed=1))
    write_npz(root / "data.npz", s.y)
    write_policy(root / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}], candidates={"c": "cand.onnx"})
    return root


def test_a_user_template_replaces_only_its_own_report(project, tmp_path):
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "report.md.j2").write_text("CUSTOM {{ report.verdict }} {{ report.candidates[0].name | md }}\n")
    out = tmp_path / "out"
    result = run_cli("check", "--policy", project / "policy.yaml", "--out", out, "--templates", templates)
    assert result.code == 0, result
    assert (out / "report.md").read_text() == "CUSTOM pass c\n"
    assert "<html" in (out / "report.html").read_text()
    assert json.loads((out / "report.json").read_text())["verdict"] == "pass"


def test_user_templates_are_sandboxed_and_a_broken_one_loses_nothing_else(project, tmp_path):
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "report.html.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    out = tmp_path / "out"
    result = run_cli("check", "--policy", project / "policy.yaml", "--out", out, "--templates", templates)
    assert result.code == 2, result
    assert str(templates) in result.stderr and "report.html" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "report.html").exists()
    for name in ("report.md", "report.json", "junit.xml"):
        assert (out / name).stat().st_size > 0, name


def test_templates_must_be_a_directory(project, tmp_path):
    result = run_cli("check", "--policy", project / "policy.yaml", "--out", tmp_path / "o",
                     "--templates", tmp_path / "missing")
    assert result.code == 2 and "missing" in result.stderr
