"""gate verify: a shipped model file against the report folder it was judged in, and manifest.json.

One real `gate check` (in process) on lookup-table models whose every prediction is chosen: `good` loses 2
and wins 1 of the base's 160 right answers (accuracy 0.795, flip rate 0.015: passes, and warns on a
flip_rate rule of severity warn), `bad` loses 30 (accuracy 0.65: fails). Tampered copies of the folder
are made per test. The Action's `command: verify` and `command: bless` run through the harness of
test_action.py (action.yml's bash steps, no network).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from jsonschema import Draft202012Validator

from conftest import logits_for, lookup_model, make_scenario, run_main, write_npz, write_policy
from gate import contract
from gate.files import sha256_of

RULES = [{"metric": "accuracy", "max_drop": 0.05},
         {"metric": "flip_rate", "max": 0.1},
         {"metric": "flip_rate", "max": 0.01, "severity": "warn"}]


def make_release(root: Path, candidates: dict[str, tuple[int, int]], *, out: str = "report",
                 rules: list[dict] = RULES, base_seed: int = 0) -> SimpleNamespace:
    """Base and candidates (name -> (b, c): right answers lost and won of the base's 160 of 200), data, a
    policy, and `gate check --out root/out`. The base and data are the same for every call with one seed."""
    root.mkdir(parents=True, exist_ok=True)
    s0 = make_scenario(200, 160, 0, 0, seed=base_seed)
    lookup_model(root / "base.onnx", logits_for(s0.base, 3))
    write_npz(root / "data.npz", s0.y)
    for i, (name, (b, c)) in enumerate(candidates.items()):
        s = make_scenario(200, 160, b, c, seed=base_seed)
        lookup_model(root / f"{name}.onnx", logits_for(s.cand, 3, seed=i + 1))
    policy = write_policy(root / "policy.yaml", rules, candidates={n: f"{n}.onnx" for n in candidates})
    result = run_main("check", "--policy", policy, "--out", root / out, "--no-progress")
    assert result.code in (0, 1) and "Traceback" not in result.stderr, result
    return SimpleNamespace(root=root, out=root / out, policy=policy, result=result)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_release(tmp_path_factory.mktemp("release"), {"good": (2, 1), "bad": (30, 0)})


def _copy(release, tmp_path: Path) -> Path:
    return Path(shutil.copytree(release.out, tmp_path / "report"))


# ---------------------------------------------------------------- the manifest

def test_the_manifest_lists_every_file_written_with_its_hash(release):
    manifest = contract.load_manifest(release.out)
    on_disk = {p.name for p in release.out.iterdir()} - {"manifest.json"}
    assert {f["path"] for f in manifest["files"]} == on_disk
    assert {"report.md", "report.html", "report.json", "junit.xml", "attestation.intoto.json"} <= on_disk
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256_of(release.out / entry["path"])
        assert entry["size_bytes"] == (release.out / entry["path"]).stat().st_size
    schema = json.loads(contract.MANIFEST_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    assert list(Draft202012Validator(schema).iter_errors(manifest)) == []
    from gate import __version__
    from gate.report.manifest import MANIFEST_FORMAT
    assert manifest["manifest_format"] == MANIFEST_FORMAT == contract.MANIFEST_FORMAT
    assert manifest["gate_version"] == __version__


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../b", "./report.md", "C:/x", "a\\b",
                                  "", "a//b", "manifest.json"])
def test_a_manifest_naming_a_path_outside_the_folder_is_refused_by_the_schema_and_the_loader(release, tmp_path, path):
    folder = _copy(release, tmp_path)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["files"].append({"path": path, "sha256": "0" * 64, "size_bytes": 1})
    (folder / "manifest.json").write_text(json.dumps(doc))
    schema = json.loads(contract.MANIFEST_SCHEMA.read_text())
    # the schema cannot say "listed twice"; the loader does
    if path != "manifest.json":
        assert list(Draft202012Validator(schema).iter_errors(doc)), path
    assert contract.manifest_problem(doc), path
    result = run_main("verify", folder, release.root / "good.onnx")
    assert result.code == 2 and "manifest.json" in result.stderr and "Traceback" not in result.stderr, result


# ---------------------------------------------------------------- verify: known answers

def test_a_candidate_that_passed_is_verified(release):
    result = run_main("verify", release.out, release.root / "good.onnx")
    assert result.code == 0, result
    assert "candidate 'good' passed (2 rule(s) passed, 1 warned)" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("verified:")
    # --fail-on warn: a warning is not a pass
    strict = run_main("verify", release.out, release.root / "good.onnx", "--fail-on", "warn")
    assert strict.code == 1 and "WARNED" in strict.stdout and "flip_rate max 0.01" in strict.stdout, strict


def test_failed_base_and_unknown_models_are_not_verified_each_with_why(release, tmp_path):
    other = lookup_model(tmp_path / "other.onnx", logits_for(make_scenario(200, 160, 1, 0).cand, 3, seed=9))
    result = run_main("verify", release.out, release.root / "good.onnx", release.root / "bad.onnx",
                      release.root / "base.onnx", other, "--json")
    assert result.code == 1, result
    doc = json.loads(result.stdout)
    assert doc["verified"] is False and all(f["status"] == "intact" for f in doc["files"])
    by_path = {Path(m["path"]).name: m for m in doc["models"]}
    assert by_path["good.onnx"]["status"] == "verified"
    bad = by_path["bad.onnx"]
    assert bad["status"] == "failed" and "accuracy max_drop 0.05 (fail)" in bad["reason"]
    assert by_path["base.onnx"]["status"] == "base" and "never judged" in by_path["base.onnx"]["reason"]
    assert by_path["other.onnx"]["status"] == "unknown" and "good (" in by_path["other.onnx"]["reason"]
    assert by_path["other.onnx"]["sha256"] == sha256_of(other)


def test_one_changed_byte_a_deleted_file_or_an_added_one_is_named(release, tmp_path):
    folder = _copy(release, tmp_path)
    html = bytearray((folder / "report.html").read_bytes())
    html[len(html) // 2] ^= 0x01  # same size: only the hash can tell
    (folder / "report.html").write_bytes(bytes(html))
    (folder / "junit.xml").unlink()
    (folder / "notes.txt").write_text("added later")
    result = run_main("verify", folder, release.root / "good.onnx")
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["CHANGED", "report.html:"] and "same size" in line for line in lines), result
    assert any(line.split()[:2] == ["MISSING", "junit.xml:"] for line in lines), result
    assert any(line.split()[:2] == ["EXTRA", "notes.txt:"] for line in lines), result
    assert "NOT VERIFIED: 3 report file(s) differ" in result.stdout


def test_a_changed_report_json_leaves_no_model_verified(release, tmp_path):
    folder = _copy(release, tmp_path)
    doc = json.loads((folder / "report.json").read_text())
    for cand in doc["candidates"]:  # a forger turning the failing candidate into a passing one
        cand["verdict"] = "pass"
    (folder / "report.json").write_text(json.dumps(doc, indent=2))
    result = run_main("verify", folder, release.root / "bad.onnx")
    assert result.code == 1 and "CHANGED   report.json" in result.stdout and "UNCHECKED" in result.stdout, result


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
def test_a_report_file_replaced_by_a_link_is_not_followed(release, tmp_path):
    folder = _copy(release, tmp_path)
    outside = tmp_path / "outside.html"
    shutil.copy(folder / "report.html", outside)  # the very same bytes
    (folder / "report.html").unlink()
    (folder / "report.html").symlink_to(outside)
    result = run_main("verify", folder, release.root / "good.onnx")
    assert result.code == 1 and "CHANGED   report.html: is not a plain file" in result.stdout, result


def test_a_manifest_replaced_by_a_link_is_not_followed(release, tmp_path):
    folder = _copy(release, tmp_path)
    outside = tmp_path / "manifest.json"
    shutil.copy(folder / "manifest.json", outside)
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").symlink_to(outside)
    result = run_main("verify", folder, release.root / "good.onnx")
    assert result.code == 2 and "is a link" in result.stderr, result


def test_help_says_what_each_exit_code_means():
    result = run_main("verify", "--help")
    assert result.code == 0 and result.stdout.startswith("usage: gate verify"), result
    assert "0 verified, 1 not verified" in " ".join(result.stdout.split())
    assert "verify" in run_main("--help").stdout and "history" in run_main("--help").stdout


def test_wrong_inputs_are_exit_2_naming_the_file(release, tmp_path):
    cases = [
        (("verify", tmp_path / "nope", release.root / "good.onnx"), "no such report folder"),
        (("verify", tmp_path, release.root / "good.onnx"), "is not a report folder"),
        (("verify", release.out, tmp_path / "missing.onnx"), "model not found"),
        (("verify", release.out, tmp_path), "is not a file"),
    ]
    for args, says in cases:
        result = run_main(*args)
        assert result.code == 2 and says in result.stderr and "Traceback" not in result.stderr, result
    no_manifest = _copy(release, tmp_path / "x")
    (no_manifest / "manifest.json").unlink()
    result = run_main("verify", no_manifest, release.root / "good.onnx")
    assert result.code == 2 and "manifest.json: not found" in result.stderr, result
    (no_manifest / "manifest.json").write_text("{\"manifest_format\": 1, \"files\": [")
    result = run_main("verify", no_manifest, release.root / "good.onnx")
    assert result.code == 2 and "not readable JSON" in result.stderr, result


# ---------------------------------------------------------------- the Action's verify and bless

def _action(inputs: dict, workspace: Path, tmp_path: Path):
    from test_action import prepared_venv, run_action, runner_env

    tmp_path.mkdir(parents=True)
    env = runner_env(tmp_path, "http://127.0.0.1:9", "push", {}, workspace)
    prepared_venv(Path(env["RUNNER_TEMP"]))
    return run_action({"setup-python": "false", **inputs}, env=env, workspace=workspace)


def test_the_action_verifies_a_model_and_fails_on_a_failed_one(release, tmp_path):
    ws = release.root
    ok = _action({"command": "verify", "out": "report", "models": "good.onnx\n"}, ws, tmp_path / "a")
    assert ok.ok and ok.outputs["verdict"] == "verified" and ok.outputs["exit-code"] == "0", ok.log
    assert "gate verify: VERIFIED" in ok.summary and "candidate 'good' passed" in ok.summary
    bad = _action({"command": "verify", "out": "report", "models": "  good.onnx\nbad.onnx  \n"}, ws, tmp_path / "b")
    assert not bad.ok and bad.outputs["verdict"] == "not-verified" and bad.outputs["exit-code"] == "1", bad.log
    errors = bad.commands("error")
    assert len(errors) == 1 and "bad.onnx" in errors[0] and "failed the policy" in errors[0], errors
    assert bad.step("gate").log.splitlines()[0] == "gate verify report good.onnx bad.onnx"


def test_the_action_blesses_a_candidate_with_the_gate_bless_command_line(release, tmp_path):
    ws = Path(shutil.copytree(release.root, tmp_path / "ws"))
    run = _action({"command": "bless", "out": "report", "candidate": "good", "baseline": "gate/baseline",
                   "reason": "release 1.0"}, ws, tmp_path / "a")
    assert run.step("gate").log.splitlines()[0] == (
        "gate bless report --candidate good --baseline gate/baseline --no-progress --reason release 1.0")
    assert run.ok and run.outputs["verdict"] == "blessed", run.log
    record = json.loads((ws / "gate" / "baseline" / "blessings.json").read_text())
    assert [b["model_sha256"] for b in record["blessings"]] == [sha256_of(ws / "good.onnx")]
    wrong = _action({"command": "bless", "out": "report", "baseline": "gate/baseline"}, ws, tmp_path / "b")
    assert not wrong.ok and wrong.outputs["verdict"] == "error" and wrong.outputs["exit-code"] == "2", wrong.log
    assert any("the candidate input is empty" in e for e in wrong.commands("error")), wrong.log
