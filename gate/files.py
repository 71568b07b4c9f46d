"""File checks shared by data and model loading: size before loading, hashes."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import Future
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


# Large reads: a hashing thread needs the GIL once per chunk, and waits up to the switch interval (5 ms) for it
# while another thread runs Python (imports): 1 MB chunks hashed at a fifth of the speed there, 8 MB barely slower.
_CHUNK = 8 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def _identity(path: Path) -> tuple | None:
    """What tells a file apart from a changed one without reading it: device, inode, size, mtime and ctime in
    ns. The ctime matters: `cp -p`, `rsync -t` and `tar x` rewrite a file and put its mtime back, but any
    write moves the ctime, which no user can set."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if stat.S_ISREG(st.st_mode) else None


def _hash_thread(path: Path, identity: tuple | None) -> Future:
    """sha256 of a file in a daemon thread; a file that changed while it was read is read again (a few times)."""
    digest: Future = Future()

    def run() -> None:
        try:
            for _ in range(3):
                value = sha256_of(path)
                if _identity(path) == identity:
                    break
            digest.set_result(value)
        except BaseException as exc:  # surfaced where the hash is read
            digest.set_exception(exc)

    threading.Thread(target=run, name="gate-sha256", daemon=True).start()
    return digest


_STARTED: dict[str, tuple[tuple, Future]] = {}


def prefetch_sha256(path: Path) -> None:
    """Start hashing a file now (the calibration data, once the policy names it), so the hash runs while the
    pipeline's modules import instead of after; sha256_in_background picks it up if the file is unchanged."""
    identity = _identity(path)
    if identity is not None and identity[2] > 0:
        _STARTED.clear()  # one file at a time: a long-lived process (the pytest plugin) keeps nothing stale
        _STARTED[os.path.abspath(path)] = (identity, _hash_thread(Path(path), identity))


def sha256_in_background(path: Path) -> Future:
    """The file's sha256 as a future: the prefetched one when the file is the one prefetched and has not changed
    since (_identity), else a new thread."""
    identity = _identity(path)
    started = _STARTED.pop(os.path.abspath(path), None)
    if started is not None and identity is not None and started[0] == identity:
        return started[1]
    return _hash_thread(Path(path), identity)


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
