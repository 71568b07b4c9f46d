"""torch runner: torch.export programs (.pt2), TorchScript (.pt), safetensors weights + a factory.

Imported only when a model file is one of these (gate/models/__init__.py decides by content);
torch itself is imported here, with an install hint when it is missing. Runs on the CPU.

Files were checked by gate/safety/ before they get here: no pickle is ever loaded
(`torch.load` is only ever called, by torch.export.load, with weights_only=True forced).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from gate import safety
from gate.checks import check_input_names
from gate.errors import GateInputError
from gate.measure.footprint import weight_facts
from gate.models.binding import Binding
from gate.policy import ModelRef

INSTALL_FIX = "torch models need the torch extra: pip install 'gate[torch]'"
_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NUMPY_OF = {name: np.dtype(name) for name in ("float16", "float32", "float64", "int8", "uint8", "int16", "int32",
                                                "int64")}  # torch dtypes whose range numpy knows
_FORMATS = {safety.TORCH_EXPORT: "torch.export program", safety.TORCHSCRIPT: "TorchScript module",
            safety.SAFETENSORS: "safetensors state dict"}


def _import_torch(path: Path, what: str):
    try:
        import torch
    except ImportError:
        raise GateInputError(f"is a {what}, and PyTorch is not installed", path=path, fix=INSTALL_FIX) from None
    return torch


def _first_line(exc: BaseException) -> str:
    """The line that says what went wrong (TorchScript puts it last, after its own stack)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if "TorchScript interpreter" in lines[0] else lines[0])[:300]


@contextlib.contextmanager
def _weights_only(torch):
    """torch.export.load calls torch.load(..., weights_only=False) on pickled payloads; inside this
    block every torch.load is weights_only=True, so a payload that is more than tensors fails."""
    original = torch.load

    def load(f, *args, weights_only=None, **kwargs):  # noqa: ARG001 - the caller's choice is overridden
        return original(f, *args, weights_only=True, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


class TorchRunner(Binding):
    backend = "torch"

    def __init__(self, ref: ModelRef, *, kind: str, output: str | None, inputs: dict, max_mb: float,
                 threads: int | None = None) -> None:
        self.name = ref.name
        self.path = ref.path
        self.kind = kind
        self._ref, self._max_mb = ref, max_mb  # what the memory worker needs to load it again
        self._mapping = inputs
        self._wanted = ref.output  # per model: must exist
        self._default = output  # policy-wide: names an output when the model has several
        torch = self._torch = _import_torch(self.path, _FORMATS[kind])
        if threads:
            torch.set_num_threads(threads)
        self._specs: list[tuple[str, object, tuple | None]] | None = None  # (name, dtype, shape) from .pt2
        self._program = None
        if kind == safety.TORCH_EXPORT:
            self.module = self._load_export(max_mb)
        elif kind == safety.TORCHSCRIPT:
            self.module = self._load_torchscript()
        else:
            self.module = self._load_safetensors(ref)
        self._names = self._input_names()
        self.output: str | None = None
        self._init_binding()

    # ---------------------------------------------------------------- loading

    def _load_export(self, max_mb: float):
        torch = self._torch
        data = safety.export_archive(self.path, max_mb)
        try:
            with _weights_only(torch), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's own notes about its serialization format
                program = torch.export.load(io.BytesIO(data))
                module = program.module()
        except Exception as exc:  # a file torch.export cannot read: the input is wrong
            raise GateInputError(f"cannot be loaded by torch.export.load: {_first_line(exc)}", path=self.path,
                                 fix="save it with torch.export.save(torch.export.export(model, (x,)), PATH) "
                                 f"using torch {torch.__version__.split('+')[0]} or a version it can read") from None
        self._program = program
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        specs = []
        for name in program.graph_signature.user_inputs:
            node = placeholders.get(name)
            val = node.meta.get("val") if node is not None else None
            if val is None or not hasattr(val, "dtype"):
                specs = None  # a non-tensor input: checked by running
                break
            shape = tuple(d if isinstance(d, int) else None for d in val.shape)
            specs.append((name, val.dtype, shape))
        self._specs = specs
        return module

    def _load_torchscript(self):
        torch = self._torch
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
                module = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as exc:
            raise GateInputError(f"cannot be loaded by torch.jit.load: {_first_line(exc)}", path=self.path,
                                 fix="save it with torch.jit.script(model).save(PATH), or export it to .pt2") from None
        return module.eval()

    def _load_safetensors(self, ref: ModelRef):
        torch = self._torch
        safety.safetensors_header(self.path)
        if not ref.factory:
            raise GateInputError("holds weights only (safetensors), so the gate needs code that builds the model",
                                 path=self.path, fix="in the policy, give the model as {path: ..., factory: "
                                 "package.module:function} (a function in your repository returning the "
                                 "torch.nn.Module)")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise GateInputError("is a safetensors file, and the safetensors package is not installed",
                                 path=self.path, fix=INSTALL_FIX) from None
        module = _build(ref, torch)
        try:
            state = load_file(str(self.path), device="cpu")
        except Exception as exc:
            raise GateInputError(f"cannot be read by safetensors: {_first_line(exc)}", path=self.path,
                                 fix="write it with safetensors.torch.save_file(model.state_dict(), PATH)") from None
        try:
            module.load_state_dict(state, strict=True)
        except Exception as exc:  # missing / unexpected keys, shape mismatches
            text = " ".join(str(exc).split())[:400]
            raise GateInputError(f"does not fit the model built by {ref.factory}: {text}", path=self.path,
                                 fix="point factory at the function that builds this architecture, or save "
                                 "the state dict of that model") from None
        return module.eval()

    def _input_names(self) -> list[str]:
        if self._specs is not None:
            return [name for name, _, _ in self._specs]
        if self.kind == safety.TORCHSCRIPT:
            args = self.module.forward.schema.arguments[1:]  # without self
            return [a.name for a in args]
        try:
            params = inspect.signature(self.module.forward).parameters.values()
        except (TypeError, ValueError):
            return ["x"]
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]

    # ---------------------------------------------------------------- data

    def bind(self, dataset) -> None:
        check_input_names(self._mapping, self._names, self.path)
        fixed = set()
        float_dtype = self._float_dtype()
        for i, name in enumerate(self._names):
            spec = self._source(name, self._names, dataset)
            array = dataset.column(spec, for_input=name, model=self.path)
            declared = self._specs[i] if self._specs is not None else None
            if declared is not None:
                _, want, shape = declared
                array = self._shaped(array, name, spec, list(shape), dataset)
                if shape and shape[0] is not None:
                    fixed.add(shape[0])
            else:
                array = self._reshaped(array, name, dataset)
                want = float_dtype if np.issubdtype(array.dtype, np.floating) else None
            if want is not None:
                self._check_cast(array, want, name, spec, dataset.path)
                narrow = _NUMPY_OF.get(str(want).replace("torch.", ""))
                if narrow is not None and array.dtype != narrow:
                    dataset.check_cast(spec, narrow, for_input=name, model=self.path)
            self._bind_input(name, array, want)
        self._set_batch(fixed, "export with one batch size or a dynamic batch axis (torch.export.Dim)")
        self._probe(dataset)

    def _numpy_dtype(self, name: str):
        want = self._dtypes.get(name)
        return None if want is None else _NUMPY_OF.get(str(want).replace("torch.", ""))

    def _float_dtype(self):
        torch = self._torch
        for tensor in self._tensors():
            if tensor.is_floating_point() and not tensor.is_quantized:
                return tensor.dtype
        return torch.float32

    def _check_cast(self, array: np.ndarray, want, name: str, spec, data_path) -> None:
        torch = self._torch
        if want.is_floating_point:
            ok = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) \
                or array.dtype == np.bool_
        elif want == torch.bool:
            ok = array.dtype == np.bool_
        else:
            ok = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
        if not ok:
            kind = str(want).replace("torch.", "")
            raise GateInputError(f"input '{name}' of {self.path.name} expects {kind}, but the data {spec!r} "
                                 f"holds {array.dtype}", path=data_path, fix=f"store {spec!r} as {kind}")

    def _probe(self, dataset) -> None:
        """Run the first samples once: a model that does not accept the data is an input error,
        reported before any measurement, and the outputs are known by name."""
        stop = min(dataset.n, self._batch or 2)
        try:
            outputs = self._call(next(self._chunks(0, stop))[1])
        except GateInputError:
            raise
        except Exception as exc:
            fed = ", ".join(f"{k}: {tuple(v.shape[1:])} {v.dtype}" for k, v in self._feeds.items())
            raise GateInputError(f"fails on the first samples of the data: {_first_line(exc)}", path=self.path,
                                 fix=f"check that the model accepts samples shaped and typed as fed ({fed}); "
                                 "map inputs under data: inputs: in the policy") from None
        names = list(outputs)
        if len(names) == 1 and names[0] == "output":
            chosen = self._wanted or "output"  # the policy-wide `output` names outputs of multi-output models
        else:
            chosen = self._wanted or self._default
            if chosen is None:
                if len(names) != 1:
                    raise GateInputError(f"has {len(names)} outputs ({', '.join(names)}); the gate needs to know "
                                         "which to judge", path=self.path,
                                         fix=f"set `output: {names[0]}` in the policy (top level or on this model)")
                chosen = names[0]
        if chosen not in names:
            raise GateInputError(f"has no output named {chosen!r}", path=self.path,
                                 fix=f"choose one of: {', '.join(names)} (a tensor: output; a tuple: output_0, "
                                 "output_1, ...; a dict: its keys)")
        self.output = chosen

    # ---------------------------------------------------------------- running

    def run(self, start: int, stop: int) -> np.ndarray:
        parts = [self._numpy(self._call(chunk)[self.output])[:real] for real, chunk in self._chunks(start, stop)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def tensors(self, feeds: dict[str, np.ndarray]) -> list:
        """The positional arguments of forward for one call's feeds (see Binding.feed), in the dtypes the
        model takes."""
        torch = self._torch
        args = []
        for name in self._names:
            chunk = np.ascontiguousarray(feeds[name])
            if not chunk.flags.writeable:  # torch warns about read-only arrays (it cannot share them safely)
                chunk = chunk.copy()
            tensor = torch.from_numpy(chunk)
            want = self._dtypes.get(name)
            if want is not None and tensor.dtype != want:
                tensor = tensor.to(want)
            args.append(tensor)
        return args

    def _call(self, feeds: dict[str, np.ndarray]) -> dict:
        torch = self._torch
        args = self.tensors(feeds)
        with torch.inference_mode():
            result = self.module(*args)
        return _named_outputs(result, torch, self.path)

    def _numpy(self, tensor) -> np.ndarray:
        torch = self._torch
        tensor = tensor.detach().to("cpu")
        if tensor.is_quantized:
            tensor = tensor.dequantize()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()

    # ---------------------------------------------------------------- footprint

    def footprint(self) -> tuple[list[dict], int, dict]:
        """([{path, size_bytes}], stored values, weight facts) of the loaded model.

        Stored values are the elements of every distinct tensor the model holds: parameters,
        buffers and constants; packed quantized weights (dynamic int8 Linear) are unpacked and
        counted as their weight and bias, one value per int8 element (their scale and zero point
        live inside the quantized tensor, unlike ONNX, where they are initializers of their own).
        """
        files = [{"path": str(self.path), "size_bytes": self.path.stat().st_size}]
        return files, *_facts(self._tensors(), self._torch)

    def _tensors(self) -> list:
        torch = self._torch
        if self._program is not None:
            found = list(self._program.state_dict.values()) + list(self._program.constants.values())
        elif self.kind == safety.TORCHSCRIPT:
            found = _script_tensors(self.module, torch)
        else:
            found = list(self.module.state_dict().values())
        tensors, seen = [], set()
        for t in _flatten(found, torch):
            key = (t.data_ptr(), t.numel(), str(t.dtype), tuple(t.shape)) if t.numel() else (id(t),)
            if key not in seen:
                seen.add(key)
                tensors.append(t)
        return tensors


def _build(ref: ModelRef, torch):
    """Import `package.module:function` from the policy's directory and call it (repository code)."""
    spec = ref.factory
    if not _FACTORY.match(spec):
        raise GateInputError(f"has the factory {spec!r}, which is not package.module:function", path=ref.path,
                             fix="write it as e.g. factory: models.nets:build_student")
    module_name, _, func_name = spec.partition(":")
    root = str(ref.factory_root or Path.cwd())
    step = "importing"
    sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
        step = "calling"
        model = getattr(module, func_name)()
    except Exception as exc:  # the repository's code failed: say where
        raise GateInputError(f"needs the factory {spec}, which failed when {step} it (from {root}): "
                             f"{type(exc).__name__}: {_first_line(exc)}", path=ref.path,
                             fix="the factory is imported from the policy file's directory; check the module "
                             "path and that the function builds the model without arguments") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(root)
    if not isinstance(model, torch.nn.Module):
        raise GateInputError(f"needs the factory {spec} to return a torch.nn.Module; it returned "
                             f"{type(model).__name__}", path=ref.path, fix="return the model from the factory")
    return model


def _named_outputs(result, torch, path: Path) -> dict:
    if isinstance(result, torch.Tensor):
        return {"output": result}
    if isinstance(result, dict):
        items = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(result)]
    else:
        raise GateInputError(f"returns a {type(result).__name__}, not tensors", path=path,
                             fix="return a tensor, a tuple of tensors or a dict of tensors from forward")
    out = {k: v for k, v in items if isinstance(v, torch.Tensor)}
    if not out:
        raise GateInputError("returns no tensors", path=path, fix="return the logits (or scores) as a tensor")
    return out


def _script_tensors(module, torch) -> list:
    """Every tensor attribute of a TorchScript module tree, with packed parameters unpacked."""
    iterators = getattr(torch._C, "_jit_debug_module_iterators", None)
    if iterators is None:  # an older or newer torch without it: parameters and buffers only
        return list(module.state_dict().values())
    found = []
    for _, value in iterators(module._c)["named_attributes_r"]:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, torch.ScriptObject) and value._has_method("__getstate__"):
            found.append(value.__getstate__())
    return found


def _flatten(items, torch):
    for item in items:
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, (tuple, list)):
            yield from _flatten(item, torch)
        elif isinstance(item, dict):
            yield from _flatten(item.values(), torch)
        elif isinstance(item, torch.ScriptObject) and item._has_method("__getstate__"):
            yield from _flatten([item.__getstate__()], torch)


_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "int8",
                "qint8": "int8", "uint8": "uint8", "quint8": "uint8", "int16": "int16", "int32": "int32",
                "qint32": "int32", "int64": "int64", "bool": "bool", "quint4x2": "uint4"}


def _facts(tensors: list, torch) -> tuple[int, dict]:
    """(stored values, facts) with the keys of gate.measure.footprint's ONNX weight facts."""
    by_dtype: dict[str, int] = {}
    bytes_by: dict[str, int] = {}
    parameters = nonzero = weight_params = weight_zeros = 0
    for t in tensors:
        count = t.numel()
        name = _DTYPE_NAMES.get(str(t.dtype).replace("torch.", ""), str(t.dtype).replace("torch.", ""))
        parameters += count
        by_dtype[name] = by_dtype.get(name, 0) + count
        bytes_by[name] = bytes_by.get(name, 0) + count * t.element_size()
        zeros = _zeros(t, torch) if count else 0
        nonzero += count - zeros
        if t.dim() >= 2 and (t.is_floating_point() or t.is_quantized):
            weight_params += count
            weight_zeros += zeros
    # MACs are counted from ONNX graphs only
    facts = weight_facts(by_dtype=by_dtype, bytes_by=bytes_by, nonzero=nonzero, weight_params=weight_params,
                         weight_zeros=weight_zeros, macs=None, macs_by_op={}, unknown=0)
    return parameters, facts


def _zeros(t, torch) -> int:
    """Values that mean 0.0: a quantized value equal to its zero point counts as zero."""
    if t.is_quantized:
        stored = t.int_repr().to(torch.int64)
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return int((stored == t.q_zero_point()).sum())
        zp = t.q_per_channel_zero_points().to(torch.int64)
        shape = [1] * t.dim()
        shape[t.q_per_channel_axis()] = -1
        return int((stored == zp.reshape(shape)).sum())
    return int((t == 0).sum())


# ---------------------------------------------------------------- the backend's measurement hooks

def timer(runner: TorchRunner, feeds: dict, threads: int, settings) -> tuple:
    """(zero-argument call, provider) timing this model: the loaded module on the CPU under inference_mode,
    its input tensors made once, here, outside the timed call. The thread count is set by `pinned_threads`
    around the whole timed loop (torch has one pool per process)."""
    torch = runner._torch
    if settings.provider != "CPUExecutionProvider":
        where = f"latency.targets.{settings.target}.provider" if settings.target else "latency.provider"
        raise GateInputError(f"asks for the execution provider {settings.provider}, but {runner.path.name} is a "
                             f"{_FORMATS[runner.kind]}, which the gate runs on the CPU only", path=where,
                             fix="time torch models with the CPUExecutionProvider, or export them to ONNX for "
                                 "this target")
    args = runner.tensors(feeds)
    module = runner.module

    def call():
        with torch.inference_mode():
            return module(*args)

    return call, f"torch {torch.__version__.split('+')[0]} CPU"


@contextlib.contextmanager
def pinned_threads(threads: int):
    """torch.set_num_threads(threads) for the timed loop, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def memory_spec(runner: TorchRunner) -> dict:
    """What the memory worker needs to load the model again through the same checks and loaders."""
    ref = runner._ref
    return {"backend": "torch", "path": str(runner.path), "kind": runner.kind, "max_mb": runner._max_mb,
            "factory": ref.factory, "factory_root": str(ref.factory_root) if ref.factory_root else None,
            "dtypes": {name: None if want is None else str(want).replace("torch.", "")
                       for name, want in runner._dtypes.items()}}


def memory_baseline(feeds: dict, threads: int) -> object:
    """What the worker holds without the model: torch imported, its thread pool set, the input as tensors
    (sharing the arrays, as the model's call does) and one trivial op run, so torch itself and its first op
    are not charged to the model."""
    import torch

    torch.set_num_threads(threads)
    held = [torch.from_numpy(v) for v in feeds.values() if v.flags.writeable and v.flags.c_contiguous]
    with torch.inference_mode():
        held.append(torch.ones(64) + 1)
    return held


def memory_call(spec: dict, feeds: dict, threads: int, provider: str):  # noqa: ARG001 - CPU only
    """In the memory worker: the model loaded as the gate loads it (gate.safety's checks first) and a
    zero-argument inference call on the prepared tensors."""
    ref = ModelRef(name=Path(spec["path"]).name, path=Path(spec["path"]), factory=spec.get("factory"),
                   factory_root=Path(spec["factory_root"]) if spec.get("factory_root") else None)
    runner = TorchRunner(ref, kind=spec["kind"], output=None, inputs={}, max_mb=spec["max_mb"], threads=threads)
    torch = runner._torch
    for name, dtype in spec["dtypes"].items():
        runner._bind_input(name, feeds[name], None if dtype is None else getattr(torch, dtype))
    args = runner.tensors(feeds)
    module = runner.module

    def call():
        with torch.inference_mode():
            return module(*args)

    return call
