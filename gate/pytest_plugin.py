"""pytest plugin: `pytest` in a model repository gates the model (docs/api.md).

Installed with the gate (entry point `pytest11`), so any test suite in an environment holding the gate can:

    def test_compressed_models(gate_check):           # the fixture: a function
        result = gate_check("gate/policy.yaml")        # fails the test when a candidate fails the policy
        assert result.tally.warned == 0                # ... and returns the result otherwise

    @pytest.mark.gate("gate/policy.yaml", candidates={"int8": "models/model.int8.onnx"})
    def test_int8_is_good_enough():                    # the marker: the same, before the test body runs
        pass

A failing verdict fails the test with one line per failing rule (`candidate: rule: reason`) and the path of
report.md; wrong inputs (a bad policy, an unreadable model) fail it with the gate's message (file, place,
fix). Relative paths given to the fixture or the marker are relative to pytest's rootdir, so the test
works from any directory. Reports go to the test's tmp_path (`gate-report/`), or with
`--gate-report-dir DIR` (relative to the working directory; ini: `gate_report_dir`, relative to the
rootdir) to DIR/<test name>/, for CI to keep as an artifact.

This module is loaded in every pytest run of the environment: it imports only pytest and the standard
library; the gate itself (numpy, onnxruntime) is imported when a test uses the fixture or the marker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

MARKER = "gate"
FIXTURE = "gate_check"
_PATH_ARGS = ("base", "data", "out", "templates")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gate", "compression gate (gate_check fixture, @pytest.mark.gate)")
    group.addoption("--gate-report-dir", metavar="DIR", default=None,
                    help="write each gated test's reports to DIR/<test name>/ (default: the test's tmp_path)")
    parser.addini("gate_report_dir", "folder for the reports of gated tests (DIR/<test name>/), relative to "
                                     "the rootdir; default: each test's tmp_path")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(policy, *, base=None, candidates=None, data=None, out=None, templates=None): "
                   "run the compression gate with this policy before the test; fail the test with the failing "
                   "rules when a candidate fails the policy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a marked test gets the fixture, so its report folder and result are set up like any fixture's
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and item.get_closest_marker(MARKER) is not None and FIXTURE not in names:
            names.append(FIXTURE)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return
    run = getattr(item, "funcargs", {}).get(FIXTURE)
    if run is None:
        pytest.fail(f"@pytest.mark.{MARKER} works on test functions only", pytrace=False)
    if len(marker.args) != 1:
        pytest.fail(f"@pytest.mark.{MARKER} takes one policy: @pytest.mark.{MARKER}('gate/policy.yaml', "
                    f"candidates={{...}}), not {len(marker.args)} positional arguments", pytrace=False)
    run(marker.args[0], **marker.kwargs)


@pytest.fixture
def gate_check(request: pytest.FixtureRequest):
    """gate_check(policy, *, base=None, candidates=None, data=None, out=None, templates=None, progress=False)
    runs the gate (gate.check) and returns its GateResult; fails the test when a candidate fails the policy
    (one line per failing rule and the report's path) or when the inputs are wrong."""
    config = request.config
    node = request.node
    runs: list[int] = []

    def run(policy, **overrides):
        from gate.api import check
        from gate.errors import GateInputError

        root = config.rootpath
        policy = _policy_path(policy, root)
        for key in _PATH_ARGS:
            if overrides.get(key) is not None:
                overrides[key] = _under(root, overrides[key])
        if overrides.get("candidates") is not None:
            overrides["candidates"] = _candidates(overrides["candidates"], root)
        if overrides.get("out") is None:
            runs.append(len(runs))
            overrides["out"] = _report_dir(request, len(runs))
        try:
            result = check(policy, **overrides)
        except GateInputError as exc:
            pytest.fail(f"gate: the inputs are wrong: {exc.render()}", pytrace=False)
        node.add_report_section("call", MARKER, result.summary())
        node.user_properties.append(("gate_verdict", "pass" if result.passed else "fail"))
        if result.report_dir is not None:
            node.user_properties.append(("gate_report", str(result.report_dir)))
        if not result.passed:
            pytest.fail(failure_message(result, policy), pytrace=False)
        return result

    return run


def failure_message(result, policy) -> str:
    """The test's failure: the verdict, one line per failing rule (candidate: rule: reason), the report."""
    t = result.tally
    failed = sum(c.verdict != "pass" for c in result.candidates)
    lines = [f"gate: {policy}: {failed} of {len(result.candidates)} candidate(s) fail the policy "
             f"({t.failed} rule(s) failed, {t.warned} warned)"]
    lines += [f"  {rule}" for rule in result.failing_rules()]
    lines += [f"  input error: {error.splitlines()[0]}" for error in result.input_errors]
    if result.report is not None:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


def _under(root: Path, value):
    if not isinstance(value, (str, os.PathLike)):
        return value  # gate.check says what is wrong with it
    path = Path(value)
    return path if path.is_absolute() else root / path


def _policy_path(policy, root: Path):
    """A relative policy file is looked up under the rootdir; a name that is no file there is left as it is
    (a preset name, or a path the gate will report as missing)."""
    if isinstance(policy, (str, os.PathLike)) and not Path(policy).is_absolute() and (root / policy).is_file():
        return root / policy
    return policy


def _candidates(candidates, root: Path):
    if isinstance(candidates, (str, os.PathLike)):
        candidates = [candidates]
    if isinstance(candidates, dict):
        return {name: _under(root, path) for name, path in candidates.items()}
    if isinstance(candidates, (list, tuple)):
        out = []
        for item in candidates:
            if isinstance(item, str) and "=" in item:
                name, _, path = item.partition("=")
                out.append(f"{name}={_under(root, path)}" if path.strip() else item)
            elif isinstance(item, (str, os.PathLike)) and str(item).strip():
                out.append(str(_under(root, item)))
            else:
                out.append(item)
        return out
    return candidates


def _report_dir(request: pytest.FixtureRequest, number: int) -> Path:
    """Where this test's reports go: --gate-report-dir / gate_report_dir, else the test's tmp_path."""
    config = request.config
    suffix = "" if number == 1 else f"-{number}"
    option, ini = config.getoption("gate_report_dir", None), config.getini("gate_report_dir")
    if option or ini:
        # the command line's folder is relative to where pytest was started, the ini file's to the rootdir
        folder = _under(config.invocation_params.dir, option) if option else _under(config.rootpath, ini)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("._") or "test"
        return folder / f"{name[-120:]}{suffix}"
    return request.getfixturevalue("tmp_path") / f"gate-report{suffix}"
