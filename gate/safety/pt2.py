"""torch.export archives (.pt2): checked and cleaned before torch.export.load sees them."""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB
from gate.safety.pickles import _MAX_PICKLE_MEMBER, _pickle_refusal, _Unsafe, scan_pickle, tensor_global
from gate.safety.sniff import _members

_MAX_JSON = 256 * MB

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
