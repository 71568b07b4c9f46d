"""results.json files from `gate measure` -> one Measurements, refusing mixed inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from gate.errors import GateInputError
from gate.measurements import FORMAT, Measurements


def _read(path: Path) -> Measurements:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateInputError("not found", path=path, fix="give the file `gate measure --out` wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise GateInputError(f"is not readable JSON: {what}", path=path,
                             fix="give the file `gate measure --out` wrote") from None
    if not isinstance(doc, dict) or "gate_results" not in doc:
        raise GateInputError("is not a gate results file", path=path,
                             fix="give the file `gate measure --out` wrote (report.json is a report, not results)")
    body = doc["gate_results"]
    if not isinstance(body, dict):
        raise GateInputError("has no results in it", path=path, fix="give the file `gate measure --out` wrote")
    if body.get("format") != FORMAT:
        raise GateInputError(f"has results format {body.get('format')!r}; this gate reads format {FORMAT}",
                             path=path, fix="measure again with this version of the gate")
    problem = _header_problem(body)
    if problem:
        raise GateInputError(f"does not have the shape of a results file: {problem}", path=path,
                             fix="give the file `gate measure --out` wrote, unchanged")
    try:
        measurements = Measurements.from_dict(body)
        # touch what the judge reads, so a damaged file is refused here and not deep in the judge
        for cand in measurements.candidates:
            for m in cand.metrics.values():
                for value in (m.base, m.candidate, m.delta):
                    if value is not None and not isinstance(value, (int, float)):
                        raise TypeError(f"{cand.name}: {m.metric} holds {type(value).__name__}")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise GateInputError(f"does not have the shape of a results file ({type(exc).__name__}: "
                             f"{str(exc)[:200]})", path=path, fix="give the file `gate measure --out` wrote, "
                             "unchanged; or measure again with this version of the gate") from None
    return measurements


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _header_problem(body: dict) -> str | None:
    """The settings every number of the file depends on, checked before anything reads them."""
    if body.get("task") not in ("classification", "regression"):
        return f"task {body.get('task')!r}"
    if not _is_int(body.get("n_samples")) or body["n_samples"] < 1:
        return f"n_samples {body.get('n_samples')!r}"
    confidence = body.get("confidence")
    if not isinstance(confidence, float) or not 0.5 < confidence < 1:
        return f"confidence {confidence!r}"
    for key in ("seed", "bootstrap"):
        if not _is_int(body.get(key)) or body[key] < 0:
            return f"{key} {body.get(key)!r}"
    if not isinstance(body.get("candidates"), list) or not isinstance(body.get("base"), dict) or \
            not isinstance(body.get("data"), dict) or not isinstance(body.get("provenance"), dict):
        return "no list of candidates, or no base, data or provenance"
    return None


# measurements can only be merged when they compared against the same thing
_SAME = (("base model", lambda m: m.base.sha256), ("data", lambda m: m.data.get("sha256")),
         ("task", lambda m: m.task), ("confidence", lambda m: m.confidence), ("seed", lambda m: m.seed))


def _target(m: Measurements) -> str | None:
    """The target name of a `gate measure --target` file, None for a quality file."""
    target = (m.provenance or {}).get("target")
    return target.get("name") if isinstance(target, dict) else None


def check_against_policy(m: Measurements, policy, path: Path) -> None:
    """Results judged by a policy must have been measured the way the policy says: the same task, confidence,
    seed and bootstrap (the intervals depend on them), and the same base and data where the policy names them."""
    from gate.files import sha256_of

    for what, measured, wanted in (("task", m.task, policy.task), ("confidence", m.confidence, policy.confidence),
                                   ("seed", m.seed, policy.seed), ("bootstrap", m.bootstrap, policy.bootstrap)):
        if measured != wanted:
            raise GateInputError(f"was measured with {what} {measured!r}, but the policy {policy.source} says "
                                 f"{wanted!r}", path=path,
                                 fix=f"measure again with this policy, or judge with the policy it was measured with")
    for what, ref, digest in (("base model", policy.base, m.base.sha256), ("data", policy.data, m.data.get("sha256"))):
        if ref is not None and ref.path.is_file() and digest and sha256_of(ref.path) != digest:
            raise GateInputError(f"was measured on another {what} than the policy's {ref.path} (sha256 "
                                 f"{str(digest)[:12]} vs {sha256_of(ref.path)[:12]})", path=path,
                                 fix="measure again on the policy's files, or judge with the policy used to measure")


def load_results(paths: list[Path]) -> Measurements:
    """Quality files are merged side by side (distinct candidates); target files (`gate measure --target`)
    add their speed and memory to the candidates of the same name, which must be the same model files."""
    parts = [_read(p) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        for what, key in _SAME:
            if key(part) != key(first):
                raise GateInputError(f"was measured with another {what} than {paths[0]} "
                                     f"({key(part)} vs {key(first)})", path=path,
                                     fix="judge together only results measured on the same base, data and settings")
    quality = [(p, m) for p, m in zip(paths, parts) if _target(m) is None]
    targeted = [(p, m) for p, m in zip(paths, parts) if _target(m) is not None]
    if not quality:  # target files alone: the first one gives the candidates
        quality, targeted = targeted[:1], targeted[1:]
    candidates, seen = [], {}
    for path, part in quality:
        for cand in part.candidates:
            if cand.name in seen:
                raise GateInputError(f"has the candidate {cand.name!r}, which {seen[cand.name]} has too", path=path,
                                     fix="give each candidate a distinct name when measuring")
            seen[cand.name] = path
            candidates.append(cand)
    measured_on = {}
    for path, part in quality:
        if _target(part):
            measured_on[_target(part)] = {"path": str(path), "host": part.provenance.get("host")}
    for path, part in targeted:
        name = _target(part)
        index = {c.name: i for i, c in enumerate(candidates)}
        for cand in part.candidates:
            if cand.error:
                continue  # not measured there: a rule on that target says so
            if cand.name not in index:
                raise GateInputError(f"has {name!r} results for the candidate {cand.name!r}, which no quality "
                                     f"results file has ({', '.join(index) or 'none'})", path=path,
                                     fix="measure the same candidates, under the same names, on every machine")
            existing = candidates[index[cand.name]]
            if existing.info.sha256 != cand.info.sha256:
                raise GateInputError(f"measured another file as the candidate {cand.name!r} on {name!r} than "
                                     f"{seen[cand.name]} (sha256 {str(cand.info.sha256)[:12]} vs "
                                     f"{str(existing.info.sha256)[:12]})", path=path,
                                     fix="measure the same candidate files on the device and for quality")
            if name in existing.targets:
                raise GateInputError(f"has {name!r} results for {cand.name!r}, which another file has too",
                                     path=path, fix="pass one results file per target")
            candidates[index[cand.name]] = replace(existing, targets={**existing.targets, **cand.targets})
        measured_on[name] = {"path": str(path), "host": part.provenance.get("host")}
    base = quality[0][1]
    provenance = dict(base.provenance, targets=measured_on) if measured_on else base.provenance
    return replace(base, candidates=tuple(candidates), provenance=provenance)
