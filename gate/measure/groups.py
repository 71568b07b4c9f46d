"""Per-subgroup measurements: the harm compression hides behind a good average.

"Overall" and a subgroup are the same computation over different index sets
(compare.compare on sliced per-sample vectors), so a subgroup number can never
drift from how the overall number is defined.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gate.measure import fast
from gate.measure.compare import _seed, bootstrapped, compare, from_distributions, sample_order, unavailable_reason
from gate.measure.quality import from_moments, function_for, moment_columns, proportion_hits
from gate.measure.registry import FAIRNESS, PAIRED_PROPORTION, get_metric, headline_for
from gate.measurements import GroupingResult, GroupResult, MetricResult
from gate.policy import DEFAULT_MIN_SAMPLES
from gate.predictions import Agreement, Predictions

SEP = " × "
# how a rule over a gap or a fairness metric names its one test per grouping (gate/judge.py, the looks' plan)
GAP_TEST, FAIRNESS_TEST = "(best minus worst)", "(between subgroups)"


@dataclass(frozen=True)
class Grouping:
    name: str
    columns: tuple[str, ...]
    codes: np.ndarray  # (n,) subgroup index of every sample
    keys: tuple[str, ...]  # subgroup names, in code order
    kind: str = "group"  # "group" (data.groups) or "class" (the true class): which per: rules judge it

    def members(self, j: int) -> np.ndarray:
        return np.flatnonzero(self.codes == j)


def make_grouping(columns: dict[str, np.ndarray], names: tuple[str, ...], label: str | None = None,
                  kind: str = "group") -> Grouping:
    """Subgroups of one column or of the intersection of several, in sorted, deterministic order."""
    codes = np.zeros(len(columns[names[0]]), dtype=np.int64)
    parts = []
    for name in names:
        values, inverse = np.unique(columns[name], return_inverse=True)
        codes = codes * len(values) + inverse.reshape(-1)
        parts.append(values)
    present, codes = np.unique(codes, return_inverse=True)
    keys = []
    for code in present:
        key = []
        for values in reversed(parts):
            key.append(str(values[code % len(values)]))
            code //= len(values)
        keys.append(SEP.join(reversed(key)))
    return Grouping(name=label or SEP.join(names), columns=names, codes=codes.reshape(-1), keys=tuple(keys),
                    kind=kind)


def groupings_for(dataset_columns: dict, group_specs: tuple, labels: np.ndarray | None, *,
                  per_class: bool) -> list[Grouping]:
    out = [make_grouping(dataset_columns, spec if isinstance(spec, tuple) else (spec,)) for spec in group_specs]
    if per_class and labels is not None:
        out.append(make_grouping({"class": labels}, ("class",), label="class", kind="class"))
    return out


def _slice_predictions(p: Predictions, idx: np.ndarray) -> Predictions:
    return p.take(idx)  # every per-sample vector, whichever a metric's record needs


def _slice_agreement(a: Agreement, idx: np.ndarray) -> Agreement:
    return Agreement(kl=None if a.kl is None else a.kl[idx], cosine=None if a.cosine is None else a.cosine[idx],
                     max_abs=None if a.max_abs is None else a.max_abs[idx])


# ---- differences between subgroups -------------------------------------------------------

def _gap_stat(fn, p: Predictions, y, grouping: Grouping, eligible: list[int]):
    def stat(idx: np.ndarray) -> float:
        codes = grouping.codes[idx]
        values = []
        for j in eligible:
            members = idx[codes == j]
            if members.size:
                values.append(fn(p, y, members))
        values = [v for v in values if np.isfinite(v)]
        return max(values) - min(values) if len(values) >= 2 else float("nan")
    return stat


def _rate_gap(rates: list[float]) -> float:
    rates = [r for r in rates if np.isfinite(r)]
    return max(rates) - min(rates) if len(rates) >= 2 else float("nan")


def _fairness_stat(metric: str, p: Predictions, y, grouping: Grouping):
    """fairlearn's definitions: between-group max minus min of selection rate, TPR, FPR."""
    def stat(idx: np.ndarray) -> float:
        codes, pred = grouping.codes[idx], p.pred[idx] == 1
        truth = y[idx] == 1 if y is not None else None
        selection, tpr, fpr = [], [], []
        for j in range(len(grouping.keys)):
            in_group = codes == j
            if not in_group.any():
                continue
            selection.append(pred[in_group].mean())
            if truth is not None:
                pos, neg = in_group & truth, in_group & ~truth
                tpr.append(pred[pos].mean() if pos.any() else np.nan)
                fpr.append(pred[neg].mean() if neg.any() else np.nan)
        if metric == "demographic_parity_difference":
            return _rate_gap(selection)
        return max(_rate_gap(tpr), _rate_gap(fpr))
    return stat


def _gap_distributions(name: str, base: Predictions, cand: Predictions, y: np.ndarray, grouping: Grouping,
                       eligible: list[int], *, bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(candidate, base, method) resampled gaps between the eligible subgroups, from per-subgroup sufficient
    statistics (gate/measure/fast.py) chosen by the metric's record; None: none fit (roc_auc on subgroups
    too small for DeLong's normal approximation), resample the indices. Every subgroup takes part in the resampling, as in the index bootstrap; only the eligible
    ones enter the gap."""
    spec = get_metric(name)
    codes, k = grouping.codes, len(grouping.keys)
    method = fast.POISSON  # the cell tables' draws are the bootstrap itself
    if spec.method == PAIRED_PROPORTION:
        # in the cell table a hit is a prediction of label 0, a miss of label 1: class 0's true positives
        # are the hits, its support the subgroup's samples
        label = np.zeros(len(codes), dtype=np.int64)
        c = fast.cell_bootstrap(label, (~proportion_hits(name, base, y)).astype(np.int64),
                                (~proportion_hits(name, cand, y)).astype(np.int64), n_resamples=bootstrap,
                                seed=seed, groups=codes, n_groups=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = (c.tp_cand[..., 0] / c.support[..., 0], c.tp_base[..., 0] / c.support[..., 0])
    elif spec.resample == fast.CELLS:
        c = fast.cell_bootstrap(y, base.pred, cand.pred, n_resamples=bootstrap, seed=seed, groups=codes,
                                n_groups=k)
        values = (fast.from_counts(name, c.tp_cand, c.support, c.predicted_cand, c.labels),
                  fast.from_counts(name, c.tp_base, c.support, c.predicted_base, c.labels))
    elif spec.resample in (fast.MEAN, fast.MOMENTS):
        columns_b, columns_c = moment_columns(name, base, y), moment_columns(name, cand, y)
        width = columns_b.shape[1]
        means, method = fast.grouped_means(np.concatenate([columns_b, columns_c], axis=1), codes, k,
                                           n_resamples=bootstrap, seed=seed,
                                           pairs=tuple((j, j + width) for j in range(width)))
        values = (from_moments(name, means[..., width:]), from_moments(name, means[..., :width]))
    elif spec.resample == fast.BINS:
        *values, method = fast.ece_distributions(y, base.pred, base.top_prob, cand.pred, cand.top_prob,
                                                 n_resamples=bootstrap, seed=seed, groups=codes, n_groups=k)
    elif spec.resample == fast.DELONG:  # drawn for the eligible subgroups only: the others never enter the gap
        drawn = fast.grouped_delong_draws(y, base.probs, cand.probs, codes, eligible, n_resamples=bootstrap,
                                          seed=seed)
        return None if drawn is None else (fast.spread(drawn[0]), fast.spread(drawn[1]), fast.DELONG_DRAWS)
    else:
        return None
    return fast.spread(values[0][:, eligible]), fast.spread(values[1][:, eligible]), method


def _fairness_distributions(name: str, base: Predictions, cand: Predictions, y: np.ndarray | None,
                            grouping: Grouping, *, bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, base) resampled fairness differences from the (subgroup, label, base, candidate) cell table
    of the binary labels and predictions."""
    truth = y == 1 if y is not None else np.zeros(len(grouping.codes), dtype=bool)
    c = fast.cell_bootstrap(truth.astype(np.int64), (base.pred == 1).astype(np.int64),
                            (cand.pred == 1).astype(np.int64), n_resamples=bootstrap, seed=seed,
                            groups=grouping.codes, n_groups=len(grouping.keys))
    return fairness_from_counts(name, c)


def fairness_from_counts(name: str, c: fast.CellCounts) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, base) fairness difference of every resample of per-subgroup counts of binary labels and
    predictions (labels 0 and 1): _fairness_stat's definitions, per resample."""
    one = int(np.searchsorted(c.labels, 1))  # the labels are 0 and 1, or only one of them

    def positive(counts: np.ndarray) -> np.ndarray:
        return counts[..., one] if one < len(c.labels) and c.labels[one] == 1 else np.zeros(counts.shape[:-1])

    size, positives = c.support.sum(axis=-1), positive(c.support)
    out = []
    for tp, predicted in ((c.tp_cand, c.predicted_cand), (c.tp_base, c.predicted_base)):
        selected, hits = positive(predicted), positive(tp)
        with np.errstate(invalid="ignore", divide="ignore"):
            if name == "demographic_parity_difference":
                out.append(fast.spread(selected / size))
                continue
            tpr, fpr = fast.spread(hits / positives), fast.spread((selected - hits) / (size - positives))
        out.append(np.where(fpr > tpr, fpr, tpr))  # Python's max(tpr gap, fpr gap): a NaN tpr gap stays NaN
    return out[0], out[1]


def measure_groupings(groupings: list[Grouping], *, base: Predictions, cand: Predictions, agreement: Agreement,
                      y: np.ndarray | None, task: str, each: dict[str, int], gaps: dict[str, int],
                      fairness: set[str], confidence: float, bootstrap: int, seed: int,
                      relative: frozenset | None = None) -> tuple[GroupingResult, ...]:
    """each: metric -> min_samples of the subgroups it is judged on (they get intervals; smaller ones are
    too small to judge and get none); gaps: metric -> min_samples of the subgroups that count;
    fairness: between-group metrics of the candidate and base; relative: the metrics a relative bound judges
    per subgroup (None: every one), the others get no interval of their relative change."""
    headline = headline_for(task)  # shown for every subgroup, judged or not
    shown = {headline} if headline is not None and y is not None else set()
    # below every rule's min_samples a subgroup is only counted: no interval is drawn or judged
    too_small = min(list(each.values()) + list(gaps.values()) + [DEFAULT_MIN_SAMPLES])
    results = []
    for grouping in groupings:
        groups = []
        for j, key in enumerate(grouping.keys):
            idx = grouping.members(j)
            sub_b, sub_c = _slice_predictions(base, idx), _slice_predictions(cand, idx)
            sub_y = y[idx] if y is not None else None
            # class averages inside a slice are over the slice's own true classes
            classes = np.unique(sub_y) if task == "classification" and sub_y is not None else None
            metrics = {}
            for name in sorted(shown | set(each)):
                metrics[name] = compare(name, base=sub_b, cand=sub_c, agreement=_slice_agreement(agreement, idx),
                                        y=sub_y, task=task, confidence=confidence, bootstrap=bootstrap,
                                        seed=seed + j, with_interval=name in each and idx.size >= each[name],
                                        classes=classes, intervals=idx.size >= too_small,
                                        relative=relative is None or name in relative)
            flips = negative = None
            if base.pred is not None:
                flips = int((sub_b.pred != sub_c.pred).sum())
                if sub_y is not None:
                    negative = int(((sub_b.pred == sub_y) & (sub_c.pred != sub_y)).sum())
            groups.append(GroupResult(key=key, n=int(idx.size), metrics=metrics, flips=flips,
                                      negative_flips=negative))
        min_samples = min(gaps.values()) if gaps else 0

        def order(grouping=grouping) -> np.ndarray:  # the samples in an order the file's order cannot change
            return sample_order(base, cand, y, agreement, grouping.codes)
        eligible = [j for j, g in enumerate(groups) if g.n >= min_samples]
        gap_results = {}
        for name, _ in sorted(gaps.items()):
            fn = function_for(name)
            if fn is None or y is None:
                gap_results[name] = MetricResult(metric=name, n=len(grouping.codes), unavailable=(
                    "the data has no labels" if y is None else f"no gap for {name}"))
                continue
            if len(eligible) < 2:
                gap_results[name] = MetricResult(metric=name, n=len(grouping.codes), unavailable=(
                    f"fewer than two subgroups have {min_samples} samples"))
                continue
            reason = unavailable_reason(get_metric(name), task=task, has_labels=True, base=base, cand=cand)
            if reason:
                gap_results[name] = MetricResult(metric=name, n=len(grouping.codes), unavailable=reason)
                continue
            all_idx = np.arange(len(grouping.codes))
            b_stat = _gap_stat(fn, base, y, grouping, eligible)
            c_stat = _gap_stat(fn, cand, y, grouping, eligible)
            key = f"{name} gap {grouping.name}"  # the seed key names the grouping: each gap has its own resamples
            dists = _gap_distributions(name, base, cand, y, grouping, eligible, bootstrap=bootstrap,
                                       seed=_seed(seed, key))
            if dists is None:
                result = bootstrapped(key, len(all_idx), base_value=b_stat(all_idx), cand_value=c_stat(all_idx),
                                      cand_stat=c_stat, base_stat=b_stat, confidence=confidence,
                                      bootstrap=bootstrap, seed=seed, order=order())
            else:
                result = from_distributions(name, len(all_idx), base_value=b_stat(all_idx),
                                            cand_value=c_stat(all_idx), cand_dist=dists[0], base_dist=dists[1],
                                            confidence=confidence, method=dists[2])
            gap_results[name] = replace(result, metric=name)
        fair_results = {}
        for name in sorted(fairness if grouping.kind == "group" else ()):
            n = len(grouping.codes)
            reason = None
            if base.pred is None or (base.n_classes or 2) != 2 or (cand.n_classes or 2) != 2:
                reason = "defined for binary classification only"
            elif get_metric(name).needs_labels and y is None:
                reason = "the data has no labels"
            if reason:
                fair_results[name] = MetricResult(metric=name, n=n, unavailable=reason)
                continue
            b_stat = _fairness_stat(name, base, y, grouping)
            c_stat = _fairness_stat(name, cand, y, grouping)
            all_idx = np.arange(n)
            cand_dist, base_dist = _fairness_distributions(name, base, cand, y, grouping, bootstrap=bootstrap,
                                                           seed=_seed(seed, f"{name} {grouping.name}"))
            fair_results[name] = from_distributions(name, n, base_value=b_stat(all_idx),
                                                    cand_value=c_stat(all_idx), cand_dist=cand_dist,
                                                    base_dist=base_dist, confidence=confidence)
        results.append(GroupingResult(name=grouping.name, columns=grouping.columns, groups=tuple(groups),
                                      gaps=gap_results, fairness=fair_results, min_samples=min_samples,
                                      kind=grouping.kind))
    return tuple(results)


PERTURBATION = "perturbation"  # the grouping of the perturbations: GroupingResult.name and .kind


def under_perturbation(key: str, parameters: dict, *, base: Predictions, cand: Predictions, agreement: Agreement,
                       y: np.ndarray | None, task: str, each: dict[str, int], confidence: float, bootstrap: int,
                       seed: int) -> GroupResult:
    """The candidate against the base, both run on one perturbed copy of the data: the computation of a
    subgroup (measure_groupings) over one "subgroup" of every sample, named after the perturbation."""
    whole = Grouping(name=PERTURBATION, columns=(), codes=np.zeros(len(base.pred if base.pred is not None
                                                                        else base.values), dtype=np.int64),
                     keys=(key,), kind=PERTURBATION)
    (result,) = measure_groupings([whole], base=base, cand=cand, agreement=agreement, y=y, task=task, each=each,
                                  gaps={}, fairness=set(), confidence=confidence, bootstrap=bootstrap, seed=seed)
    return replace(result.groups[0], parameters=parameters)


def not_under_perturbation(key: str, parameters: dict, n: int, *, task: str, labelled: bool, each: dict[str, int],
                           reason: str) -> GroupResult:
    """A perturbation under which the comparison could not be made: every metric it would show is unavailable,
    with why (a rule on it is an error, never a pass)."""
    headline = headline_for(task)
    shown = ({headline} if headline is not None and labelled else set()) | set(each)
    return GroupResult(key=key, n=n, parameters=parameters,
                       metrics={m: MetricResult(metric=m, n=n, unavailable=reason) for m in sorted(shown)})


def perturbation_grouping(groups: list[GroupResult]) -> GroupingResult:
    return GroupingResult(name=PERTURBATION, kind=PERTURBATION, columns=(), groups=tuple(groups))


def wanted(rules) -> tuple[dict[str, int], dict[str, int], set[str], bool]:
    """What the rules ask to be measured per group: (each, gaps, fairness, per_class); each and gaps map a
    metric to the smallest min_samples of the rules on it."""
    each: dict[str, int] = {}
    gaps: dict[str, int] = {}
    fairness, per_class = set(), False
    for rule in rules:
        spec = get_metric(rule.metric)
        if spec is None or rule.per == PERTURBATION:
            continue  # judged under perturbations: see wanted_under_perturbation
        if spec.kind == FAIRNESS:
            fairness.add(rule.metric)
        elif rule.per and rule.scope == "gap":
            gaps[rule.metric] = min(gaps.get(rule.metric, rule.min_samples), rule.min_samples)
        elif rule.per:
            each[rule.metric] = min(each.get(rule.metric, rule.min_samples), rule.min_samples)
        per_class = per_class or rule.per == "class"
    return each, gaps, fairness, per_class


def wanted_under_perturbation(rules) -> dict[str, int]:
    """metric -> the smallest min_samples of the per: perturbation rules on it (they get intervals)."""
    out: dict[str, int] = {}
    for rule in rules:
        if rule.per == PERTURBATION and get_metric(rule.metric) is not None:
            out[rule.metric] = min(out.get(rule.metric, rule.min_samples), rule.min_samples)
    return out
