"""Shards: `gate measure --shard I/N` measures one slice of the samples; `gate judge` merges the slices exactly.

A shard writes its results file and, next to it, the per-sample outputs of the base and every candidate
(RESULTS.outputs.npz: plain arrays, read without pickle; its sha256 is in the results file). Judging several
shards puts the outputs back together in sample order and measures them as `gate check` would have measured
the whole data (the same functions on the same arrays): every number, interval and verdict is the unsharded
one. What does not depend on the samples (footprint, the layer diagnosis on the first samples, speed and
memory, which only shard 1 measures) comes from shard 1.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from gate.errors import GateInputError
from gate.files import save_npz, sha256_of
from gate.measure.registry import VECTORS as PER_SAMPLE
from gate.measurements import CandidateMeasurements, Measurements
from gate.predictions import Agreement, Classes, Predictions

MAX_SHARDS = 1000
VECTORS = tuple(PER_SAMPLE)  # what a shard keeps of each model's outputs: every per-sample vector
AGREEMENT = ("kl", "cosine", "max_abs")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 1 <= I <= N <= MAX_SHARDS; GateInputError naming the flag otherwise."""
    match = _SHARD.match(text or "")
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)) <= MAX_SHARDS:
        raise GateInputError(f"must be I/N with 1 <= I <= N <= {MAX_SHARDS}, e.g. 2/4; got {text!r}", path="--shard",
                             fix="number the shards from 1: --shard 1/4, --shard 2/4, ... --shard 4/4")
    return int(match.group(1)), int(match.group(2))


def shard_range(shard: tuple[int, int], n: int, *, where: str, batch: int = 1) -> tuple[int, int]:
    """Samples [first, stop) of shard I of N: whole batches of the quality batch size, so every model sees
    the very batches of an unsharded run (some graphs give other outputs in other batches)."""
    index, count = shard
    batches = -(-n // batch)
    first, stop = (index - 1) * batches // count * batch, min(index * batches // count * batch, n)
    if stop <= first:
        raise GateInputError(f"has {n:,} samples ({batches:,} batches of {batch:,}): too few for {count} shards "
                             f"(shard {index} would be empty)", path=where,
                             fix=f"use at most {batches} shards, or a smaller batch_size")
    return first, stop


def outputs_path(results: Path) -> Path:
    return results.with_name(results.name.removesuffix(".json") + ".outputs.npz")


def outputs_arrays(base: Predictions, cands: dict, *, names: list[str], y, labels, groups: dict, lines) -> dict:
    """The per-sample arrays of one shard, by name: base.*, c<i>.* (i: the candidate's place in the policy, the
    same in every shard, whichever candidates failed where), y, labels, g<i>, lines."""
    out = {f"base.{v}": getattr(base, v) for v in VECTORS if getattr(base, v) is not None}
    for name, (pred, agreement, _) in cands.items():
        i = names.index(name)
        out.update({f"c{i}.{v}": getattr(pred, v) for v in VECTORS if getattr(pred, v) is not None})
        out.update({f"c{i}.{a}": getattr(agreement, a) for a in AGREEMENT if getattr(agreement, a) is not None})
    if y is not None:
        out["y"] = y
    if labels is not None:
        out["labels"] = _plain(labels)
    for i, column in enumerate(groups.values()):
        out[f"g{i}"] = _plain(column)
    if lines is not None:
        out["lines"] = lines
    return {"arrays": out, "candidates": list(names), "measured": list(cands), "groups": list(groups)}


def _plain(column) -> np.ndarray:
    """An array an .npz holds without pickle: text columns (object arrays) as fixed-width text."""
    array = np.asarray(column)
    return array.astype(str) if array.dtype.kind == "O" else array


def write_outputs(results: Path, kept: dict) -> dict:
    """Write the outputs file beside the results; -> its name and sha256, for the results' provenance."""
    path = outputs_path(results)
    return {"file": path.name, "sha256": save_npz(path, kept["arrays"]), "candidates": kept["candidates"],
            "measured": kept["measured"], "groups": kept["groups"]}


def is_shard(m: Measurements) -> bool:
    return isinstance((m.provenance or {}).get("shard"), dict)


def _load(path: Path, part: Measurements) -> dict:
    info = part.provenance["shard"].get("outputs") or {}
    name = info.get("file")
    outputs = path.with_name(str(name)) if isinstance(name, str) and "/" not in name and "\\" not in name else None
    if outputs is None or not outputs.is_file():
        raise GateInputError(f"is a shard whose outputs file ({name}) is not beside it", path=path,
                             fix="keep RESULTS.outputs.npz next to RESULTS.json (upload both as the artifact)")
    if sha256_of(outputs) != info.get("sha256"):
        raise GateInputError("does not match the sha256 its shard's results recorded: it was changed", path=outputs,
                             fix="measure the shard again")
    try:
        with np.load(outputs, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # the hash matched: a writer's fault, still not a traceback
        raise GateInputError(f"cannot be read ({type(exc).__name__})", path=outputs, fix="measure the shard again") \
            from None


def _check_cover(paths: list[Path], parts: list[Measurements]) -> list[int]:
    """The shards' order by index, after checking they are 1..N of one N, once each, over one data file."""
    counts = {p.provenance["shard"].get("count") for p in parts}
    if len(counts) != 1:
        raise GateInputError(f"are shards of different counts ({sorted(counts)})", path=paths[0],
                             fix="judge the shards of one `--shard I/N` run together")
    count = counts.pop()
    indices = [p.provenance["shard"].get("index") for p in parts]
    missing = sorted(set(range(1, count + 1)) - set(indices))
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if missing or twice:
        raise GateInputError(f"do not cover the data once: {'missing shard(s) ' + str(missing) if missing else ''}"
                             f"{'; ' if missing and twice else ''}{'shard(s) given twice ' + str(twice) if twice else ''}",
                             path=paths[0], fix=f"give every shard 1/{count} to {count}/{count} exactly once")
    order = sorted(range(len(parts)), key=lambda i: indices[i])
    expected = 0
    for i in order:
        s = parts[i].provenance["shard"]
        if s.get("first") != expected:
            raise GateInputError(f"covers samples from {s.get('first')}, not {expected}", path=paths[i],
                                 fix="judge shards measured on the same data")
        expected = s.get("stop")
    for i in order[1:]:
        a, b = parts[order[0]], parts[i]
        same = (a.base.sha256 == b.base.sha256, a.data.get("sha256") == b.data.get("sha256"),
                a.provenance["shard"].get("of") == b.provenance["shard"].get("of"),
                [(c.name, c.info.sha256) for c in a.candidates] == [(c.name, c.info.sha256) for c in b.candidates],
                (a.provenance.get("policy") or {}).get("sha256") == (b.provenance.get("policy") or {}).get("sha256"))
        if not all(same):
            raise GateInputError(f"was measured on another base, data, candidate or policy than {paths[order[0]]}",
                                 path=paths[i], fix="judge together only the shards of one run")
    if expected != parts[order[0]].provenance["shard"].get("of"):
        raise GateInputError("do not reach the last sample", path=paths[order[-1]], fix="give every shard")
    return order


def _predictions(arrays: dict, prefix: str, kind: dict) -> Predictions:
    return Predictions(kind=kind.get("kind") or "none", n_classes=kind.get("n_classes"),
                       **{v: arrays.get(f"{prefix}.{v}") for v in VECTORS})


def _joined(chunks: list[dict], key: str):
    present = [c.get(key) for c in chunks]
    if any(p is None for p in present):
        return None  # a candidate that failed in some shard: it is reported with that shard's error
    return np.concatenate(present)


def merge_shards(policy, paths: list[Path], parts: list[Measurements]) -> Measurements:
    """Shards of one run -> the Measurements of the whole data, measured from the joined per-sample outputs.
    Shard files are inputs like any other: whatever does not fit is exit 2 naming the shards, never a trace."""
    try:
        _check_fields(paths, parts)
        return _merge(policy, paths, parts)
    except GateInputError:
        raise
    except Exception as exc:
        raise GateInputError(f"cannot be joined with the other shards ({type(exc).__name__}: {str(exc)[:200]})",
                             path=paths[0], fix="measure every shard again, with one version of the gate and "
                                                "one policy, and keep the files as written") from None


def _check_fields(paths: list[Path], parts: list[Measurements]) -> None:
    """The shard records' fields have their types, and the shards describe one run: the same candidates, the
    same outputs' kinds and classes, the same group columns."""
    first = parts[0].provenance["shard"]
    for path, part in zip(paths, parts):
        shard = part.provenance["shard"]
        outputs = shard.get("outputs") if isinstance(shard.get("outputs"), dict) else {}
        ints = [shard.get(k) for k in ("index", "count", "first", "stop", "of")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or \
                not isinstance(outputs.get("file"), str) or not outputs["file"].strip(". ") or \
                not all(isinstance(outputs.get(k), list) for k in ("candidates", "measured", "groups")) or \
                not isinstance(shard.get("candidates"), dict) or not isinstance(shard.get("base"), dict):
            raise GateInputError("is not a shard's results as the gate writes them", path=path,
                                 fix="measure the shard again (gate measure --shard I/N)")
        for key in ("classes", "base"):
            if shard.get(key) != first.get(key):
                raise GateInputError(f"records other {key} than the first shard", path=path,
                                     fix="judge together only the shards of one run")
        if (outputs["candidates"], outputs["groups"]) != (first["outputs"]["candidates"], first["outputs"]["groups"]):
            raise GateInputError("lists other candidates or group columns than the first shard", path=path,
                                 fix="judge together only the shards of one run")
        for name, kinds in shard["candidates"].items():
            other = first["candidates"].get(name)
            if other is not None and (other.get("kind"), other.get("n_classes")) != \
                    (kinds.get("kind"), kinds.get("n_classes")):
                raise GateInputError(f"records other outputs for {name!r} than the first shard", path=path,
                                     fix="judge together only the shards of one run")


def _check_arrays(path: Path, arrays: dict, part: Measurements) -> None:
    """One shard's outputs: one number (or one row of class scores) per sample, of the kind each vector is."""
    shard = part.provenance["shard"]
    n = shard["stop"] - shard["first"]
    for key, array in arrays.items():
        vector = key.rsplit(".", 1)[-1]
        kinds = {"pred": "iu", "true_rank": "iu", "lines": "iu"}.get(vector, "fiu" if key == "y" or
                                                                      vector in ("values",) else None)
        width_ok = array.ndim == 1 or (array.ndim == 2 and vector in ("probs", "values"))
        if array.ndim == 0 or len(array) != n or not width_ok or \
                (kinds is not None and array.dtype.kind not in kinds) or \
                (vector in ("true_prob", "top_prob", "sum_sq_prob", "probs", "kl", "cosine", "max_abs") and
                 array.dtype.kind != "f") or (vector == "probs" and array.shape[1] != (shard["base"].get("n_classes")
                                                                                        or array.shape[1])):
            raise GateInputError(f"holds {key} of shape {array.shape} and type {array.dtype}, not one "
                                 f"{'row' if array.ndim > 1 else 'value'} of its kind for each of its {n:,} samples",
                                 path=path, fix="measure the shard again")


def _merge(policy, paths: list[Path], parts: list[Measurements]) -> Measurements:
    from gate import pipeline
    from gate.measure import groups

    order = _check_cover(paths, parts)
    paths, parts = [paths[i] for i in order], [parts[i] for i in order]
    first = parts[0]
    shard = first.provenance["shard"]
    chunks = [_load(path, part) for path, part in zip(paths, parts)]
    for path, part, arrays in zip(paths, parts, chunks):
        _check_arrays(outputs_path(path), arrays, part)
    names = shard["outputs"]["candidates"]
    n = shard["of"]
    joined = {key: _joined(chunks, key) for key in dict.fromkeys(k for c in chunks for k in c)}
    if any(len(v) != n for v in joined.values() if v is not None):
        raise GateInputError("hold outputs of another length than the samples they cover", path=paths[0],
                             fix="measure the shards again")
    y = joined.get("y")
    base_pred = _predictions(joined, "base", shard["base"])
    classes = Classes(names=tuple(shard["classes"]), source=shard.get("classes_source") or "the shards") \
        if shard.get("classes") else None
    group_columns = {name: joined[f"g{i}"] for i, name in enumerate(shard["outputs"]["groups"])}
    each, gaps, fairness, per_class = groups.wanted(policy.rules)
    columns = dict(group_columns)
    labels = joined.get("labels")
    group_specs = tuple(policy.data.groups) if policy.data else ()
    groupings = groups.groupings_for(columns, group_specs, labels, per_class=per_class)
    metrics_names, judged = pipeline.metrics_to_measure(policy)
    context = pipeline._Context(
        policy=policy, names=metrics_names, judged=judged, each=each, gaps=gaps, fairness=fairness,
        groupings=groupings, y=y, classes=classes, level=policy.confidence, releases=pipeline._releases(policy),
        data_sha256=first.data.get("sha256"), base_info=first.base, base_pred=base_pred,
        group_columns=group_columns, lines=joined.get("lines"), sample_ids=None)
    thumbnails = {t["index"]: t for part in parts for c in part.candidates for t in ((c.flips or {}).get("thumbnails")
                                                                                    or [])}
    merged = []
    for cand in first.candidates:
        failed = next((p_.candidates[i] for p_ in parts for i, c in enumerate(p_.candidates)
                       if c.name == cand.name and c.error), None)
        if failed is not None or cand.name not in names:
            merged.append(failed or cand)
            continue
        i = names.index(cand.name)
        kinds = shard["candidates"][cand.name]
        nonfinite = _nonfinite([(p_.provenance["shard"]["candidates"][cand.name].get("nonfinite"),
                                 p_.provenance["shard"]["first"]) for p_ in parts], n)
        agreement = Agreement(**{a: joined.get(f"c{i}.{a}") for a in AGREEMENT})
        one = pipeline._from_outputs(
            context, cand.name, cand_pred=_predictions(joined, f"c{i}", kinds), agreement=agreement,
            nonfinite=nonfinite, info=cand.info, notes=tuple(x for x in cand.notes if x != pipeline.SAME_FILE_NOTE),
            thumbnails=lambda rows: [{**thumbnails[r["index"]], "candidate": r["candidate"], "base": r["base"]}
                                     for r in rows if r["index"] in thumbnails])
        device = {k: v for k, v in cand.metrics.items() if k not in one.metrics}  # speed, memory: shard 1's
        merged.append(replace(one, metrics={**one.metrics, **device}, speed=cand.speed, layers=cand.layers))
    from gate.measure.registry import QUALITY, get_metric

    # measured from the samples: recomputed on the joined outputs, never shard 1's
    kept = {k: v for k, v in first.base_metrics.items() if get_metric(k) is None or get_metric(k).kind != QUALITY}
    base_metrics = {**kept, **pipeline.base_metrics_of(metrics_names, base_pred, y, policy.task)}
    provenance = {**first.provenance, "started": min(p.provenance.get("started", "") for p in parts),
                  "finished": max(p.provenance.get("finished", "") for p in parts),
                  "shards": [{"path": str(path), "index": p.provenance["shard"]["index"],
                              "host": p.provenance.get("host")} for path, p in zip(paths, parts)]}
    provenance.pop("shard")
    return replace(first, n_samples=n, candidates=tuple(merged), base_metrics=base_metrics,
                   data={**first.data, "n_samples": n}, provenance=provenance)


def _nonfinite(parts: list[tuple[dict | None, int]], n: int) -> dict | None:
    found = [(nf, first) for nf, first in parts if nf]
    if not found:
        return None
    return {"count": sum(nf["count"] for nf, _ in found), "n": n,
            "first": sorted(i + first for nf, first in found for i in nf["first"])[:10]}
