"""Model files from pull requests: recognised by content, pickles refused, sizes checked before loading.

Candidate files may come from forks, so nothing here runs what a file holds. Pickles are
*parsed* with `pickletools` (a disassembler: it executes nothing) to find the Python
globals they would call, and a file is recognised by its bytes, never by its extension:

- a pickle (protocol 2+ starts with 0x80; older protocols are recognised by parsing), also
  compressed (joblib's zlib/gzip/bz2/xz) or inside a zip that is not a model archive
  (`torch.save` of a module or a state dict): refused;
- a zip archive with `code/` and `constants.pkl`: TorchScript, accepted only when its pickles
  name nothing but tensors, storages and the archive's own TorchScript classes;
- a zip archive with `archive_format` = pt2: a torch.export program, accepted only after the
  checks of `export_archive` (its loader, torch.export.load, is documented as unsafe for
  untrusted files, so the gate hands it a checked and cleaned copy);
- 8-byte header length + JSON: safetensors (data only);
- anything else named .onnx: ONNX (protobuf; onnxruntime never unpickles).

torch is never imported here: refusing a pickle needs no optional extra.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import json
import lzma
import os
import pickletools
import re
import zipfile
import zlib
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB, check_readable

ONNX, SAFETENSORS, TORCHSCRIPT, TORCH_EXPORT = "onnx", "safetensors", "torchscript", "torch.export"

SAFE_FORMATS_FIX = (
    "save it in a format without Python objects: a torch.export program "
    "(torch.export.save(torch.export.export(model, (x,)), 'model.pt2')), safetensors weights "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with `factory: package.module:function` "
    "on the model in the policy, TorchScript (torch.jit.script(model).save('model.pt')) or ONNX (.onnx)")

_HEAD = 64 * 1024
_MAX_PICKLE_MEMBER = 64 * MB  # pickles of model archives hold structure, not tensor data
_MAX_JSON = 256 * MB

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


# --------------------------------------------------------------------------------------------
# pickles: recognised and scanned without running them
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# what a model file is
# --------------------------------------------------------------------------------------------

def identify(path: Path, max_mb: float) -> str:
    """The format of a model file, from its bytes; refuses pickles and oversized files first."""
    size = check_readable(path, "model", max_mb)
    with open(path, "rb") as handle:
        head = handle.read(_HEAD)
    if _is_safetensors(path, head, size):  # first: a header length may begin with byte 0x80
        return SAFETENSORS
    if looks_like_pickle(head):
        return _refuse_raw_pickle(path, head)
    inner = _decompressed_head(head)
    if inner is not None:
        if looks_like_pickle(inner):
            raise _pickle_refusal(path, "a compressed Python pickle (as joblib writes)")
        raise GateInputError("is a compressed file, not a model", path=path, fix=SAFE_FORMATS_FIX)
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(path, max_mb)
    if path.suffix.lower() == ".onnx":
        return ONNX
    raise GateInputError(f"is not a model format the gate reads ({path.suffix or 'no extension'})", path=path,
                         fix="give an ONNX model (.onnx), a torch.export program (.pt2), TorchScript (.pt) or "
                         ".safetensors weights with a factory")


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled 0x1950a86a20f9469cfc6c


def _refuse_raw_pickle(path: Path, head: bytes) -> str:
    if head.startswith(_TORCH_LEGACY_MAGIC):
        what = "a Python pickle written by torch.save (the legacy, non-zip format)"
    else:
        what = "a Python pickle" + (f" (protocol {head[1]})" if head[:1] == b"\x80" else "")
    raise _pickle_refusal(path, what)


def _is_safetensors(path: Path, head: bytes, size: int) -> bool:
    """An 8-byte little-endian length, then that many bytes of a JSON object (read by safetensors,
    which never unpickles: even a pickle shaped like this would be harmless)."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= min(size - 8, 100 * MB):
        return False
    with open(path, "rb") as handle:
        handle.seek(8)
        try:
            return isinstance(json.loads(handle.read(n)), dict)
        except ValueError:
            return False


def _members(z: zipfile.ZipFile, path: Path, max_mb: float) -> tuple[str, set[str]]:
    """(the archive's root folder, member paths below it); refuses zip bombs before reading."""
    infos = z.infolist()
    total = sum(i.file_size for i in infos)
    if total > max_mb * MB:
        raise GateInputError(f"unpacks to {total / MB:,.1f} MB, over the limit of {max_mb:g} MB", path=path,
                             fix="raise max_file_mb in the policy if this size is expected")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):  # readers disagree on which copy counts: the one checked may not run
        raise GateInputError("is a zip archive with two members of the same name", path=path,
                             fix="save the model again")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        return "", set(names)
    root = roots.pop()
    return root + "/", {n[len(root) + 1:] for n in names}


def _zip_kind(path: Path, max_mb: float) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            prefix, rel = _members(z, path, max_mb)
            if prefix and "archive_format" in rel and z.read(prefix + "archive_format").strip() == b"pt2":
                return TORCH_EXPORT  # checked in full by export_archive when it is loaded
            if prefix and "data.pkl" in rel and "constants.pkl" in rel and any(r.startswith("code/") for r in rel):
                _check_torchscript(z, prefix, rel, path)
                return TORCHSCRIPT
            if prefix and "data.pkl" in rel:
                raise _pickle_refusal(path, "a torch.save checkpoint (a zip around a Python pickle, e.g. of a whole "
                                      "nn.Module or a state dict)")
            if any(r.endswith("serialized_exported_program.json") for r in rel):
                raise GateInputError("is a torch.export archive in the layout of torch before 2.8, which holds "
                                     "pickled state the gate does not load", path=path,
                                     fix="save it again with torch.export.save from torch 2.8 or later")
            if any(r.endswith((".pkl", ".pickle", ".joblib")) for r in rel):
                raise _pickle_refusal(path, "a zip archive of Python pickles")
    except zipfile.BadZipFile as exc:
        raise GateInputError(f"is a damaged zip archive: {exc}", path=path, fix="save the model again") from None
    raise GateInputError("is a zip archive that is neither TorchScript nor a torch.export program", path=path,
                         fix=SAFE_FORMATS_FIX)


def _check_torchscript(z: zipfile.ZipFile, prefix: str, rel: set[str], path: Path) -> None:
    for member in sorted(rel):
        if not member.endswith((".pkl", ".debug_pkl")):
            continue
        info = z.getinfo(prefix + member)
        if info.file_size > _MAX_PICKLE_MEMBER:
            raise GateInputError(f"holds {member} of {info.file_size / MB:,.0f} MB, too big for TorchScript "
                                 "structure", path=path, fix=SAFE_FORMATS_FIX)
        try:
            scan_pickle(z.read(prefix + member), torchscript_global)
        except _Unsafe as exc:
            raise _pickle_refusal(path, f"a TorchScript-like archive whose {member} names {exc}") from None


# --------------------------------------------------------------------------------------------
# torch.export archives (.pt2): checked and cleaned before torch.export.load sees them
# --------------------------------------------------------------------------------------------

_EXPORT_MEMBERS = re.compile(
    r"^(archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id|"
    r"models/[A-Za-z0-9_\-]+\.json|"
    r"data/weights/[A-Za-z0-9_\-]+_(weights_config|model_param_config)\.json|data/weights/weight_\d+|"
    r"data/constants/[A-Za-z0-9_\-]+_(constants_config|model_constants_config)\.json|data/constants/tensor_\d+|"
    r"data/sample_inputs/[A-Za-z0-9_\-]+\.pt|extra/[A-Za-z0-9_.\-]+)$")
# names, FQNs, dtypes, versions, einsum equations: nothing that can end a string literal or a comment in the
# Python source torch generates from the program (no quotes, backslashes, '#' or line breaks)
_PLAIN = re.compile(r"^[A-Za-z0-9_.+\-,<>()\[\]:=*/%! ]*$")
_TARGETS = re.compile(
    r"^(torch\.ops\.(aten|prims|quantized|quantized_decomposed|higher_order)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?|"
    r"_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pos|pow|abs|eq|ne|lt|le|gt|ge|and_|or_|not_)|"
    r"math\.(ceil|floor|trunc|sqrt)|torch\.(sym_(int|float|max|min|not|ite|sum)|_sym_sqrt))$")
# names a shape expression may use (sympy and torch.utils._sympy functions; symbols like s0, u3)
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Add", "Mul", "Pow", "Mod", "FloorDiv", "PythonMod",
    "CleanDiv", "CeilToInt", "FloorToInt", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "TruncToFloat",
    "IntTrueDiv", "FloatTrueDiv", "ModularIndexing", "Where", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or",
    "Not", "Abs", "Piecewise", "PowByNatural", "FloatPow", "Identity", "IsNonOverlappingAndDenseIndicator",
    "LShift", "RShift", "oo", "zoo", "nan", "true", "false", "True", "False", "S", "Sum", "Product",
}
_SYMPY_FUNC = re.compile(r"^(OpaqueUnaryFn_[a-z0-9]+|BitwiseFn_[a-z_]+)$")
_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")


def _refuse_export(path: Path, what: str) -> GateInputError:
    return GateInputError(f"is a torch.export archive that {what}; the gate loads .pt2 files only when they "
                          "hold a plain graph of torch operators and tensors", path=path,
                          fix="export again with torch.export.export and torch.export.save (no AOTInductor "
                          "package, no custom Python objects), or use .safetensors + factory or .onnx")


def export_archive(path: Path, max_mb: float) -> bytes:
    """The .pt2 archive, checked and cleaned, as bytes for torch.export.load.

    torch.export.load unpickles payloads with weights_only=False, loads AOTInductor shared
    libraries, exec()s guard code, sympify()s (eval) shape expressions and writes names and stack
    traces into generated Python source. So the gate keeps only known members, refuses compiled
    code, Python objects and guard code, allows only plain names (no quotes, spaces, newlines or
    dunders), allow-listed operators and shape expressions, drops node metadata (stack traces),
    and scans every pickled payload for globals (which are then loaded with weights_only=True).
    """
    try:
        with zipfile.ZipFile(path) as z:
            prefix, rel = _members(z, path, max_mb)
            if not prefix:
                raise _refuse_export(path, "has members outside one archive folder")
            odd = sorted(r for r in rel if not _EXPORT_MEMBERS.match(r))
            if odd:
                raise _refuse_export(path, f"holds {odd[0]} (compiled code, legacy pickled weights or Python "
                                     "objects)")
            models = sorted(r for r in rel if r.startswith("models/"))
            if not models:
                raise _refuse_export(path, "holds no program (models/*.json)")
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as clean:
                for member in sorted(rel):
                    data = z.read(prefix + member)
                    if member.endswith(".json") and not member.startswith("extra/"):  # extra/: never parsed
                        data = _clean_json(member, data, path)
                    elif member.startswith("data/sample_inputs/"):
                        _scan_torch_save(data, member, path)
                    clean.writestr(prefix + member, data)
            for member in sorted(rel):  # payloads stored with torch.save (tensor subclasses)
                if member.endswith("_config.json") and member.startswith(("data/weights/", "data/constants/")):
                    config = json.loads(z.read(prefix + member))
                    folder = member.rsplit("/", 1)[0] + "/"
                    for entry in (config.get("config") or {}).values():
                        if isinstance(entry, dict) and entry.get("use_pickle"):
                            name = folder + str(entry.get("path_name"))
                            if name not in rel:
                                raise _refuse_export(path, f"refers to {name}, which it does not hold")
                            _scan_torch_save(z.read(prefix + name), name, path)
    except zipfile.BadZipFile as exc:
        raise GateInputError(f"is a damaged zip archive: {exc}", path=path, fix="save the model again") from None
    return out.getvalue()


def _scan_torch_save(data: bytes, member: str, path: Path) -> None:
    """A payload written by torch.save: a zip whose .pkl members may name tensors only."""
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                pickles = [i for i in inner.infolist() if i.filename.endswith(".pkl")]
                if not pickles or any(i.file_size > _MAX_PICKLE_MEMBER for i in pickles):
                    raise _Unsafe("no readable tensor pickle")
                for info in pickles:
                    scan_pickle(inner.read(info), tensor_global)
        else:
            scan_pickle(data, tensor_global)
    except _Unsafe as exc:
        raise _pickle_refusal(path, f"a torch.export archive whose {member} names {exc}") from None
    except zipfile.BadZipFile:
        raise _refuse_export(path, f"holds a damaged payload {member}") from None


def _clean_json(member: str, data: bytes, path: Path) -> bytes:
    if len(data) > _MAX_JSON:
        raise _refuse_export(path, f"holds {member} of {len(data) / MB:,.0f} MB")
    try:
        doc = json.loads(data)
    except ValueError:
        raise _refuse_export(path, f"holds {member}, which is not JSON") from None
    if member.startswith("models/"):
        for guard in doc.get("guards_code") or []:
            _check_guard(str(guard), path)
        doc = _strip_metadata(doc)
    elif member.startswith("data/constants/"):
        for entry in (doc.get("config") or {}).values():
            name = str(entry.get("path_name", "")) if isinstance(entry, dict) else ""
            if not name.startswith("tensor_"):
                raise _refuse_export(path, f"holds the constant {name or '?'}, a Python or TorchBind object")
    _check_strings(doc, (), path)
    return json.dumps(doc).encode()


def _strip_metadata(node):
    """Node metadata (stack traces, module stacks) only annotates; generated code embeds it."""
    if isinstance(node, dict):
        return {k: ({} if k == "metadata" and isinstance(v, dict) else _strip_metadata(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_strip_metadata(v) for v in node]
    return node


def _check_strings(node, where: tuple, path: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _plain(key, where, path)
            if key == "expr_str" and isinstance(value, str):
                _check_expr(value, path)
            elif key == "guards_code":
                continue  # checked by _check_guard
            elif key in ("in_spec", "out_spec", "context") and isinstance(value, str):
                try:
                    inner = json.loads(value)
                except ValueError:
                    raise _refuse_export(path, f"holds an unreadable {key}") from None
                _check_strings(inner, where + (key,), path)
            elif key in ("target", "as_operator") and isinstance(value, str):
                if not _TARGETS.match(value):
                    raise _refuse_export(path, f"calls {value!r}, which is not an allow-listed torch operator")
            else:
                _check_strings(value, where + (key,), path)
    elif isinstance(node, list):
        for value in node:
            _check_strings(value, where, path)
    elif isinstance(node, str):
        _plain(node, where, path)


def _plain(text: str, where: tuple, path: Path) -> None:
    if not _PLAIN.match(text) or "__" in text:
        place = ".".join(str(w) for w in where[-3:]) or "the program"
        raise _refuse_export(path, f"holds the string {text[:60]!r} in {place} (only plain names are accepted: "
                             "no quotes, backslashes, '#', line breaks or '__')")


def _check_expr(text: str, path: Path) -> None:
    """A shape expression (sympify evals it): only symbols, numbers and allow-listed functions."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _refuse_export(path, f"holds the shape expression {text[:60]!r}, which does not parse") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if not (node.id in _SYMPY_NAMES or _SYMPY_FUNC.match(node.id) or _SYMBOL.match(node.id)):
                raise _refuse_export(path, f"uses {node.id!r} in a shape expression")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise _refuse_export(path, "calls something other than a sympy function in a shape expression")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not _SYMBOL.match(node.value):
                raise _refuse_export(path, f"names the symbol {node.value[:40]!r} in a shape expression")
            if not isinstance(node.value, (int, float, str, bool)) or node.value is None:
                raise _refuse_export(path, "holds an odd constant in a shape expression")
        elif not isinstance(node, (ast.Expression, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                                   ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Load)):
            raise _refuse_export(path, f"holds a {type(node).__name__} in a shape expression")


_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "numel", "floor", "ceil", "trunc", "sqrt"}


def _check_guard(text: str, path: Path) -> None:
    """Guard code (exec'd by torch when the program becomes a module): only comparisons of the inputs'
    sizes, as torch.export writes them (L['x'].size()[0] == L['tok'].size()[0])."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _refuse_export(path, f"carries guard code that does not parse: {text[:60]!r}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Subscript,
                               ast.Call, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Load))
        if isinstance(node, ast.Name):
            ok = node.id in ("L", "math") or node.id in _SYMPY_NAMES or bool(_SYMPY_FUNC.match(node.id))
        elif isinstance(node, ast.Attribute):
            ok = node.attr in _GUARD_ATTRS and not (isinstance(node.value, ast.Name) and node.value.id == "L")
        elif isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float)) or (isinstance(node.value, str) and
                                                          bool(re.match(r"^[A-Za-z0-9_]+$", node.value)))
        elif isinstance(node, ast.Call):
            ok = not node.keywords
        if not ok:
            raise _refuse_export(path, f"carries guard code beyond size checks (Python source that loading would "
                                 f"exec): {text[:80]!r}")


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

def safetensors_header(path: Path) -> dict:
    """The JSON header, checked against the file size before any tensor is read."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        n = int.from_bytes(handle.read(8), "little")
        if n > min(size - 8, 100 * MB):
            raise GateInputError("has a safetensors header longer than the file", path=path,
                                 fix="write the file with safetensors.torch.save_file")
        try:
            header = json.loads(handle.read(n))
        except ValueError:
            raise GateInputError("has an unreadable safetensors header", path=path,
                                 fix="write the file with safetensors.torch.save_file") from None
    end = 8 + n
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]
                and end + offsets[1] <= size):
            raise GateInputError(f"has the tensor {name!r} outside the file (truncated?)", path=path,
                                 fix="copy the complete file (git lfs pull if it is stored with LFS)")
    return header


# --------------------------------------------------------------------------------------------
# ONNX external data: where the weights of a model are read from
# --------------------------------------------------------------------------------------------

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
