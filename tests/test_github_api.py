"""gate/github/api.py: GitHub's rate limits, waited out within a cap, never a failure of the gate.

Against FakeGitHub (tests/test_github.py), a real HTTP server on 127.0.0.1, scripted to answer 429 or 403 with
GitHub's rate-limit headers. Nothing sleeps for real: the client and the step take a `sleep` that records.
The reports are small hand-made ones that pass gate.contract, so no model is built here.
"""

from __future__ import annotations

import email.utils
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_github import FakeGitHub, _env, pull_request_event

from gate import github as gh
from gate.contract import load_report_dir
from gate.tally import count

REPO = "acme/models"
NOW = 1_800_000_000.0  # the clock the client is given: x-ratelimit-reset is read against it
LIMITED = "API rate limit exceeded for installation ID 1234."


@pytest.fixture
def github():
    with FakeGitHub() as server:
        yield server


def write_report(root: Path, verdict: str) -> Path:
    """A one-rule report folder that gate.contract accepts: the candidate passes or fails accuracy max_drop."""
    status, blocking = ("pass", False) if verdict == "pass" else ("fail", True)
    drop = 0.004 if verdict == "pass" else 0.05
    rule = {"rule": "accuracy max_drop 0.02", "index": 1, "metric": "accuracy", "bound_kind": "max_drop",
            "threshold": 0.02, "severity": "fail", "status": status, "blocking": blocking, "observed": drop,
            "interval": [drop - 0.003, drop + 0.003], "base": 0.95, "candidate": 0.95 - drop,
            "bound_text": "candidate accuracy >= base - 0.0200 = 0.9300",
            "reason": f"drop of accuracy is {drop:.4f}", "samples_needed": None, "n": 500, "groups": [],
            "line": None}
    tally = count([(f"int8: {rule['rule']}", status, blocking)], candidate="int8").to_dict()
    doc = {"report_format": 2, "verdict": verdict, "tally": tally, "confidence": 0.95, "inconclusive": "warn",
           "task": "classification", "n_samples": 500, "seed": 0, "bootstrap": 1000,
           "base": {"model": {"name": "base", "path": "base.onnx"}, "metrics": {"accuracy": 0.95}},
           "candidates": [{"name": "int8", "verdict": verdict, "error": None, "tally": tally, "rules": [rule]}],
           "input_errors": [],
           "provenance": {"policy": {"path": "gate.yaml", "sha256": "0" * 64}, "models": {}}}
    out = root / "report"
    out.mkdir(parents=True)
    (out / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    (out / "report.md").write_text(f"## Compression gate: {verdict.upper()}\n\n1 rule\n", encoding="utf-8")
    load_report_dir(out)  # the step reads it through the same loader: a report it would refuse is a test bug
    return out


def run_step(tmp_path: Path, github: FakeGitHub, *args: str, verdict: str = "fail") -> tuple[int, list, str, dict]:
    """gh.main in this process, commenting on pull request 7: (exit, seconds slept, stdout, outputs)."""
    report = write_report(tmp_path / "made", verdict)
    env = _env(tmp_path, github, pull_request_event(7))
    waits: list[float] = []
    out = io.StringIO()
    gate_exit = "0" if verdict == "pass" else "1"
    code = gh.main(["--report-dir", str(report), "--gate-exit", gate_exit, "--comment", *args], env, out=out,
                   sleep=waits.append)
    return code, waits, out.getvalue(), gh.parse_outputs((tmp_path / "output.txt").read_text())


def limited(status: int = 429, **headers: str) -> tuple[int, dict, str]:
    """A FakeGitHub answer: GitHub's rate limit with these headers (x_ratelimit_reset -> x-ratelimit-reset)."""
    return status, {k.replace("_", "-"): v for k, v in headers.items()}, LIMITED


# ---------------------------------------------------------------- what GitHub asks the client to wait


@pytest.mark.parametrize("status, headers, message, wait", [
    (429, {"Retry-After": "1"}, "", 1.0),
    (403, {"Retry-After": "30", "x-ratelimit-remaining": "12"}, "secondary rate limit", 30.0),
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 5)}, LIMITED, 6.0),
    (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 5)}, "", 1.0),  # already reset
    (429, {"Retry-After": email.utils.formatdate(NOW + 20, usegmt=True)}, "", 20.0),  # an HTTP date
    (429, {}, "", gh.api.UNSPECIFIED_WAIT),  # says neither: GitHub's "at least one minute"
    (403, {}, "You have exceeded a secondary rate limit.", gh.api.UNSPECIFIED_WAIT),
    (429, {"Retry-After": "soon"}, "", gh.api.UNSPECIFIED_WAIT),
    (403, {}, "Resource not accessible by integration", None),  # a fork's read-only token: no retry
    (403, {"x-ratelimit-remaining": "4999"}, "Must have admin rights", None),
    (500, {"Retry-After": "1"}, "", None),  # server errors have their own retries
    (404, {}, "Not Found", None),
], ids=["retry-after", "retry-after-wins", "reset", "reset-passed", "http-date", "no-header",
        "secondary-message", "bad-retry-after", "fork-403", "permission-403", "5xx", "404"])
def test_the_wait_github_asks_for(status, headers, message, wait):
    assert gh.rate_limit_wait(status, headers, message, now=NOW) == wait


# ---------------------------------------------------------------- the client


def test_a_403_with_no_quota_left_waits_until_the_reset_then_posts(github):
    github.fail_next = [None, limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW) + 5))]
    waits: list[float] = []
    client = gh.GitHubClient(github.url, "t", sleep=waits.append, clock=lambda: NOW)
    action, comment = client.upsert_comment(REPO, 7, gh.MARKER + "\nr", gh.MARKER)
    assert (action, waits, client.waited) == ("created", [6.0], [6.0])  # 5 s to the reset, 1 s for its rounding
    assert [r["method"] for r in github.requests] == ["GET", "POST", "POST"]
    assert github.bodies(REPO, 7) == [gh.MARKER + "\nr"]


def test_a_reset_beyond_the_cap_gives_up_at_once_without_sleeping(github):
    github.fail_next = [limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW) + 3600))]
    waits: list[float] = []
    client = gh.GitHubClient(github.url, "t", sleep=waits.append, clock=lambda: NOW)
    with pytest.raises(gh.RateLimited) as info:
        client.find_comment(REPO, 7, gh.MARKER)
    assert waits == [] and len(github.requests) == 1
    assert info.value.status == 403 and info.value.message == LIMITED
    assert "GitHub asked to wait 3601 s, beyond the 60 s the gate waits in total" in str(info.value)


def test_the_cap_is_on_the_total_wait_of_the_client(github):
    github.fail_next = [limited(Retry_After="40"), None, limited(Retry_After="40")]
    waits: list[float] = []
    client = gh.GitHubClient(github.url, "t", sleep=waits.append)
    assert client.find_comment(REPO, 7, gh.MARKER) is None  # waited 40 s, then answered
    with pytest.raises(gh.RateLimited, match=r"wait 40 s, beyond the 60 s .*, 40 s waited already"):
        client.find_comment(REPO, 7, gh.MARKER)
    assert waits == [40.0]


def test_a_plain_403_is_not_a_rate_limit_and_is_not_retried(github):
    github.forbidden = True
    waits: list[float] = []
    client = gh.GitHubClient(github.url, "t", sleep=waits.append)
    with pytest.raises(gh.GitHubError) as info:
        client.upsert_comment(REPO, 7, gh.MARKER + "\nr", gh.MARKER)
    assert not isinstance(info.value, gh.RateLimited) and info.value.status == 403
    assert waits == [] and len(github.writes()) == 1


def test_server_errors_back_off_through_the_injected_sleep(github):
    github.fail_next = [502, 503]
    waits: list[float] = []
    client = gh.GitHubClient(github.url, "t", backoff=2.0, sleep=waits.append)
    assert client.find_comment(REPO, 7, gh.MARKER) is None
    assert waits == [2.0, 4.0] and client.waited == []  # a backoff is no rate-limit wait


# ---------------------------------------------------------------- the step


def test_a_429_with_retry_after_is_waited_out_and_the_comment_posted_once(tmp_path, github):
    github.fail_next = [None, limited(Retry_After="1")]  # the list answers; the first POST is refused
    code, waits, out, outputs = run_step(tmp_path, github)
    assert code == 1  # the failing verdict decides, as without a rate limit
    assert waits == [1.0]
    assert [r["method"] for r in github.requests] == ["GET", "POST", "POST"]
    assert len(github.bodies(REPO, 7)) == 1 and github.bodies(REPO, 7)[0].startswith(gh.MARKER)
    assert outputs["comment-url"] == f"https://github.com/{REPO}/pull/7#issuecomment-1001"
    assert "gate: pull request #7: comment created" in out
    assert "::notice" not in out and "rate limit" not in out


@pytest.mark.parametrize("verdict, expected", [("pass", 0), ("fail", 1)])
def test_repeated_429s_give_up_with_a_notice_and_the_verdict_decides_the_exit(tmp_path, github, verdict, expected):
    github.fail_next = [limited(Retry_After="1")] * 10
    code, waits, out, outputs = run_step(tmp_path, github, verdict=verdict)
    assert code == expected
    assert waits == [1.0, 1.0, 1.0]  # three retries, then it stops asking
    assert len(github.requests) == 4 and github.bodies(REPO, 7) == []
    assert "::notice title=gate%3A no pull-request comment::GitHub's API rate limit: still rate limited after " \
           "3 retries, 3 s waited (GitHub answered 429: " + LIMITED + ")." in out
    assert "the gate's verdict is unaffected" in out
    assert "gate: comment not posted: rate limited: still rate limited after 3 retries" in out
    assert outputs["comment-url"] == "" and outputs["verdict"] == verdict
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith(f"## Compression gate: {verdict.upper()}")  # the report is still there
    assert "could not be posted: GitHub's API rate limit (still rate limited after 3 retries, 3 s waited)" in summary
    assert "::error" not in out.replace("::error title=gate%3A int8 fails", "")  # only the rule's own error


def test_the_wait_cap_is_an_option_of_the_step_and_0_never_waits(tmp_path, github):
    report = write_report(tmp_path / "made", "pass")
    github.fail_next = [limited(Retry_After="1")]
    env = _env(tmp_path, github, pull_request_event(7))
    proc = subprocess.run([sys.executable, "-m", "gate.github", "--report-dir", str(report), "--gate-exit", "0",
                           "--comment", "--rate-limit-wait", "0"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GitHub asked to wait 1 s, beyond the 0 s the gate waits in total" in proc.stdout
    assert len(github.requests) == 1
    bad = subprocess.run([sys.executable, "-m", "gate.github", "--report-dir", str(report),
                          "--rate-limit-wait", "-1"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must be a number of seconds, 0 or more; got '-1'" in bad.stderr
