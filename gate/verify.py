"""`gate verify REPORT_DIR MODEL...`: is each model file a candidate that passed in this report, and is the
report as the gate wrote it?

What an auditor runs on a shipped model and the report kept with it:
1. every file of manifest.json is there with the sha256 and size recorded when the gate wrote it, and no
   file was added (hashes streamed, so a large file is never read whole);
2. each MODEL's sha256 is a judged candidate of report.json whose verdict is pass, judged by at least one
   rule (with fail_on="warn": and without warnings).

Exit 0 verified; 1 not verified (what differs, said per file and per model); 2 wrong input (no such folder,
not a report, a manifest naming a path outside the folder, an unreadable model). Both files are read
only through gate/contract.py. The manifest detects edits and mix-ups; who wrote it is proven by the
signed attestation (docs/formats.md), not here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gate.errors import GateInputError

INTACT, CHANGED, MISSING, EXTRA = "intact", "changed", "missing", "extra"
# a model's outcome: only VERIFIED passes
VERIFIED, FAILED, WARNED, UNJUDGED, UNKNOWN, BASE, UNCHECKED = (
    "verified", "failed", "warned", "unjudged", "unknown", "base", "unchecked")
MAX_EXTRAS_LISTED = 20


@dataclass(frozen=True, kw_only=True)
class FileCheck:
    path: str
    status: str  # intact | changed | missing | extra
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ModelCheck:
    path: str
    sha256: str
    status: str  # verified | failed | warned | unjudged | unknown | base | unchecked
    candidate: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class Verification:
    report_dir: str
    files: tuple[FileCheck, ...]
    models: tuple[ModelCheck, ...]

    @property
    def files_intact(self) -> bool:
        return all(f.status == INTACT for f in self.files)

    @property
    def verified(self) -> bool:
        return self.files_intact and bool(self.models) and all(m.status == VERIFIED for m in self.models)

    def to_dict(self) -> dict:
        return {"report_dir": self.report_dir, "verified": self.verified,
                "files": [vars(f) for f in self.files], "models": [vars(m) for m in self.models]}

    def lines(self) -> list[str]:
        """What the CLI prints: each difference, each model, then one line with the outcome."""
        out = []
        intact = [f for f in self.files if f.status == INTACT]
        out.append(f"{self.report_dir}: {len(intact)} of {len(self.files)} file(s) as written (manifest.json)")
        for f in self.files:
            if f.status != INTACT:
                out.append(f"  {f.status.upper():9} {f.path}: {f.detail}")
        for m in self.models:
            label = "ok" if m.status == VERIFIED else m.status.upper()
            out.append(f"  {label:9} {m.path} (sha256 {m.sha256[:12]}): {m.reason}")
        if self.verified:
            out.append(f"verified: every model is a candidate that passed in {self.report_dir}, whose files are "
                       "as the gate wrote them")
        else:
            problems = []
            if not self.files_intact:
                problems.append(f"{sum(f.status != INTACT for f in self.files)} report file(s) differ")
            bad = sum(m.status != VERIFIED for m in self.models)
            if bad:
                problems.append(f"{bad} model(s) not verified")
            out.append("NOT VERIFIED: " + "; ".join(problems))
        return out


# ---------------------------------------------------------------- the report's files

def _regular(path: Path) -> os.stat_result | None:
    """The file's stat when it is a regular file (not followed through a link), else None."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _inside(report_dir: Path, rel: str) -> bool:
    """No folder between the report folder and the file is a link (which could lead anywhere)."""
    folder = report_dir
    for part in rel.split("/")[:-1]:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            return False
    return True


def check_files(report_dir: Path, manifest: dict) -> tuple[FileCheck, ...]:
    """Every manifest entry against the folder, then the files the manifest does not list."""
    from gate.files import sha256_of

    checks = []
    listed = {entry["path"] for entry in manifest["files"]}
    for entry in manifest["files"]:
        path = report_dir / entry["path"]
        if not os.path.lexists(path):
            checks.append(FileCheck(path=entry["path"], status=MISSING, detail="listed in the manifest, not in the "
                                                                                "folder"))
            continue
        # a link or a FIFO named report.html would make verify read elsewhere, or wait forever
        st = _regular(path)
        if st is None or not _inside(report_dir, entry["path"]):
            checks.append(FileCheck(path=entry["path"], status=CHANGED,
                                    detail="is not a plain file any more (a link, a folder or a device)"))
            continue
        if st.st_size != entry["size_bytes"]:
            checks.append(FileCheck(path=entry["path"], status=CHANGED,
                                    detail=f"{st.st_size:,} bytes; the gate wrote {entry['size_bytes']:,}"))
            continue
        try:
            digest = sha256_of(path)
        except OSError as exc:
            checks.append(FileCheck(path=entry["path"], status=CHANGED,
                                    detail=f"cannot be read: {exc.strerror or exc}"))
            continue
        if digest != entry["sha256"]:
            checks.append(FileCheck(path=entry["path"], status=CHANGED,
                                    detail=f"sha256 {digest[:12]}, the gate wrote {entry['sha256'][:12]} "
                                           "(same size: the content was edited)"))
        else:
            checks.append(FileCheck(path=entry["path"], status=INTACT))
    if "report.json" not in listed:
        checks.append(FileCheck(path="report.json", status=MISSING, detail="the manifest does not list it"))
    checks.extend(_extras(report_dir, listed))
    return tuple(checks)


def _extras(report_dir: Path, listed: set[str]) -> list[FileCheck]:
    found = []
    for root, dirs, files in os.walk(report_dir):
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(root, d))):
            rel = Path(root, name).relative_to(report_dir).as_posix()
            if rel not in listed and rel != "manifest.json":
                found.append(rel)
        dirs.sort()
    shown = [FileCheck(path=rel, status=EXTRA, detail="not written by the gate (not in the manifest)")
             for rel in found[:MAX_EXTRAS_LISTED]]
    if len(found) > MAX_EXTRAS_LISTED:
        shown.append(FileCheck(path="...", status=EXTRA, detail=f"and {len(found) - MAX_EXTRAS_LISTED} more"))
    return shown


# ---------------------------------------------------------------- the models

def _sha_of_candidate(cand: dict, report: dict) -> str | None:
    return (cand.get("model") or {}).get("sha256") or report["provenance"]["models"].get(cand["name"])


def judge_model(report: dict, sha256: str, *, fail_on: str = "fail") -> tuple[str, str | None, str]:
    """(status, candidate name, reason) of one model's sha256 in a report.json document. Pure.

    A file judged under several names must have passed under each. A candidate that passed without any
    rule judging it is not verified: nothing was checked."""
    matches = [c for c in report["candidates"] if _sha_of_candidate(c, report) == sha256]
    if matches:
        names = ", ".join(repr(c["name"]) for c in matches)
        failing = [c for c in matches if c["verdict"] != "pass"]
        if failing:
            c = failing[0]
            prefix = f"{c['name']}: "
            why = c["error"] or "; ".join(r.removeprefix(prefix) for r in c["tally"]["failed_rules"][:3]) or \
                "its verdict is fail"
            return FAILED, c["name"], f"candidate {c['name']!r} failed the policy: {why}"
        if not all(c["tally"]["rules"] for c in matches):
            return UNJUDGED, matches[0]["name"], (f"candidate {names} passed without any rule judging it: "
                                                  "the policy checked nothing")
        warned = [c for c in matches if c["tally"]["warned"]]
        if warned and fail_on == "warn":
            c = warned[0]
            rules = "; ".join(r.removeprefix(f"{c['name']}: ") for r in c["tally"]["warned_rules"][:3])
            return WARNED, c["name"], (f"candidate {c['name']!r} passed with {c['tally']['warned']} warning(s) "
                                       f"({rules}); --fail-on warn refuses them")
        c = matches[0]
        t = c["tally"]
        return VERIFIED, c["name"], (f"candidate {names} passed ({t['passed']} rule(s) passed, {t['warned']} "
                                     f"warned) in report.json")
    base_sha = (report["base"].get("model") or {}).get("sha256") or report["provenance"]["models"].get("base")
    if sha256 == base_sha:
        return BASE, None, ("is the base model of this report, the reference the candidates were compared with; "
                            "the base is never judged")
    judged = ", ".join(f"{c['name']} ({(_sha_of_candidate(c, report) or '?')[:12]})" for c in report["candidates"])
    return UNKNOWN, None, f"was not judged in this report: no candidate has this sha256 (judged: {judged or 'none'})"


def model_digest(path: Path) -> str:
    """sha256 of a model file, as the gate recorded it (the file itself, streamed). GateInputError when unreadable."""
    from gate.files import sha256_of

    fix = "give the model file that ships (the one whose verdict you want checked)"
    try:
        if not path.exists():
            raise GateInputError("model not found", path=path, fix=fix)
        if not path.is_file():
            raise GateInputError("is not a file", path=path, fix=fix)
        return sha256_of(path)
    except OSError as exc:
        raise GateInputError(f"model cannot be read: {exc.strerror or exc}", path=path, fix=fix) from None
    except ValueError as exc:  # an embedded NUL byte
        raise GateInputError(f"impossible path: {exc}", path=path, fix=fix) from None


def verify(report_dir: str | Path, models: list[str | Path], *, fail_on: str = "fail") -> Verification:
    """The whole check. GateInputError (exit 2) when the folder is not a report folder or a model is unreadable."""
    from gate.contract import load_manifest, load_report

    report_dir = Path(report_dir)
    fix = "give the folder that `gate check --out DIR` (or `gate judge`) wrote"
    try:
        is_dir = report_dir.is_dir()
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise GateInputError("no such report folder" if not os.path.lexists(report_dir) else "is not a folder",
                             path=report_dir, fix=fix)
    if not os.path.lexists(report_dir / "manifest.json") and not os.path.lexists(report_dir / "report.json"):
        raise GateInputError("is not a report folder: it has no manifest.json and no report.json", path=report_dir,
                             fix=fix)
    if not models:
        raise GateInputError("no model to verify", fix="name the model file(s): gate verify REPORT_DIR MODEL...")
    digests = [(str(m), model_digest(Path(m))) for m in models]  # exit 2 before any verdict on the folder
    manifest = load_manifest(report_dir)
    files = check_files(report_dir, manifest)
    report_ok = any(f.path == "report.json" and f.status == INTACT for f in files)
    checks = []
    if report_ok:
        # as the gate wrote it, yet refused: another gate version wrote it (ContractError, exit 2)
        report = load_report(report_dir / "report.json")
        for path, sha in digests:
            status, name, reason = judge_model(report, sha, fail_on=fail_on)
            checks.append(ModelCheck(path=path, sha256=sha, status=status, candidate=name, reason=reason))
    else:
        for path, sha in digests:
            checks.append(ModelCheck(path=path, sha256=sha, status=UNCHECKED, candidate=None,
                                     reason="not checked: report.json is not as the gate wrote it"))
    return Verification(report_dir=str(report_dir), files=files, models=tuple(checks))
