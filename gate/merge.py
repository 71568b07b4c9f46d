"""results.json files from `gate measure` -> one Measurements, refusing mixed inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gate.contract import load_results_file
from gate.errors import GateInputError
from gate.measurements import Measurements
from gate.shards import is_shard, merge_shards


def _read(path: Path) -> Measurements:
    """One results file, through the one validated loader (gate/contract.py)."""
    return load_results_file(path)


# measurements can only be merged when they compared against the same thing
_SAME = (("base model", lambda m: m.base.sha256), ("data", lambda m: m.data.get("sha256")),
         ("task", lambda m: m.task), ("confidence", lambda m: m.confidence), ("seed", lambda m: m.seed),
         # each file's looks stopped where its own candidates were decided: one look judges one file
         ("sequential looks", lambda m: _looks_of(m)))


def _looks_of(m: Measurements) -> str:
    looks = (m.provenance or {}).get("sequential")
    if not looks:
        return "none"
    return f"look {looks.get('look')} on {looks.get('samples')} samples"


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
    looks = (m.provenance or {}).get("sequential")
    measured_by = ((m.provenance or {}).get("policy") or {}).get("sha256")
    if looks and measured_by != policy.sha256:
        # the looks stopped where that policy's rules were decided, and its subgroups fixed each rule's share
        raise GateInputError(f"was measured in sequential looks under another policy (sha256 {str(measured_by)[:12]}) "
                             f"than {policy.source} ({policy.sha256[:12]}); looks can only be judged by the policy "
                             "that decided when to stop", path=path,
                             fix="judge with the policy it was measured with, or measure again with this one")
    for what, ref, digest in (("base model", policy.base, m.base.sha256), ("data", policy.data, m.data.get("sha256"))):
        if ref is not None and ref.path.is_file() and digest and sha256_of(ref.path) != digest:
            raise GateInputError(f"was measured on another {what} than the policy's {ref.path} (sha256 "
                                 f"{str(digest)[:12]} vs {sha256_of(ref.path)[:12]})", path=path,
                                 fix="measure again on the policy's files, or judge with the policy used to measure")


def load_results(paths: list[Path], policy=None) -> Measurements:
    """Quality files are merged side by side (distinct candidates); target files (`gate measure --target`)
    add their speed and memory to the candidates of the same name, which must be the same model files;
    shards (`gate measure --shard I/N`) are joined into the measurements of the whole data (gate/shards.py)."""
    parts = [_read(p) for p in paths]
    shards = [i for i, part in enumerate(parts) if is_shard(part)]
    if shards:
        if policy is None:
            raise GateInputError("is a shard: shards are joined with the policy they were measured with",
                                 path=paths[shards[0]], fix="judge with --policy")
        joined = merge_shards(policy, [paths[i] for i in shards], [parts[i] for i in shards])
        rest = [i for i in range(len(parts)) if i not in shards]
        paths = [paths[shards[0]]] + [paths[i] for i in rest]
        parts = [joined] + [parts[i] for i in rest]
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
