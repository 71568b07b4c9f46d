"""The gate as a Python API: what `gate check`, `gate measure` and `gate judge` do, returning typed results.

    import gate

    result = gate.check("gate/policy.yaml")            # measure, judge, and write the reports (out=...)
    if not result.passed:
        print("\\n".join(str(f) for f in result.failing_rules()))

    measurements = gate.measure("gate/policy.yaml", out="results.json")   # on one machine
    result = gate.judge(["results.json"], "gate/policy.yaml", out="gate-report")  # anywhere

Wrong inputs (a policy that does not parse, a base model that cannot be read, data that does not fit the
model, an output folder that cannot be written, a broken template) raise `gate.errors.GateInputError`,
whose message names the file, the place and the fix, as the command line prints it. Nothing here prints,
exits or reads sys.argv; the command line (gate/cli.py) is a thin layer over these functions.

A *candidate* that cannot be opened does not raise: as on the command line (exit 2), the other candidates
are still measured, judged and reported; the broken one is in `result.input_errors`, its rules are errors,
and `result.passed` is False.

Only the standard library and gate.errors are imported at module level: `import gate` and the pytest
plugin stay fast; the pipeline (numpy, onnxruntime) is imported when a function runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Union

from gate.errors import EXIT_FAIL, EXIT_INPUT, EXIT_PASS, GateInputError

if TYPE_CHECKING:  # types only: importing them would load numpy
    from gate.judge import CandidateVerdict, Verdict
    from gate.measurements import Measurements
    from gate.policy import Policy
    from gate.tally import Tally

__all__ = ["check", "measure", "judge", "GateResult", "FailingRule", "GateInputError"]

PathLike = Union[str, "os.PathLike[str]"]
# candidates: {name: path}, or a list of "NAME=PATH" / "PATH" (the name is then the file's stem)
Candidates = Union[Mapping[str, PathLike], Sequence[PathLike]]


@dataclass(frozen=True)
class FailingRule:
    """A rule that blocks a candidate (failed, error, or inconclusive under `inconclusive: fail`),
    or a candidate that could not be measured (rule "could not be measured")."""
    candidate: str
    rule: str  # the rule in words, as the reports print it
    status: str  # fail | error | inconclusive | warn
    reason: str
    line: int | None = None  # of the rule in the policy file

    def __str__(self) -> str:
        return f"{self.candidate}: {self.rule}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """What one run of the gate decided: the verdict, the measurements it judged, and where the reports are."""
    verdict: Verdict
    measurements: Measurements
    policy: Policy
    report_dir: Path | None = None  # None when no reports were written (out=None)
    # reports that failed to render ({file: error}); check/judge raise instead, so this is empty in their results
    report_errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every candidate passes and every input could be read: exit code 0 on the command line."""
        return self.exit_code == EXIT_PASS

    @property
    def exit_code(self) -> int:
        """The command line's exit code for this result: 0 pass, 1 a candidate fails, 2 a candidate's input
        was wrong (see input_errors)."""
        if self.verdict.input_errors:
            return EXIT_INPUT
        return EXIT_PASS if self.verdict.verdict == "pass" else EXIT_FAIL

    @property
    def tally(self) -> Tally:
        """Passed / failed / warned / errors / inconclusive counts over every candidate (gate.tally.Tally)."""
        return self.verdict.tally

    @property
    def candidates(self) -> tuple[CandidateVerdict, ...]:
        return self.verdict.candidates

    @property
    def input_errors(self) -> tuple[str, ...]:
        """Candidates that could not be opened or run because an input is wrong (each message names the file)."""
        return self.verdict.input_errors

    @property
    def report(self) -> Path | None:
        """report.md in the report folder (the other reports are next to it), or None."""
        return self.report_dir / "report.md" if self.report_dir is not None else None

    def failing_rules(self) -> tuple[FailingRule, ...]:
        """Every rule that blocks a candidate, candidate by candidate in the policy's order."""
        return self._rules(blocking=True)

    def warnings(self) -> tuple[FailingRule, ...]:
        """Every rule that did not pass but does not block (severity warn, or inconclusive under
        `inconclusive: warn`)."""
        return self._rules(blocking=False)

    def _rules(self, *, blocking: bool) -> tuple[FailingRule, ...]:
        out = []
        for c in self.verdict.candidates:
            rules = [r for r in c.rules if r.status != "pass" and r.blocking == blocking]
            if blocking and c.error and not c.rules:  # the tally counts it as one failure: so do we
                out.append(FailingRule(c.name, "could not be measured", "error", c.error.splitlines()[0]))
            out += [FailingRule(c.name, r.rule, r.status, r.reason, r.line) for r in rules]
        return tuple(out)

    def summary(self) -> str:
        """The summary `gate check` prints: a line per candidate, a line per rule that did not pass, the verdict
        and where the reports are."""
        return "\n".join(summary_lines(self.verdict, self.report_dir, self.measurements))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """A name or reason on one console line: a newline in a rule's label must not start a line of its own
    (in a CI log, "::error::..." would be read as a command)."""
    return _CONTROL.sub(" ", str(text))


def summary_lines(verdict: Verdict, out_dir: Path | None, measurements=None) -> list[str]:
    lines = []
    seq = (measurements.provenance.get("sequential") if measurements is not None else None) or {}
    if seq.get("stopped_early"):
        lines.append(f"sequential: every rule decided at look {seq['look']} on {seq['samples']:,} of "
                     f"{seq['of']:,} samples; the rest were not run, so NaN outputs or errors there are not seen")
    for c in verdict.candidates:
        t = c.tally
        extra = f"  ({c.error.splitlines()[0]})" if c.error else ""
        undecided = f" ({t.inconclusive} of them undecided)" if t.inconclusive else ""
        lines.append(_one_line(f"  {c.verdict.upper():4}  {c.name}: {t.passed} passed, {t.failed} failed, "
                               f"{t.warned} warned{undecided}{extra}"))
        for r in c.rules:
            if r.status != "pass":
                lines.append(_one_line(f"        {r.status}: {r.rule}: {r.reason}"))
    lines.append(f"verdict: {verdict.verdict.upper()}")
    if out_dir is not None:
        more = [name for name in ("flips.csv", "manifest.json", "attestation.intoto.json") if (out_dir / name).exists()]
        lines.append(f"reports: {out_dir / 'report.md'}, {out_dir / 'report.html'}, {out_dir / 'report.json'}, "
                     f"{out_dir / 'junit.xml'}" + (f" (and {', '.join(more)})" if more else ""))
    return lines


# ------------------------------------------------------------------------------------------ the public API

def check(policy: PathLike | Policy, *, base: PathLike | None = None, candidates: Candidates | None = None,
          data: PathLike | None = None, out: PathLike | None = None, templates: PathLike | None = None,
          progress: bool = False, cache: PathLike | None = None) -> GateResult:
    """Measure, judge and (with `out`) report, as `gate check` does.

    policy: a policy YAML file, the name of a shipped preset, or a gate.policy.Policy. Paths inside the policy
        are relative to the policy file.
    base, candidates, data: override the policy's (relative to the working directory, as the command line's
        flags). candidates: {name: path}, or a list of "NAME=PATH" or paths (named after the file).
    out: the report folder (report.md, report.html, report.json, junit.xml); None writes no reports.
    templates: a folder of templates overriding the shipped ones (needs out).
    progress: show a progress bar on stderr.
    cache: a folder that keeps the base's outputs between runs (keyed by the sha256 of the base, the data and
        the settings; a damaged or stale entry is recomputed, with a note).

    Returns a GateResult (`result.passed`, `result.tally`, `result.failing_rules()`, `result.verdict`,
    `result.measurements`, `result.report_dir`). Raises GateInputError when the inputs are wrong.
    """
    result = run_check(policy, base=base, candidates=candidates, data=data, out=out, templates=templates,
                       progress=progress, cache=cache, flags=_API_FLAGS)
    _raise_render_errors(result, templates)
    return result


def measure(policy: PathLike | Policy, *, base: PathLike | None = None, candidates: Candidates | None = None,
            data: PathLike | None = None, out: PathLike | None = None, target: str | None = None,
            progress: bool = False, cache: PathLike | None = None, shard: str | None = None) -> Measurements:
    """Measure only, as `gate measure` does: returns gate.measurements.Measurements and, with `out`, writes them
    to that results file, to be judged elsewhere (`judge`, `gate judge`).

    target: measure speed, memory and energy only, with the settings of the policy's latency.targets.TARGET.
    shard: "I/N" measures only that slice of the samples into `out` (with its outputs beside it); `judge` given
    every shard's file joins them into the measurements of the whole data.
    The other arguments are those of `check`. Raises GateInputError when the inputs are wrong."""
    return run_measure(policy, base=base, candidates=candidates, data=data, out=out, target=target,
                       progress=progress, cache=cache, shard=shard, flags=_API_FLAGS)


def judge(results: PathLike | Measurements | Sequence[PathLike | Measurements], policy: PathLike | Policy, *,
          out: PathLike | None = None, templates: PathLike | None = None) -> GateResult:
    """Judge measurements against a policy, as `gate judge` does, and (with `out`) write the reports.

    results: a results file written by `measure` / `gate measure`, a Measurements, or a list of them (merged
    when they were measured on the same base and data: quality on one machine, speed on the target device).
    Raises GateInputError when the inputs are wrong (a damaged results file, results measured with other
    settings or files than the policy says)."""
    result = run_judge(results, policy, out=out, templates=templates, flags=_API_FLAGS)
    _raise_render_errors(result, templates)
    return result


# ------------------------------------------------------------------------------ shared with the command line

@dataclass(frozen=True)
class Flags:
    """How the caller names its inputs in messages: the command line's flags, or the API's arguments."""
    out_dir: str
    out_file: str
    example: str  # how to write "out" with a value, {flag} and {value} filled in


_CLI_FLAGS = Flags(out_dir="--out", out_file="--out", example="{flag} {value}")
_API_FLAGS = Flags(out_dir="out", out_file="out", example="{flag}='{value}'")


def run_check(policy, *, base=None, candidates=None, data=None, out=None, templates=None, progress=None,
              cache=None, flags: Flags = _CLI_FLAGS) -> GateResult:
    """check() without raising for reports that failed to render (result.report_errors): the command line
    prints its summary first."""
    check_templates(templates, out)
    policy = _load(policy, base=base, candidates=candidates, data=data)
    _prefetch_data_hash(policy)
    from gate.pipeline import measure as run_pipeline

    out_dir = writable_dir(out, flags.out_dir, flags=flags) if out is not None else None
    measurements = run_pipeline(policy, show_progress=progress, settled=stopping_rule(policy),
                                cache=_cache_dir(cache, flags))
    return judge_and_report(policy, measurements, out_dir, templates)


def run_measure(policy, *, base=None, candidates=None, data=None, out=None, target=None, progress=None,
                cache=None, shard=None, flags: Flags = _CLI_FLAGS) -> Measurements:
    policy = _load(policy, base=base, candidates=candidates, data=data)
    if target is None:  # a target run times the models on synthetic inputs: the data is not read
        _prefetch_data_hash(policy)
    from gate.pipeline import measure as run_pipeline

    path = writable_file(out, flags.out_file, flags=flags) if out is not None else None
    if shard is not None:
        from gate.shards import parse_shard

        shard = parse_shard(shard) if isinstance(shard, str) else shard
        if path is None or target is not None:
            raise GateInputError("a shard is measured into a results file, for quality", path="--shard",
                                 fix="give --out RESULTS.json and no --target")
    kept: dict | None = {} if shard is not None else None
    measurements = run_pipeline(policy, show_progress=progress, target=target, settled=stopping_rule(policy),
                                cache=_cache_dir(cache, flags), shard=shard, keep=kept)
    if kept is not None:  # the per-sample outputs `gate judge` joins, beside the results file
        from dataclasses import replace as _replace

        from gate.shards import write_outputs

        prov = measurements.provenance
        measurements = _replace(measurements, provenance={**prov, "shard": {**prov["shard"],
                                                                            "outputs": write_outputs(path, kept)}})
    if path is not None:
        from gate.report import atomic_write

        atomic_write(path, json.dumps({"gate_results": measurements.to_dict()}, indent=2, default=str) + "\n")
    return measurements


def _prefetch_data_hash(policy: Policy) -> None:
    """The data file's sha256 (for provenance and the cache key) starts now, while the pipeline imports."""
    if policy.data is not None and policy.data.images is None and policy.data.path is not None:
        from gate.files import prefetch_sha256

        prefetch_sha256(policy.data.path)


def _cache_dir(cache, flags: Flags) -> Path | None:
    """The cache folder, created and probed before any model runs (as --out is)."""
    if cache is None:
        return None
    name = "--cache" if flags is _CLI_FLAGS else "cache"
    return writable_dir(_path_text(cache, name), name, fix=f"give {name} a folder the gate may write",
                        flags=flags)


def run_judge(results, policy, *, out=None, templates=None, flags: Flags = _CLI_FLAGS) -> GateResult:
    from gate.merge import check_against_policy, load_results

    check_templates(templates, out)
    policy = _load(policy)
    out_dir = writable_dir(out, flags.out_dir, flags=flags) if out is not None else None
    files, given = _results(results)
    measurements = load_results(files, policy) if files else None
    if given:  # measurements in memory: merged with the files exactly as files are
        measurements = _merge_in_memory(([measurements] if measurements else []) + given)
    check_against_policy(measurements, policy, files[0] if files else Path("measurements"))
    return judge_and_report(policy, measurements, out_dir, templates)


def judge_and_report(policy: Policy, measurements: Measurements, out_dir: Path | None,
                     templates: PathLike | None) -> GateResult:
    """The judge's verdict and, with out_dir, the reports written there (those that rendered)."""
    from gate.judge import judge as run_judge_on

    verdict = run_judge_on(policy, measurements)
    errors: dict[str, str] = {}
    if out_dir is not None:
        from gate.report import Report, write_reports

        report = Report(verdict=verdict, measurements=measurements, policy_source=policy.source,
                        policy_text=policy.text, policy_sha256=policy.sha256)
        errors = write_reports(report, out_dir, Path(templates) if templates else None)
    return GateResult(verdict=verdict, measurements=measurements, policy=policy, report_dir=out_dir,
                      report_errors=MappingProxyType(errors))


def render_failure(result: GateResult, templates: PathLike | None) -> Exception | None:
    """The error to raise for reports that did not render: the user's template (GateInputError), or a
    shipped one (a bug)."""
    errors = result.report_errors
    if errors and templates:
        name, error = next(iter(errors.items()))
        return GateInputError(f"failed to render {', '.join(errors)}: {error}", path=Path(templates) / f"{name}.j2",
                              fix="fix the template; the other reports were written")
    if errors:
        return RuntimeError(f"a shipped template failed: {errors}")
    return None


def _raise_render_errors(result: GateResult, templates) -> None:
    failure = render_failure(result, templates)
    if failure is not None:
        raise failure


def stopping_rule(policy: Policy):
    """The timed loop's and the sequential looks' stopping rule, handed to the pipeline: the judge's own
    decision on the numbers so far, True when no rule is inconclusive on them (measurement never imports the
    judge). grouped: a look's CandidateMeasurements (its subgroups, perturbations and blessed releases);
    families: its FamilyLook per rule over subgroups."""
    from gate.judge import INCONCLUSIVE, against_release, evaluate, family_decided

    def settled(rules, metrics, *, grouped=None, families=None) -> bool:
        for name, cand in metrics.items():
            for rule in rules:
                if rule.grouped:  # a look always hands both in; without them nothing is decided
                    if not grouped or name not in grouped or not families or rule.index not in families or \
                            not family_decided(policy, rule, grouped[name], families[rule.index]):
                        return False
                elif rule.vs != "base":
                    if not grouped or name not in grouped or against_release(
                            policy, rule, grouped[name], confidence=policy.confidence).status == INCONCLUSIVE:
                        return False
                elif evaluate(rule, cand.get(rule.metric), confidence=policy.confidence,
                              inconclusive=policy.inconclusive).status == INCONCLUSIVE:
                    return False
        return True
    return settled


def check_templates(templates: PathLike | None, out: PathLike | None = "") -> None:
    """Before any model runs: a typo here must not cost a whole measurement."""
    if templates and not Path(templates).is_dir():
        raise GateInputError("is not a directory of templates", path=templates,
                             fix="give a directory holding report.md.j2, report.html.j2 or junit.xml.j2")
    if templates and out is None:
        raise GateInputError("are given, but no report folder (out=None): nothing would be rendered",
                             path=templates, fix="give out= a report folder, or leave templates out")


def writable_dir(out: PathLike, flag: str = "--out", fix: str | None = None, *,
                 flags: Flags = _CLI_FLAGS) -> Path:
    """The report folder, created and probed before any model runs: a bad --out must not cost a measurement."""
    fix = fix or f"give {flag} a folder (new or existing), e.g. {flags.example.format(flag=flag, value='gate-report')}"
    if not str(out).strip():
        raise GateInputError("is empty", path=flag, fix=fix)
    path = Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise GateInputError("exists and is not a folder", path=path, fix=fix)
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".gate-probe-"):
            pass
    except (OSError, ValueError) as exc:
        raise GateInputError(f"cannot be written: {getattr(exc, 'strerror', None) or exc}", path=path,
                             fix=fix) from None
    return path


def writable_file(out: PathLike, flag: str = "--out", *, flags: Flags = _CLI_FLAGS) -> Path:
    def example(value: str) -> str:
        return flags.example.format(flag=flag, value=value)

    fix = f"give {flag} the name of a results file in a folder you can write to, e.g. {example('results.json')}"
    if not str(out).strip():
        raise GateInputError("is empty", path=flag, fix=fix)
    path = Path(out)
    if path.is_dir():
        raise GateInputError("is a folder; the results are one file", path=path,
                             fix=f"give {flag} a file name, e.g. {example(str(path / 'results.json'))}")
    writable_dir(str(path.parent), flag, fix=fix, flags=flags)
    return path


# ------------------------------------------------------------------------------------------------ inputs

def _load(policy, *, base=None, candidates=None, data=None) -> Policy:
    from gate.policy import Policy, load_policy, with_overrides

    if isinstance(policy, Policy):
        loaded = policy
    elif isinstance(policy, (str, os.PathLike)):
        loaded = load_policy(os.fspath(policy))
    else:
        raise GateInputError(f"a policy must be a file path, a preset name or a gate.policy.Policy, not "
                             f"{type(policy).__name__}", path="policy", fix="give the policy's YAML file")
    return with_overrides(loaded, base=_path_text(base, "base"), candidates=_candidate_items(candidates),
                          data=_path_text(data, "data"))


def _path_text(value, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise GateInputError(f"must be a path, not {type(value).__name__}", path=what,
                             fix=f"give {what}= a file path")
    return os.fspath(value)


def _candidate_items(candidates) -> list[str] | None:
    """candidates as the command line's --candidate values ("NAME=PATH" or "PATH")."""
    if candidates is None:
        return None
    if isinstance(candidates, (str, os.PathLike)):
        candidates = [candidates]
    if isinstance(candidates, Mapping):
        items = []
        for name, path in candidates.items():
            if not isinstance(name, str) or "=" in name:
                raise GateInputError(f"{name!r} cannot name a candidate", path="candidates",
                                     fix="name candidates with strings without '='")
            items.append(f"{name}={_path_text(path, 'candidates')}")
    elif isinstance(candidates, Sequence):
        items = [_path_text(c, "candidates") for c in candidates]
    else:
        raise GateInputError(f"must be a mapping {{name: path}} or a list of paths, not {type(candidates).__name__}",
                             path="candidates", fix="candidates={'int8': 'models/int8.onnx'}")
    if not items:
        raise GateInputError("is empty", path="candidates",
                             fix="give at least one candidate, or leave candidates out to use the policy's")
    return items


def _results(results) -> tuple[list[Path], list]:
    """(results files, measurements given in memory)."""
    from gate.measurements import Measurements

    if isinstance(results, (str, os.PathLike, Measurements)):
        results = [results]
    if not isinstance(results, Sequence) or not results:
        raise GateInputError("gives no results to judge", path="results",
                             fix="give the results file(s) `gate measure --out` (or gate.measure(out=...)) wrote")
    files, given = [], []
    for item in results:
        if isinstance(item, Measurements):
            given.append(item)
        elif isinstance(item, (str, os.PathLike)):
            files.append(Path(item))
        else:
            raise GateInputError(f"holds a {type(item).__name__}, not a results file or Measurements",
                                 path="results", fix="give results file paths or the Measurements gate.measure "
                                                     "returned")
    return files, given


def _merge_in_memory(parts: list) -> Measurements:
    """Measurements given in memory, merged exactly as `gate judge` merges files: written to a temporary
    folder and read back through the one validated loader."""
    from gate.merge import load_results
    from gate.report import atomic_write

    if len(parts) == 1:
        return parts[0]
    with tempfile.TemporaryDirectory(prefix="gate-judge-") as tmp:
        paths = []
        for i, part in enumerate(parts):
            path = Path(tmp) / f"results-{i}.json"
            atomic_write(path, json.dumps({"gate_results": part.to_dict()}, indent=2, default=str) + "\n")
            paths.append(path)
        return load_results(paths)
