"""attestation.intoto.json: an in-toto Statement (v1) that the judged models passed or failed this gate.

The subjects are the judged candidates (name and sha256 of the model file); the base is not a
subject (it is the reference every candidate was compared with, never judged itself) and appears in
the predicate. The predicate (type PREDICATE_TYPE, described in docs/formats.md and by
gate/schemas/statement.schema.json) holds the verdict, the tally, every candidate's verdict and rule
results, the sha256 of the policy, data, base and report.json, and the gate version.

The statement is unsigned. A release workflow signs it with GitHub's artifact attestation action
(examples/release.yml), so `gh attestation verify MODEL --predicate-type PREDICATE_TYPE` checks a
shipped file; a subject says only that the model was judged: its verdict is in the predicate
(`candidates[].verdict`), and the example signs only after every candidate passed.

Pure: report.json's document and text in, the statement out. Field names in the predicate are
lowerCamelCase, as in-toto's predicate guidelines ask.
"""

from __future__ import annotations

import hashlib
import json

from gate import __version__

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# A URN: stable, collision-free, and not tied to a domain or repository location this project may move from
# (the JSON Schemas' $ids are URNs too). Raise the version on a change that would make an old reader misread.
PREDICATE_TYPE = "urn:gate:predicate:verdict:v1"
ATTESTATION = "attestation.intoto.json"

_RULE_KEYS = (("rule", "rule"), ("metric", "metric"), ("boundKind", "bound_kind"), ("threshold", "threshold"),
              ("severity", "severity"), ("status", "status"), ("blocking", "blocking"), ("observed", "observed"),
              ("interval", "interval"), ("n", "n"))


def _model_sha(cand: dict, report: dict) -> str | None:
    return (cand.get("model") or {}).get("sha256") or report["provenance"]["models"].get(cand["name"])


def _tally(t: dict) -> dict:
    return {"passed": t["passed"], "failed": t["failed"], "warned": t["warned"], "rules": t["rules"]}


def statement(report: dict, report_text: str) -> dict | None:
    """The Statement for a report.json document and its exact text; None when no candidate has a digest
    (every candidate failed before its file could be hashed: there is nothing to attest)."""
    prov = report["provenance"]
    subjects, candidates = [], []
    for cand in report["candidates"]:
        sha = _model_sha(cand, report)
        if sha:
            subjects.append({"name": cand["name"], "digest": {"sha256": sha}})
        candidates.append({
            "name": cand["name"], "sha256": sha, "verdict": cand["verdict"], "error": cand["error"],
            "tally": _tally(cand["tally"]),
            "rules": [{out: rule.get(key) for out, key in _RULE_KEYS} for rule in cand["rules"]],
        })
    if not subjects:
        return None
    base = report["base"]["model"]
    data = prov.get("data") or {}
    policy = prov["policy"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verdict": report["verdict"],
            "tally": _tally(report["tally"]),
            "confidence": report["confidence"],
            "inconclusive": report["inconclusive"],
            "candidates": candidates,
            "base": {"name": base.get("name"), "sha256": base.get("sha256") or prov["models"].get("base")},
            "policy": {"path": policy["path"], "sha256": policy["sha256"]},
            "data": {"path": data.get("path"), "sha256": data.get("sha256")},
            "report": {"name": "report.json", "sha256": hashlib.sha256(report_text.encode("utf-8")).hexdigest()},
            "gateVersion": __version__,  # the gate that judged and wrote this (the measuring one is in report.json)
            "judgedAt": prov.get("finished"),
        },
    }


def render_statement(report: dict, report_text: str) -> str | None:
    doc = statement(report, report_text)
    return None if doc is None else json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
