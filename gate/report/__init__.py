"""Verdict + measurements -> report.md, report.html, report.json, junit.xml.

No arithmetic on results happens here; templates get finished objects and a
few formatting filters.

report.json format history (`report_format`):
  1 - first version: verdict, candidates[rules], measurements, provenance.
  2 - `counts` replaced by one `tally` (passed / failed / warned, as every output counts them) at the top
      and per candidate; rules carry their policy `line`; candidates carry `nonfinite` and `notes`.
      Described by the JSON Schema gate/schemas/report.schema.json (SCHEMA); read only through
      gate/contract.py, which refuses format 1 ("this gate reads format 2").
      Later additions with defaults: candidates[flips] (counts, the largest changes, thumbnails; the
      full list is flips.csv) and candidates[calibration] (reliability tables), candidates[layers]
      (where the error enters: tensor by tensor agreement with the base).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from gate.judge import Verdict
from gate.measurements import Measurements

REPORT_FORMAT = 2
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"
MARKDOWN_LIMIT = 65_000  # GitHub comments and step summaries stop at 65,536 characters


@dataclass(frozen=True, kw_only=True)
class Report:
    verdict: Verdict
    measurements: Measurements
    policy_source: str
    policy_text: str
    policy_sha256: str

    def to_dict(self) -> dict:
        m = self.measurements
        by_name = {c.name: c for c in m.candidates}
        candidates = []
        for cv in self.verdict.candidates:
            cm = by_name[cv.name]
            entry = cv.to_dict()
            entry["model"] = cm.info.to_dict()
            entry["metrics"] = {k: v.to_dict() for k, v in cm.metrics.items()}
            entry["groupings"] = [g.to_dict() for g in cm.groupings]
            entry["change_matrix"] = cm.change_matrix
            entry["speed"] = cm.speed  # latency run on this machine: summaries, op_profile, memory, notes
            entry["targets"] = {k: v.to_dict() for k, v in cm.targets.items()}
            entry["nonfinite"] = cm.nonfinite
            entry["notes"] = list(cm.notes)
            entry["releases"] = {k: v.to_dict() for k, v in cm.releases.items()}
            # the full list of flips is flips.csv; report.json keeps the counts, the largest changes and thumbnails
            entry["flips"] = {k: v for k, v in cm.flips.items() if k != "rows"} if cm.flips is not None else None
            entry["calibration"] = cm.calibration
            entry["layers"] = cm.layers  # where the error enters, tensor by tensor (gate/measure/tensors.py)
            candidates.append(entry)
        return {
            "report_format": REPORT_FORMAT,
            "verdict": self.verdict.verdict,
            "tally": self.verdict.tally.to_dict(),
            "confidence": m.confidence,
            "inconclusive": self.verdict.inconclusive,
            "task": m.task,
            "n_samples": m.n_samples,
            "seed": m.seed,
            "bootstrap": m.bootstrap,
            "base": {"model": m.base.to_dict(), "metrics": m.base_metrics},
            "candidates": candidates,
            "input_errors": list(self.verdict.input_errors),
            "provenance": {
                **m.provenance,
                # the policy that judged (gate judge may use another file than gate measure did)
                "policy": {"path": self.policy_source, "sha256": self.policy_sha256, "text": self.policy_text},
                "measured_with_policy": m.provenance.get("policy"),
                "data": m.data,
                "models": {"base": m.base.sha256, **{c.name: c.info.sha256 for c in m.candidates}},
            },
        }


def _clean(value):
    """JSON has no NaN or infinity: an unmeasurable number is null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide reports from CI artifact readers
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    written = _WRITTEN.get()
    if written is not None:
        written.append(path)


# the files atomic_write wrote during write_reports: the manifest lists exactly those, whoever wrote them
_WRITTEN: ContextVar[list[Path] | None] = ContextVar("gate_report_written", default=None)


@contextmanager
def _recording():
    written: list[Path] = []
    token = _WRITTEN.set(written)
    try:
        yield written
    finally:
        _WRITTEN.reset(token)


def _render_error(exc: Exception) -> str:
    """The template line that failed, where jinja2 knows it (syntax errors, and the frames it maps to templates)."""
    import traceback

    line = getattr(exc, "lineno", None)
    if line is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
        line = frames[-1].lineno if frames else None
    return f"{'line ' + str(line) + ': ' if line else ''}{type(exc).__name__}: {exc}"


def render_all(report: Report, templates: Path | None = None) -> dict[str, str]:
    """Every report as text. One failing renderer does not stop the others."""
    from gate.report.render import render_html, render_junit, render_markdown

    data = _clean(report.to_dict())
    renderers = {
        "report.json": lambda: json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n",
        "report.md": lambda: render_markdown(data, templates),
        "report.html": lambda: render_html(data, templates),
        "junit.xml": lambda: render_junit(data, templates),
    }
    out, errors = {}, {}
    for name, fn in renderers.items():
        try:
            out[name] = fn()
        except Exception as exc:  # a broken (user) template must not lose the other reports
            errors[name] = _render_error(exc)
    if "report.json" in out:  # the statement names report.json's sha256: made from its exact text
        from gate.attest import ATTESTATION, render_statement

        try:
            statement = render_statement(data, out["report.json"])
        except Exception as exc:
            errors[ATTESTATION] = _render_error(exc)
        else:
            if statement is not None:
                out[ATTESTATION] = statement
    if errors:
        out["errors"] = errors
    return out


def write_reports(report: Report, out_dir: Path, templates: Path | None = None) -> dict[str, str]:
    """Writes what rendered, then manifest.json (last: it vouches for what is on disk); returns {file: error}
    for what did not render. Write every report file with atomic_write, so the manifest lists it."""
    from gate.report.manifest import MANIFEST, write_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # an earlier run's manifest must never vouch for this run's files
    with _recording() as written:
        errors = _write_files(report, out_dir, templates)
    write_manifest(out_dir, [p.name for p in written if p.parent == out_dir])
    return errors


def _write_files(report: Report, out_dir: Path, templates: Path | None) -> dict[str, str]:
    rendered = render_all(report, templates)
    errors = rendered.pop("errors", {})
    for name, text in rendered.items():
        atomic_write(out_dir / name, text)
    _write_flips(report.measurements, out_dir)
    return errors


def _write_flips(m: Measurements, out_dir: Path) -> None:
    """flips.csv from the measurements (report.json holds only the largest changes); a flips.csv left by an
    earlier run into the same folder is removed when this one has none, so it is never mistaken for this run's."""
    from gate.report.flips import FILE, flips_csv

    text = flips_csv(m)
    if text is not None:
        atomic_write(out_dir / FILE, text)
    elif (out_dir / FILE).is_file():
        (out_dir / FILE).unlink()
