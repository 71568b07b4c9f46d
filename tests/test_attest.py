"""attestation.intoto.json: an in-toto Statement v1 whose subjects are the judged models, checked against
the Statement rules (gate/schemas/statement.schema.json) and against the files themselves; and
examples/release.yml, whose glue turns it into what GitHub's attest action signs (run here on the real
statement: signing itself needs the network)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from gate import __version__
from gate.attest import PREDICATE_TYPE, STATEMENT_TYPE
from gate.contract import SCHEMAS, load_report
from gate.files import sha256_of
from test_verify import make_release

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((SCHEMAS / "statement.schema.json").read_text())
RELEASE = ROOT / "examples" / "release.yml"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_release(tmp_path_factory.mktemp("attest"), {"good": (2, 1), "bad": (30, 0)})


@pytest.fixture(scope="module")
def statement(release) -> dict:
    return json.loads((release.out / "attestation.intoto.json").read_text())


def _errors(doc) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in Draft202012Validator(SCHEMA).iter_errors(doc)]


def test_the_statement_follows_in_toto_v1_and_names_the_judged_files(release, statement):
    Draft202012Validator.check_schema(SCHEMA)
    assert _errors(statement) == []
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    # subjects: the judged candidates with the sha256 of their files; the base is the reference, not a subject
    assert statement["subject"] == [{"name": n, "digest": {"sha256": sha256_of(release.root / f"{n}.onnx")}}
                                    for n in ("good", "bad")]
    pred = statement["predicate"]
    assert pred["base"]["sha256"] == sha256_of(release.root / "base.onnx")
    assert pred["data"]["sha256"] == sha256_of(release.root / "data.npz")
    report = load_report(release.out / "report.json")
    assert pred["policy"]["sha256"] == report["provenance"]["policy"]["sha256"]
    assert pred["report"] == {"name": "report.json", "sha256": sha256_of(release.out / "report.json")}
    assert pred["gateVersion"] == __version__ and pred["judgedAt"] == report["provenance"]["finished"]
    assert pred["verdict"] == "fail"
    assert pred["tally"] == {"passed": 2, "failed": 2, "warned": 2, "rules": 6}
    good, bad = pred["candidates"]
    assert (good["verdict"], good["tally"]) == ("pass", {"passed": 2, "failed": 0, "warned": 1, "rules": 3})
    assert bad["verdict"] == "fail"
    accuracy = bad["rules"][0]
    assert (accuracy["metric"], accuracy["status"], accuracy["boundKind"]) == ("accuracy", "fail", "max_drop")
    assert accuracy["observed"] == pytest.approx(0.15)  # 30 of 200 right answers lost
    assert accuracy["interval"][0] > 0.05  # the whole interval beyond the bound: a fail, not inconclusive


@pytest.mark.parametrize("damage", [
    lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"),
    lambda d: d.update(subject=[]),
    lambda d: d["subject"][0].pop("digest"),
    lambda d: d["subject"][0]["digest"].update(sha256="ABC"),
    lambda d: d.update(predicateType="https://slsa.dev/provenance/v1"),
    lambda d: d["predicate"].pop("verdict"),
    lambda d: d["predicate"]["candidates"][0].update(verdict="maybe"),
    lambda d: d["predicate"]["report"].update(sha256=None),
])
def test_the_schema_refuses_what_the_statement_rules_forbid(statement, damage):
    doc = copy.deepcopy(statement)
    damage(doc)
    assert _errors(doc)


# ---------------------------------------------------------------- examples/release.yml

def _steps() -> list[dict]:
    doc = yaml.safe_load(RELEASE.read_text())
    [job] = doc["jobs"].values()
    return doc, job["steps"]


def test_the_release_workflow_checks_blesses_verifies_then_signs_the_statement():
    doc, steps = _steps()
    on = doc[True] if True in doc else doc["on"]  # YAML 1.1 reads the key `on` as true
    assert set(on) == {"push"} and on["push"]["tags"]
    assert doc["permissions"] == {"contents": "write", "id-token": "write", "attestations": "write"}
    gate_steps = [s for s in steps if str(s.get("uses", "")).endswith("/gate@v1")]
    assert [s["with"].get("command", "check") for s in gate_steps] == ["check", "bless", "verify"]
    assert not any("if" in s for s in gate_steps)  # bless and verify run only after the check passed
    [attest] = [s for s in steps if str(s.get("uses", "")).startswith("actions/attest@")]
    assert attest["uses"] == "actions/attest@v4"
    assert attest["with"]["predicate-type"] == PREDICATE_TYPE
    assert set(attest["with"]) == {"subject-checksums", "predicate-type", "predicate-path"}
    assert steps.index(attest) > steps.index(gate_steps[-1])


def test_the_workflow_glue_turns_the_statement_into_what_attest_signs(release, statement, tmp_path):
    """The jq step, run on the real statement: GitHub's signed statement then has the gate's subjects and
    predicate, so `gh attestation verify MODEL --predicate-type ...` finds the shipped file."""
    if not shutil.which("jq"):
        pytest.fail("jq is missing (GitHub's runners have it): apt-get install jq")
    _, steps = _steps()
    [glue] = [s for s in steps if "jq" in s.get("run", "")]
    (tmp_path / "gate-report").mkdir()
    shutil.copy(release.out / "attestation.intoto.json", tmp_path / "gate-report")
    temp = tmp_path / "runner_temp"
    temp.mkdir()
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", glue["run"]], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "RUNNER_TEMP": str(temp)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the checksums format of sha256sum: digest, two spaces, name
    lines = (temp / "subjects.sha256").read_text().splitlines()
    assert lines == [f"{sha256_of(release.root / f'{n}.onnx')}  {n}" for n in ("good", "bad")]
    assert json.loads((temp / "predicate.json").read_text()) == statement["predicate"]
