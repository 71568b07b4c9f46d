"""`gate bless`: record a judged candidate as the blessed baseline of later releases.

Blessing is explicit: it names a report and a candidate in it. The candidate must have passed there, or the
release manager says `--force` with a reason, which the record keeps. The model file and the data are checked
against the sha256 the report recorded (what is blessed is what was judged), then the model is run once more
on the data to store its per-sample outputs (gate/baseline.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gate import __version__, provenance
from gate.baseline import Blessing, append_blessing
from gate.errors import GateInputError
from gate.files import sha256_of


def _candidate_entry(report: dict, name: str, where: Path) -> dict:
    entries = {c["name"]: c for c in report["candidates"]}
    if name not in entries:
        import difflib

        hint = difflib.get_close_matches(name, list(entries), n=1)
        raise GateInputError(f"judged no candidate named {name!r}", path=where,
                             fix=f"did you mean {hint[0]!r}?" if hint else f"name one of: {', '.join(entries)}")
    return entries[name]


def _intact(report_dir: Path) -> None:
    """A blessing vouches for what the gate judged: the report folder must be as the gate wrote it (its
    manifest's hashes), or an edited report.json could bless a model that failed."""
    from gate.contract import load_manifest
    from gate.verify import INTACT, check_files

    problems = [c for c in check_files(report_dir, load_manifest(report_dir)) if c.status != INTACT]
    if problems:
        listed = "; ".join(f"{c.path} {c.status}{': ' + c.detail if c.detail else ''}" for c in problems[:5])
        raise GateInputError(f"is not as the gate wrote it ({listed})", path=report_dir,
                             fix="bless from a report folder the gate wrote and nobody edited (gate verify shows "
                                 "what changed); judge again to make one")


def _same_file(path: Path, recorded: str | None, what: str, flag: str) -> None:
    if not path.is_file():
        raise GateInputError(f"is not a file ({what} named by the report)", path=path,
                             fix=f"give the file with {flag}")
    if not recorded:
        raise GateInputError(f"has no recorded sha256 in the report, so it cannot be checked as the {what} judged",
                             path=path, fix="bless from a report of a candidate the gate measured")
    if sha256_of(path) != recorded:
        raise GateInputError(f"is not the {what} the report judged (sha256 {sha256_of(path)[:12]}, the report "
                             f"recorded {recorded[:12]})", path=path,
                             fix=f"bless from a report made on this file, or give the judged file with {flag}")


def bless(report_dir: str | Path, candidate: str, baseline: str | Path, *, policy: str | Path | None = None,
          model: str | Path | None = None, data: str | Path | None = None, force: bool = False,
          reason: str | None = None, show_progress: bool | None = None) -> Blessing:
    """Append `candidate` of the report in `report_dir` to the blessed releases in `baseline`."""
    from gate.contract import load_report
    from gate.pipeline import outputs_of
    from gate.policy import load_policy

    report_dir = Path(report_dir)
    report_path = report_dir / "report.json"
    if not report_path.is_file():
        raise GateInputError("not found", path=report_path,
                             fix="give the folder `gate check --out DIR` wrote")
    _intact(report_dir)
    report = load_report(report_path)
    entry = _candidate_entry(report, candidate, report_path)
    if reason is not None and not reason.strip():
        reason = None
    if entry["verdict"] != "pass" and not force:
        raise GateInputError(f"candidate {candidate!r} did not pass in this report ({entry['tally']['failed']} "
                             "rule(s) failed)", path=report_path,
                             fix="bless a passing candidate, or say why with --force --reason TEXT")
    if force and not reason:
        raise GateInputError("--force needs a reason", path=report_path,
                             fix="add --reason 'why this release is blessed anyway' (it is kept in the record)")
    prov = report["provenance"]
    policy_path = Path(policy) if policy else Path(prov["policy"]["path"])
    loaded = load_policy(policy_path)
    if loaded.sha256 != prov["policy"]["sha256"]:
        raise GateInputError("is not the policy the report was judged with (it changed since)", path=policy_path,
                             fix="bless from a report judged with this policy (run gate check again)")
    model_path = Path(model) if model else Path(entry["model"]["path"])
    _same_file(model_path, entry["model"].get("sha256"), "model", "--model")
    recorded_data = prov.get("data") or {}
    data_path = Path(data) if data else Path(recorded_data.get("path", ""))
    if loaded.data is None:
        raise GateInputError("names no data", path=policy_path, fix="give the data with --data")
    loaded = replace(loaded, data=replace(loaded.data, path=data_path))
    ref = next((c for c in loaded.candidates if c.name == candidate), None)
    ref = replace(ref, path=model_path) if ref else replace(loaded.base, name=candidate, path=model_path)
    outputs, dataset = outputs_of(loaded, ref, show_progress=show_progress)
    if dataset.sha256 != recorded_data.get("sha256"):
        raise GateInputError(f"is not the data the report was judged on (sha256 {dataset.sha256[:12]}, the report "
                             f"recorded {str(recorded_data.get('sha256'))[:12]})", path=data_path,
                             fix="bless from a report made on this data, or give the judged data with --data")
    metrics = {k: v.get("candidate") for k, v in entry["metrics"].items() if v.get("candidate") is not None}
    fields_ = {"name": candidate, "model_sha256": entry["model"]["sha256"], "model_path": str(model_path),
               "data_sha256": dataset.sha256, "n_samples": dataset.n, "task": loaded.task,
               "policy_sha256": loaded.sha256, "gate_version": __version__, "blessed_at": provenance.now(),
               "report_sha256": sha256_of(report_path), "verdict": entry["verdict"], "forced": entry["verdict"] != "pass",
               "reason": reason, "metrics": metrics}
    return append_blessing(Path(baseline), fields_, outputs)
