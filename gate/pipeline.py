"""policy + data + models -> runs -> measurements. One direction, no thresholds read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from gate import provenance
from gate.data import Dataset, load_dataset
from gate.errors import GateInputError
from gate.files import sha256_of
from gate.measure.compare import as_the_base_itself, compare, footprint, is_footprint
from gate.measure.footprint import footprint_result, model_facts
from gate.measure import groups
from gate.measure.agreement import change_matrix
from gate.measure.registry import FAIRNESS, MEMORY, SPEED, default_metrics, get_metric
from gate.measurements import CandidateMeasurements, Measurements, MetricResult, ModelInfo, TargetResult
from gate.models import open_runner
from gate.policy import ModelRef, Policy, Rule, require_runnable
from gate.predictions import (AgreementCollector, Collector, check_comparable, check_same_classes, label_indices,
                              resolve_classes)
from gate.progress import Progress

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


# settled(rules, numbers so far: candidate -> metric -> result) -> True when every rule is decided on them.
# The stopping rule of the timed loop: the judge's decision, built and handed in by the caller (gate/cli.py),
# so measurement never imports the judge. Without one, the timed loop looks once.
Settled = Callable[[Sequence[Rule], dict[str, dict[str, MetricResult]]], bool]


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
            settled: Settled | None = None) -> Measurements:
    """Quality, agreement and footprint of every candidate, and speed and memory when a rule asks for them.
    With a target: speed, memory and energy only, with that target's settings (`gate measure --target`).
    settled: the stopping rule of the timed loop (see Settled); without it a borderline speed result is not
    measured again."""
    if target is not None:
        return measure_target(policy, target, settled=settled)
    require_runnable(policy)
    started = provenance.now()
    dataset = load_dataset(policy.data, max_mb=policy.max_file_mb)
    if policy.task == "regression" and dataset.labels is not None and \
            not np.issubdtype(dataset.labels.dtype, np.number):
        raise GateInputError(f"holds non-numeric regression targets in {dataset.labels_key!r}", path=dataset.path,
                             fix="store numeric targets")
    names, judged = metrics_to_measure(policy)
    each, gaps, fairness, per_class = groups.wanted(policy.rules)
    if any(r.grouped and r.per != "class" for r in policy.rules) and not dataset.group_keys:
        raise GateInputError("has no group columns configured, but a rule judges subgroups", path=policy.source,
                             fix="name the group columns under data: groups: [column, ...]")
    groupings = groups.groupings_for(dataset.columns, dataset.group_keys, dataset.labels, per_class=per_class)
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
    # every class score is kept only when a rule's metric reads them (roc_auc): n x k floats
    keep_probs = any("probs" in get_metric(r.metric).needs for r in policy.rules if get_metric(r.metric))

    def collector(where: str) -> Collector:
        return Collector(n=n, task=policy.task, scores=policy.scores, keep_probs=keep_probs, where=where,
                         labels_where=labels_where, classes=classes)

    base_col = collector(str(policy.base.path))
    cols = {name: collector(str(runner.path)) for name, runner in runners.items()}
    agreements = {name: AgreementCollector(n) for name in runners}
    progress = Progress(n, "measuring", enabled=show_progress)
    batch, _ = policy.quality_batch
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        labels = y[start:stop] if y is not None else None
        try:
            base_raw = base_runner.run(start, stop)
            base_logp = base_col.add(base_raw, labels, start, stop)
        except GateInputError:
            raise
        except Exception as exc:  # without a base there is nothing to compare: the input is wrong
            raise GateInputError(f"failed on samples {start}..{stop - 1}: {type(exc).__name__}: "
                                 f"{str(exc).strip()[:300]}", path=policy.base.path,
                                 fix="check that the base model accepts every sample of the data") from None
        if base_col.nonfinite:  # every comparison is against the base: it must be a number everywhere
            bad = base_col.nonfinite
            raise GateInputError(f"gave NaN or infinite outputs for samples {', '.join(map(str, bad['first']))}"
                                 f"{' ...' if bad['count'] > len(bad['first']) else ''}", path=policy.base.path,
                                 fix="the base must give finite outputs on every calibration sample: check the "
                                     "export and the data's preprocessing (scaling, missing values)")
        for name in list(runners):
            try:
                raw = runners[name].run(start, stop)
                logp = cols[name].add(raw, labels, start, stop)
                if start == 0:
                    check_comparable(base_col, cols[name])
                agreements[name].add(base_raw, raw, base_logp, logp, start, stop)
            except Exception as exc:  # one broken candidate must not take the others down
                kind = "input" if isinstance(exc, GateInputError) else "crash"
                text = exc.render() if isinstance(exc, GateInputError) else f"{type(exc).__name__}: {exc}"
                failed[name] = CandidateMeasurements(info=infos[name], error=text, error_kind=kind)
                del runners[name]
        progress.advance(stop - start)
    progress.close()

    base_pred = base_col.result()
    measured = {}
    for name in runners:
        cand_pred, agreement = cols[name].result(), agreements[name].result()
        info = replace(infos[name], output_kind=cand_pred.kind, footprint=_against_base(infos[name], base_info))
        nonfinite = cols[name].nonfinite
        metrics: dict[str, MetricResult] = {}
        for metric in names:
            if get_metric(metric) is None or get_metric(metric).kind in (FAIRNESS, SPEED, MEMORY):
                continue  # speed and memory come from the device run below
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
                result = compare(metric, base=base_pred, cand=cand_pred, agreement=agreement, y=y,
                                 task=policy.task, confidence=policy.confidence, bootstrap=policy.bootstrap,
                                 seed=policy.seed, with_interval=metric in judged)
            if result.unavailable is None or metric in judged:
                metrics[metric] = result
        if nonfinite:
            measured[name] = CandidateMeasurements(info=info, metrics=metrics, nonfinite=nonfinite,
                                                   notes=batch_notes(policy, base_info, info) +
                                                   _output_notes(base_runner, runners[name]))
            continue
        grouped = groups.measure_groupings(
            groupings, base=base_pred, cand=cand_pred, agreement=agreement, y=y, task=policy.task, each=each,
            gaps=gaps, fairness=fairness, confidence=policy.confidence, bootstrap=policy.bootstrap, seed=policy.seed)
        notes = batch_notes(policy, base_info, info) + _output_notes(base_runner, runners[name])
        if info.sha256 == base_info.sha256:
            metrics, grouped = _the_base_itself(metrics, grouped)
            notes += ("This candidate is the base's own file (the same sha256): every comparison with the base is "
                      "exact (no difference, perfect agreement), not estimated from the samples.",)
        measured[name] = CandidateMeasurements(info=info, metrics=metrics, groupings=grouped,
                                               change_matrix=change_matrix(base_pred, cand_pred), notes=notes)

    base_metrics = {}
    if y is not None:
        for metric in names:
            spec = get_metric(metric)
            fn = spec.function() if spec is not None else None
            if fn is None or policy.task not in spec.tasks or \
                    spec.needs_scores and base_pred.n_classes is None or \
                    any(getattr(base_pred, v) is None for v in spec.needs):
                continue
            value = fn(base_pred, y, None)
            if np.isfinite(value):
                base_metrics[metric] = value
    base_metrics["model_size_mb"] = base_info.size_bytes / 1e6
    base_metrics.update(_footprint_values(base_info))
    device = _device_run(policy, None, base_runner, {name: runners[name] for name in measured}, settled=settled)
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
                    "policy": {"path": policy.source, "sha256": policy.sha256}},
    )


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
