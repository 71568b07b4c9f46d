"""Model files on disk: size with external data, stored weights by data type, sparsity, MACs.

Everything here reads the ONNX file (initializers and graph), never runs it, so
it is exact and cheap and always measured. Quantized weights are counted by the
type they are stored in (an int8 weight of a QDQ model is int8, its fp32 scale
is fp32), which is what the file and the device memory actually hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gate.errors import GateInputError

# ONNX TensorProto data type -> the short name used in metric names (bytes_fp32, ...) and its bits
_DTYPES = {1: ("fp32", 32), 2: ("uint8", 8), 3: ("int8", 8), 4: ("uint16", 16), 5: ("int16", 16),
           6: ("int32", 32), 7: ("int64", 64), 9: ("bool", 8), 10: ("fp16", 16), 11: ("fp64", 64),
           12: ("uint32", 32), 13: ("uint64", 64), 16: ("bf16", 16), 17: ("fp8", 8), 18: ("fp8", 8),
           19: ("fp8", 8), 20: ("fp8", 8), 21: ("uint4", 4), 22: ("int4", 4), 23: ("fp4", 4)}
# stored types that hold weights (not shapes, indices or masks): counted for sparsity
_WEIGHT_TYPES = {"fp32", "fp16", "bf16", "fp64", "fp8", "fp4", "int8", "uint8", "int4", "uint4", "int16", "uint16"}

# op -> (weight input, zero-point input, channel axis of a per-channel zero point; None: last axis)
_ZERO_POINTS = {"DequantizeLinear": (0, 2, "attr"), "MatMulInteger": (1, 3, None), "ConvInteger": (1, 3, 0),
                "QLinearMatMul": (3, 5, None), "QLinearConv": (3, 5, 0), "DynamicQuantizeMatMul": (1, 3, None),
                "MatMulIntegerToFloat": (1, 5, None)}
_MATMULS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "DynamicQuantizeMatMul": (0, 1),
            "MatMulIntegerToFloat": (0, 1), "FusedMatMul": (0, 1), "MatMulNBits": (0, None)}
_CONVS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "FusedConv": (0, 1)}
_MAC_OPS = set(_MATMULS) | set(_CONVS) | {"Gemm", "ConvTranspose"}


def onnx_footprint(path: Path) -> tuple[list[dict], int]:
    """([{path, size_bytes}] of the model and its external data files, parameter count).

    External tensors are read from their metadata only: the weights themselves
    are never loaded here.
    """
    files, parameters, _ = model_facts(path, weights=False)
    return files, parameters


def model_facts(path: Path, *, weights: bool = True) -> tuple[list[dict], int, dict | None]:
    """Files and parameter count as onnx_footprint, plus (weights=True) the facts of the stored
    weights: counts and bytes by data type, zeros, sparsity and a MAC estimate."""
    import onnx

    from gate.safety import check_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise GateInputError(f"is not a readable ONNX file: {str(exc)[:200]}", path=path,
                             fix="check the file is a complete .onnx model") from None
    files = {str(path): path.stat().st_size}
    parameters = 0
    tensors = list(model.graph.initializer)
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant":
            tensors.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    for tensor in tensors:
        parameters += _count(tensor.dims)
    # every external location checked (inside the model's folder, long enough) before any weight is read
    for location, size in check_external_data(path, model):
        files[str(location)] = size
    listed = [{"path": p, "size_bytes": s} for p, s in files.items()]
    if not weights:
        return listed, parameters, None
    facts = _weight_facts(model, tensors, path)
    facts["batch_dependent_ops"] = sorted({node.op_type for node in _all_nodes(model.graph)} & BATCH_DEPENDENT_OPS)
    return listed, parameters, facts


# Ops whose result for one sample depends on the other samples of the call: dynamic quantization takes its
# activation scale from the whole batch (measured: 83.69% accuracy as one batch, 83.93% at batch 1).
BATCH_DEPENDENT_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}


def _count(dims) -> int:
    count = 1
    for dim in dims:
        count *= dim
    return count


def _weight_facts(model, tensors, path: Path) -> dict:
    from onnx import numpy_helper

    zero_points = _zero_point_map(model)
    inits = {t.name: t for t in model.graph.initializer}
    by_dtype: dict[str, int] = {}
    bytes_by: dict[str, int] = {}
    nonzero = weight_params = weight_zeros = 0
    for tensor in tensors:
        name, bits = _DTYPES.get(tensor.data_type, (f"type{tensor.data_type}", 0))
        count = _count(tensor.dims)
        by_dtype[name] = by_dtype.get(name, 0) + count
        bytes_by[name] = bytes_by.get(name, 0) + math.ceil(count * bits / 8)
        if count == 0:
            continue
        try:
            values = numpy_helper.to_array(tensor, base_dir=str(path.parent))
        except Exception:  # a type numpy cannot hold (fp4, some fp8): zeros stay uncounted
            nonzero += count
            continue
        zero = _zero_of(values, zero_points.get(tensor.name), inits)
        zeros = int(np.count_nonzero(values == zero)) if zero is not None else int(count - np.count_nonzero(values))
        nonzero += count - zeros
        if name in _WEIGHT_TYPES and len(tensor.dims) >= 2:
            weight_params += count
            weight_zeros += zeros
    macs, macs_by_op, unknown = _macs(model)
    return weight_facts(by_dtype=by_dtype, bytes_by=bytes_by, nonzero=nonzero, weight_params=weight_params,
                        weight_zeros=weight_zeros, macs=macs, macs_by_op=macs_by_op, unknown=unknown)


def weight_facts(*, by_dtype: dict, bytes_by: dict, nonzero: int, weight_params: int, weight_zeros: int,
                 macs: int | None, macs_by_op: dict, unknown: int) -> dict:
    """The footprint facts every backend reports, in one shape."""
    return {
        "parameters_by_dtype": dict(sorted(by_dtype.items())),
        "bytes_by_dtype": dict(sorted(bytes_by.items())),
        "weight_bytes": sum(bytes_by.values()),
        "nonzero_parameters": nonzero,
        "weight_parameters": weight_params,
        "weight_zeros": weight_zeros,
        "sparsity": weight_zeros / weight_params if weight_params else None,
        "macs": macs,
        "macs_by_op": macs_by_op,
        "macs_unknown_nodes": unknown,
    }


def _zero_point_map(model) -> dict[str, tuple[str, int | None]]:
    """weight initializer -> (its zero-point initializer, channel axis), from the ops that dequantize it."""
    out = {}
    for node in model.graph.node:
        spec = _ZERO_POINTS.get(node.op_type)
        if spec is None:
            continue
        w, z, axis = spec
        if len(node.input) <= w:
            continue
        zp = node.input[z] if len(node.input) > z else ""
        if axis == "attr":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if any(a.name == "block_size" and a.i for a in node.attribute):
                continue  # blocked quantization: stored zeros are counted as they are
        out[node.input[w]] = (zp, axis)
    return out


def _zero_of(values: np.ndarray, spec, inits) -> np.ndarray | float | None:
    """The stored value that means 0.0: the zero point (broadcast per channel), else None (plain 0)."""
    if spec is None:
        return None
    zp_name, axis = spec
    if not zp_name:
        return None  # no zero point given: it is 0
    tensor = inits.get(zp_name)
    if tensor is None:
        return None
    from onnx import numpy_helper

    zp = numpy_helper.to_array(tensor)
    if zp.size == 1:
        return zp.reshape(())
    if values.ndim == 0:
        return None
    axis = values.ndim - 1 if axis is None else axis % values.ndim
    if zp.ndim != 1 or zp.size != values.shape[axis]:
        return None
    shape = [1] * values.ndim
    shape[axis] = zp.size
    return zp.reshape(shape)


def _macs(model) -> tuple[int | None, dict[str, int], int]:
    """Multiply-accumulates per sample of the matrix ops of the main graph, from inferred shapes.

    Symbolic dimensions (a dynamic batch axis) are taken as 1; a fixed batch is divided out.
    Returns (total or None when no such op has known shapes, by op type, nodes with unknown shapes).
    """
    import onnx
    from onnx import TensorProto, helper, shape_inference

    graph = model.graph
    if not any(node.op_type in _MAC_OPS for node in graph.node):
        return 0, {}, 0
    # a light copy: big initializers become typed graph inputs, so inference needs no weight bytes
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.node.extend(_topological(graph))
    g.input.extend(graph.input)
    g.output.extend(graph.output)
    # the file's own value_info is left out: converters (fp16) leave stale types there that make
    # inference fail; inference recomputes every intermediate shape anyway
    init_names = {t.name for t in graph.initializer}
    declared = {i.name for i in graph.input}
    for t in graph.initializer:
        if _count(t.dims) <= 64:
            g.initializer.append(t)  # shapes and axes: shape inference reads their values
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    batch = 1
    for inp in g.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 and batch == 1:
            batch = dims[0].dim_value
        for d in dims:
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    try:
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:
        return None, {}, sum(node.op_type in _MAC_OPS for node in graph.node)
    shapes: dict[str, list[int] | None] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type == TensorProto.UNDEFINED or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shapes[vi.name] = None if any(d is None for d in dims) else dims
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)

    total, by_op, unknown = 0, {}, 0
    for node in inferred.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown += 1
            continue
        total += macs
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    if total == 0 and unknown:
        return None, by_op, unknown
    return total // batch, {k: v // batch for k, v in sorted(by_op.items())}, unknown


def _topological(graph) -> list:
    """Nodes in dependency order: some converters (fp16) append their Cast nodes at the end,
    and shape inference reads the graph in order. Kahn's algorithm, linear in the graph's size (a deep
    chain of thousands of nodes is one pass); file order among the ready nodes."""
    import heapq

    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = list(graph.node)
    waiting = [0] * len(nodes)  # inputs not yet produced
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        missing = {name for name in node.input if name not in available}
        waiting[i] = len(missing)
        for name in missing:
            consumers.setdefault(name, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(i)
        for name in nodes[i].output:
            for j in consumers.pop(name, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
    if len(ordered) < len(nodes):  # a cycle or an input from an outer scope: keep the file's order for the rest
        placed = set(ordered)
        ordered += [i for i in range(len(nodes)) if i not in placed]
    return [nodes[i] for i in ordered]


def _shape(shapes, node, i):
    return shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None


def _node_macs(node, shapes) -> int | None:
    out = shapes.get(node.output[0]) if node.output else None
    op = node.op_type
    if op in _MATMULS:
        a_i, _ = _MATMULS[op]
        a = _shape(shapes, node, a_i)
        if a is None or out is None or not a:
            return None
        return _count(out) * a[-1]
    if op == "Gemm":
        a = _shape(shapes, node, 0)
        if a is None or out is None or len(a) != 2:
            return None
        trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
        return _count(out) * (a[0] if trans_a else a[1])
    if op in _CONVS:
        _, w_i = _CONVS[op]
        w = _shape(shapes, node, w_i)
        if w is None or out is None or len(w) < 2:
            return None
        return _count(out) * _count(w[1:])
    if op == "ConvTranspose":
        x, w = _shape(shapes, node, 0), _shape(shapes, node, 1)
        if x is None or w is None or len(w) < 2:
            return None
        return _count(x) * _count(w[1:])
    return None


def footprint_result(name: str, base, cand, n: int):
    """A file fact of base and candidate as an exact MetricResult (metrics compare.footprint does not cover)."""
    from gate.measure.stats import Interval
    from gate.measurements import MetricResult

    bf, cf = base.footprint, cand.footprint
    if name == "compression_ratio":
        if not base.size_bytes or not cand.size_bytes:
            return MetricResult(metric=name, n=n, unavailable="file sizes unknown")
        c = base.size_bytes / cand.size_bytes
        return MetricResult(metric=name, n=n, candidate=c, candidate_interval=Interval(low=c, high=c, method="exact"))
    if bf is None or cf is None:
        return MetricResult(metric=name, n=n, unavailable="weights are only read from ONNX models")
    if name.startswith("bytes_"):
        dtype = name[len("bytes_"):]
        b, c = bf["bytes_by_dtype"].get(dtype, 0), cf["bytes_by_dtype"].get(dtype, 0)
    else:
        b, c = bf.get(name), cf.get(name)
        if b is None or c is None:
            why = {"sparsity": "the model has no weight tensors (initializers of 2 or more dimensions)",
                   "macs": "the shapes of its Conv/Gemm/MatMul nodes could not be inferred"}.get(name, "unknown")
            return MetricResult(metric=name, n=n, unavailable=why)
    b, c = float(b), float(c)
    return MetricResult(metric=name, n=n, base=b, candidate=c, delta=c - b,
                        delta_interval=Interval(low=c - b, high=c - b, method="exact"),
                        candidate_interval=Interval(low=c, high=c, method="exact"))


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
