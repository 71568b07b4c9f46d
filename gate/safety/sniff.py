"""What a model file is, from its bytes (never from its extension); pickles and oversized files refused first."""

from __future__ import annotations

import zipfile
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB, check_readable
from gate.safety.pickles import (_MAX_PICKLE_MEMBER, SAFE_FORMATS_FIX, _decompressed_head, _pickle_refusal, _Unsafe,
                                 looks_like_pickle, scan_pickle, torchscript_global)
from gate.safety.safetensors import _is_safetensors

ONNX, SAFETENSORS, TORCHSCRIPT, TORCH_EXPORT = "onnx", "safetensors", "torchscript", "torch.export"

_HEAD = 64 * 1024


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
