"""Files generated from the metric registry: `python -m gate.docs` writes them, `--check` compares.

- docs/metrics.md: the metric table between `<!-- metrics:start -->` and `<!-- metrics:end -->`
  (the text around the markers is written by hand and kept);
- policies/schema.json: the policy JSON Schema, whose `metric` lists the registry's names.

tests/test_metric_records.py fails when a committed file differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository, in a source checkout
METRICS_DOC = ROOT / "docs" / "metrics.md"
SCHEMA_FILE = ROOT / "policies" / "schema.json"


def metrics_doc(current: str) -> str:
    """`current` with the table between the markers replaced by the registry's."""
    from gate.measure.registry import DOCS_END, DOCS_START, metrics_markdown

    start, end = current.find(DOCS_START), current.find(DOCS_END)
    if start < 0 or end < start:
        raise ValueError(f"{METRICS_DOC} needs the markers {DOCS_START} and {DOCS_END}")
    return current[:start] + DOCS_START + "\n" + metrics_markdown() + current[end:]


def schema_text() -> str:
    from gate.policy import json_schema

    return json.dumps(json_schema(), indent=2) + "\n"


def generated() -> dict[Path, str]:
    """Each generated file and the text it should hold."""
    return {METRICS_DOC: metrics_doc(METRICS_DOC.read_text(encoding="utf-8")), SCHEMA_FILE: schema_text()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for path, text in generated().items():
        if path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'differs' if check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
