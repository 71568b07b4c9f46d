"""Fill models/ and data/ of this example repository with the gate's demo models, under the names the
policy (gate/policy.yaml) and the example workflows use. Run from anywhere:

    python examples/model-repo/make_models.py

In a real repository these are your own exported and compressed models and your calibration data.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

# demo file -> the name this repository gives it
NAMES = {
    "models/base.onnx": "models/model.onnx",
    "models/int8-dynamic.onnx": "models/model.int8.onnx",
    "models/fp16.onnx": "models/model.fp16.onnx",
    "models/pruned-50.onnx": "models/model.pruned50.onnx",
    "data/calibration.npz": "data/calibration.npz",
}


def arrange(demo: Path, repo: Path) -> list[Path]:
    """Copy the demo's files (`gate demo` output) into the repository layout; returns what was written."""
    written = []
    for source, target in NAMES.items():
        (repo / target).parent.mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copyfile(demo / source, repo / target)))
    return written


def main() -> int:
    from gate.demo_assets import build_demo_assets

    repo = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        build_demo_assets(Path(tmp))
        for path in arrange(Path(tmp), repo):
            print(f"wrote {path.relative_to(repo)}")
    print("now: gate check --policy gate/policy.yaml --out gate-report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
