"""policy + data + models -> runs -> measurements. One direction, no thresholds read."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from gate import provenance
from gate.data import Dataset, load_dataset
from gate.errors import GateInputError
from gate.files import sha256_of
from gate.measure.compare import as_the_base_itself, compare, footprint, is_footprint
from gate.measure.footprint import footprint_result, model_facts
from gate.measure.tensors import diagnose
from gate.measure import groups, perturb
from gate.measure.agreement import change_matrix
from gate.measure.calibration import calibration
from gate.measure.flips import first_negative, flip_table
from gate.measure.thumbnails import image_input, png_base64
from gate.measure.registry import FAIRNESS, MEMORY, SPEED, default_metrics, get_metric
from gate.measurements import CandidateMeasurements, Measurements, MetricResult, ModelInfo, TargetResult
from gate.models import open_runner
from gate.pages import drop_rows
from gate.policy import ModelRef, Policy, Rule, require_runnable
from gate.predictions import (AgreementCollector, Collector, check_comparable, check_same_classes, label_indices,
                              resolve_classes)
from gate.progress import Progress
from gate import views

# reported in every run (the records marked default), in registry order
DEFAULT_METRICS = {task: default_metrics(task) for task in ("classification", "regression")}
# measured by compare.footprint; the other footprint metrics by footprint.footprint_result
_FILE_SIZE_METRICS = ("model_size_mb", "parameters")


def metrics_to_measure(policy: Policy) -> tuple[list[str], set[str]]:
    """(every metric to report, the ones rules judge over all samples: those get intervals)."""
    judged = {rule.metric for rule in policy.rules if not rule.grouped}
    names = list(DEFAULT_METRICS[policy.task])
    names += sorted(m for m in judged if m not in names)
    return names, judged


def _model_info(ref: ModelRef, runner=None) -> ModelInfo:
    own = getattr(runner, "footprint", None)  # a backend other than ONNX (torch) counts its loaded weights
    if own is not None:
        files, parameters, facts = own()
    else:
        files, parameters, facts = model_facts(ref.path) if ref.path.suffix.lower() == ".onnx" else \
            ([{"path": str(ref.path), "size_bytes": ref.path.stat().st_size}], None, None)
    return ModelInfo(name=ref.name, path=str(ref.path), sha256=sha256_of(ref.path),
                     size_bytes=sum(f["size_bytes"] for f in files), files=files, parameters=parameters,
                     output=getattr(runner, "output", None), footprint=facts)


def _device_rules(policy: Policy, target: str | None) -> list:
    """The rules on speed and memory judged from a run on this machine (untargeted, or on `target`)."""
    return [r for r in policy.rules if get_metric(r.metric) is not None and get_metric(r.metric).device
            and r.target == target]


class Settled(Protocol):
    """settled(rules, numbers so far: candidate -> metric -> result) -> True when every rule is decided on them.
    The stopping rule of the timed loop and of sequential looks: the judge's decision, built and handed in by
    the caller (gate/api.py stopping_rule), so measurement never imports the judge. Without one, the timed
    loop looks once and every sample is run. At a sequential look it is also given `grouped` (candidate ->
    CandidateMeasurements with the look's subgroups, perturbations and blessed releases) and `families` (rule
    index -> FamilyLook) for the rules over subgroups."""

    def __call__(self, rules: Sequence[Rule], metrics: dict[str, dict[str, MetricResult]], *,
                 grouped: dict | None = None, families: dict | None = None) -> bool: ...


def _device_run(policy: Policy, target: str | None, base_runner, runners: dict, *, everything: bool = False,
                settled: Settled | None = None):
    """Speed, memory and energy on this machine, as far as the rules (or a target run: everything) ask."""
    from gate.measure.speed import measure_on_this_machine, settings_for

    rules = _device_rules(policy, target)
    wanted = {r.metric for r in rules}
    timed = everything or any(get_metric(m).kind == SPEED for m in wanted)
    memory = everything or any(get_metric(m).kind == MEMORY for m in wanted)
    energy = everything or "energy_per_inference_mj" in wanted
    if not (timed or memory or energy) or not runners:
        return None
    decided_by_timing = [r for r in rules if r.metric != "energy_per_inference_mj" and get_metric(r.metric).kind == SPEED]

    def timing_settled(metrics: dict[str, dict[str, MetricResult]]) -> bool:
        # the caller's stopping rule on the numbers so far: the only way thresholds reach a measurement
        return settled(decided_by_timing, metrics)

    models = [(policy.base.name, base_runner.path, base_runner)] + \
        [(name, runner.path, runner) for name, runner in runners.items()]
    # every backend (gate/models/) gives its timer and memory worker: ONNX and torch models alike
    return measure_on_this_machine(models, settings_for(policy.latency, target), confidence=policy.confidence,
                                   timed=timed, memory=memory, energy=energy,
                                   settled=timing_settled if settled is not None and decided_by_timing else None,
                                   host=provenance.host())


def _open_all(policy: Policy, dataset: Dataset):
    """The base (its errors are fatal) and every candidate (an error is recorded, the others go on)."""
    base_runner, base_info = _open(policy.base, policy, dataset)
    failed: dict[str, CandidateMeasurements] = {}
    runners, infos = {}, {}
    for ref in policy.candidates:
        try:
            runners[ref.name], infos[ref.name] = _open(ref, policy, dataset)
        except GateInputError as exc:
            failed[ref.name] = CandidateMeasurements(info=ModelInfo(name=ref.name, path=str(ref.path)),
                                                     error=exc.render(), error_kind="input")
    return base_runner, base_info, runners, infos, failed


def _open(ref: ModelRef, policy: Policy, dataset: Dataset):
    runner = open_runner(ref, output=policy.output, inputs=policy.data.inputs, max_mb=policy.max_file_mb)
    runner.bind(dataset)
    return runner, _model_info(ref, runner)


def measure(policy: Policy, *, show_progress: bool | None = None, target: str | None = None,
            settled: Settled | None = None, cache: Path | None = None, shard: tuple[int, int] | None = None,
            keep: dict | None = None) -> Measurements:
    """Quality, agreement and footprint of every candidate, and speed and memory when a rule asks for them.
    With a target: speed, memory and energy only, with that target's settings (`gate measure --target`).
    settled: the stopping rule of the timed loop (see Settled), and of sequential looks (policy.sequential:
    the clean pass stops at the first look on which it says every rule is decided); without it a borderline
    speed result is not measured again and every sample is run. cache: a folder of cached base outputs
    (gate/cache.py)."""
    if target is not None:
        return measure_target(policy, target, settled=settled)
    require_runnable(policy)
    started = provenance.now()
    dataset = load_dataset(policy.data, max_mb=policy.max_file_mb)
    if policy.task == "regression" and dataset.labels is not None and \
            not np.issubdtype(dataset.labels.dtype, np.number):
        raise GateInputError(f"holds non-numeric regression targets in {dataset.labels_key!r}", path=dataset.path,
                             fix="store numeric targets")
    full_n = dataset.n
    if shard is not None:  # `gate measure --shard I/N`: this slice of the samples; `gate judge` merges them
        dataset = _shard_of(dataset, shard, policy)
        cache = None
    looks = _looks(policy, dataset.n)
    if looks is not None:  # every model reads the samples in the looks' random order, so a look is a prefix
        dataset = views.in_order(dataset, looks.order)
    names, judged = metrics_to_measure(policy)
    each, gaps, fairness, per_class = groups.wanted(policy.rules)
    if any(r.grouped and r.per not in ("class", "perturbation") for r in policy.rules) and not dataset.group_keys:
        raise GateInputError("has no group columns configured, but a rule judges subgroups", path=policy.source,
                             fix="name the group columns under data: groups: [column, ...]")
    groupings = groups.groupings_for(dataset.columns, dataset.group_keys, dataset.labels, per_class=per_class)
    _check_distinct_subgroups(groupings, dataset)
    base_runner, base_info, runners, infos, failed = _open_all(policy, dataset)

    labels_where = f"{dataset.path} (labels {dataset.labels_key!r})"
    n, y, classes = dataset.n, dataset.labels, None
    if policy.task == "classification":
        # labels -> class indices in the order of the model's score columns, by the class names the policy or
        # the base model gives (skl2onnx stores them); a candidate with other classes is an error of its own
        classes = resolve_classes(policy.data.classes, getattr(base_runner, "classes", None),
                                  policy=policy.source, base=str(policy.base.path))
        y = label_indices(y, classes, data=labels_where, model=str(policy.base.path))
        for name in list(runners):
            try:
                check_same_classes(classes, getattr(runners[name], "classes", None), str(runners[name].path))
            except GateInputError as exc:
                failed[name] = CandidateMeasurements(info=infos[name], error=exc.render(), error_kind="input")
                del runners[name]
    if looks is not None:  # from the class indices: text labels mapped by data.classes count as their class
        looks = replace(looks, families=_families(policy, groupings, y if policy.task == "classification" else None))
    # every class score is kept only when a rule's metric reads them (roc_auc): n x k floats
    keep_probs = any("probs" in get_metric(r.metric).needs for r in policy.rules if get_metric(r.metric))

    def collector(where: str) -> Collector:
        return Collector(n=n, task=policy.task, scores=policy.scores, keep_probs=keep_probs, where=where,
                         labels_where=labels_where, classes=classes)

    # with looks, the perturbed copies run look by look beside the clean data: a look decides their rules too
    looked_perturbations = looks is not None and bool(policy.perturbations) and bool(runners)
    progress = Progress(n * (1 + (len(policy.perturbations) if looked_perturbations else 0)), "measuring",
                        enabled=show_progress)
    batch, _ = policy.quality_batch
    # the clean pass may read the base's outputs from the cache; every later use runs the model itself
    order = looks.order if looks is not None else None
    served, cache_state = _with_cache(cache, policy, base_runner, base_info, dataset, batch, order=order)
    perturbed_looks = _Perturbed(policy, base_runner, runners, collector, y, n, progress) \
        if looked_perturbations else None
    releases = _releases(policy)  # loaded once: every look and every candidate compares with them
    done, decided = None, None
    for k, part in enumerate(_parts(looks, n)):
        done = _one_pass(served, runners, lambda runner: collector(str(runner.path)), y, n, batch, progress,
                         samples=part, done=done, release=lambda a, b: drop_rows(dataset.columns.values(), a, b))
        if done.base_error is not None or done.base.nonfinite:
            break
        if perturbed_looks is not None:
            perturbed_looks.run(part)
        if looks is not None and part[1] < n and settled is not None and \
                _decided_at(policy, looks, k, part[1], done, y, settled, dataset=dataset, infos=infos,
                            perturbed=perturbed_looks, releases=releases):
            decided = (k, part[1])  # every rule is decided on the samples so far: the rest is not run
            break
    progress.close()
    if done.base_error is not None:
        exc, start, stop = done.base_error
        if isinstance(exc, GateInputError):
            raise exc
        # without a base there is nothing to compare: the input is wrong
        raise GateInputError(f"failed on samples {start}..{stop - 1}: {type(exc).__name__}: "
                             f"{str(exc).strip()[:300]}", path=policy.base.path,
                             fix="check that the base model accepts every sample of the data")
    if done.base.nonfinite:  # every comparison is against the base: it must be a number everywhere
        bad = done.base.nonfinite
        raise GateInputError(f"gave NaN or infinite outputs for samples {', '.join(map(str, bad['first']))}"
                             f"{' ...' if bad['count'] > len(bad['first']) else ''}", path=policy.base.path,
                             fix="the base must give finite outputs on every calibration sample: check the "
                                 "export and the data's preprocessing (scaling, missing values)")
    cache_state = _fill_cache(cache, served, cache_state, order=order)
    for name, (exc, _, _) in done.failed.items():  # one broken candidate must not take the others down
        kind = "input" if isinstance(exc, GateInputError) else "crash"
        text = exc.render() if isinstance(exc, GateInputError) else f"{type(exc).__name__}: {exc}"
        failed[name] = CandidateMeasurements(info=infos[name], error=text, error_kind=kind)
        del runners[name]
    base_col, cols, agreements = done.base, done.cands, done.agreements
    level, sequential = policy.confidence, None
    if looks is not None:
        k, m = decided or (len(looks.plan.fractions) - 1, n)
        level = looks.plan.confidence_at(k)
        sequential = {**looks.plan.to_dict(), "look": k + 1, "samples": m, "of": n, "stopped_early": m < n,
                      "confidence": level,
                      **({"tests": {str(i): f.tests for i, f in looks.families.items()}} if looks.families else {})}
        if m < n:
            base_col = views.First(base_col, m)
            cols = {name: views.First(c, m) for name, c in cols.items()}
            agreements = {name: views.First(a, m) for name, a in agreements.items()}
            dataset, n = views.first_samples(dataset, m), m
            y = y[:m] if y is not None else None
            groupings = groups.groupings_for(dataset.columns, dataset.group_keys, dataset.labels,
                                             per_class=per_class)
    if perturbed_looks is not None:
        perturbed = perturbed_looks.groupings(n, level, names=[name for name in runners])
        perturbed_notes = perturbed_looks.notes
    else:
        perturbed, perturbed_notes = _under_perturbations(policy, base_runner, runners, collector, y, n,
                                                          show_progress=show_progress)

    base_pred = base_col.result()
    if keep is not None:  # the per-sample outputs a shard hands to `gate judge` (gate/shards.py)
        keep.update(_kept_outputs(base_pred, cols, agreements, runners, y, dataset,
                                  [ref.name for ref in policy.candidates]))
    context = _Context(policy=policy, names=names, judged=judged, each=each, gaps=gaps, fairness=fairness,
                       groupings=groupings, y=y, classes=classes, level=level, releases=releases,
                       data_sha256=dataset.sha256, base_info=base_info, base_pred=base_pred,
                       group_columns=_group_columns(dataset), lines=dataset.row_lines,
                       sample_ids=dataset.sample_ids)
    drawn: dict[int, str | None] = {}  # thumbnails of samples, drawn once for every candidate that flips them
    measured = {}
    for name in runners:
        measured[name] = _from_outputs(
            context, name, cand_pred=cols[name].result(), agreement=agreements[name].result(),
            nonfinite=cols[name].nonfinite, info=infos[name],
            notes=batch_notes(policy, base_info, infos[name]) + _output_notes(served, runners[name]),
            perturbed=perturbed.get(name), perturbed_notes=perturbed_notes,
            thumbnails=lambda rows: _thumbnails(base_runner, rows, drawn))
    if policy.diagnostics.layers:  # where the error enters: explains a result, never judged, never fatal
        for name, cand in list(measured.items()):
            measured[name] = replace(cand, layers=diagnose(
                base_runner, runners[name], samples=min(policy.diagnostics.layer_samples, n), batch=batch,
                identical=cand.info.sha256 == base_info.sha256))

    base_metrics = base_metrics_of(names, base_pred, y, policy.task)
    base_metrics["model_size_mb"] = base_info.size_bytes / 1e6
    base_metrics.update(_footprint_values(base_info))
    # speed and memory do not depend on the samples: with shards, the first one measures them
    device = _device_run(policy, None, base_runner, {name: runners[name] for name in measured}, settled=settled) \
        if shard is None or shard[0] == 1 else None
    if device is not None:
        for name, cand in list(measured.items()):
            measured[name] = replace(cand, metrics={**cand.metrics, **device.metrics[name]},
                                     speed=device.details[name])
        base_metrics.update(device.base_metrics)
    candidates = tuple(measured.get(ref.name) or failed[ref.name] for ref in policy.candidates)
    return Measurements(
        task=policy.task, n_samples=n, confidence=policy.confidence, seed=policy.seed, bootstrap=policy.bootstrap,
        base=replace(base_info, output_kind=base_pred.kind), base_metrics=base_metrics, candidates=candidates,
        data={"path": str(dataset.path), "sha256": dataset.sha256, "size_bytes": dataset.size_bytes,
              "labels": dataset.labels_key, "n_samples": n},
        provenance={"versions": provenance.versions(), "host": provenance.host(), "ci": provenance.ci(),
                    "started": started, "finished": provenance.now(), "command": provenance.command(),
                    "policy": {"path": policy.source, "sha256": policy.sha256},
                    **({"cache": cache_state} if cache_state else {}),
                    **({"sequential": sequential} if sequential else {}),
                    **({"shard": _shard_provenance(shard, dataset, full_n, base_pred, cols, measured,
                                                   classes)} if shard else {})},
    )


SAME_FILE_NOTE = ("This candidate is the base's own file (the same sha256): every comparison with the base is "
                  "exact (no difference, perfect agreement), not estimated from the samples.")


@dataclass(frozen=True)
class _Context:
    """What every candidate's measurement from its per-sample outputs reads: the same in `measure` and when
    `gate judge` merges shards."""
    policy: Policy
    names: list
    judged: set
    each: dict
    gaps: dict
    fairness: dict
    groupings: list
    y: np.ndarray | None
    classes: object
    level: float
    releases: dict
    data_sha256: str
    base_info: ModelInfo
    base_pred: object
    group_columns: dict
    lines: np.ndarray | None
    sample_ids: np.ndarray | None = None


def _relative_per_group(policy: Policy) -> frozenset:
    """The metrics a relative bound judges per subgroup: only they need the relative change's interval there."""
    return frozenset(r.metric for r in policy.rules if r.grouped and "relative" in r.bound_kind)


def _group_columns(dataset: Dataset) -> dict:
    keys = dict.fromkeys(k for g in dataset.group_keys for k in (g if isinstance(g, tuple) else (g,)))
    return {k: dataset.columns[k] for k in keys}


def _from_outputs(c: _Context, name: str, *, cand_pred, agreement, nonfinite, info: ModelInfo, notes: tuple,
                  perturbed=None, perturbed_notes: tuple = (), thumbnails=None) -> CandidateMeasurements:
    """One candidate's measurements from its per-sample outputs (and the base's): metrics with their
    intervals, subgroups, the change matrix, comparisons with blessed releases, flips and calibration."""
    policy, base_info, base_pred, y = c.policy, c.base_info, c.base_pred, c.y
    n = len(y) if y is not None else len(base_pred.pred if base_pred.pred is not None else base_pred.values)
    info = replace(info, output_kind=cand_pred.kind, footprint=_against_base(info, base_info))
    metrics: dict[str, MetricResult] = {}
    for metric in c.names:
        if get_metric(metric) is None or get_metric(metric).kind in (FAIRNESS, SPEED, MEMORY):
            continue  # speed and memory come from the device run
        if nonfinite and not is_footprint(metric):
            # NaN rows would read as class 0: no number computed from these outputs is shown
            metrics[metric] = MetricResult(metric=metric, n=n, unavailable=(
                f"NaN or infinite outputs for {nonfinite['count']:,} of {n:,} samples"))
            continue
        if is_footprint(metric) and metric not in _FILE_SIZE_METRICS:
            result = footprint_result(metric, base_info, info, n)
        elif is_footprint(metric):
            result = footprint(metric, base_info, info, n)
        else:
            result = _at_level(compare(metric, base=base_pred, cand=cand_pred, agreement=agreement, y=y,
                                       task=policy.task, confidence=c.level, bootstrap=policy.bootstrap,
                                       seed=policy.seed, with_interval=metric in c.judged), c.level, policy)
        if result.unavailable is None or metric in c.judged:
            metrics[metric] = result
    if nonfinite:
        return CandidateMeasurements(info=info, metrics=metrics, nonfinite=nonfinite, notes=notes)
    grouped = groups.measure_groupings(
        c.groupings, base=base_pred, cand=cand_pred, agreement=agreement, y=y, task=policy.task, each=c.each,
        gaps=c.gaps, fairness=c.fairness, confidence=c.level, bootstrap=policy.bootstrap, seed=policy.seed,
        relative=_relative_per_group(policy))
    grouped += (perturbed,) if perturbed is not None else ()
    notes = notes + perturbed_notes
    if info.sha256 == base_info.sha256:
        metrics, grouped = _the_base_itself(metrics, grouped)
        notes += (SAME_FILE_NOTE,)
    return CandidateMeasurements(
        info=info, metrics=metrics, groupings=grouped, change_matrix=change_matrix(base_pred, cand_pred),
        notes=notes, releases=_against_releases(policy, c.releases, cand_pred, info, y, c.data_sha256,
                                                level=c.level, samples=c.sample_ids),
        **_flips_and_calibration(policy.task, base_pred, cand_pred, y, c.classes, c.group_columns, c.lines,
                                 thumbnails, sample_ids=c.sample_ids))


def base_metrics_of(names: list[str], base_pred, y, task: str) -> dict[str, float]:
    """The base's own value of every sample metric it can be measured on (with labels)."""
    out = {}
    if y is None:
        return out
    for metric in names:
        spec = get_metric(metric)
        fn = spec.function() if spec is not None else None
        if fn is None or task not in spec.tasks or spec.needs_scores and base_pred.n_classes is None or \
                any(getattr(base_pred, v) is None for v in spec.needs):
            continue
        value = fn(base_pred, y, None)
        if np.isfinite(value):
            out[metric] = value
    return out


def _releases(policy: Policy) -> dict:
    """The blessed releases the rules compare with (vs: baseline / first_baseline), loaded once."""
    from gate.baseline import load_releases

    wanted = {r.vs for r in policy.rules if r.vs != "base"}
    return load_releases(policy.baseline.path, wanted) if wanted and policy.baseline else {}


def _against_releases(policy: Policy, releases: dict, cand_pred, info: ModelInfo, y, data_sha256: str, *,
                      level: float, samples: np.ndarray | None) -> dict:
    """Each blessed release the rules name, paired with the candidate on the samples it gave (samples: their
    index in the file when they are not all of them in the file's order), intervals at `level`."""
    from gate.baseline import compare_with_release

    out = {}
    for vs, loaded in releases.items():
        metrics = sorted({r.metric for r in policy.rules if r.vs == vs})
        compared = compare_with_release(loaded, metrics=metrics, cand=cand_pred, cand_sha256=info.sha256, y=y,
                                        data_sha256=data_sha256, task=policy.task, confidence=level,
                                        bootstrap=policy.bootstrap, seed=policy.seed, samples=samples)
        out[vs] = replace(compared, metrics={k: _at_level(m, level, policy) for k, m in compared.metrics.items()})
    return out


def _flips_and_calibration(task: str, base_pred, cand_pred, y, classes, group_columns: dict, lines,
                           thumbnails, sample_ids: np.ndarray | None = None) -> dict:
    """A classifier's changed predictions (with thumbnails of the first negative flips when the input is an
    image: thumbnails(rows), or None) and the reliability tables of base and candidate: for flips.csv and
    report.html."""
    if task != "classification":
        return {}
    table = flip_table(base_pred, cand_pred, y, classes=classes, groups=group_columns, lines=lines)
    if table is not None:
        table["thumbnails"] = thumbnails(first_negative(table)) if thumbnails is not None else []
        if sample_ids is not None:  # positions in the looks' order -> the samples' indices in the data
            entries = {id(e): e for key in ("rows", "largest", "thumbnails") for e in table.get(key) or []}
            for entry in entries.values():
                entry["index"] = int(sample_ids[entry["index"]])
    return {"flips": table, "calibration": calibration(base_pred, cand_pred, y)}


def _thumbnails(runner, rows: list[dict], drawn: dict) -> list[dict]:
    """Small PNGs of the base's first image input for these flips; none when no input is image-shaped."""
    if not rows or not hasattr(runner, "sample"):
        return []
    name = image_input(runner.sample(rows[0]["index"]))
    if name is None:
        return []
    out = []
    for row in rows:
        i = row["index"]
        if i not in drawn:
            drawn[i] = png_base64(runner.sample(i)[name])
        if drawn[i] is not None:
            out.append({"index": i, "input": name, "label": row["label"], "base": row["base"],
                        "candidate": row["candidate"], "png": drawn[i]})
    return out


class _Perturbed:
    """Base and every candidate run again on each perturbed copy of the data (policy.perturbations), batch by
    batch as on the clean data, the labels the clean ones; each candidate is compared with the base under the
    same perturbation. A pass can be run in parts (sequential looks run the samples look by look) and read at
    any prefix. A perturbation under which the base fails (an error, NaN outputs) or the candidate does is
    recorded as unavailable for it: the rules on it are errors, never passes."""

    def __init__(self, policy: Policy, base_runner, runners: dict, collector, y, n: int, progress: Progress):
        self.policy, self.base_runner, self.runners, self.collector, self.y = policy, base_runner, runners, collector, y
        self.n, self.progress = n, progress
        self.columns, self.notes = _perturbed_inputs(policy, base_runner)
        self.each = groups.wanted_under_perturbation(policy.rules)
        self.transforms = {p.index: perturb.Perturber(p, seed=policy.seed, columns=self._inputs(p))
                           for p in policy.perturbations}
        self.passes: dict[int, _Pass] = {}

    def _inputs(self, p) -> dict:
        return self.columns if p.kind not in perturb.IMAGE_ONLY else \
            {k: c for k, c in self.columns.items() if perturb.is_image_shaped(c)}

    def run(self, samples: tuple[int, int]) -> None:
        """Every perturbation's pass over samples first..stop-1, continuing the earlier parts."""
        batch, _ = self.policy.quality_batch
        for p in self.policy.perturbations:
            done = self.passes.get(p.index)
            if done is not None and (done.base_error is not None or done.base.nonfinite):
                continue  # this perturbation's comparisons are lost already: no need to run it further
            with contextlib.ExitStack() as stack:
                for runner in (self.base_runner, *self.runners.values()):
                    stack.enter_context(runner.transformed(self.transforms[p.index]))
                self.passes[p.index] = _one_pass(
                    self.base_runner, self.runners, lambda runner, p=p: self.collector(f"{runner.path} under {p.name}"),
                    self.y, self.n, batch, self.progress, samples=samples, done=self.passes.get(p.index))

    def groupings(self, m: int, confidence: float, names=None) -> dict:
        """{candidate: the "perturbation" GroupingResult} on the first m samples run, intervals at confidence."""
        policy, y = self.policy, self.y[:m] if self.y is not None else None
        found: dict[str, list] = {name: [] for name in names or self.runners}
        for p in policy.perturbations:
            parameters = {"kind": p.kind, **p.parameters, "seed": policy.seed, "index": p.index}
            done = self.passes[p.index]
            # the base failing under this perturbation loses this perturbation's comparisons, not the whole run
            base_failed = _failed_text("the base failed", p.name, done.base_error)
            failed = {name: _failed_text("the candidate failed", p.name, error) for name, error in done.failed.items()}
            base_col = views.First(done.base, m)
            if base_failed is None and base_col.nonfinite:
                base_failed = f"the base itself fails under {p.name}: {_nonfinite_text(base_col.nonfinite)}"
            for name in found:
                col = views.First(done.cands[name], m)
                reason = base_failed or failed.get(name) or (
                    f"the candidate gave {_nonfinite_text(col.nonfinite)} under {p.name}" if col.nonfinite else None)
                if reason:
                    found[name].append(groups.not_under_perturbation(p.name, parameters, m, task=policy.task,
                                                                     labelled=y is not None, each=self.each,
                                                                     reason=reason))
                    continue
                found[name].append(groups.under_perturbation(
                    p.name, parameters, base=base_col.result(), cand=col.result(),
                    agreement=views.First(done.agreements[name], m).result(), y=y, task=policy.task,
                    each=self.each, confidence=confidence, bootstrap=policy.bootstrap, seed=policy.seed + p.index))
        return {name: groups.perturbation_grouping(found[name]) for name in found}


def _under_perturbations(policy: Policy, base_runner, runners: dict, collector, y, n: int, *,
                         show_progress: bool | None) -> tuple[dict, tuple[str, ...]]:
    """Every perturbation's pass over all n samples (see _Perturbed). -> ({candidate: the "perturbation"
    GroupingResult}, notes)."""
    if not policy.perturbations or not runners:
        return {}, ()
    progress = Progress(n * len(policy.perturbations), "under perturbations", enabled=show_progress)
    perturbed = _Perturbed(policy, base_runner, runners, collector, y, n, progress)
    perturbed.run((0, n))
    progress.close()
    return perturbed.groupings(n, policy.confidence), perturbed.notes


# a cached entry holds the base's raw outputs for every sample: beyond this it is not worth a disk and a hash
MAX_CACHED_BYTES = 2_000_000_000


def _with_cache(folder: Path | None, policy: Policy, base_runner, base_info: ModelInfo, dataset: Dataset,
                batch: int, *, order: np.ndarray | None = None):
    """The base runner the clean pass uses: served from the cache when an entry matches, else recording what
    it gives so the entry can be written. -> (runner, (state, key) or None). order: the looks' order of the
    samples (the entry holds them in the file's order, and is served and filled in it)."""
    from gate import cache

    if folder is None:
        return base_runner, None
    backend = {k: v for k, v in provenance.versions().items() if k in ("onnxruntime", "torch")}
    key = cache.base_key(model_files=[f["path"] for f in base_info.files] or [str(base_info.path)],
                         data_sha256=dataset.sha256, n=dataset.n, inputs=dict(policy.data.inputs),
                         output=base_info.output, batch=batch, backend=backend,
                         preprocessing=repr(policy.data.images) if policy.data.images else None)
    raw, notes, state = cache.load(folder, key)
    if raw is not None:
        raw = raw[order] if order is not None else raw  # the entry is in the file's order
        # a spot check on the first batch: an entry must agree with the model it stands for (under looks the
        # batch holds other samples than the entry's batches did: a model whose outputs depend on the batch
        # shows it here)
        first = base_runner.run(0, min(batch, dataset.n))
        same = first.shape == raw[:len(first)].shape and (
            np.allclose(first, raw[:len(first)], rtol=1e-5, atol=1e-6) if first.dtype.kind == "f"
            else np.array_equal(first, raw[:len(first)]))
        if same:
            return cache.CachedRunner(base_runner, raw, notes), (state, key)
        state = cache.CacheState("refreshed", state.key, f"the cached base outputs in {folder} differ from the "
                                                         f"base's own on its first {len(first):,} samples; the base "
                                                         "was run again and the entry rewritten")
    return cache.RecordingRunner(base_runner), (state, key)


def _fill_cache(folder: Path | None, runner, cached, *, order: np.ndarray | None = None) -> dict | None:
    """Write the entry a recording runner collected (in the file's order; order: the looks' order it ran in);
    the cache's state for provenance."""
    from gate import cache

    if cached is None:
        return None
    state, key = cached
    if isinstance(runner, cache.RecordingRunner):
        raw = runner.outputs()
        if order is not None and len(raw) < len(order):
            state = cache.CacheState("off", state.key, f"the looks stopped after {len(raw):,} of {len(order):,} "
                                                       "samples: the base's outputs on the others are unknown, so "
                                                       "nothing was stored")
        elif raw.nbytes > MAX_CACHED_BYTES:
            state = cache.CacheState("off", state.key, f"the base's outputs ({raw.nbytes / 1e9:.1f} GB) are too "
                                                       "large to cache")
        else:
            if order is not None:  # run in the looks' order: stored in the file's
                in_file_order = np.empty_like(raw)
                in_file_order[order] = raw
                raw = in_file_order
            try:
                cache.store(folder, key, raw, tuple(getattr(runner, "notes", ())))
            except OSError as exc:  # a full disk or a read-only cache folder costs the next run, not this one
                state = cache.CacheState("off", state.key, f"the cache could not be written: {exc}")
    return state.to_dict()


@dataclass(frozen=True)
class _Looks:
    plan: object  # gate.measure.sequential.Plan
    sizes: tuple[int, ...]
    order: np.ndarray  # position in the run -> sample index in the data
    # rules over subgroups: rule index -> _Family (its tests, what must be judged, what a look must hold)
    families: dict = field(default_factory=dict)


def _shard_of(dataset: Dataset, shard: tuple[int, int], policy: Policy) -> Dataset:
    """Shard I of N: whole batches of the samples (gate/shards.py), named by their index in the file."""
    from gate.shards import shard_range

    if policy.sequential is not None or policy.perturbations:
        raise GateInputError("asks for sequential looks or perturbations, which shards do not support yet",
                             path=policy.source, fix="measure without --shard, or drop sequential: / perturbations:")
    first, stop = shard_range(shard, dataset.n, where=str(dataset.path), batch=policy.quality_batch[0])
    return views.sample_range(dataset, first, stop)


def _kept_outputs(base_pred, cols: dict, agreements: dict, runners: dict, y, dataset: Dataset,
                  names: list[str]) -> dict:
    from gate.shards import outputs_arrays

    return outputs_arrays(base_pred, {name: (cols[name].result(), agreements[name].result(), cols[name].nonfinite)
                                      for name in runners}, names=names, y=y, labels=dataset.labels,
                          groups=_group_columns(dataset), lines=dataset.row_lines)


def _shard_provenance(shard, dataset: Dataset, full_n: int, base_pred, cols: dict, measured: dict, classes) -> dict:
    return {"index": shard[0], "count": shard[1], "first": int(dataset.sample_ids[0]),
            "stop": int(dataset.sample_ids[-1]) + 1, "of": full_n,
            "base": {"kind": base_pred.kind, "n_classes": base_pred.n_classes},
            "candidates": {name: {"kind": cols[name].result().kind, "n_classes": cols[name].result().n_classes,
                                  "nonfinite": cols[name].nonfinite} for name in measured},
            "classes": [c if isinstance(c, (int, str)) else str(c) for c in classes.names] if classes else None,
            "classes_source": classes.source if classes else None}


def _looks(policy: Policy, n: int) -> _Looks | None:
    from gate.measure import sequential

    if policy.sequential is None:
        return None
    plan = sequential.plan(policy.sequential.looks, (1 - policy.confidence) / 2, policy.sequential.spending)
    try:
        sizes = sequential.look_sizes(n, plan)
    except ValueError as exc:
        raise GateInputError(f"asks for sequential looks, but {exc}", path=policy.source,
                             fix="drop sequential: (or use fewer looks) for data this small") from None
    return _Looks(plan=plan, sizes=sizes, order=sequential.look_order(n, policy.seed))


def _check_distinct_subgroups(groupings: list, dataset: Dataset) -> None:
    """Every subgroup must have a name of its own: the reports, the judge and the looks tell them apart by it.
    Values of intersected columns can make two subgroups read alike ("a" and "x × b" against "a × x" and "b")."""
    for g in groupings:
        if len(set(g.keys)) < len(g.keys):
            seen = set()
            twice = next(k for k in g.keys if k in seen or seen.add(k))
            raise GateInputError(f"has two subgroups of {g.name} both named {twice!r} (their values contain "
                                 f"{groups.SEP.strip()!r})", path=dataset.path,
                                 fix=f"remove {groups.SEP.strip()!r} from the values of {', '.join(g.columns)}")


@dataclass(frozen=True)
class _Family:
    """A rule over subgroups at the looks: `tests` share its fail side; `judgeable` must all be judged before it
    passes; `complete`: for a gap or a fairness metric (one test per grouping, over its subgroups), what each
    grouping must hold at a look for the test to be the one on all the samples: (grouping, kind, the
    subgroups that must have at least `least` samples, the (subgroup, class) cells that must be present)."""
    tests: int
    judgeable: frozenset
    complete: tuple = ()


def _families(policy: Policy, groupings: list, labels) -> dict[int, _Family]:
    """Each rule over subgroups: how many tests share its fail side (the subgroups large enough to judge on all
    the samples, 1 without a correction) and which they are. Fixed before the first look, as the Bonferroni
    share must be, from the whole data's subgroups: a look's samples may miss some of them. labels: the class
    indices (None for regression), for the (subgroup, class) cells a look must hold."""
    sizes = [np.bincount(g.codes, minlength=len(g.keys)) for g in groupings]  # by position: names may repeat
    out = {}
    for rule in policy.rules:
        if not rule.grouped:
            continue
        complete = ()
        if rule.per == groups.PERTURBATION:  # each perturbation is a test on all the samples
            judgeable = frozenset((groups.PERTURBATION, p.name) for p in policy.perturbations)
        elif get_metric(rule.metric).kind == FAIRNESS:  # one test per data.groups grouping, every subgroup in it
            mine = [(g, counts) for g, counts in zip(groupings, sizes) if g.kind == "group"]
            judgeable = frozenset((g.name, groups.FAIRNESS_TEST) for g, _ in mine)
            complete = tuple((g.name, g.kind, 1, frozenset(g.keys), _cells(g, labels)) for g, _ in mine)
        elif rule.scope == "gap":  # one test per grouping, over the subgroups with min_samples
            mine = [(g, counts) for g, counts in zip(groupings, sizes) if g.kind == rule.per]
            judgeable = frozenset((g.name, groups.GAP_TEST) for g, _ in mine)
            complete = []
            for g, counts in mine:
                counted = frozenset(k for k, size in zip(g.keys, counts) if size >= rule.min_samples)
                # a counted subgroup missing a class at a look may have no value there (roc_auc, recall), and
                # the gap would leave it out: every class it holds on all the samples must be there too
                complete.append((g.name, g.kind, rule.min_samples, counted,
                                 frozenset(c for c in _cells(g, labels) if c[0] in counted)))
            complete = tuple(complete)
        else:
            judgeable = frozenset((g.name, key) for g, counts in zip(groupings, sizes) if g.kind == rule.per
                                  for key, size in zip(g.keys, counts) if size >= rule.min_samples)
        tests = len(judgeable) if policy.correction != "none" else 1
        out[rule.index] = _Family(max(tests, 1), judgeable, complete)
    return out


def _cells(grouping, y) -> frozenset:
    """The (subgroup, class) pairs the samples hold, by class index (y; None for regression): rates per true
    class (equalized odds) and per-subgroup metrics that need every class (roc_auc) need each."""
    if y is None or not np.issubdtype(np.asarray(y).dtype, np.integer) or not len(y):
        return frozenset()
    k = int(np.max(y)) + 1
    codes = np.unique(grouping.codes.astype(np.int64) * k + np.asarray(y, dtype=np.int64))
    return frozenset((grouping.keys[c // k], int(c % k)) for c in codes.tolist())


def _complete_at_look(family: _Family, seen: list, labels) -> bool:
    """Whether a look's groupings hold everything a gap or fairness test needs to be the whole data's test:
    every subgroup that counts on all the samples counts at the look (else the gap could leave out the worst
    one), and every (subgroup, class) cell is there."""
    for name, kind, least, keys, cells in family.complete:
        found = [g for g in seen if g.name == name and g.kind == kind]
        if not found:
            return False
        g = found[0]
        counts = dict(zip(g.keys, np.bincount(g.codes, minlength=len(g.keys)).tolist()))
        if any(counts.get(key, 0) < least for key in keys) or not cells <= _cells(g, labels):
            return False
    return True


def _parts(looks: _Looks | None, n: int) -> list[tuple[int, int]]:
    """The samples each part of the clean pass runs: all at once, or look by look."""
    if looks is None:
        return [(0, n)]
    return list(zip((0,) + looks.sizes[:-1], looks.sizes))


def _at_level(m: MetricResult, level: float, policy: Policy) -> MetricResult:
    """A sample-based measurement made at a sequential look's level: the judge quotes that level."""
    if level == policy.confidence or m.unavailable or m.delta_interval is None and m.candidate_interval is None:
        return m
    return replace(m, evidence={**(m.evidence or {}), "interval_confidence": level})


def _decided_at(policy: Policy, looks: _Looks, k: int, m: int, done: _Pass, y, settled: Settled, *,
                dataset: Dataset, infos: dict, perturbed: _Perturbed | None = None, releases: dict) -> bool:
    """Whether every sample-based rule of every candidate is decided on the first m samples, each interval at
    look k's level; a rule over subgroups on the look's subgroups (gate/measure/sequential.py FamilyLook).
    A bootstrap rule decides only at a look whose tail its resamples reach."""
    from gate.measure.registry import AGREEMENT, EXACT, QUALITY
    from gate.measure.sequential import family_look

    rules = [r for r in policy.rules if r.target is None and get_metric(r.metric) is not None
             and get_metric(r.metric).kind in (QUALITY, AGREEMENT, FAIRNESS)]
    if not rules:
        return True
    if any(get_metric(r.metric).method == EXACT for r in rules):
        return False  # a maximum over some of the samples is only a lower bound of the maximum over all of them
    if any(not looks.plan.resolved_by(k, draws) for draws in filter(None, (_draws_behind(r, policy) for r in rules))):
        return False
    level = looks.plan.confidence_at(k)
    base = views.First(done.base, m).result()
    seen = y[:m] if y is not None else None
    grouped_rules = [r for r in rules if r.grouped]
    each, gaps, fairness, per_class = groups.wanted(grouped_rules)
    under = perturbed.groupings(m, level, names=[name for name in done.cands if name not in done.failed
                                                 and not done.cands[name].nonfinite]) \
        if perturbed is not None and any(r.per == groups.PERTURBATION for r in grouped_rules) else {}
    seen_groupings = groups.groupings_for(
        {key: column[:m] for key, column in _group_columns(dataset).items()}, dataset.group_keys,
        dataset.labels[:m] if dataset.labels is not None else None, per_class=per_class) if grouped_rules else []
    seen_y = seen if policy.task == "classification" else None
    if not all(_complete_at_look(looks.families[r.index], seen_groupings, seen_y) for r in grouped_rules):
        return False
    metrics, grouped = {}, {}
    for name, col in done.cands.items():
        if name in done.failed or col.nonfinite:
            continue  # its rules are errors whatever the samples say: decided
        cand, agreement = views.First(col, m).result(), views.First(done.agreements[name], m).result()
        metrics[name] = {r.metric: compare(r.metric, base=base, cand=cand, agreement=agreement, y=seen,
                                           task=policy.task, confidence=level, bootstrap=policy.bootstrap,
                                           seed=policy.seed, with_interval=True)
                         for r in rules if not r.grouped and r.vs == "base"}
        if grouped_rules or releases:
            # rules over subgroups, perturbations and blessed releases read the look's CandidateMeasurements
            grouped[name] = CandidateMeasurements(info=infos[name], groupings=groups.measure_groupings(
                seen_groupings, base=base, cand=cand, agreement=agreement, y=seen, task=policy.task, each=each,
                gaps=gaps, fairness=fairness, confidence=level, bootstrap=policy.bootstrap, seed=policy.seed,
                relative=_relative_per_group(policy)) + ((under[name],) if name in under else ())
                if grouped_rules else (),
                releases=_against_releases(policy, releases, cand, infos[name], seen, dataset.sha256, level=level,
                                           samples=dataset.sample_ids[:m]) if releases else {})
    families = {i: family_look(looks.plan, k, f.tests, required=f.judgeable) for i, f in looks.families.items()}
    return settled(rules, metrics, grouped=grouped, families=families)


def _draws_behind(rule: Rule, policy: Policy) -> int | None:
    """How many random draws the rule's interval is a percentile of (None: a closed-form interval): a look may
    decide it only where its tail holds enough of them (sequential.Plan.resolved_by)."""
    from gate.measure.registry import BOOTSTRAP, PAIRED_PROPORTION
    from gate.measure.stats import POSTERIOR_DRAWS

    spec = get_metric(rule.metric)
    if spec.method == BOOTSTRAP or spec.kind == FAIRNESS or rule.scope == "gap":  # gaps: resampled too
        return policy.bootstrap
    if "relative" in rule.bound_kind:  # a ratio's interval comes from draws whatever the metric's own method
        return POSTERIOR_DRAWS if spec.method == PAIRED_PROPORTION else min(policy.bootstrap, POSTERIOR_DRAWS)
    return None


@dataclass
class _Pass:
    """One pass of base and candidates over the data: what each gave, and what failed where."""
    base: Collector
    cands: dict[str, Collector]
    agreements: dict[str, AgreementCollector]
    failed: dict[str, tuple[Exception, int, int]] = field(default_factory=dict)  # candidate -> (error, start, stop)
    base_error: tuple[Exception, int, int] | None = None


def _one_pass(base_runner, runners: dict, collector, y, n: int, batch: int, progress: Progress, *,
              samples: tuple[int, int] | None = None, done: _Pass | None = None, release=None) -> _Pass:
    """Base and every candidate batch by batch, each batch run by every model before the next (one pass over
    the data in memory). The base failing or giving NaN stops the pass; a failing candidate is left out of
    the rest of it. What either means is the caller's to say (the clean pass refuses the inputs, a perturbed
    pass loses that perturbation's comparisons). samples: (first, stop) to run only those, continuing `done`
    (sequential looks run the data in parts)."""
    done = done or _Pass(base=collector(base_runner), cands={name: collector(r) for name, r in runners.items()},
                         agreements={name: AgreementCollector(n) for name in runners})
    first, last = samples or (0, n)
    for start in range(first, last, batch):
        stop = min(start + batch, last)
        labels = y[start:stop] if y is not None else None
        try:
            base_raw = base_runner.run(start, stop)
            base_logp = done.base.add(base_raw, labels, start, stop)
        except Exception as exc:
            done.base_error = (exc, start, stop)
            return done
        if done.base.nonfinite:
            return done
        for name, runner in runners.items():
            if name in done.failed:
                continue
            try:
                raw = runner.run(start, stop)
                logp = done.cands[name].add(raw, labels, start, stop)
                if start == 0:
                    check_comparable(done.base, done.cands[name])
                done.agreements[name].add(base_raw, raw, base_logp, logp, start, stop)
            except Exception as exc:
                done.failed[name] = (exc, start, stop)
        if release is not None:  # every model has run this batch: its data pages can go
            release(start, stop)
        progress.advance(stop - start)
    return done


def _failed_text(who: str, perturbation: str, error: tuple[Exception, int, int] | None) -> str | None:
    if error is None:
        return None
    exc, start, stop = error
    return f"{who} under {perturbation} on samples {start}..{stop - 1}: {type(exc).__name__}: {str(exc).strip()[:300]}"


def _nonfinite_text(nonfinite: dict) -> str:
    first = ", ".join(map(str, nonfinite["first"])) + (" ..." if nonfinite["count"] > len(nonfinite["first"]) else "")
    return f"NaN or infinite outputs for {nonfinite['count']:,} of {nonfinite['n']:,} samples (samples {first})"


def _perturbed_inputs(policy: Policy, base_runner) -> tuple[dict, tuple[str, ...]]:
    """data key -> the clean data of every input the base takes as floating point (what perturbations change),
    and notes on the inputs left as they are. Refused (exit 2, naming the policy line): no float input at all,
    and brightness or contrast without an image-shaped input."""
    floats = base_runner.float_columns()
    first = policy.perturbations[0]
    model = base_runner.path.name
    if not floats:
        raise GateInputError(f"lists perturbations, but every input of the base {model} is an integer or boolean "
                             f"tensor ({', '.join(base_runner.input_names)}): token ids and indices have no noise "
                             "level", path=policy.source, line=first.line,
                             fix="remove perturbations: (they apply to floating-point inputs: features, signals, "
                                 "images)")
    for p in policy.perturbations:
        if p.kind in perturb.IMAGE_ONLY and not any(perturb.is_image_shaped(c) for _, c in floats.values()):
            shapes = ", ".join(f"'{name}' {tuple(c.shape[1:])}" for name, (_, c) in floats.items())
            raise GateInputError(f"perturbation {p.name!r} ({p.kind}) changes images, but no float input of the "
                                 f"base {model} is image-shaped (samples of 2 or 3 axes): {shapes}",
                                 path=policy.source, line=p.line,
                                 fix="use gaussian_noise, dropout or quantize on these inputs")
    notes = []
    others = [name for name in base_runner.input_names if name not in floats]
    if others:
        notes.append(f"Under perturbations, the inputs {', '.join(others)} of the base are left as they are: "
                     "perturbations change floating-point inputs only (token ids and indices have no noise level).")
    flat = [name for name, (_, c) in floats.items() if not perturb.is_image_shaped(c)]
    lighting = [p.name for p in policy.perturbations if p.kind in perturb.IMAGE_ONLY]
    if lighting and flat:
        notes.append(f"{', '.join(lighting)} changed the image-shaped inputs only; {', '.join(flat)} left as they "
                     "are.")
    return {key: column for key, column in floats.values()}, tuple(notes)


def _the_base_itself(metrics: dict, grouped: tuple) -> tuple[dict, tuple]:
    exact = {k: as_the_base_itself(v) for k, v in metrics.items()}
    groupings = tuple(replace(g, groups=tuple(replace(sub, metrics={k: as_the_base_itself(v)
                                                                     for k, v in sub.metrics.items()})
                                              for sub in g.groups),
                              gaps={k: as_the_base_itself(v) for k, v in g.gaps.items()},
                              fairness={k: as_the_base_itself(v) for k, v in g.fairness.items()})
                      for g in grouped)
    return exact, groupings


def batch_notes(policy: Policy, base: ModelInfo, cand: ModelInfo) -> tuple[str, ...]:
    """Say when a graph's outputs depend on the batch they are computed in, and at which batch size quality
    was judged: the same model can score differently at batch 1 and batch 1024."""
    batch, source = policy.quality_batch
    notes = []
    for who, info in (("the base", base), (cand.name, cand)):
        ops = (info.footprint or {}).get("batch_dependent_ops")
        if ops:
            notes.append(f"The graph of {who} uses {', '.join(ops)}: its outputs for a sample depend on the other "
                         f"samples of the same call, so its quality depends on the batch size. Judged at batch size "
                         f"{batch:,} ({source}).")
    return tuple(notes)


def _output_notes(base_runner, runner) -> tuple[str, ...]:
    """What the runners found about the outputs (a label output that disagrees with the judged scores)."""
    return tuple(getattr(base_runner, "notes", ())) + tuple(getattr(runner, "notes", ()))


def _against_base(info: ModelInfo, base: ModelInfo) -> dict | None:
    """The candidate's footprint facts plus its compression ratio (base file size / its file size)."""
    if info.footprint is None:
        return None
    ratio = base.size_bytes / info.size_bytes if base.size_bytes and info.size_bytes else None
    return {**info.footprint, "compression_ratio": ratio}


def _footprint_values(info: ModelInfo) -> dict[str, float]:
    facts = info.footprint or {}
    out = {"parameters": info.parameters} if info.parameters is not None else {}
    out.update({k: facts[k] for k in ("nonzero_parameters", "sparsity", "macs") if facts.get(k) is not None})
    return out


def measure_target(policy: Policy, target: str, *, settled: Settled | None = None) -> Measurements:
    """`gate measure --target NAME`: speed, memory and energy of base and candidates on this machine with the
    target's settings; quality is measured elsewhere and merged by `gate judge`."""
    import difflib

    targets = policy.latency.targets
    if target not in targets:
        hint = difflib.get_close_matches(target, list(targets), n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else \
            (f"use one of: {', '.join(targets)}" if targets else
             f"define it in the policy: latency: {{targets: {{{target}: {{threads: 1, batch_size: 1}}}}}}")
        raise GateInputError(f"defines no latency target named {target!r}", path=policy.source, fix=fix)
    require_runnable(policy)
    started = provenance.now()
    dataset = load_dataset(policy.data, max_mb=policy.max_file_mb)
    base_runner, base_info, runners, infos, failed = _open_all(policy, dataset)
    host = provenance.host()
    device = _device_run(policy, target, base_runner, runners, everything=True, settled=settled)
    candidates = []
    for ref in policy.candidates:
        if ref.name in failed:
            candidates.append(failed[ref.name])
            continue
        result = TargetResult(name=target, host=host, metrics=device.metrics[ref.name],
                              speed=device.details[ref.name])
        info = replace(infos[ref.name], footprint=_against_base(infos[ref.name], base_info))
        candidates.append(CandidateMeasurements(info=info, targets={target: result}))
    base_metrics = {"model_size_mb": base_info.size_bytes / 1e6, **_footprint_values(base_info)}
    return Measurements(
        task=policy.task, n_samples=dataset.n, confidence=policy.confidence, seed=policy.seed,
        bootstrap=policy.bootstrap, base=base_info, base_metrics=base_metrics, candidates=tuple(candidates),
        data={"path": str(dataset.path), "sha256": dataset.sha256, "size_bytes": dataset.size_bytes,
              "labels": dataset.labels_key, "n_samples": dataset.n},
        provenance={"versions": provenance.versions(), "host": host, "ci": provenance.ci(),
                    "started": started, "finished": provenance.now(), "command": provenance.command(),
                    "policy": {"path": policy.source, "sha256": policy.sha256},
                    "target": {"name": target, "host": host,
                               "base_metrics": device.base_metrics if device else {}}},
    )


def outputs_of(policy: Policy, ref: ModelRef, *, show_progress: bool | None = None):
    """One model's per-sample predictions and scores on the policy's data, read as `measure` reads them (the
    same classes, batch size and output): what `gate bless` stores for a release. -> (Predictions, Dataset)"""
    dataset = load_dataset(policy.data, max_mb=policy.max_file_mb)
    runner, _ = _open(ref, policy, dataset)
    classes = None
    y = dataset.labels
    if policy.task == "classification":
        classes = resolve_classes(policy.data.classes, getattr(runner, "classes", None),
                                  policy=policy.source, base=str(ref.path))
        y = label_indices(y, classes, data=str(dataset.path), model=str(ref.path))
    keep_probs = any("probs" in get_metric(r.metric).needs for r in policy.rules if get_metric(r.metric))
    col = Collector(n=dataset.n, task=policy.task, scores=policy.scores, keep_probs=keep_probs, where=str(ref.path),
                    labels_where=str(dataset.path), classes=classes)
    batch, _ = policy.quality_batch
    progress = Progress(dataset.n, "running", enabled=show_progress)
    for start in range(0, dataset.n, batch):
        stop = min(start + batch, dataset.n)
        col.add(runner.run(start, stop), y[start:stop] if y is not None else None, start, stop)
        progress.advance(stop - start)
    progress.close()
    if col.nonfinite:
        raise GateInputError(f"gave NaN or infinite outputs for {col.nonfinite['count']:,} samples", path=ref.path,
                             fix="a release with NaN outputs cannot be a baseline")
    return col.result(), dataset
