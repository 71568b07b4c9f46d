"""The pipeline runs one way (DESIGN.md): policy + data + models -> runs -> measurements -> verdict -> reports.

Checked on the source with `ast`, every import counted: at the top of a module, inside a function
(lazy) and under TYPE_CHECKING alike. The rules, as they hold today:

1. Measurement never imports what consumes it: nothing under gate/measure/ imports gate.judge,
   gate.report, gate.pipeline, gate.cli, gate.github or gate.merge, and gate/pipeline.py (which runs the
   measurements) imports neither gate.judge nor gate.report. The stopping rule of the timed loop is
   handed in: gate.cli builds it from the judge, gate.pipeline passes it through.
2. Types never import their producers: gate/measurements.py imports nothing from gate.measure
   (Interval lives in gate/intervals.py), and gate/intervals.py imports nothing of the gate at all.
3. The judge never runs a model or writes a report: gate/judge.py imports nothing from gate.models,
   gate.report, gate.pipeline, gate.data or gate.cli.
4. Reports never compute: gate/report/ imports nothing from gate.measure except gate.measure.registry
   (the metric table: names, units, directions), and nothing from gate.models or gate.pipeline.
5. The command line stays light: `import gate.cli` and importing the speed code load no scipy
   (it is imported inside the functions that need it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

GATE = Path(__file__).resolve().parent.parent / "gate"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(GATE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every module a file imports (absolute names; `from gate import judge` counts as gate.judge).
    module: the file's dotted name (default: from its place under gate/), for resolving relative imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = (module or _module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    return out


def _files(*where: str) -> list[Path]:
    found = []
    for w in where:
        p = GATE / w
        found += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    assert found, where
    return found


def _hits(files: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    def banned(name: str) -> bool:
        if any(name == a or name.startswith(a + ".") for a in allowed):
            return False
        return any(name == f or name.startswith(f + ".") for f in forbidden)

    return sorted(f"{path.relative_to(GATE.parent)} imports {name}"
                  for path in files for name in imports_of(path) if banned(name))


def test_the_import_walker_sees_every_form_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from gate import judge\nfrom ..report import render\ndef f():\n    import gate.cli\n"
                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import pipeline\n")
    found = imports_of(probe, "gate.measure.probe")
    assert {"gate.judge", "gate.report.render", "gate.cli", "gate.pipeline"} <= found


def test_measurement_never_imports_the_judge_or_anything_downstream():
    assert _hits(_files("measure"), ("gate.judge", "gate.report", "gate.pipeline", "gate.cli", "gate.github",
                                     "gate.merge")) == []
    assert _hits(_files("pipeline.py"), ("gate.judge", "gate.report")) == []


def test_result_types_never_import_their_producers():
    assert _hits(_files("measurements.py"), ("gate.measure",)) == []
    assert _hits(_files("intervals.py"), ("gate",)) == []


def test_the_judge_never_runs_a_model_or_writes_a_report():
    assert _hits(_files("judge.py"), ("gate.models", "gate.report", "gate.pipeline", "gate.data", "gate.cli")) == []


def test_reports_read_only_the_metric_table_from_measurement():
    assert _hits(_files("report"), ("gate.measure", "gate.models", "gate.pipeline"),
                 allowed=("gate.measure.registry",)) == []


@pytest.mark.parametrize("modules", ["gate.cli", "gate.cli, gate.pipeline, gate.measure.speed, gate.safety"])
def test_importing_the_cli_and_the_speed_code_loads_no_scipy(modules):
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy')[:3])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
