"""File checks shared by data and model loading: size before loading, hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gate.errors import GateInputError

MB = 1_000_000


def check_readable(path: Path, what: str, max_mb: float) -> int:
    """Size in bytes; refuses missing, empty and oversized files before anything reads them."""
    try:
        return _check_readable(path, what, max_mb)
    except OSError as exc:  # a name too long, a NUL byte, a loop of symlinks, no permission
        raise GateInputError(f"{what} cannot be opened: {exc.strerror or exc}", path=path,
                             fix="check the path (paths in a policy are relative to the policy file)") from None
    except ValueError as exc:  # "embedded null byte"
        raise GateInputError(f"{what} has an impossible path: {exc}", path=path,
                             fix="check the path (paths in a policy are relative to the policy file)") from None


def _check_readable(path: Path, what: str, max_mb: float) -> int:
    if not path.exists():
        raise GateInputError(f"{what} not found", path=path,
                             fix="check the path (paths in a policy are relative to the policy file)")
    if not path.is_file():
        raise GateInputError(f"{what} is not a file", path=path, fix="point to the file itself")
    size = path.stat().st_size
    if size == 0:
        raise GateInputError(f"{what} is empty (0 bytes)", path=path,
                             fix="copy or write the complete file again (an interrupted download, copy or export "
                             "leaves an empty file)")
    if size > max_mb * MB:
        raise GateInputError(f"{what} is {size / MB:,.1f} MB, over the limit of {max_mb:g} MB", path=path,
                             fix="raise max_file_mb in the policy if this size is expected")
    return size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npz(path: Path, arrays: dict) -> str:
    """Write plain arrays as an .npz under a hidden name and move it into place (a reader never sees half a
    file; the file's mode follows the umask, as any file the gate writes); -> its sha256."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return sha256_of(path)
