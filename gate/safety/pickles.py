"""Pickles: recognised and scanned without running them.

Pickles are *parsed* with `pickletools` (a disassembler: it executes nothing) to find the Python
globals they would call; a pickle is recognised in any protocol, also compressed (as joblib writes).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickletools
import re
import zlib
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB

SAFE_FORMATS_FIX = (
    "save it in a format without Python objects: a torch.export program "
    "(torch.export.save(torch.export.export(model, (x,)), 'model.pt2')), safetensors weights "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with `factory: package.module:function` "
    "on the model in the policy, TorchScript (torch.jit.script(model).save('model.pt')) or ONNX (.onnx)")

_MAX_PICKLE_MEMBER = 64 * MB  # pickles of model archives hold structure, not tensor data

# globals a tensor pickle may name (torch.save of tensors, TorchScript data and constants)
_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"), ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"), ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    ("torch", "Size"), ("torch", "device"),
    ("torch.jit._pickle", "build_intlist"), ("torch.jit._pickle", "build_tensorlist"),
    ("torch.jit._pickle", "build_doublelist"), ("torch.jit._pickle", "build_boollist"),
    ("torch.jit._pickle", "restore_type_tag"),
}
_TORCH_DATA_NAME = re.compile(  # storages, dtypes, memory formats and quantization schemes
    r"^([A-Z][A-Za-z0-9]*Storage|u?int(8|16|32|64)|float(8_\w+|16|32|64)?|bfloat16|half|double|short|int|long|"
    r"bool|complex(32|64|128)|cfloat|cdouble|chalf|q(u)?int(8|32|4x2|2x4)|per_(tensor|channel)_(affine|symmetric)|"
    r"per_channel_affine_float_qparams|(contiguous|channels_last|channels_last_3d|preserve)_format)$")


class _Unsafe(Exception):
    """A pickle names a global outside the allow-list, or cannot be parsed."""


def _pickle_refusal(path: Path, what: str) -> GateInputError:
    return GateInputError(f"is {what}, which the gate never loads: unpickling runs whatever code the file "
                          "names, and candidates come from pull requests", path=path, fix=SAFE_FORMATS_FIX)


_OLD_PROTOCOL_STARTS = set(b"(]})cNIJKLMFGSTUVX")


def looks_like_pickle(head: bytes) -> bool:
    """True for a pickle of any protocol: 0x80 + protocol 2..5, or older text protocols that parse
    (to their end, or cleanly up to where the head was cut off)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if not head or head[0] not in _OLD_PROTOCOL_STARTS:
        return False
    count = 0
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(head)):
            count += 1
            if op.name == "STOP":
                return count >= 2
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError for both cases below
        if "unknown" in str(exc):
            return count >= 16  # bytes that are no opcode: a long clean run before them still is a pickle
        return count >= 2  # ran off the end of the head mid-opcode
    return count >= 2  # the head ended between two opcodes


def _decompressed_head(head: bytes) -> bytes | None:
    """The first bytes of a zlib/gzip/bz2/xz stream (how joblib compresses its pickles), else None."""
    try:
        if head[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=io.BytesIO(head)).read1(4096)
        if head[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(head, 4096)
        if head[:6] == b"\xfd7zXZ\x00" or head[:1] == b"\x5d":
            return lzma.LZMADecompressor().decompress(head, 4096)
        if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
            return zlib.decompressobj().decompress(head, 4096)
    except Exception:  # a truncated head still yields its first block; anything else is no stream
        return None
    return None


def scan_pickle(data: bytes, allowed) -> None:
    """Raise _Unsafe unless every global the pickle would load passes `allowed(module, name)`.

    The stack is simulated from pickletools' opcode table, so STACK_GLOBAL's module and name are
    known even when they come from the memo; a global whose name is not a plain string is refused.
    """
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, qual = arg.partition(" ")
                _check_global(module, qual, allowed)
            elif name == "STACK_GLOBAL":
                if len(stack) < 2 or not all(isinstance(v, str) for v in stack[-2:]):
                    raise _Unsafe("a global whose name is computed")
                _check_global(stack[-2], stack[-1], allowed)
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise _Unsafe("a copyreg extension code")
            value = None  # what the op leaves on top, as far as globals' names need it
            if isinstance(arg, str) and name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                                                 "STRING", "BINSTRING", "SHORT_BINSTRING"):
                value = arg
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                value = memo.get(arg)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                value = stack[-1] if stack else None
                memo[len(memo) if name == "MEMOIZE" else arg] = value
            # stack effect, as pickletools.dis computes it
            before, after = op.stack_before, op.stack_after
            if name == "POP" and marks and marks[-1] == len(stack):
                marks.pop()  # POP of a bare mark
                continue
            if pickletools.markobject in before:
                if not marks:
                    raise _Unsafe("a malformed pickle (no mark)")
                del stack[marks.pop():]
                before = [b for b in before if b is not pickletools.markobject and b is not pickletools.stackslice]
            if before:
                if len(stack) < len(before):
                    raise _Unsafe("a malformed pickle (stack underflow)")
                del stack[len(stack) - len(before):]
            if pickletools.markobject in after:
                marks.append(len(stack))
            for item in after:
                if item is not pickletools.markobject:
                    stack.append(value)
            if name == "STOP":
                return
    except _Unsafe:
        raise
    except Exception as exc:  # pickletools rejects bytes that are no valid pickle
        raise _Unsafe(f"a malformed pickle ({str(exc)[:80]})") from None
    raise _Unsafe("a pickle without its end")


def _check_global(module: str, name: str, allowed) -> None:
    if not allowed(module, name):
        raise _Unsafe(f"the Python global {module}.{name}")


def tensor_global(module: str, name: str) -> bool:
    return (module, name) in _TENSOR_GLOBALS or (module == "torch" and bool(_TORCH_DATA_NAME.match(name)))


def torchscript_global(module: str, name: str) -> bool:
    """Tensors, plus classes of the archive's own TorchScript code (resolved by PyTorch's C++
    unpickler against the compiled code/ of the archive, never imported from Python)."""
    if module == "__torch__" or module.startswith("__torch__."):
        return bool(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name))
    return tensor_global(module, name) or (module in ("builtins", "__builtin__") and name == "set")
