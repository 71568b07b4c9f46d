"""manifest.json: the sha256 and size of every file the gate wrote into a report folder.

Written last, atomically, by write_reports, so it vouches for exactly what is on disk when the gate
finished; `gate verify` (gate/verify.py) recomputes every hash and names a file that was changed,
removed or added since. It detects edits and mix-ups, not a forger who rewrites the manifest too:
that is what the signed attestation (gate/attest.py, docs/formats.md) is for.

Read only through gate/contract.py (load_manifest), which refuses a path outside the folder.

Format history (`manifest_format`):
  1 - first version: gate_version, files[] of {path, sha256, size_bytes}, sorted by path.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def build_manifest(out_dir: Path, names: list[str]) -> dict:
    """The manifest of the named files of out_dir as they are now (hashes streamed: reports may be large)."""
    from gate import __version__
    from gate.files import sha256_of

    files = [{"path": name, "sha256": sha256_of(out_dir / name), "size_bytes": (out_dir / name).stat().st_size}
             for name in sorted(set(names)) if name != MANIFEST]
    return {"manifest_format": MANIFEST_FORMAT, "gate_version": __version__, "files": files}


def write_manifest(out_dir: Path, names: list[str]) -> None:
    from gate.report import atomic_write

    atomic_write(out_dir / MANIFEST, json.dumps(build_manifest(out_dir, names), indent=2) + "\n")
