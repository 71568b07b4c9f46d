"""Hostile and odd inputs a stranger's pull request could bring, each one run through the real CLI.

Every case runs `gate ...` IN-PROCESS (`gate.cli.main`, output through capsys: 90+ subprocesses would
cost too much test time) and holds the CLI contract of DESIGN.md:

- the exit code the contract demands: 2 for a wrong input (policy, model, data, flags, results file),
  1 or 2 (never 0) for a candidate whose outputs are NaN, the clean twin's 0 or 1 for inputs that must be
  accepted (a UTF-8 BOM);
- never a traceback, and nothing escapes `main()`;
- for exit 2, the message names the offending file (or flag), and where there is one, the line;
- nothing is written outside the case's own folder: the shared inputs are unchanged and the working
  directory stays empty (every output path is given explicitly);
- a per-case time limit (10 s; a hang is stopped by an alarm and reported as one), with a cap on the
  memory a case may add, so an alias bomb cannot take a shared machine down.

Models are built once per module (tiny lookup-table ONNX models from conftest.py, plus models that
compute NaN / Inf themselves, from hostile_cases.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import logits_for, lookup_model, make_scenario, two_input_model, write_npz, write_policy
from hostile_cases import (LIMIT_S, Expect, billion_laughs, div_by_zero_model, future_opset_model, line_of,
                           listing, log_model, pickle_bomb, point_external_data, read_json, run_main)

N = 60  # samples of the ordinary data
K = 3  # classes
BIG = 10_000  # rows of every lookup table (the 10,000-subgroup case uses them all)


# --------------------------------------------------------------------------------------------
# shared inputs, built once
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from gate.cli import main

    root = tmp_path_factory.mktemp("hostile")
    d = root / "in"
    d.mkdir()
    big = make_scenario(BIG, 9_000, 0, 0, k=K, seed=3)
    table = logits_for(big.base, K, seed=4)
    lookup_model(d / "base.onnx", table)
    lookup_model(d / "same.onnx", table)
    lookup_model(d / "four.onnx", logits_for(big.base, K + 1, seed=5))  # 4 classes where the base has 3
    lookup_model(d / "two_out.onnx", table, kind="two_outputs")
    positive = np.exp(table)
    log_model(d / "nan.onnx", positive, nan_rows=np.arange(3, BIG, 7))  # NaN logits on every 7th sample
    div_by_zero_model(d / "inf.onnx", positive)  # +Inf logits everywhere
    future_opset_model(d / "opset99.onnx", table)
    two_input_model(d / "ab_base.onnx", K)
    two_input_model(d / "ab_same.onnx", K)

    # external data that points out of the model's folder: '../x' (a real copy of the data there, so only a
    # check of the location stops it) and an absolute '/etc/passwd'
    lookup_model(d / "ext_up" / "ext_up.onnx", table, external=True)
    shutil.copy(d / "ext_up" / "ext_up.onnx.data", d / "x")
    point_external_data(d / "ext_up" / "ext_up.onnx", "../x")
    lookup_model(d / "ext_abs" / "ext_passwd.onnx", table, external=True)
    point_external_data(d / "ext_abs" / "ext_passwd.onnx", "/etc/passwd")

    raw = (d / "base.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    (d / "empty.onnx").write_bytes(b"")
    (d / "random.onnx").write_bytes(np.random.default_rng(7).bytes(4096))
    pwned = root / "pwned"  # created only if something unpickles a candidate
    pickle_bomb(d / "pickle.onnx", pwned)
    (d / "modeldir.onnx").mkdir()

    y = big.y[:N]
    write_npz(d / "data.npz", y)
    write_npz(d / "other.npz", (y + 1) % K)  # the same samples, other labels: "different data"
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          base="base.onnx", candidates={"same": "same.onnx"}, data="data.npz", bootstrap=100)
    other_policy = write_policy(d / "other_policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                                base="base.onnx", candidates={"other": "same.onnx"}, data="other.npz",
                                bootstrap=100)

    # results and a report to judge, measured once (in-process; output goes to pytest's capture)
    cache = root / "cache"
    old_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        made = root / "made"
        assert main(["measure", "--policy", str(policy), "--out", str(made / "results.json"), "--no-progress"]) == 0
        assert main(["measure", "--policy", str(other_policy), "--out", str(made / "other_results.json"),
                     "--no-progress"]) == 0
        assert main(["check", "--policy", str(policy), "--out", str(made / "report"), "--no-progress"]) == 0
    finally:
        if old_cache is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old_cache
    return SimpleNamespace(root=root, inputs=d, y=y, y_big=big.y, policy=policy, cache=cache, pwned=pwned,
                           results=made / "results.json", other_results=made / "other_results.json",
                           report_json=made / "report" / "report.json")


def m(env, name: str) -> Path:
    return env.inputs / name


def check_args(policy, work: Path, *extra) -> list:
    return ["check", "--policy", policy, "--out", work / "out", "--no-progress", *extra]


def policy_text(env, *, rules: str | None = None, extra: str = "", data: str | None = None) -> str:
    """A valid policy (absolute paths to the shared models), with `extra` top-level lines."""
    rules = rules if rules is not None else "  - metric: accuracy\n    max_drop: 0.5\n"
    data = data if data is not None else str(m(env, "data.npz"))
    return (f"version: 1\nbase: {m(env, 'base.onnx')}\ncandidates:\n  same: {m(env, 'same.onnx')}\n"
            f"data:\n  path: {data}\nbootstrap: 100\n{extra}rules:\n{rules}")


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def report_of(work: Path) -> dict | None:
    path = work / "out" / "report.json"
    return read_json(path) if path.exists() else None


def cand_of(report: dict, name: str) -> dict:
    found = [c for c in report["candidates"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in report["candidates"]]
    return found[0]


def strings_in(obj) -> list[str]:
    """Every key and string value of a JSON object (not numbers: a NaN literal is no explanation)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(str(k))
            out.extend(strings_in(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(strings_in(v))
    elif isinstance(obj, str):
        out.append(obj)
    return out


CASES: list = []


def case(section: str, name: str):
    def register(fn):
        CASES.append(pytest.param(fn, id=f"{section}-{name}"))
        return fn
    return register


# ============================================================================================
# policy
# ============================================================================================

def _policy_case(env, work, text: str | bytes, *, names=(), patterns=(), command="check") -> Expect:
    p = write(work / "policy.yaml", text)
    args = check_args(p, work) if command == "check" else ["policy", "check", p]
    return Expect(args=args, names=("policy.yaml", *names), patterns=patterns)


def _at_line(text: str, *needles: str) -> tuple:
    lines = "|".join(str(line_of(text, n)) for n in needles)
    return (rf"policy\.yaml:({lines})\b",)


@case("policy", "python-object-apply-tag")
def _(env, work):
    sentinel = work / "tag_ran"
    text = policy_text(env, extra=f'seed: !!python/object/apply:os.system ["touch {sentinel}"]\n')

    def never_ran(outcome):
        assert not sentinel.exists(), "the YAML tag ran a shell command"
    e = _policy_case(env, work, text, patterns=_at_line(text, "!!python"))
    e.check = never_ran
    return e


@case("policy", "unknown-local-tag")
def _(env, work):
    text = policy_text(env, extra="confidence: !secret 0.9\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "!secret"))


@case("policy", "metric-name-is-an-integer")
def _(env, work):
    text = policy_text(env, rules="  - metric: 5\n    max_drop: 0.01\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "metric: 5", "- metric"))


@case("policy", "metric-name-is-a-list")
def _(env, work):
    text = policy_text(env, rules="  - metric: [accuracy]\n    max_drop: 0.01\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "metric: [accuracy]"))


@case("policy", "metric-name-is-null")
def _(env, work):
    text = policy_text(env, rules="  - metric:\n    max_drop: 0.01\n")
    return _policy_case(env, work, text)


@case("policy", "list-as-mapping-key")
def _(env, work):
    text = policy_text(env, extra="? [a, b]\n: 1\n")
    return _policy_case(env, work, text)


@case("policy", "mapping-as-key-in-a-rule")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: 0.01\n    ? {a: 1}\n    : 2\n")
    return _policy_case(env, work, text)


@case("policy", "integer-key")
def _(env, work):
    text = policy_text(env, extra="1: one\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "1: one"))


@case("policy", "nesting-5000-deep-lists")
def _(env, work):
    text = policy_text(env, extra="deep: " + "[" * 5000 + "]" * 5000 + "\n")
    return _policy_case(env, work, text)


@case("policy", "nesting-5000-deep-mappings")
def _(env, work):
    text = policy_text(env, extra="deep: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    return _policy_case(env, work, text)


@case("policy", "alias-bomb-billion-laughs")
def _(env, work):
    text = policy_text(env) + billion_laughs()
    return _policy_case(env, work, text)


@case("policy", "alias-bomb-inside-groups")
def _(env, work):
    bomb = billion_laughs(levels=8)
    text = policy_text(env, extra="").replace("data:\n", "data:\n  groups: *l7\n", 1)
    return _policy_case(env, work, bomb + text)


@case("policy", "file-of-50-mb")
def _(env, work):
    # a valid policy followed by 50 MB of comment lines: refused by size, or read quickly; never a hang
    text = policy_text(env) + ("#" + "x" * 999 + "\n") * 50_000
    e = _policy_case(env, work, text, command="policy-check")
    e.codes = (0, 2)
    return e


@case("policy", "max-drop-inf")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: .inf\n")
    return _policy_case(env, work, text, patterns=_at_line(text, ".inf", "- metric"))


@case("policy", "max-drop-1e309-overflows-to-inf")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: 1.0e+309\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "1.0e+309", "- metric"))


@case("policy", "min-minus-inf")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    min: -.inf\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "-.inf", "- metric"))


@case("policy", "max-nan")
def _(env, work):
    text = policy_text(env, rules="  - metric: flip_rate\n    max: .nan\n")
    return _policy_case(env, work, text, patterns=_at_line(text, ".nan", "- metric"))


@case("policy", "confidence-inf")
def _(env, work):
    text = policy_text(env, extra="max_file_mb: .inf\nconfidence: .inf\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "confidence: .inf"))


@case("policy", "bound-is-a-boolean")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: yes\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "max_drop: yes"))


@case("policy", "bound-is-a-string")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: '0.01'\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "max_drop: '0.01'"))


@case("policy", "empty-file")
def _(env, work):
    return _policy_case(env, work, "")


@case("policy", "only-comments")
def _(env, work):
    return _policy_case(env, work, "# nothing here\n\n   \n")


@case("policy", "list-at-top-level")
def _(env, work):
    return _policy_case(env, work, "- metric: accuracy\n  max_drop: 0.01\n")


@case("policy", "string-at-top-level")
def _(env, work):
    return _policy_case(env, work, "just some words\n")


@case("policy", "unknown-key-did-you-mean")
def _(env, work):
    text = policy_text(env, extra="confidance: 0.9\n")
    return _policy_case(env, work, text, names=("confidance", "confidence"),
                        patterns=_at_line(text, "confidance"))


@case("policy", "rule-with-two-bounds")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: 0.01\n    min: 0.5\n")
    return _policy_case(env, work, text, names=("max_drop", "min"), patterns=_at_line(text, "- metric"))


@case("policy", "rule-with-no-bound")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "- metric"))


@case("policy", "duplicate-keys")
def _(env, work):
    text = policy_text(env, extra="confidence: 0.9\nconfidence: 0.99\n")
    return _policy_case(env, work, text, names=("confidence",), patterns=_at_line(text, "confidence: 0.99"))


@case("policy", "duplicate-candidate-names")
def _(env, work):
    text = policy_text(env).replace("candidates:\n", f"candidates:\n  same: {m(env, 'base.onnx')}\n", 1)
    return _policy_case(env, work, text, names=("same",))


@case("policy", "not-utf8")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n    max_drop: 0.5\n    name: caf\xe9\n")
    return _policy_case(env, work, text.encode("latin-1"))


@case("policy", "utf8-bom-accepted-like-its-twin")
def _(env, work):
    text = policy_text(env)
    clean = write(work / "clean" / "policy.yaml", text)
    bom = write(work / "policy.yaml", "\ufeff" + text)
    return Expect(args=check_args(bom, work), twin=check_args(clean, work / "clean"))


@case("policy", "nul-byte-in-a-path")
def _(env, work):
    text = policy_text(env).replace(f"base: {m(env, 'base.onnx')}", 'base: "base\\0.onnx"', 1)
    e = _policy_case(env, work, text)
    e.names = (("policy.yaml", "base"),)

    def no_raw_nul(outcome):
        assert "\0" not in outcome.text, "a raw NUL byte from the policy was printed: show hostile strings with repr()"
    e.check = no_raw_nul
    return e


@case("policy", "path-of-5000-characters")
def _(env, work):
    text = policy_text(env).replace(f"base: {m(env, 'base.onnx')}", f"base: {'b' * 5000}.onnx", 1)
    return _policy_case(env, work, text)


@case("policy", "rules-is-a-mapping")
def _(env, work):
    text = policy_text(env, rules="  metric: accuracy\n  max_drop: 0.5\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "rules:"))


@case("policy", "rule-is-a-string")
def _(env, work):
    text = policy_text(env, rules="  - accuracy\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "- accuracy"))


@case("policy", "candidates-is-a-list")
def _(env, work):
    text = policy_text(env).replace(f"candidates:\n  same: {m(env, 'same.onnx')}",
                                    f"candidates:\n  - {m(env, 'same.onnx')}", 1)
    return _policy_case(env, work, text, patterns=_at_line(text, "candidates:", "  - "))


@case("policy", "version-2")
def _(env, work):
    text = policy_text(env).replace("version: 1", "version: 2", 1)
    return _policy_case(env, work, text, patterns=_at_line(text, "version: 2"))


@case("policy", "tab-indentation")
def _(env, work):
    text = policy_text(env, rules="  - metric: accuracy\n\tmax_drop: 0.5\n")
    return _policy_case(env, work, text, patterns=_at_line(text, "\tmax_drop"))


# ============================================================================================
# models
# ============================================================================================

def _bad_candidate(env, work, bad: Path, *, names=(), patterns=(), codes=(2,)) -> Expect:
    """The broken file as one candidate next to a good one: exit 2 naming it, the good one still judged."""
    def others_judged(outcome):
        report = report_of(work)
        assert report is not None, "no report.json: the good candidate was not judged"
        assert cand_of(report, "same")["verdict"] in ("pass", "fail")
        assert cand_of(report, "bad")["verdict"] != "pass"
    return Expect(args=check_args(env.policy, work, "--candidate", f"same={m(env, 'same.onnx')}",
                                  "--candidate", f"bad={bad}"),
                  codes=codes, names=(bad.name, *names), patterns=patterns, check=others_judged)


def _bad_base(env, work, bad: Path, *, names=(), patterns=()) -> Expect:
    return Expect(args=check_args(env.policy, work, "--base", bad, "--candidate", f"same={m(env, 'same.onnx')}"),
                  names=(bad.name, *names), patterns=patterns)


@case("model", "zero-byte-candidate")
def _(env, work):
    return _bad_candidate(env, work, m(env, "empty.onnx"))


@case("model", "zero-byte-base")
def _(env, work):
    return _bad_base(env, work, m(env, "empty.onnx"))


@case("model", "random-bytes-named-onnx")
def _(env, work):
    return _bad_candidate(env, work, m(env, "random.onnx"))


@case("model", "pickle-named-onnx-candidate")
def _(env, work):
    return _bad_candidate(env, work, m(env, "pickle.onnx"), names=("pickle",))


@case("model", "pickle-named-onnx-base")
def _(env, work):
    return _bad_base(env, work, m(env, "pickle.onnx"), names=("pickle",))


@case("model", "truncated-onnx")
def _(env, work):
    return _bad_candidate(env, work, m(env, "truncated.onnx"))


@case("model", "external-data-location-parent-dir")
def _(env, work):
    return _bad_candidate(env, work, m(env, "ext_up/ext_up.onnx"))


@case("model", "external-data-location-etc-passwd")
def _(env, work):
    e = _bad_candidate(env, work, m(env, "ext_abs/ext_passwd.onnx"))
    judged = e.check

    def nothing_of_passwd(outcome):
        judged(outcome)
        for f in (work / "out").glob("*"):
            text = f.read_text(encoding="utf-8", errors="replace")
            assert "root:x:" not in text, f"{f.name} shows the content of /etc/passwd"
            assert '"path": "/etc/passwd"' not in text, f"{f.name} lists /etc/passwd as a file of the model"
    e.check = nothing_of_passwd
    return e


@case("model", "candidate-with-nan-outputs")
def _(env, work):
    def not_passed_and_nan_named(outcome):
        report = report_of(work)
        said = outcome.text
        if report is not None:
            bad = cand_of(report, "bad")
            assert bad["verdict"] != "pass", bad["verdict"]
            for rule in bad.get("rules", []):
                if rule["metric"] == "accuracy":
                    assert rule["status"] in ("error", "fail"), rule
            said += "\n".join(strings_in(bad))
        assert re.search(r"\bnan\b|non-?finite", said, re.I), "NaN is not mentioned in report.json or the output"
    e = _bad_candidate(env, work, m(env, "nan.onnx"), codes=(1, 2))
    e.check = not_passed_and_nan_named
    return e


@case("model", "candidate-with-all-inf-outputs")
def _(env, work):
    def not_passed(outcome):
        report = report_of(work)
        if report is not None:
            assert cand_of(report, "bad")["verdict"] != "pass"
    e = _bad_candidate(env, work, m(env, "inf.onnx"), codes=(1, 2))
    e.check = not_passed
    return e


@case("model", "candidate-with-4-classes-base-3")
def _(env, work):
    e = _bad_candidate(env, work, m(env, "four.onnx"), patterns=(r"\b3\b", r"\b4\b"))
    return e


@case("model", "base-with-nan-outputs")
def _(env, work):
    return _bad_base(env, work, m(env, "nan.onnx"))


@case("model", "two-outputs-and-no-output-key")
def _(env, work):
    return _bad_candidate(env, work, m(env, "two_out.onnx"), names=("logits", "probabilities"))


@case("model", "directory-as-candidate")
def _(env, work):
    return _bad_candidate(env, work, m(env, "modeldir.onnx"))


@case("model", "directory-as-base")
def _(env, work):
    return _bad_base(env, work, m(env, "modeldir.onnx"))


@case("model", "opset-99")
def _(env, work):
    return _bad_candidate(env, work, m(env, "opset99.onnx"))


@case("model", "missing-candidate-file")
def _(env, work):
    return _bad_candidate(env, work, work / "no_such_model.onnx")


@case("model", "symlink-to-etc-passwd-named-onnx")
def _(env, work):
    link = work / "linked.onnx"
    link.symlink_to("/etc/passwd")
    return _bad_candidate(env, work, link)


@case("model", "output-key-names-no-output")
def _(env, work):
    text = policy_text(env, extra="output: nosuch_output\n")
    p = write(work / "policy.yaml", text)
    return Expect(args=check_args(p, work), names=("nosuch_output", "logits"))


# ============================================================================================
# data
# ============================================================================================

def _data_case(env, work, data: Path, *, names=(), patterns=(), inputs: dict | None = None, labels=None,
               groups=None, rules=None, models=("base.onnx", "same.onnx"), codes=(2,), name_data=True,
               **top) -> Expect:
    spec: dict = {"path": str(data)}
    if inputs is not None:
        spec["inputs"] = inputs
    if labels is not None:
        spec["labels"] = labels
    if groups is not None:
        spec["groups"] = groups
    p = write_policy(work / "policy.yaml", rules or [{"metric": "accuracy", "max_drop": 0.5}],
                     base=str(m(env, models[0])), candidates={"same": str(m(env, models[1]))}, data=spec,
                     bootstrap=100, **top)
    return Expect(args=check_args(p, work), codes=codes, names=((data.name,) if name_data else ()) + tuple(names),
                  patterns=patterns)


def _csv(rows: list[list], header=("idx", "label")) -> str:
    return "\n".join(",".join(map(str, r)) for r in [list(header), *rows]) + "\n"


def _clean_rows(env) -> list[list]:
    return [[i, int(env.y[i])] for i in range(N)]


def _ab_npz(env, path: Path, *, poison=None) -> Path:
    rng = np.random.default_rng(11)
    a = rng.normal(size=(N, 2)).astype(np.float32)
    b = rng.normal(size=(N, 2)).astype(np.float32)
    if poison is not None:
        a[4, 1] = poison
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, feat_a=a, feat_b=b, label=env.y)
    return path


@case("data", "zero-byte-npz")
def _(env, work):
    return _data_case(env, work, write(work / "data.npz", b""))


@case("data", "zero-byte-csv")
def _(env, work):
    return _data_case(env, work, write(work / "data.csv", b""))


@case("data", "csv-header-only")
def _(env, work):
    return _data_case(env, work, write(work / "data.csv", "idx,label\n"))


@case("data", "random-bytes-named-npz")
def _(env, work):
    def no_false_pickle_claim(outcome):
        assert "pickle" not in outcome.text.lower(), "random bytes are diagnosed as pickled objects (wrong fix)"
    e = _data_case(env, work, write(work / "data.npz", np.random.default_rng(1).bytes(2048)))
    e.check = no_false_pickle_claim
    return e


@case("data", "csv-non-numeric-feature-cell")
def _(env, work):
    rows = _clean_rows(env)
    rows[7][0] = "abc"  # row 7 is line 9 of the file (line 1 is the header)
    return _data_case(env, work, write(work / "data.csv", _csv(rows)), names=("idx", "abc"), patterns=(r"\b9\b",))


@case("data", "csv-utf8-bom-works-like-its-twin")
def _(env, work):
    text = _csv(_clean_rows(env))
    clean = _data_case(env, work / "clean", write(work / "clean" / "data.csv", text))
    bom = _data_case(env, work, write(work / "data.csv", "\ufeff" + text))
    return Expect(args=bom.args, twin=clean.args)


@case("data", "npz-nan-in-a-feature")
def _(env, work):
    data = _ab_npz(env, work / "data.npz", poison=np.nan)
    return _data_case(env, work, data, names=("feat_a",), inputs={"a": "feat_a", "b": "feat_b"},
                      models=("ab_base.onnx", "ab_same.onnx"))


@case("data", "npz-inf-in-a-feature")
def _(env, work):
    data = _ab_npz(env, work / "data.npz", poison=np.inf)
    return _data_case(env, work, data, names=("feat_a",), inputs={"a": "feat_a", "b": "feat_b"},
                      models=("ab_base.onnx", "ab_same.onnx"))


@case("data", "csv-nan-in-a-feature")
def _(env, work):
    rng = np.random.default_rng(12)
    rows = [[*(f"{v:.4f}" for v in rng.normal(size=4)), int(env.y[i])] for i in range(N)]
    rows[4][1] = "nan"
    text = _csv(rows, header=("alpha_0", "alpha_1", "beta_0", "beta_1", "label"))
    return _data_case(env, work, write(work / "data.csv", text), names=("alpha_1",),
                      inputs={"a": ["alpha_0", "alpha_1"], "b": ["beta_0", "beta_1"]},
                      models=("ab_base.onnx", "ab_same.onnx"))


@case("data", "labels-out-of-range")
def _(env, work):
    y = env.y.copy()
    y[5] = 7
    return _data_case(env, work, write_npz(work / "data.npz", y), names=("label",))


@case("data", "negative-labels")
def _(env, work):
    y = env.y.copy()
    y[5] = -1
    return _data_case(env, work, write_npz(work / "data.npz", y), names=("label",))


@case("data", "string-labels-for-a-score-model")
def _(env, work):
    y = np.array(["cat", "dog", "emu"])[env.y]
    return _data_case(env, work, write_npz(work / "data.npz", y), names=("label",))


@case("data", "float-labels")
def _(env, work):
    y = env.y.astype(np.float64) + 0.5
    return _data_case(env, work, write_npz(work / "data.npz", y), names=("label",))


@case("data", "mismatched-lengths")
def _(env, work):
    path = work / "data.npz"
    np.savez(path, idx=np.arange(N, dtype=np.int64).reshape(N, 1), label=env.y[: N - 7])
    return _data_case(env, work, path)


@case("data", "empty-labels-npz")
def _(env, work):
    path = work / "data.npz"
    np.savez(path, idx=np.arange(N, dtype=np.int64).reshape(N, 1), label=np.array([], dtype=np.int64))
    return _data_case(env, work, path, names=("label",))


@case("data", "empty-label-cells-csv")
def _(env, work):
    rows = [[i, ""] for i in range(N)]
    return _data_case(env, work, write(work / "data.csv", _csv(rows)), names=("label",))


@case("data", "npz-pickled-object-array")
def _(env, work):
    path = work / "data.npz"
    np.savez(path, idx=np.arange(N, dtype=np.int64).reshape(N, 1),
             label=np.array([{"y": int(v)} for v in env.y], dtype=object))
    return _data_case(env, work, path, names=("pickle",))


@case("data", "inputs-key-matches-no-model-input")
def _(env, work):
    # the mistake is in the policy's data.inputs: the policy or the model must be named, with the model's inputs
    return _data_case(env, work, m(env, "data.npz"), inputs={"nosuch_input": "idx"}, name_data=False,
                      names=(("policy.yaml", "base.onnx"), "nosuch_input", "idx"))


@case("data", "labels-key-missing")
def _(env, work):
    return _data_case(env, work, m(env, "data.npz"), labels="nosuch_labels", names=("nosuch_labels",))


@case("data", "group-column-with-10000-distinct-values")
def _(env, work):
    path = work / "data.npz"
    np.savez(path, idx=np.arange(BIG, dtype=np.int64).reshape(BIG, 1), label=env.y_big,
             user=np.array([f"u{i:05d}" for i in range(BIG)]))
    e = _data_case(env, work, path, groups=["user"], codes=(0, 1),
                   rules=[{"metric": "accuracy", "max_drop": 0.5},
                          {"metric": "accuracy", "per": "group", "max_drop": 0.05}])

    def too_small_reported(outcome):
        report = report_of(work)
        assert report is not None, "no report.json"
        text = json.dumps(report)
        assert re.search(r"too.small", text, re.I), "the 10,000 one-sample subgroups are not reported as too small"
        md = (work / "out" / "report.md").read_text(encoding="utf-8")
        assert re.search(r"too small", md, re.I), "report.md does not say the subgroups are too small"
    e.check = too_small_reported
    return e


HOSTILE_GROUP = "| <img src=x onerror=alert(1)>"


@case("data", "group-name-with-markup-is-escaped")
def _(env, work):
    path = work / "data.npz"
    np.savez(path, idx=np.arange(N, dtype=np.int64).reshape(N, 1), label=env.y,
             region=np.array([HOSTILE_GROUP if i % 2 else "plain" for i in range(N)]))
    e = _data_case(env, work, path, groups=["region"], codes=(0, 1),
                   rules=[{"metric": "accuracy", "per": "group", "max_drop": 0.5, "min_samples": 5}])

    def escaped(outcome):
        out = work / "out"
        html = (out / "report.html").read_text(encoding="utf-8")
        md = (out / "report.md").read_text(encoding="utf-8")
        assert "onerror" in html and "onerror" in md, "the subgroup is not shown at all"
        assert "<img" not in html, "raw <img in report.html"
        assert "&lt;img" in html
        assert "<img" not in md, "raw <img in report.md"
        for line in md.splitlines():
            if "onerror" in line:  # the '|' of the name must not split the table row
                assert "\\| &lt;img" in line or "&#124; &lt;img" in line, line
        assert HOSTILE_GROUP in json.dumps(report_of(work), ensure_ascii=False), "the name is data: keep it in JSON"
    e.check = escaped
    return e


@case("data", "csv-nul-byte")
def _(env, work):
    rows = _clean_rows(env)
    rows[3][0] = "1\0"  # row 3 is line 5 of the file
    return _data_case(env, work, write(work / "data.csv", _csv(rows)), names=("idx",), patterns=(r"\b5\b",))


@case("data", "csv-field-of-200000-characters")
def _(env, work):
    rows = _clean_rows(env)
    rows[3][0] = "9" * 200_000
    return _data_case(env, work, write(work / "data.csv", _csv(rows)))


@case("data", "csv-not-utf8")
def _(env, work):
    rows = _clean_rows(env)
    text = _csv([r + ["caf\xe9"] for r in rows], header=("idx", "label", "note"))
    return _data_case(env, work, write(work / "data.csv", text.encode("latin-1")))


@case("data", "csv-ragged-row")
def _(env, work):
    rows = _clean_rows(env)
    rows[10].append("extra")
    return _data_case(env, work, write(work / "data.csv", _csv(rows)), patterns=(r"\b12\b",))


@case("data", "unknown-extension")
def _(env, work):
    return _data_case(env, work, write(work / "data.txt", _csv(_clean_rows(env))))


@case("data", "directory-as-data")
def _(env, work):
    d = work / "data.npz"
    d.mkdir(parents=True)
    return _data_case(env, work, d)


# ============================================================================================
# command line
# ============================================================================================

@case("cli", "candidate-with-empty-name")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--candidate", f"={m(env, 'same.onnx')}"),
                  names=("--candidate",))


@case("cli", "candidate-with-empty-path")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--candidate", "name="), names=("--candidate",))


@case("cli", "two-candidates-with-the-same-name")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--candidate", f"twin={m(env, 'same.onnx')}",
                                  "--candidate", f"twin={m(env, 'base.onnx')}"), names=("--candidate", "twin"))


@case("cli", "out-is-an-existing-regular-file")
def _(env, work):
    target = write(work / "out_file.txt", "keep me\n")

    def untouched(outcome):
        assert target.read_text() == "keep me\n", "the existing file was overwritten"
    return Expect(args=["check", "--policy", env.policy, "--out", target, "--no-progress"], names=("out_file.txt",),
                  check=untouched)


def _not_writable(work: Path) -> tuple[Path, Path]:
    """A folder made read-only (0o555), and an --out inside it that cannot be written. Root ignores the mode
    bits, so when a probe write succeeds, the --out goes under a regular file in that folder instead (which
    fails for root too)."""
    folder = work / "readonly_dir"
    folder.mkdir(parents=True)
    (folder / "blocker").write_text("a file, not a folder\n")
    folder.chmod(0o555)
    try:
        (folder / ".probe").touch()
        (folder / ".probe").unlink()
        return folder, folder / "blocker" / "report"
    except OSError:
        return folder, folder / "report"


@case("cli", "out-inside-a-read-only-folder")
def _(env, work):
    folder, out = _not_writable(work)

    def restore(outcome):
        folder.chmod(0o755)
    return Expect(args=["check", "--policy", env.policy, "--out", out, "--no-progress"], names=("readonly_dir",),
                  check=restore)


@case("cli", "out-under-a-regular-file")
def _(env, work):
    blocker = write(work / "a_file.txt", "x\n")
    return Expect(args=["check", "--policy", env.policy, "--out", blocker / "sub", "--no-progress"],
                  names=("a_file.txt",))


@case("cli", "out-is-an-empty-string")
def _(env, work):
    return Expect(args=["check", "--policy", env.policy, "--out", "", "--no-progress"], names=("--out",))


@case("cli", "measure-out-is-an-existing-directory")
def _(env, work):
    target = work / "results_dir"
    target.mkdir()
    return Expect(args=["measure", "--policy", env.policy, "--out", target, "--no-progress"], names=("results_dir",),
                  notes={"refuse_before_measuring": True})


@case("cli", "measure-out-under-a-regular-file")
def _(env, work):
    blocker = write(work / "a_file.txt", "x\n")
    def right_fix(outcome):
        assert "gate-report" not in outcome.text and "reports are written" not in outcome.text, \
            "`gate measure --out` is a results FILE, but the message gives the fix for a report folder"
    return Expect(args=["measure", "--policy", env.policy, "--out", blocker / "results.json", "--no-progress"],
                  names=("a_file.txt",), notes={"refuse_before_measuring": True}, check=right_fix)


@case("cli", "missing-policy-flag")
def _(env, work):
    return Expect(args=["check", "--base", m(env, "base.onnx"), "--out", work / "out"], names=("--policy",))


@case("cli", "unknown-preset-name")
def _(env, work):
    return Expect(args=check_args("relase", work), names=("relase", "release"))


@case("cli", "policy-is-a-directory")
def _(env, work):
    d = work / "policy_dir"
    d.mkdir()
    return Expect(args=check_args(d, work), names=("policy_dir",))


@case("cli", "templates-is-not-a-directory")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--templates", work / "no_templates_here"),
                  names=("no_templates_here",), notes={"refuse_before_measuring": True})


@case("cli", "templates-is-a-regular-file")
def _(env, work):
    f = write(work / "templates.txt", "x\n")
    return Expect(args=check_args(env.policy, work, "--templates", f), names=("templates.txt",),
                  notes={"refuse_before_measuring": True})


@case("cli", "templates-with-a-jinja-syntax-error")
def _(env, work):
    d = work / "my_templates"
    write(d / "report.md.j2", "{% if %}broken\n")
    return Expect(args=check_args(env.policy, work, "--templates", d), names=("report.md.j2",))


@case("cli", "policy-check-on-a-policy-naming-missing-files")
def _(env, work):
    text = (f"version: 1\nbase: missing_base.onnx\ncandidates:\n  c: missing_cand.onnx\n"
            f"data:\n  path: missing_data.npz\nrules:\n  - metric: accuracy\n    max_drop: 0.01\n")
    p = write(work / "policy.yaml", text)
    return Expect(args=["policy", "check", p],
                  names=("policy.yaml", "missing_base.onnx", "missing_cand.onnx", "missing_data.npz"))


@case("cli", "data-flag-names-a-missing-file")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--data", work / "no_data.npz"), names=("no_data.npz",))


@case("cli", "unknown-flag")
def _(env, work):
    return Expect(args=check_args(env.policy, work, "--frobnicate"), names=("--frobnicate",))


@case("cli", "no-command")
def _(env, work):
    return Expect(args=[], names=("usage",))


@case("cli", "policy-without-an-action")
def _(env, work):
    return Expect(args=["policy"], names=("check", "schema"))


# ============================================================================================
# gate judge
# ============================================================================================

def _judge(env, work, *files: Path, names=None) -> Expect:
    return Expect(args=["judge", *files, "--policy", env.policy, "--out", work / "out"],
                  names=names if names is not None else (files[-1].name,))


def _results(env) -> dict:
    return read_json(env.results)


def _judge_doc(env, work, doc, name="results.json", names=None) -> Expect:
    text = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    return _judge(env, work, write(work / name, text), names=names)


@case("judge", "results-not-json")
def _(env, work):
    return _judge_doc(env, work, "this is not JSON {")


@case("judge", "results-zero-bytes")
def _(env, work):
    return _judge_doc(env, work, b"")


@case("judge", "results-is-a-list")
def _(env, work):
    return _judge_doc(env, work, [1, 2, 3])


@case("judge", "gate-results-is-a-number")
def _(env, work):
    return _judge_doc(env, work, {"gate_results": 5})


@case("judge", "gate-results-only-format")
def _(env, work):
    return _judge_doc(env, work, {"gate_results": {"format": 1}})


@case("judge", "candidates-are-strings")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["candidates"] = ["same", "other"]
    return _judge_doc(env, work, doc)


@case("judge", "candidates-is-a-mapping")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["candidates"] = {"same": doc["gate_results"]["candidates"][0]}
    return _judge_doc(env, work, doc)


@case("judge", "metric-result-is-a-string")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["candidates"][0]["metrics"]["accuracy"] = "high"
    return _judge_doc(env, work, doc)


@case("judge", "metric-value-is-a-string")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["candidates"][0]["metrics"]["accuracy"]["candidate"] = "0.9"
    doc["gate_results"]["candidates"][0]["metrics"]["accuracy"]["delta"] = "-0.01"
    return _judge_doc(env, work, doc)


@case("judge", "metrics-is-a-list")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["candidates"][0]["metrics"] = [1, 2]
    return _judge_doc(env, work, doc)


@case("judge", "nan-literal-confidence")
def _(env, work):
    text = json.dumps(_results(env)).replace('"confidence": 0.95', '"confidence": NaN', 1)
    assert "NaN" in text
    return _judge_doc(env, work, text)


@case("judge", "nan-literal-metric-values-never-pass")
def _(env, work):
    doc = _results(env)
    acc = doc["gate_results"]["candidates"][0]["metrics"]["accuracy"]
    acc.update(candidate=float("nan"), delta=float("nan"), discordant_rate=float("nan"))
    for key in ("delta_interval", "candidate_interval"):
        if isinstance(acc.get(key), dict):
            acc[key] = {k: (float("nan") if isinstance(v, float) else v) for k, v in acc[key].items()}
    text = json.dumps(doc)
    assert "NaN" in text
    e = _judge_doc(env, work, text)
    e.codes = (1, 2)
    return e


@case("judge", "infinity-literal-sample-count")
def _(env, work):
    text = json.dumps(_results(env)).replace(f'"n_samples": {N}', '"n_samples": Infinity', 1)
    assert "Infinity" in text
    return _judge_doc(env, work, text)


@case("judge", "report-json-instead-of-results")
def _(env, work):
    return _judge(env, work, env.report_json, names=("report.json",))


@case("judge", "results-of-format-version-2")
def _(env, work):
    doc = _results(env)
    doc["gate_results"]["format"] = 2
    return _judge_doc(env, work, doc)


@case("judge", "results-measured-on-different-data")
def _(env, work):
    return _judge(env, work, env.results, env.other_results, names=("other_results.json", "data"))


@case("judge", "results-nested-100000-deep")
def _(env, work):
    return _judge_doc(env, work, "[" * 100_000 + "]" * 100_000)


@case("judge", "results-not-utf8")
def _(env, work):
    return _judge_doc(env, work, b'{"gate_results": "caf\xe9"}')


@case("judge", "results-is-a-directory")
def _(env, work):
    d = work / "results_dir.json"
    d.mkdir()
    return _judge(env, work, d)


@case("judge", "results-file-missing")
def _(env, work):
    return _judge(env, work, work / "no_results.json")


@case("judge", "same-results-file-twice")
def _(env, work):
    return _judge(env, work, env.results, env.results, names=("results.json", "same"))


# ============================================================================================
# the one test
# ============================================================================================

def test_corpus_is_large_enough():
    sections = {}
    for p in CASES:
        sections.setdefault(p.id.split("-")[0], []).append(p.id)
    need = {"policy": 15, "model": 12, "data": 15, "cli": 12, "judge": 10}
    for section, least in need.items():
        assert len(sections.get(section, [])) >= least, (section, len(sections.get(section, [])))
    assert len(CASES) >= 70


@pytest.mark.parametrize("build", CASES)
def test_hostile_input(build, env, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.cache))
    for key in list(os.environ):
        if key.startswith(("GITHUB_", "RUNNER_")) or key == "CI":
            monkeypatch.delenv(key)
    before = listing(env.inputs)

    expect = build(env, work)
    measured = []
    if expect.notes.get("refuse_before_measuring"):
        import gate.pipeline

        # looked up when called: `measure` by the CLI, `load_dataset` inside measure (the first step of any
        # measurement, so a CLI that bound `measure` at import is caught too)
        for attr in ("measure", "load_dataset"):
            real = getattr(gate.pipeline, attr)

            def spy(*args, _real=real, _attr=attr, **kwargs):
                measured.append(_attr)
                return _real(*args, **kwargs)
            monkeypatch.setattr(gate.pipeline, attr, spy)

    outcome = run_main(expect.args, capsys)

    assert outcome.code != "hang", f"HANG: {outcome!r}"
    assert outcome.error is None, f"ESCAPED main(): {outcome!r}"
    assert "Traceback" not in outcome.text, f"TRACEBACK (exit {outcome.code}): {outcome!r}"
    assert outcome.seconds < LIMIT_S, f"SLOW: {outcome.seconds:.1f} s: {outcome!r}"
    numeric = [w for w in outcome.warnings if w.startswith("RuntimeWarning")]
    assert not numeric, f"WARNING printed to the user (numpy on NaN/Inf, unhandled): {numeric[:3]}: {outcome!r}"
    if expect.twin is not None:
        twin = run_main(expect.twin, capsys)
        assert twin.code in (0, 1), f"the clean twin itself failed: {twin!r}"
        assert outcome.code == twin.code, f"WRONG EXIT {outcome.code}, the clean twin exits {twin.code}: {outcome!r}"
    else:
        assert outcome.code in expect.codes, f"WRONG EXIT {outcome.code}, expected {expect.codes}: {outcome!r}"
    if outcome.code == 2:
        said = outcome.text.lower()
        missing = [n for n in expect.names
                   if not any(str(alt).lower() in said for alt in (n if isinstance(n, tuple) else (n,)))]
        assert not missing, f"MESSAGE does not name {missing}: {outcome!r}"
        plain = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+", "<tmp>", outcome.text)  # no digits of tmp paths
        for pattern in expect.patterns:
            assert re.search(pattern, plain), f"MESSAGE does not match {pattern!r}: {outcome!r}"
    if expect.check is not None:
        expect.check(outcome)
    if expect.notes.get("refuse_before_measuring"):
        assert not measured, f"MEASURED before refusing: {outcome!r}"
    assert listing(env.inputs) == before, "the shared inputs changed"
    assert not env.pwned.exists(), "a pickle was loaded: its payload ran"
    assert sorted(os.listdir(cwd)) == [], f"WROTE into the working directory: {sorted(os.listdir(cwd))}"
