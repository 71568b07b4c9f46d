"""Where the error enters: base and candidate compared tensor by tensor, in the base's graph order.

A compressed candidate that keeps the base's tensor names (int8 static QDQ, int8 dynamic, fp16, pruned) is
run with its intermediate tensors exposed as outputs, beside the base, on the first samples of the bound
data. Every float tensor of the same name in both graphs is compared in float64 over all its elements:

- SQNR (dB) = 10 log10(sum base^2 / sum (candidate - base)^2): infinite when identical;
- relative error = ||candidate - base|| / ||base||.

What a node's output is compared against is what the node read: the input SQNR of a node is the worst SQNR
among its inputs, where an input that is not compared (renamed or fused away in the candidate) takes the
SQNR of the nearest compared tensors upstream, and weights (initializers, Constant nodes) count as exact.
Two numbers follow for every tensor:

- drop (dB) = input SQNR - SQNR: what the node loses (infinite when it reads exact tensors);
- own SQNR (dB): the SQNR the error the node adds would give on its own,
  -10 log10(10^(-SQNR/10) - 10^(-input SQNR/10)); finite even when the inputs are exact, so nodes can be
  ranked by it (a drop from exact inputs is always infinite and would rank the first layer first).

The error *first grows* at the first tensor in graph order whose SQNR is below NOISE_FLOOR_DB (above it the
difference is float rounding, e.g. another summation order) and whose node drops at least GROWTH_DB (the
error power at least doubles there), or which turns finite base values into NaN or infinity. For a quantized
candidate the nodes to keep in float (onnxruntime.quantization's `nodes_to_exclude`, which takes the base's
node names) come from the growing tensors with the lowest own SQNR, at most SUGGEST_MAX: the nodes with weights
(MatMul, Gemm, Conv, ...) that computed the tensor since the compared tensors it reads, else its own node. A
candidate made from a pre-processed base (quant_pre_process fuses MatMul + Add into a Gemm of another name)
names its fused node in each row's `candidate_node`.

onnxruntime.quantization keeps the base's names: quantize_static (QDQ) keeps the nodes and their output
tensors and adds `X_QuantizeLinear`/`X_DequantizeLinear` nodes with `X_..._Output` tensors; quantize_dynamic
replaces a MatMul by `<node>_quant` nodes whose last one writes the MatMul's own output tensor. A graph
output keeps its name in both. QDQ also drops a Relu (or Clip) before a QuantizeLinear, whose clamp does its
work: the Relu's output name then holds the value *before* the clamp. So a tensor the candidate quantizes
and dequantizes is compared as its consumers read it, the DequantizeLinear's output (the row names it).
The comparison uses names only: a candidate that renamed its tensors (an exporter run again, a graph
rewritten by hand) is "not comparable", never guessed at.

Pure measurement: it reads two checked model files (the runners' safety checks, then check_external_data on
the proto before reading external weights) and the runners' bound input; nothing is judged here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NOISE_FLOOR_DB = 100.0  # float32 rounding of another summation order stays far above this
GROWTH_DB = 3.0  # a node that at least doubles the error power it reads
SUGGEST_MAX = 3
MAX_TENSORS = 2000
BATCH_BYTES = 64_000_000  # the exposed tensors of one call, base and candidate together
PROBE_SAMPLES = 8  # the first call: learns the tensors' sizes per sample before the batch is chosen
_PROTOBUF_LIMIT = 2_000_000_000  # a model with its weights loaded must serialize below 2 GiB
# ops onnxruntime.quantization quantizes with their weights: where nodes_to_exclude keeps precision
_WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU"}
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                  "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "QGemm", "QAttention"}

COMPARED, IDENTICAL, NOT_COMPARABLE, SKIPPED, ERROR = "compared", "identical", "not_comparable", "skipped", "error"
RENAMED = "not comparable: the candidate renamed its tensors"


@dataclass(frozen=True, kw_only=True)
class TensorAgreement:
    """One tensor of the base found under the same name in the candidate."""
    tensor: str
    node: str | None  # the node of the base that writes it (None: a graph input)
    read_as: str | None = None  # the candidate's tensor compared, when not `tensor` (QDQ: its dequantized value)
    op: str  # its op type ("input" for a graph input)
    dtype: str  # as the candidate gives it (float16 for an fp16 candidate)
    elements: int  # compared, over every sample
    sqnr_db: float  # inf: identical; -inf: the base is zero everywhere and the candidate is not
    relative_error: float
    input_sqnr_db: float  # of what the node reads (see the module's docstring); inf: exact
    nonfinite: int = 0  # elements finite in the base but NaN or infinite in the candidate
    # the base's (node, op) that computed it since the compared tensors it reads: the node itself, and before
    # it those whose outputs the candidate fused away (quant_pre_process: MatMul + Add -> Gemm)
    segment: tuple[tuple[str, str], ...] = ()
    candidate_node: str | None = None  # the candidate's node that writes the tensor (another name when fused)

    @property
    def exact(self) -> bool:
        return self.sqnr_db == math.inf and not self.nonfinite

    @property
    def drop_db(self) -> float:
        if self.input_sqnr_db == self.sqnr_db:
            return 0.0  # both exact (inf - inf is NaN)
        return self.input_sqnr_db - self.sqnr_db

    @property
    def own_sqnr_db(self) -> float:
        added = _power(self.sqnr_db) - _power(self.input_sqnr_db)
        if added <= 0:
            return math.inf
        return -10 * math.log10(added) if math.isfinite(added) else -math.inf

    @property
    def grows(self) -> bool:
        return bool(self.nonfinite) or (self.sqnr_db < NOISE_FLOOR_DB and self.drop_db >= GROWTH_DB)

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "read_as": self.read_as, "node": self.node, "op": self.op, "dtype": self.dtype,
                "elements": self.elements, "exact": self.exact, "sqnr_db": _finite(self.sqnr_db),
                "relative_error": _finite(self.relative_error), "input_sqnr_db": _finite(self.input_sqnr_db),
                "drop_db": _finite(self.drop_db), "own_sqnr_db": _finite(self.own_sqnr_db),
                "grows": self.grows, "nonfinite": self.nonfinite, "segment": [name for name, _ in self.segment],
                "candidate_node": self.candidate_node}


@dataclass(frozen=True, kw_only=True)
class LayerAgreement:
    """Every compared tensor in the base's graph order, and where the error first grows."""
    status: str  # COMPARED, IDENTICAL, NOT_COMPARABLE, SKIPPED or ERROR
    reason: str | None = None  # why not COMPARED
    samples: int = 0
    batch: int | None = None  # samples per call after the first (probe) call
    quantized: bool = False  # the candidate holds quantization ops: nodes_to_exclude applies
    common: int = 0  # the base's inputs and tensors found in the candidate under the same name
    skipped: dict = field(default_factory=dict)  # {"not_float", "shape", "capped"}: common tensors not compared
    rows: tuple[TensorAgreement, ...] = ()
    output: str | None = None  # the judged output tensor
    notes: tuple[str, ...] = ()

    @property
    def first_growth(self) -> int | None:
        """Index in `rows` of the first tensor where the error grows (see the module's docstring)."""
        return next((i for i, row in enumerate(self.rows) if row.grows), None)

    @property
    def suggested_nodes_to_exclude(self) -> list[str]:
        """Base node names to keep in float, the largest own error first (quantized candidates only): of each
        growing tensor, the nodes with weights that computed it (its segment), else the node that wrote it."""
        if not self.quantized:
            return []
        names: list[str] = []
        for _, i in sorted((row.own_sqnr_db, i) for i, row in enumerate(self.rows) if row.grows and row.node):
            row = self.rows[i]
            weighted = [name for name, op in row.segment if op in _WEIGHTED_OPS]
            names += [name for name in weighted or [row.node] if name not in names]
        return names[:SUGGEST_MAX]

    def to_dict(self) -> dict:
        rows = [r.to_dict() for r in self.rows]
        out_row = next((r for r in self.rows if r.tensor == self.output), None)
        return {"status": self.status, "reason": self.reason, "samples": self.samples, "batch": self.batch,
                "quantized": self.quantized, "tensors_common": self.common, "tensors_compared": len(rows),
                "skipped": dict(self.skipped), "output": self.output,
                "output_exact": out_row.exact if out_row else None,
                "output_sqnr_db": _finite(out_row.sqnr_db) if out_row else None,
                "first_growth": self.first_growth, "suggested_nodes_to_exclude": self.suggested_nodes_to_exclude,
                "noise_floor_db": NOISE_FLOOR_DB, "growth_db": GROWTH_DB, "rows": rows, "notes": list(self.notes)}


def _power(sqnr_db: float) -> float:
    """Noise power relative to the signal's."""
    return 0.0 if sqnr_db == math.inf else 10 ** (-sqnr_db / 10) if sqnr_db > -math.inf else math.inf


def _finite(x: float) -> float | None:
    """JSON has no infinity: the `exact` flag and the text around it say what null means."""
    return float(x) if math.isfinite(x) else None


def not_measured(status: str, reason: str) -> dict:
    return LayerAgreement(status=status, reason=reason).to_dict()


def diagnose(base, candidate, *, samples: int, identical: bool, batch: int | None = None) -> dict:
    """The serialised LayerAgreement of one candidate, never an exception: a failure of the diagnosis is
    recorded in its `reason` and must not touch the verdict. base, candidate: bound runners."""
    if identical:
        return not_measured(IDENTICAL, "the candidate is the base's own file (the same sha256): every tensor is "
                                       "exact")
    for who in (base, candidate):
        if getattr(who, "backend", None) != "onnx":
            return not_measured(SKIPPED, f"{Path(who.path).name} is a {who.backend} model: the comparison tensor "
                                         "by tensor reads ONNX graphs")
    try:
        return layer_agreement(base, candidate, samples=samples, batch=batch).to_dict()
    except Exception as exc:  # a diagnosis, not a measurement the verdict reads: say what broke and go on
        return not_measured(ERROR, f"{type(exc).__name__}: {str(exc).strip()[:300]}")


# ---------------------------------------------------------------- the comparison


class _Sum:
    """Sums over every sample of one tensor, in float64."""

    def __init__(self) -> None:
        self.signal = self.noise = 0.0
        self.elements = self.nonfinite = 0
        self.dtype: str | None = None
        self.refused: str | None = None  # "not_float" or "shape"
        self.nbytes = 0  # of the last call, base and candidate

    def add(self, b, c) -> None:
        if self.refused:
            return
        if not (isinstance(b, np.ndarray) and isinstance(c, np.ndarray)) or b.dtype.kind != "f" or c.dtype.kind != "f":
            self.refused = "not_float"
            return
        if b.shape != c.shape:
            self.refused = "shape"  # compared element by element: the same shape in both, every call
            return
        self.dtype, self.nbytes = str(c.dtype), b.nbytes + c.nbytes
        b64, c64 = b.astype(np.float64).ravel(), c.astype(np.float64).ravel()
        finite_b, finite_c = np.isfinite(b64), np.isfinite(c64)
        if not (finite_b.all() and finite_c.all()):
            self.nonfinite += int((finite_b & ~finite_c).sum())
            keep = finite_b & finite_c
            b64, c64 = b64[keep], c64[keep]
        diff = c64 - b64
        # numpy's pairwise sums: the same bits on every run (a threaded BLAS dot need not be)
        self.signal += float(np.square(b64).sum())
        self.noise += float(np.square(diff).sum())
        self.elements += int(b64.size)

    def sqnr(self) -> tuple[float, float]:
        """(SQNR dB, relative error)."""
        if self.noise == 0:
            return math.inf, 0.0
        if self.signal == 0:
            return -math.inf, math.inf
        return 10 * math.log10(self.signal / self.noise), math.sqrt(self.noise / self.signal)


def _load(path: Path):
    """The model with its external weights, read only after check_external_data passed on this very proto."""
    import onnx

    from gate.safety import check_external_data

    model = onnx.load(str(path), load_external_data=False)
    files = check_external_data(path, model)
    if path.stat().st_size + sum(size for _, size in files) > _PROTOBUF_LIMIT:
        raise _Skip(f"{path.name} is over 2 GB with its weights: it cannot be copied with extra outputs")
    if files:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


class _Skip(Exception):
    """The comparison does not apply (not an error of the gate)."""


def _exposed(model, names: list[str]) -> bytes:
    import onnx

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    return model.SerializeToString()


def _thinned(names: list[str], keep: int, always: set[str]) -> list[str]:
    """At most `keep` names spread evenly over the graph order, the graph outputs always among them."""
    if len(names) <= keep:
        return names
    step = len(names) / max(keep - len(always), 1)
    chosen = {names[int(i * step)] for i in range(max(keep - len(always), 1))} | (always & set(names))
    return [n for n in names if n in chosen]


def layer_agreement(base, candidate, *, samples: int = 256, batch: int | None = None) -> LayerAgreement:
    """Base and candidate compared tensor by tensor on the first `samples` samples of the bound data.
    base, candidate: bound ONNX runners (path, output, batches(start, stop)); batch: most samples per call
    (the quality batch: dynamic int8 scales activations per call)."""
    try:
        return _compare(base, candidate, samples=samples, batch=batch)
    except _Skip as why:
        return LayerAgreement(status=SKIPPED, reason=str(why))


def _compare(base, candidate, *, samples: int, batch: int | None) -> LayerAgreement:
    from itertools import zip_longest

    from gate.measure.machine import open_session

    base_model, cand_model = _load(Path(base.path)), _load(Path(candidate.path))
    graph = base_model.graph
    weights = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    cand_written = {o for n in cand_model.graph.node for o in n.output if o}
    graph_outputs = {o.name for o in graph.output}
    order = [out for node in graph.node if node.op_type != "Constant" for out in node.output
             if out and out in cand_written]
    fed = set(base.input_names) & set(candidate.input_names)
    inputs = [i.name for i in graph.input if i.name in fed]
    cand_ops = {n.op_type for n in cand_model.graph.node}
    quantized = any(op in _QUANTIZED_OPS or op.startswith("QLinear") for op in cand_ops)
    if not [t for t in order if t not in graph_outputs]:
        return LayerAgreement(status=NOT_COMPARABLE, reason=RENAMED, quantized=quantized)
    common = len(inputs) + len(order)
    names = _thinned(order, MAX_TENSORS, graph_outputs)
    refused = {"not_float": 0, "shape": 0, "capped": len(order) - len(names)}
    base_session = open_session(_exposed(base_model, names), None, None)
    read_as = _as_read(cand_model.graph)
    writer = {o: n.name for n in cand_model.graph.node for o in n.output if o and n.name}
    cand_session = open_session(_exposed(cand_model, [read_as.get(n, n) for n in names]), None, None)
    graph.ClearField("initializer")  # the sessions hold the weights now; the graph's nodes are still read
    del cand_model
    sums = {n: _Sum() for n in inputs + names}
    samples = max(1, samples)
    step = min(PROBE_SAMPLES, batch or PROBE_SAMPLES, samples)
    start, most = 0, 0
    while start < samples:
        stop = min(start + step, samples)
        most = max(most, stop - start)
        for b_feed, c_feed in zip_longest(base.batches(start, stop), candidate.batches(start, stop)):
            if b_feed is None or c_feed is None:
                return LayerAgreement(status=NOT_COMPARABLE, quantized=quantized, reason=(
                    "base and candidate are fixed to different batch sizes: their tensors cannot be "
                    "compared call by call"))
            for name in inputs:
                sums[name].add(b_feed[name], c_feed[name])
            cand_out = cand_session.run([read_as.get(n, n) for n in names], c_feed)
            for name, b, c in zip(names, base_session.run(names, b_feed), cand_out):
                sums[name].add(b, c)
        if start == 0:  # the probe: keep what compares, and size the calls to the byte budget
            names = [n for n in names if not sums[n].refused]
            per_sample = sum(sums[n].nbytes for n in names) / (stop - start) or 1
            if per_sample > BATCH_BYTES:
                keep = max(1, int(len(names) * BATCH_BYTES / per_sample))
                kept = _thinned(names, keep, graph_outputs)
                for n in set(names) - set(kept):
                    sums[n].refused = "capped"
                names = kept
                per_sample = sum(sums[n].nbytes for n in names) / (stop - start) or 1
            step = max(1, min(int(BATCH_BYTES // per_sample), batch or samples, samples))
        start = stop
    for name in inputs + order:
        if name in sums and sums[name].refused:
            refused[sums[name].refused] += 1
    rows = _rows(graph, inputs, sums, weights, read_as, writer)
    notes = []
    if quantized:
        notes.append("Every compared tensor is an output of the graphs run here, so onnxruntime cannot fuse "
                     "across it: quantized nodes may run as their float simulation, and these numbers can differ "
                     "slightly from the judged outputs (which come from the unchanged files).")
    return LayerAgreement(status=COMPARED, samples=samples, batch=most, quantized=quantized, common=common,
                          skipped=refused, rows=tuple(rows), output=getattr(base, "output", None),
                          notes=tuple(notes))


def _as_read(graph) -> dict[str, str]:
    """tensor -> the DequantizeLinear output its consumers read, for each tensor quantized then dequantized."""
    dequantized = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input}
    return {n.input[0]: dequantized[n.output[0]] for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input and n.output and n.output[0] in dequantized}


def _rows(graph, inputs: list[str], sums: dict[str, _Sum], weights: set, read_as: dict[str, str],
          writer: dict[str, str]) -> list[TensorAgreement]:
    """Compared tensors in graph order, each with the SQNR of what its node read and the base nodes since the
    compared tensors it was computed from (more than one where the candidate fused them away)."""
    compared = {n: s.sqnr() for n, s in sums.items() if not s.refused and s.dtype is not None}
    upstream: dict[str, float] = {w: math.inf for w in weights}
    chain: dict[str, tuple] = {}  # an uncompared tensor -> the (node, op) that computed it since compared ones
    rows = []
    for name in inputs:
        if name in compared:
            upstream[name] = compared[name][0]
            rows.append(_row(name, None, "input", sums[name], compared[name], math.inf))
    for node in graph.node:
        read = min((upstream.get(i, math.inf) for i in node.input if i), default=math.inf)
        since = tuple(dict.fromkeys(step for i in node.input if i for step in chain.get(i, ())))
        since += ((node.name, node.op_type),) if node.name else ()
        for out in node.output:
            if not out:
                continue
            if node.op_type == "Constant":
                upstream[out] = math.inf
            elif out in compared:
                upstream[out] = compared[out][0]
                rows.append(_row(out, node.name or None, node.op_type, sums[out], compared[out], read,
                                 read_as=read_as.get(out), segment=since, written_by=writer.get(out)))
            else:  # renamed or fused away in the candidate: carries the error of what it was computed from
                upstream[out] = read
                chain[out] = since
    return rows


def _row(name: str, node: str | None, op: str, s: _Sum, sqnr: tuple[float, float], read: float, *,
         read_as: str | None = None, segment: tuple = (), written_by: str | None = None) -> TensorAgreement:
    return TensorAgreement(tensor=name, read_as=read_as, node=node, op=op, dtype=s.dtype or "?", elements=s.elements,
                           sqnr_db=sqnr[0], relative_error=sqnr[1], input_sqnr_db=read, nonfinite=s.nonfinite,
                           segment=segment, candidate_node=written_by)
