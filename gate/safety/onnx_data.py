"""ONNX external data: where the weights of a model are read from, checked before anything reads them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB

# bytes per element of the types external data may hold (4-bit and 2-bit types are packed: not listed)
_ONNX_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
                    16: 2, 17: 1, 18: 1, 19: 1, 20: 1}
_EXTERNAL_FIX = ("keep the weights in a file next to the model: onnx.save_model(model, 'model.onnx', "
                 "save_as_external_data=True, location='model.onnx.data')")


def _onnx_tensors(model):
    """Every tensor a model holds: initializers, sparse ones, Constant attributes, subgraphs, functions."""
    def of_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from of_node(node)

    def of_node(node):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in [attr.sparse_tensor] * attr.HasField("sparse_tensor") + list(attr.sparse_tensors):
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from of_graph(attr.g)
            for sub in attr.graphs:
                yield from of_graph(sub)

    yield from of_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from of_node(node)


def check_external_data(path: Path, model=None, *, max_mb: float | None = None) -> list[tuple[Path, int]]:
    """The external-data files of an ONNX model as (path, size), each checked before anything reads it.

    A tensor stored outside the .onnx file names its file in `location`; onnxruntime and onnx read
    that file relative to the model. A model from a pull request could name any file the runner can
    read (`../../.ssh/id_rsa`, `/etc/passwd`, a symlink out of the folder) and the weights' bytes
    would leak into the measurements. So every location must be a relative path without `..` that
    resolves (symlinks followed) inside the model's folder, to a file that holds offset + length.
    `model` is the ModelProto when the caller has read it already (without its external data).
    """
    if model is None:
        if not _mentions_location(path):
            return []  # no tensor names an external file (its key would be in the bytes): nothing to parse
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise GateInputError(f"is not a readable ONNX file: {str(exc)[:200]}", path=path,
                                 fix="check the file is a complete .onnx model") from None
    from onnx import TensorProto

    folder = os.path.realpath(path.parent)
    files: dict[str, tuple[Path, int]] = {}
    for tensor in _onnx_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL and not len(tensor.external_data):
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        name = repr(tensor.name) if tensor.name else "(unnamed)"
        location = entries.get("location", "")

        def refuse(why: str, tensor_name: str = name, loc: str = location) -> GateInputError:
            return GateInputError(f"keeps the data of the tensor {tensor_name} in {loc[:200]!r}, {why}; the gate "
                                  "reads external data only from files inside the model's folder", path=path,
                                  fix=_EXTERNAL_FIX)

        if not location:
            raise GateInputError(f"stores the tensor {name} as external data but names no file (no 'location')",
                                 path=path, fix=_EXTERNAL_FIX)
        if "\x00" in location:
            raise refuse("a path with a NUL byte")
        if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
            raise refuse("an absolute path")
        if ".." in re.split(r"[\\/]+", location):
            raise refuse("a path that climbs out with '..'")
        joined = path.parent / location
        real = os.path.realpath(joined)
        if os.path.commonpath([real, folder]) != folder:
            raise refuse(f"which resolves to {real} (through a symbolic link), outside the model's folder")
        if not os.path.isfile(real):
            raise GateInputError(f"keeps the data of the tensor {name} in {location!r}, which is missing",
                                 path=path, fix=f"keep {location} next to the model (copy it with the .onnx file; "
                                 "git lfs pull if it is stored with LFS)")
        size = os.path.getsize(real)
        try:
            offset = int(entries.get("offset") or 0)
            length = int(entries["length"]) if entries.get("length") else None
        except ValueError:
            raise refuse("with an offset or length that is not a whole number") from None
        if offset < 0 or (length is not None and length < 0):
            raise refuse("with a negative offset or length")
        available = size - offset if length is None else length
        count = 1
        for dim in tensor.dims:
            count *= dim
        expected = count * _ONNX_ITEM_BYTES[tensor.data_type] if tensor.data_type in _ONNX_ITEM_BYTES else None
        if offset + (length or 0) > size or available < 0 or (expected is not None and available < expected):
            need = offset + (length if length is not None else (expected or 0))
            raise GateInputError(f"keeps the data of the tensor {name} in {location!r} at bytes {offset}.."
                                 f"{need}, but that file has {size} bytes (truncated?)", path=path,
                                 fix=f"copy the complete {location} (git lfs pull if it is stored with LFS), or "
                                 "export the model again")
        files.setdefault(real, (joined, size))
    listed = list(files.values())
    if max_mb is not None:
        total = path.stat().st_size + sum(size for _, size in listed)
        if total > max_mb * MB:
            raise GateInputError(f"is {total / MB:,.1f} MB with its external data, over the limit of {max_mb:g} MB",
                                 path=path, fix="raise max_file_mb in the policy if this size is expected")
    return listed


def _mentions_location(path: Path) -> bool:
    """True when the bytes of a (large) file contain b'location', read through a memory map."""
    import mmap

    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return mapped.find(b"location") >= 0
