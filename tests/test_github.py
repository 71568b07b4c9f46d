"""gate/github/: workflow commands, outputs, the comment body and the REST client.

The client talks to FakeGitHub, a real HTTP server on 127.0.0.1 that answers
like GitHub's REST API for issue comments (paginated with Link headers) and
pull requests; tests/test_action.py uses it too.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from gate import github as gh

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a small GitHub


class FakeGitHub:
    """Issue comments and pull requests of any repository, in memory.

    GET    /repos/{o}/{r}/issues/{n}/comments   paginated: per_page (capped at page_cap), page, Link header
    POST   /repos/{o}/{r}/issues/{n}/comments   {"body"} -> 201
    PATCH  /repos/{o}/{r}/issues/comments/{id}  {"body"} -> 200
    GET    /repos/{o}/{r}/pulls?head=owner:branch&state=open
    forbidden=True answers every write with 403 like a fork's read-only token; fail_next=[502, ...]
    answers the next requests with those statuses: an entry (status, headers, message) answers with
    those headers and message (a rate limit), None lets that request through.
    """

    def __init__(self, page_cap: int = 100) -> None:
        self.page_cap = page_cap
        self.comments: dict[tuple[str, int], list[dict]] = {}
        self.pulls: dict[str, list[dict]] = {}
        self.requests: list[dict] = []
        self.forbidden = False
        self.fail_next: list[int] = []
        self.next_id = 1000
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, on every test that uses the server
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                       daemon=True)

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def add_comment(self, repo: str, number: int, body: str, login: str = "someone") -> dict:
        with self.lock:
            self.next_id += 1
            c = {"id": self.next_id, "body": body, "user": {"login": login, "type": "User"},
                 "html_url": f"https://github.com/{repo}/pull/{number}#issuecomment-{self.next_id}"}
            self.comments.setdefault((repo, number), []).append(c)
            return c

    def bodies(self, repo: str, number: int) -> list[str]:
        return [c["body"] for c in self.comments.get((repo, number), [])]

    def writes(self) -> list[dict]:
        return [r for r in self.requests if r["method"] in ("POST", "PATCH")]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, data, headers: dict | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                                          "auth": self.headers.get("Authorization"),
                                          "accept": self.headers.get("Accept"),
                                          "api_version": self.headers.get("X-GitHub-Api-Version")})
                    status = fake.fail_next.pop(0) if fake.fail_next else None
                if status:
                    status, headers, message = status if isinstance(status, tuple) else \
                        (status, {}, "Server Error")
                    return self._send(status, {"message": message}, headers)
                if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                    return self._send(401, {"message": "Requires authentication"})
                if method in ("POST", "PATCH") and fake.forbidden:
                    return self._send(403, {"message": "Resource not accessible by integration",
                                            "status": "403"})
                m = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", url.path)
                if m and method == "GET":
                    return self._list(m.group(1), int(m.group(2)), query)
                if m and method == "POST":
                    return self._send(201, fake.add_comment(m.group(1), int(m.group(2)), body["body"],
                                                            login="github-actions[bot]"))
                m = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", url.path)
                if m and method == "PATCH":
                    with fake.lock:
                        for (repo, _), items in fake.comments.items():
                            for c in items:
                                if repo == m.group(1) and c["id"] == int(m.group(2)):
                                    c["body"] = body["body"]
                                    return self._send(200, c)
                    return self._send(404, {"message": "Not Found"})
                m = re.fullmatch(r"/repos/([^/]+/[^/]+)/pulls", url.path)
                if m and method == "GET":
                    owner, _, branch = query.get("head", ":").partition(":")
                    found = [p for p in fake.pulls.get(m.group(1), [])
                             if p["head"]["ref"] == branch and p["head"]["repo"]["owner"]["login"] == owner]
                    return self._send(200, found)
                return self._send(404, {"message": "Not Found"})

            def _list(self, repo: str, number: int, query: dict) -> None:
                items = fake.comments.get((repo, number), [])
                per_page = min(int(query.get("per_page", 30)), fake.page_cap)
                page = int(query.get("page", 1))
                last = max(1, -(-len(items) // per_page))
                links = []
                base = f"{fake.url}{urlparse(self.path).path}"
                if page < last:
                    links.append(f'<{base}?{urlencode({"per_page": per_page, "page": page + 1})}>; rel="next"')
                    links.append(f'<{base}?{urlencode({"per_page": per_page, "page": last})}>; rel="last"')
                headers = {"Link": ", ".join(links)} if links else {}
                self._send(200, items[(page - 1) * per_page: page * per_page], headers)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

        return Handler


@pytest.fixture
def github():
    with FakeGitHub(page_cap=2) as server:
        yield server


def pull_request_event(number: int = 7, repo: str = "acme/models", head_repo: str | None = None) -> dict:
    """A pull_request (opened) payload, trimmed to the fields real ones always carry."""
    owner, name = repo.split("/")
    head_repo = head_repo or repo
    return {
        "action": "opened", "number": number,
        "pull_request": {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}", "id": 1_900_000_000 + number,
            "number": number, "state": "open", "title": "int8 candidate", "user": {"login": "contributor"},
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "head": {"label": f"{head_repo.split('/')[0]}:int8", "ref": "int8", "sha": "a" * 40,
                     "repo": {"full_name": head_repo, "fork": head_repo != repo,
                              "owner": {"login": head_repo.split("/")[0]}}},
            "base": {"label": f"{owner}:main", "ref": "main", "sha": "b" * 40,
                     "repo": {"full_name": repo, "name": name, "owner": {"login": owner}}},
        },
        "repository": {"full_name": repo, "name": name, "owner": {"login": owner}, "private": False},
        "sender": {"login": "contributor"},
    }


# ---------------------------------------------------------------- a real report, once per session


@pytest.fixture
def demo(demo_dir) -> Path:
    """`gate demo` (conftest's session run): 5 candidates, pruned-90 fails 5 rules and warns on 1; 29 rules
    pass. Only read here: the step writes its outputs and summary under tmp_path."""
    return demo_dir


# ---------------------------------------------------------------- workflow commands


@pytest.mark.parametrize(("text", "data", "prop"), [
    ("plain", "plain", "plain"),
    ("100%", "100%25", "100%25"),
    ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
    ("x: 1, y", "x: 1, y", "x%3A 1%2C y"),
    ("%0A", "%250A", "%250A"),  # an escape in the text is not an escape
    ("", "", ""),
])
def test_escaping_follows_the_workflow_command_rules(text, data, prop):
    assert gh.escape_data(text) == data
    assert gh.escape_property(text) == prop


def test_an_annotation_renders_as_a_workflow_command():
    ann = gh.Annotation(level="error", title="gate: int8, fails: accuracy", message="50% drop\nbound: x",
                        file="models/policy.yaml", line=14)
    assert ann.render() == ("::error file=models/policy.yaml,line=14,title=gate%3A int8%2C fails%3A accuracy"
                            "::50%25 drop%0Abound: x")
    assert gh.Annotation(level="warning", message="m").render() == "::warning::m"
    # a line without a file means nothing to GitHub: it is dropped
    assert gh.Annotation(level="notice", message="m", line=3).render() == "::notice::m"


def _report(rules, *, verdict="fail", policy_path=None, policy_text=None, candidate_error=None, input_errors=()):
    return {"verdict": verdict, "candidates": [{"name": "int8", "verdict": verdict, "error": candidate_error,
                                                "rules": rules}],
            "input_errors": list(input_errors),
            "provenance": {"policy": {"path": policy_path, "text": policy_text}}}


def _rule(index, status, blocking, rule="accuracy max_drop 0.01"):
    return {"rule": rule, "index": index, "metric": rule.split()[0], "status": status, "blocking": blocking,
            "reason": f"{status} because", "bound_text": "candidate accuracy >= base - 0.0100 = 0.9691",
            "observed": 0.02, "threshold": 0.01}


POLICY = """\
version: 1
base: base.onnx
rules:
  - metric: accuracy
    max_drop: 0.01
  # a comment between rules

  - metric: flip_rate
    max: 0.02
  - {metric: kl_divergence, max: 0.05, severity: warn}
  - metric: log_loss
    max_relative_increase: 0.05
"""


def test_one_annotation_per_failed_or_warned_rule_on_the_rule_line(tmp_path):
    (tmp_path / "gate").mkdir()
    policy = tmp_path / "gate" / "policy.yaml"
    policy.write_text(POLICY)
    report = _report([dict(_rule(1, "fail", True), line=4), dict(_rule(2, "pass", False, "flip_rate max 0.02"), line=8),
                      dict(_rule(3, "warn", False, "kl_divergence max 0.05"), line=10),
                      dict(_rule(4, "inconclusive", False, "log_loss max_relative_increase 0.05"), line=11)],
                     policy_path=str(policy), policy_text=POLICY)
    anns = gh.report_annotations(report, workspace=tmp_path)
    assert [(a.level, a.file, a.line) for a in anns] == [
        ("error", "gate/policy.yaml", 4), ("warning", "gate/policy.yaml", 10), ("warning", "gate/policy.yaml", 11)]
    assert anns[0].title == "gate: int8 fails accuracy max_drop 0.01"
    assert anns[0].message == "fail because\nbound: candidate accuracy >= base - 0.0100 = 0.9691"
    assert anns[2].title == "gate: int8 is inconclusive on log_loss max_relative_increase 0.05"
    # a policy outside the workspace (a preset, another checkout) gets no file: GitHub would drop it
    outside = gh.report_annotations(report, workspace=tmp_path / "elsewhere")
    assert [(a.level, a.file, a.line) for a in outside] == [("error", None, None), ("warning", None, None),
                                                            ("warning", None, None)]


def test_the_tally_counts_blocking_results_as_failed():
    report = _report([_rule(1, "fail", True), _rule(2, "pass", False), _rule(3, "warn", False),
                      _rule(4, "inconclusive", True), _rule(5, "inconclusive", False), _rule(6, "error", True),
                      _rule(7, "fail", False)])  # a warn-severity failure does not block
    t = gh.tally(report)
    assert (t.passed, t.failed, t.warned) == (1, 3, 3)
    assert t.failed_rules == ("int8: accuracy max_drop 0.01 (fail)", "int8: accuracy max_drop 0.01 (inconclusive)",
                              "int8: accuracy max_drop 0.01 (error)")
    # without the blocking flag, only pass and warn do not block: doubt never becomes a pass
    bare = {"verdict": "fail", "candidates": [{"name": "x", "rules": [
        {"rule": "r", "status": s} for s in ("pass", "warn", "inconclusive", "error", "fail")]}]}
    assert (gh.tally(bare).passed, gh.tally(bare).failed, gh.tally(bare).warned) == (1, 3, 1)


def test_a_candidate_that_could_not_be_measured_is_a_failure_and_an_annotation():
    report = _report([], candidate_error="models/int8.onnx: not an ONNX model",
                     input_errors=["/ws/models/int8.onnx: not an ONNX model\n  fix: export it again"])
    t = gh.tally(report)
    assert t.failed == 1 and t.failed_rules == ("int8: could not be measured",)
    anns = gh.report_annotations(report, workspace=Path("/ws"))
    assert [(a.level, a.file) for a in anns] == [("error", None), ("error", "models/int8.onnx")]
    assert "export it again" in anns[1].message


def test_the_gate_log_becomes_annotations_on_the_named_file(tmp_path):
    (tmp_path / "policy.yaml").write_text("x")
    log = (f"error: {tmp_path}/policy.yaml:3: rules[1].metric unknown metric 'acuracy'. Did you mean 'accuracy'?\n"
           "  fix: edit the policy; `gate policy schema` prints every allowed key\n")
    [ann] = gh.log_annotations(log, 2, workspace=tmp_path)
    assert (ann.level, ann.file, ann.line) == ("error", "policy.yaml", 3)
    assert ann.message.endswith("Did you mean 'accuracy'?\nfix: edit the policy; `gate policy schema` prints "
                                "every allowed key")
    # a bug (exit 3) names no input: the log's tail is the message
    [bug] = gh.log_annotations("Traceback ...\nKeyError: 'x'\n", 3, workspace=tmp_path)
    assert bug.file is None and "exited 3 (the gate itself failed (a bug))" in bug.message
    assert "KeyError: 'x'" in bug.message


def test_annotations_take_the_rule_line_from_the_report_not_from_the_policy_text(tmp_path):
    # the policy text is not re-parsed: a rule result carries its line (report_format 2)
    (tmp_path / "policy.yaml").write_text("rules: [")
    rule = dict(_rule(1, "fail", True), line=7)
    [ann] = gh.report_annotations(_report([rule], policy_path=str(tmp_path / "policy.yaml"), policy_text="rules: ["),
                                  workspace=tmp_path)
    assert (ann.file, ann.line) == ("policy.yaml", 7)
    [bare] = gh.report_annotations(_report([_rule(1, "fail", True)], policy_path=str(tmp_path / "policy.yaml")),
                                   workspace=tmp_path)
    assert (bare.file, bare.line) == ("policy.yaml", None)


# ---------------------------------------------------------------- outputs and exit codes


def test_outputs_use_the_heredoc_form_for_multi_line_values():
    text = gh.format_outputs({"verdict": "fail", "failed-rules": "a: x (fail)\nb: y (fail)", "empty": "",
                              "n": 3, "none": None})
    assert text.startswith("verdict=fail\nfailed-rules<<ghadelimiter_")
    assert gh.parse_outputs(text) == {"verdict": "fail", "failed-rules": "a: x (fail)\nb: y (fail)", "empty": "",
                                      "n": "3", "none": ""}
    # a value that looks like a delimiter line cannot end the block early
    tricky = "line\nghadelimiter_\nEOF"
    assert gh.parse_outputs(gh.format_outputs({"v": tricky}))["v"] == tricky


@pytest.mark.parametrize(("gate_exit", "verdict", "warned", "fail_on", "expected"), [
    (0, "pass", 0, "fail", 0),
    (0, "pass", 2, "fail", 0),
    (0, "pass", 2, "warn", 1),
    (0, "pass", 0, "warn", 0),
    (1, "fail", 0, "fail", 1),
    (1, "fail", 0, "never", 0),
    (2, "fail", 0, "never", 2),  # wrong inputs fail whatever fail-on says
    (2, None, 0, "fail", 2),
    (3, None, 0, "warn", 3),
    (130, None, 0, "fail", 130),
    (-9, None, 0, "fail", 3),  # killed by a signal
    (None, "fail", 0, "fail", 1),
    (None, None, 0, "fail", 2),  # no report, nothing known: not a pass
    (0, "fail", 0, "fail", 1),  # the report says fail: never trust the better of two
    (1, "pass", 0, "fail", 1),
])
def test_the_step_keeps_the_gate_exit_code_semantics(gate_exit, verdict, warned, fail_on, expected):
    assert gh.decide_exit(gate_exit=gate_exit, verdict=verdict, warned=warned, fail_on=fail_on) == expected


# ---------------------------------------------------------------- the comment body


def test_the_comment_starts_with_the_hidden_marker_and_points_to_the_artifact():
    body = gh.comment_body("## ✅ Compression gate: PASS\n", pointer="see **gate-report**")
    assert body.splitlines()[0] == gh.MARKER == "<!-- compression-gate -->"
    assert body.endswith("<sub>see **gate-report**</sub>\n")
    assert gh.marker_for("arm64 / int8") == "<!-- compression-gate:arm64---int8 -->"
    assert gh.marker_for("") == gh.MARKER


def test_a_long_report_is_cut_at_a_line_with_a_pointer_to_the_full_html():
    rows = "".join(f"| 🟥 | cand-{i} | {'x' * 50} |\n" for i in range(3000))  # 🟥 counts 2 in UTF-16
    markdown = "## ❌ Compression gate: FAIL\n\n" + rows
    pointer = gh.artifact_pointer(artifact_name="gate-report", artifact_url=None,
                                  run_url="https://github.com/acme/models/actions/runs/42")
    body = gh.comment_body(markdown, pointer=pointer)
    assert gh.github_length(body) <= gh.COMMENT_LIMIT < gh.github_length(markdown)
    assert gh.github_length(body) > gh.COMMENT_LIMIT - 200  # cut, not gutted
    assert body.startswith(gh.MARKER + "\n## ❌")
    kept = body.split("\n\n> [!WARNING]")[0]
    assert kept.splitlines()[-1].endswith("|")  # no half row
    assert "This report was cut here: GitHub limits a comment to 65,536 characters." in body
    assert "`report.html` in the artifact **gate-report** of [this workflow run]" \
           "(https://github.com/acme/models/actions/runs/42)" in body
    small = gh.comment_body(markdown, pointer=pointer, limit=2000)
    assert gh.github_length(small) <= 2000 and "[!WARNING]" in small


def test_the_pointer_prefers_the_artifact_url():
    p = gh.artifact_pointer(artifact_name="r", artifact_url="https://x/artifacts/9", run_url="https://x/runs/1")
    assert "[**r** artifact](https://x/artifacts/9)" in p


def test_the_error_summary_fences_the_log_safely():
    md = gh.error_markdown(command="check", gate_exit=2, problem="No report.", log="error: a\n```\nx")
    assert "exited 2: the inputs are wrong. No report." in md
    assert "````text\nerror: a\n```\nx\n````" in md


# ---------------------------------------------------------------- the REST client


def test_link_headers():
    h = '<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last"'
    assert gh.next_link(h) == "https://api.github.com/x?page=2"
    assert gh.next_link('<https://api.github.com/x?page=1>; rel="prev"') is None
    assert gh.next_link(None) is None


def test_the_marker_comment_on_a_later_page_is_updated_not_duplicated(github):
    repo = "acme/models"
    for i in range(5):
        github.add_comment(repo, 7, f"review comment {i}")
    mine = github.add_comment(repo, 7, gh.MARKER + "\nold report", login="github-actions[bot]")
    github.add_comment(repo, 7, "> " + gh.MARKER + "\n> quoted by a person")  # quoting does not hijack it
    client = gh.GitHubClient(github.url, "t0ken")
    action, comment = client.upsert_comment(repo, 7, gh.MARKER + "\nnew report", gh.MARKER)
    assert (action, comment["id"]) == ("updated", mine["id"])
    assert github.bodies(repo, 7)[5] == gh.MARKER + "\nnew report"
    gets = [r for r in github.requests if r["method"] == "GET"]
    assert [r["query"].get("page", "1") for r in gets] == ["1", "2", "3"]  # 2 a page: found on page 3
    assert gets[0]["query"]["per_page"] == "100"
    assert all(r["auth"] == "Bearer t0ken" and r["accept"] == "application/vnd.github+json"
               and r["api_version"] == gh.API_VERSION for r in github.requests)
    # the same body again: nothing to write
    assert client.upsert_comment(repo, 7, gh.MARKER + "\nnew report", gh.MARKER)[0] == "unchanged"
    assert len(github.writes()) == 1


def test_without_a_marker_comment_one_is_created(github):
    client = gh.GitHubClient(github.url, "t")
    github.add_comment("acme/models", 7, "lgtm")
    assert client.upsert_comment("acme/models", 7, gh.MARKER + "\nr", gh.MARKER)[0] == "created"
    assert client.upsert_comment("acme/models", 7, gh.MARKER + "\nr2", gh.MARKER)[0] == "updated"
    assert github.bodies("acme/models", 7) == ["lgtm", gh.MARKER + "\nr2"]
    # another gate's comment (another id) is another comment
    other = gh.marker_for("arm64")
    assert client.upsert_comment("acme/models", 7, other + "\nr", other)[0] == "created"
    assert len(github.bodies("acme/models", 7)) == 3


def test_server_errors_are_retried_and_403_is_reported(github):
    client = gh.GitHubClient(github.url, "t", backoff=0.01)
    github.fail_next = [502, 503]
    assert client.upsert_comment("acme/models", 1, gh.MARKER + "\nr", gh.MARKER)[0] == "created"
    github.forbidden = True
    with pytest.raises(gh.GitHubError) as info:
        client.upsert_comment("acme/models", 1, gh.MARKER + "\nr2", gh.MARKER)
    assert info.value.status == 403 and info.value.message == "Resource not accessible by integration"
    github.fail_next = [500, 500, 500]
    with pytest.raises(gh.GitHubError) as info:
        client.find_comment("acme/models", 1, gh.MARKER)
    assert info.value.status == 500


def test_the_token_is_never_sent_to_another_host(github):
    client = gh.GitHubClient(github.url, "t")
    with pytest.raises(gh.GitHubError, match="refusing to send the token"):
        client.request("GET", "https://evil.example/repos/x")
    assert github.requests == []


def test_an_unreachable_api_is_an_error_not_a_hang():
    client = gh.GitHubClient("http://127.0.0.1:9", "t", timeout=2, attempts=2, backoff=0.01)
    with pytest.raises(gh.GitHubError) as info:
        client.find_comment("acme/models", 1, gh.MARKER)
    assert info.value.status is None


def test_the_pull_request_comes_from_the_trusted_event(github):
    repo = "acme/models"
    assert gh.pull_request_number("pull_request", pull_request_event(12)) == 12
    assert gh.pull_request_number("pull_request_target", pull_request_event(13)) == 13
    assert gh.pull_request_number("push", {"ref": "refs/heads/main"}) is None
    assert gh.pull_request_number("issue_comment", {"issue": {"number": 5, "pull_request": {}}}) == 5
    assert gh.pull_request_number("issue_comment", {"issue": {"number": 5}}) is None
    same_repo = {"workflow_run": {"event": "pull_request", "head_sha": "a" * 40, "head_branch": "int8",
                                  "pull_requests": [{"number": 21, "head": {"sha": "a" * 40},
                                                     "base": {"repo": {"name": "models"}}}]}}
    assert gh.pull_request_number("workflow_run", same_repo, None, repo) == 21
    # a fork: pull_requests is empty; found by the head owner, branch and sha of the run
    fork = {"workflow_run": {"event": "pull_request", "head_sha": "c" * 40, "head_branch": "main",
                             "pull_requests": [], "head_repository": {"owner": {"login": "forker"}}}}
    github.pulls[repo] = [
        {"number": 30, "head": {"ref": "main", "sha": "d" * 40, "repo": {"owner": {"login": "forker"}}}},
        {"number": 31, "head": {"ref": "main", "sha": "c" * 40, "repo": {"owner": {"login": "forker"}}}},
        {"number": 32, "head": {"ref": "main", "sha": "c" * 40, "repo": {"owner": {"login": "other"}}}}]
    assert gh.pull_request_number("workflow_run", fork, gh.GitHubClient(github.url, "t"), repo) == 31
    assert github.requests[-1]["query"] == {"state": "open", "head": "forker:main", "per_page": "100"}
    push_run = {"workflow_run": {"event": "push", "pull_requests": []}}
    assert gh.pull_request_number("workflow_run", push_run, None, repo) is None


# ---------------------------------------------------------------- main(), as the action's step runs it


def _env(tmp_path: Path, github: FakeGitHub | None, event: dict | None, **more) -> dict:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event or {}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update({"GITHUB_OUTPUT": str(tmp_path / "output.txt"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
                "GITHUB_EVENT_PATH": str(event_path), "GITHUB_EVENT_NAME": "pull_request",
                "GITHUB_REPOSITORY": "acme/models", "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_RUN_ID": "4242", "GITHUB_API_URL": github.url if github else "http://127.0.0.1:9",
                "GITHUB_TOKEN": "t0ken", "GITHUB_WORKSPACE": str(tmp_path)})
    env.update(more)
    (tmp_path / "output.txt").write_text("")
    (tmp_path / "summary.md").write_text("")
    return env


def _run(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gate.github", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_main_publishes_the_demo_report(demo, github, tmp_path):
    env = _env(tmp_path, github, pull_request_event(7), GITHUB_WORKSPACE=str(demo))
    proc = _run(["--report-dir", str(demo / "report"), "--gate-exit", "1", "--comment"], env, demo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outputs = gh.parse_outputs((tmp_path / "output.txt").read_text())
    assert outputs["verdict"] == "fail" and outputs["exit-code"] == "1"
    assert (outputs["passed"], outputs["failed"], outputs["warned"]) == ("29", "5", "1")
    assert outputs["failed-rules"].splitlines() == ["pruned-90: accuracy max_drop 0.02 (fail)",
                                                    "pruned-90: accuracy max_drop 0.03 per group (fail)",
                                                    "pruned-90: accuracy max_drop 0.1 per class (fail)",
                                                    "pruned-90: flip_rate max 0.05 (fail)",
                                                    "pruned-90: negative_flip_rate max 0.03 (fail)"]
    assert outputs["report-dir"] == str((demo / "report").resolve())
    assert outputs["comment-url"].startswith("https://github.com/acme/models/pull/7#issuecomment-")
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("::warning ")]
    assert len(errors) == 5 and len(warnings) == 1
    assert errors[0].startswith("::error file=policy.yaml,line=19,title=gate%3A pruned-90 fails accuracy max_drop")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith((demo / "report" / "report.md").read_text().rstrip("\n"))
    assert "[this workflow run](https://github.com/acme/models/actions/runs/4242)" in summary
    [body] = github.bodies("acme/models", 7)
    assert body.startswith(gh.MARKER + "\n## ❌ Compression gate: FAIL")
    assert "pruned-90" in body


def test_main_degrades_to_the_summary_when_the_token_is_read_only(demo, github, tmp_path):
    github.forbidden = True
    env = _env(tmp_path, github, pull_request_event(8, head_repo="forker/models"))
    proc = _run(["--report-dir", str(demo / "report"), "--gate-exit", "1", "--comment", "--fail-on", "never"],
                env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [notice] = [line for line in proc.stdout.splitlines() if line.startswith("::notice ")]
    assert "GitHub answered 403 (Resource not accessible by integration)" in notice
    assert "workflow_run" in notice
    summary = (tmp_path / "summary.md").read_text()
    assert "## ❌ Compression gate: FAIL" in summary and "could not be posted" in summary
    assert github.bodies("acme/models", 8) == []
    assert gh.parse_outputs((tmp_path / "output.txt").read_text())["comment-url"] == ""


def test_main_without_a_report_fails_with_the_gates_error(github, tmp_path):
    log = tmp_path / "stderr.txt"
    log.write_text(f"error: {tmp_path}/policy.yaml:3: rules[1].metric unknown metric 'acuracy'\n  fix: edit it\n")
    env = _env(tmp_path, github, pull_request_event(9))
    proc = _run(["--report-dir", "gate-report", "--gate-exit", "2", "--gate-log", str(log), "--comment"],
                env, tmp_path)
    assert proc.returncode == 2
    assert "::error file=policy.yaml,line=3,title=gate%3A wrong input::rules[1].metric unknown metric" in proc.stdout
    outputs = gh.parse_outputs((tmp_path / "output.txt").read_text())
    assert (outputs["verdict"], outputs["exit-code"], outputs["failed"]) == ("error", "2", "0")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("## ❌ Compression gate: ERROR") and "unknown metric 'acuracy'" in summary
    [body] = github.bodies("acme/models", 9)  # the author learns why in the pull request too
    assert "exited 2: the inputs are wrong" in body


def test_main_outside_a_pull_request_skips_the_comment(demo, github, tmp_path):
    env = _env(tmp_path, github, {"ref": "refs/heads/main"}, GITHUB_EVENT_NAME="push")
    proc = _run(["--report-dir", str(demo / "report"), "--gate-exit", "1", "--comment", "--no-annotations"],
                env, tmp_path)
    assert proc.returncode == 1
    assert "no pull request for this push event: comment skipped" in proc.stdout
    assert "::error" not in proc.stdout and github.requests == []


def test_main_in_comment_mode_finds_a_forks_pull_request_from_the_event(demo, github, tmp_path):
    github.pulls["acme/models"] = [
        {"number": 44, "head": {"ref": "main", "sha": "e" * 40, "repo": {"owner": {"login": "forker"}}}}]
    event = {"action": "completed", "workflow_run": {
        "id": 99, "event": "pull_request", "conclusion": "failure", "head_branch": "main", "head_sha": "e" * 40,
        "html_url": "https://github.com/acme/models/actions/runs/99", "pull_requests": [],
        "head_repository": {"full_name": "forker/models", "owner": {"login": "forker"}}}}
    env = _env(tmp_path, github, event, GITHUB_EVENT_NAME="workflow_run")
    proc = _run(["--command", "comment", "--report-dir", str(demo / "report"), "--comment"], env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the verdict failed the other run, not this one
    assert "::error" not in proc.stdout
    [body] = github.bodies("acme/models", 44)
    assert "[this workflow run](https://github.com/acme/models/actions/runs/99)" in body


@pytest.mark.parametrize("report", [
    {"verdict": "pass", "candidates": [{"rules": [7]}]},
    {"verdict": "pass", "candidates": [{"name": "a", "verdict": "pass", "rules": [{"status": "maybe"}]}]},
    {"verdict": "pass", "candidates": [{"name": "a", "verdict": "fail", "rules": []}]},
    {"verdict": "pass", "candidates": ["a"]},
], ids=["rule-not-a-dict", "unknown-status", "pass-over-a-failure", "candidate-not-a-dict"])
def test_a_damaged_report_fails_the_step_and_is_never_read_as_a_pass(tmp_path, report):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    (tmp_path / "r" / "report.md").write_text("# x\n")
    out = io.StringIO()
    code = gh.main(["--report-dir", str(tmp_path / "r"), "--gate-exit", "0"], _env(tmp_path, None, {}), out=out)
    assert code == 2
    assert "not a report.json of this gate" in out.getvalue()
    assert "verdict PASS" not in out.getvalue()


def test_main_reports_a_bug_in_itself_as_exit_3(tmp_path, demo, monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("a bug")

    monkeypatch.setattr(gh, "report_annotations", broken)
    out = io.StringIO()
    code = gh.main(["--report-dir", str(demo / "report"), "--gate-exit", "1"], _env(tmp_path, None, {}), out=out)
    assert code == 3
    assert "::error title=gate%3A the GitHub step failed (a bug)::AttributeError: a bug" in out.getvalue()
