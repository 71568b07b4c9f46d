"""Model files on disk: size with external data, and the number of stored weights."""

from __future__ import annotations

from pathlib import Path

from gate.errors import GateInputError


def onnx_footprint(path: Path) -> tuple[list[dict], int]:
    """([{path, size_bytes}] of the model and its external data files, parameter count).

    External tensors are read from their metadata only: the weights themselves
    are never loaded here.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

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
        count = 1
        for dim in tensor.dims:
            count *= dim
        parameters += count
        if uses_external_data(tensor):
            location = path.parent / ExternalDataInfo(tensor).location
            if not location.exists():
                raise GateInputError(f"refers to the external data file {location.name}, which is missing",
                                     path=path, fix="keep the .onnx.data file next to the model")
            files[str(location)] = location.stat().st_size
    return [{"path": p, "size_bytes": s} for p, s in files.items()], parameters


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
