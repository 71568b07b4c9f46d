"""safetensors files: an 8-byte header length, a JSON header, then raw tensor data (never a pickle)."""

from __future__ import annotations

import json
from pathlib import Path

from gate.errors import GateInputError
from gate.files import MB


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
