"""examples/model-repo: the layout the example workflows name, with a policy whose paths work as written."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import yaml

from conftest import ROOT, read_report, run_main

REPO = ROOT / "examples" / "model-repo"


def _arrange():
    spec = importlib.util.spec_from_file_location("make_models", REPO / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.arrange


def test_the_example_repository_is_gated_as_the_workflows_run_it(demo_dir, tmp_path, monkeypatch):
    repo = tmp_path / "model-repo"
    shutil.copytree(REPO, repo)
    written = _arrange()(demo_dir, repo)
    assert all(p.is_file() for p in written)
    monkeypatch.chdir(repo)  # the workflows run from the repository's root
    result = run_main("check", "--policy", "gate/policy.yaml", "--out", "gate-report", "--no-progress")
    assert result.code == 0, result
    report = read_report(repo / "gate-report")
    assert {c["name"]: c["verdict"] for c in report["candidates"]} == {"int8": "pass", "fp16": "pass",
                                                                       "pruned-50": "pass"}
    # every model file an example workflow names exists in this layout, under that name
    named = set()
    for workflow in (ROOT / "examples").glob("*.yml"):
        text = workflow.read_text()
        named |= {word.strip("\"',") for word in text.replace("=", " ").split() if word.startswith("models/")}
        assert "gate/policy.yaml" in text or "policy:" not in text, workflow.name
    assert named and all((repo / path).is_file() for path in named), named
    policy = yaml.safe_load((REPO / "gate" / "policy.yaml").read_text())
    assert set(policy["candidates"]) == {"int8", "fp16", "pruned-50"}
    # nothing blessed yet: the rule against the last release is reported, not judged, and blocks nothing
    against = [r for r in report["candidates"][0]["rules"] if r.get("vs") == "baseline"]
    assert against and against[0]["status"] == "warn" and "no blessed release yet" in against[0]["reason"]
