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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateInputError(f"is not readable JSON: {exc}", path=path,
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
    try:
        return Measurements.from_dict(body)
    except (KeyError, TypeError) as exc:
        raise GateInputError(f"is missing a field of the results format ({exc})", path=path,
                             fix="measure again with this version of the gate") from None


# measurements can only be merged when they compared against the same thing
_SAME = (("base model", lambda m: m.base.sha256), ("data", lambda m: m.data.get("sha256")),
         ("task", lambda m: m.task), ("confidence", lambda m: m.confidence), ("seed", lambda m: m.seed))


def load_results(paths: list[Path]) -> Measurements:
    parts = [_read(p) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        for what, key in _SAME:
            if key(part) != key(first):
                raise GateInputError(f"was measured with another {what} than {paths[0]} "
                                     f"({key(part)} vs {key(first)})", path=path,
                                     fix="judge together only results measured on the same base, data and settings")
    candidates, seen = [], {}
    for path, part in zip(paths, parts):
        for cand in part.candidates:
            if cand.name in seen:
                raise GateInputError(f"has the candidate {cand.name!r}, which {seen[cand.name]} has too", path=path,
                                     fix="give each candidate a distinct name when measuring")
            seen[cand.name] = path
            candidates.append(cand)
    return replace(first, candidates=tuple(candidates))
