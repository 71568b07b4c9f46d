"""GitHub Actions glue: step summary, outputs, annotations and the sticky pull-request comment.

`action.yml` runs `gate check` (or `gate judge`), then

    python -m gate.github --report-dir DIR --gate-exit CODE [--comment] [--fail-on fail|warn|never]

which reads DIR/report.json and DIR/report.md and
- writes the Markdown report to GITHUB_STEP_SUMMARY;
- writes verdict, exit-code, report-dir, passed, failed, warned, ... to GITHUB_OUTPUT;
- prints one ::error / ::warning workflow command per failed or warned rule
  (on the policy file's rule line when the policy is in the workspace);
- creates or updates one comment on the pull request, found by a hidden marker;
  a read-only token (a fork's pull request: 403) degrades to a notice and the
  step summary, never to a failure of the gate;
- exits with the gate's code semantics: the gate's own 2 (wrong inputs) or 3
  (bug) always fails; a failing verdict fails; with --fail-on warn a warning
  fails too; --fail-on never only reports.

With --command comment it only posts the summary and the comment for a report
made elsewhere (a workflow_run job that must not run a fork's code): the pull
request is then found from the trusted event, never from the artifact.

Only the standard library: urllib for GitHub's REST API.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gate.contract import ContractError, load_report_dir
from gate.errors import EXIT_BUG, EXIT_FAIL, EXIT_INPUT, EXIT_PASS
from gate.errors import EXIT_MEANING as GATE_EXIT_MEANING
from gate.tally import Tally, count, outcome

MARKER = "<!-- compression-gate -->"
COMMENT_LIMIT = 65_536  # GitHub refuses comment bodies longer than this
API_VERSION = "2022-11-28"
MAX_PAGES = 100  # 10,000 comments at per_page=100



# ---------------------------------------------------------------- workflow commands

def escape_data(text: str) -> str:
    """The message of a workflow command: %, CR and LF are escaped (GitHub's toolkit `escapeData`)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value (file=, title=): also ':' and ',' (toolkit `escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True, kw_only=True)
class Annotation:
    level: str  # "error" | "warning" | "notice"
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None

    def render(self) -> str:
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
            if self.line:
                props.append(f"line={self.line}")
        if self.title:
            props.append(f"title={escape_property(self.title)}")
        head = f"::{self.level}" + (" " + ",".join(props) if props else "")
        return f"{head}::{escape_data(self.message)}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---------------------------------------------------------------- reading the report

class ReportError(Exception):
    """report.json / report.md missing, unreadable, of another format or damaged."""


def read_report(report_dir: Path) -> tuple[dict, str]:
    """(report.json as a dict, report.md text), through the one validated loader (gate/contract.py).
    Raises ReportError with the file, the problem and the fix."""
    try:
        return load_report_dir(report_dir)
    except ContractError as exc:
        raise ReportError(exc.render()) from None


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    candidate: str
    rule: str
    metric: str
    status: str
    blocking: bool
    reason: str
    bound_text: str
    index: int | None
    line: int | None  # of the rule in the policy file

    @property
    def kind(self) -> str:
        """passed | failed | warned: what the pull request should make of it."""
        return outcome(self.status, self.blocking)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rule_outcomes(report: dict) -> list[RuleOutcome]:
    out = []
    for cand in report.get("candidates") or []:
        if not isinstance(cand, dict):
            continue
        for r in cand.get("rules") or []:
            if not isinstance(r, dict):
                continue
            status = str(r.get("status", "error"))
            out.append(RuleOutcome(
                candidate=str(cand.get("name", "?")), rule=str(r.get("rule", r.get("metric", "?"))),
                metric=str(r.get("metric", "?")), status=status,
                # a report without the flag: anything but pass/warn blocks (never turn doubt into a pass)
                blocking=bool(r.get("blocking", status not in ("pass", "warn"))),
                reason=str(r.get("reason") or ""), bound_text=str(r.get("bound_text") or ""),
                index=_int(r.get("index")), line=_int(r.get("line"))))
    return out


def tally(report: dict) -> Tally:
    """The report's own tally (the one the gate printed and rendered); counted the same way when absent."""
    stored = report.get("tally")
    if isinstance(stored, dict):
        try:
            return Tally.from_dict(stored)
        except (TypeError, ValueError, KeyError):
            pass  # a damaged tally: count from the rules, never trust it
    total = Tally()
    outcomes = rule_outcomes(report)
    for cand in report.get("candidates") or []:
        if not isinstance(cand, dict):
            continue
        name = str(cand.get("name", "?"))
        total += count(((o.rule, o.status, o.blocking) for o in outcomes if o.candidate == name),
                       candidate=name, error=cand.get("error"))
    return total


def _in_workspace(path: str | None, workspace: Path | None) -> str | None:
    """The path relative to the workspace, or None (annotations only land on files of the repository)."""
    if not path or workspace is None:
        return None
    try:
        rel = Path(path).resolve().relative_to(workspace.resolve())
    except (ValueError, OSError):
        return None
    return rel.as_posix()


def report_annotations(report: dict, workspace: Path | None = None) -> list[Annotation]:
    """One annotation per failed (::error) or warned (::warning) rule, plus one per input error."""
    policy = (report.get("provenance") or {}).get("policy") or {}
    file = _in_workspace(policy.get("path"), workspace)
    out = []
    for o in rule_outcomes(report):
        if o.kind == "passed":
            continue
        verb = {"fail": "fails", "error": "could not check", "warn": "warns on",
                "inconclusive": "is inconclusive on"}.get(o.status, o.status)
        message = o.reason or o.status
        if o.bound_text:
            message += f"\nbound: {o.bound_text}"
        out.append(Annotation(level="error" if o.kind == "failed" else "warning",
                              title=f"gate: {o.candidate} {verb} {o.rule}", message=message,
                              file=file, line=o.line if file else None))
    for cand in report.get("candidates") or []:
        if cand.get("error") and not cand.get("rules"):
            out.append(Annotation(level="error", title=f"gate: {cand.get('name', '?')} could not be measured",
                                  message=str(cand["error"])))
    for error in report.get("input_errors") or []:
        out.append(log_annotation(str(error), workspace) or Annotation(level="error", title="gate: wrong input",
                                                                      message=str(error)))
    return out


_ERROR_LINE = re.compile(r"^(?P<path>[^\s:][^:]*?)(?::(?P<line>\d+))?: (?P<message>.+)$")


def log_annotation(error: str, workspace: Path | None = None) -> Annotation | None:
    """`PATH[:LINE]: message` (how the gate names the file and place) -> an annotation on that file."""
    first, _, rest = error.partition("\n")
    m = _ERROR_LINE.match(first)
    if not m:
        return None
    file = _in_workspace(m.group("path"), workspace)
    message = (m.group("message") + ("\n" + rest if rest else "")).strip()
    if file is None:
        message = f"{m.group('path')}: {message}"
    return Annotation(level="error", title="gate: wrong input", message=message,
                      file=file, line=int(m.group("line")) if file and m.group("line") else None)


def log_annotations(log: str, gate_exit: int, workspace: Path | None = None) -> list[Annotation]:
    """The gate's stderr when it wrote no report: every `error: ...` block becomes one ::error."""
    blocks: list[str] = []
    for line in log.splitlines():
        if line.startswith("error: "):
            blocks.append(line[len("error: "):])
        elif blocks and line.startswith("  "):  # the "  fix: ..." continuation of an error
            blocks[-1] += "\n" + line.strip()
    out = []
    for block in blocks:
        ann = log_annotation(block, workspace) if gate_exit == EXIT_INPUT else None
        out.append(ann or Annotation(level="error", title=f"gate: exit {gate_exit}", message=block))
    if not out:
        tail = "\n".join(log.strip().splitlines()[-5:]) or "(no output)"
        out.append(Annotation(level="error", title=f"gate: exit {gate_exit}",
                              message=f"the gate exited {gate_exit} "
                                      f"({GATE_EXIT_MEANING.get(gate_exit, 'unexpected')}):\n{tail}"))
    return out


# ---------------------------------------------------------------- step outputs and exit code

def format_outputs(values: dict[str, object]) -> str:
    """GITHUB_OUTPUT lines; a value with a line break uses the `name<<DELIMITER` form."""
    lines = []
    for name, value in values.items():
        text = "" if value is None else str(value)
        if "\n" in text or "\r" in text:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in text:  # pragma: no cover - a 128-bit collision
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{delimiter}\n{text}\n{delimiter}")
        else:
            lines.append(f"{name}={text}")
    return "\n".join(lines) + "\n"


def parse_outputs(text: str) -> dict[str, str]:
    """The reverse of format_outputs, as the runner reads GITHUB_OUTPUT (used by tests and checks)."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"GITHUB_OUTPUT: no closing delimiter {delimiter!r} for {name!r}")
            i += 1
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise ValueError(f"GITHUB_OUTPUT: unparsable line {line!r}")
    return out


def decide_exit(*, gate_exit: int | None, verdict: str | None, warned: int, fail_on: str) -> int:
    """The step's exit code. The gate's own 2 and 3 (and anything unexpected) always fail."""
    if gate_exit not in (None, EXIT_PASS, EXIT_FAIL):
        return gate_exit if isinstance(gate_exit, int) and 0 < gate_exit < 256 else EXIT_BUG
    if verdict is None:
        return EXIT_INPUT
    failing = verdict == "fail" or gate_exit == EXIT_FAIL
    if fail_on == "never":
        return EXIT_PASS
    if failing:
        return EXIT_FAIL
    if fail_on == "warn" and warned:
        return EXIT_FAIL
    return EXIT_PASS


# ---------------------------------------------------------------- the comment body

def marker_for(comment_id: str = "") -> str:
    """The hidden marker that finds our comment again; an id keeps several gates of one PR apart."""
    comment_id = re.sub(r"[^A-Za-z0-9_.-]", "-", comment_id.strip())
    return f"<!-- compression-gate:{comment_id} -->" if comment_id else MARKER


def github_length(text: str) -> int:
    """Length as GitHub may count it (UTF-16 code units: never less than the code points)."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, room: int) -> str:
    """The longest prefix of text whose GitHub length is at most room."""
    used, end = 0, 0
    for ch in text:
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > room:
            break
        used += size
        end += 1
    return text[:end]


def artifact_pointer(*, artifact_name: str, artifact_url: str | None, run_url: str | None) -> str:
    name = artifact_name or "gate-report"
    if artifact_url:
        return f"The full report (every rule, every measurement, provenance) is `report.html` in the " \
               f"[**{name}** artifact]({artifact_url})."
    if run_url:
        return f"The full report (every rule, every measurement, provenance) is `report.html` in the " \
               f"artifact **{name}** of [this workflow run]({run_url})."
    return f"The full report (every rule, every measurement, provenance) is `report.html` in the artifact **{name}**."


def comment_body(markdown: str, *, marker: str = MARKER, pointer: str = "", limit: int = COMMENT_LIMIT) -> str:
    """Marker + report + pointer, cut at a line boundary to fit GitHub's limit."""
    head = marker + "\n"
    tail = f"\n\n<sub>{pointer}</sub>\n" if pointer else "\n"
    body = head + markdown.rstrip("\n") + tail
    if github_length(body) <= limit:
        return body
    note = ("\n\n> [!WARNING]\n> This report was cut here: GitHub limits a comment to "
            f"{limit:,} characters. {pointer}".rstrip())
    room = limit - github_length(head) - github_length(note) - github_length(tail)
    if room <= 0:
        raise ValueError(f"limit {limit} is too small for the marker and the pointer")
    cut = _prefix_within(markdown, room)
    if "\n" in cut:
        cut = cut[:cut.rfind("\n")]  # never a half table row
    return head + cut.rstrip("\n") + note + tail


def error_markdown(*, command: str, gate_exit: int | None, problem: str, log: str = "") -> str:
    """Summary/comment when there is no report to show: what failed and the gate's own words."""
    meaning = GATE_EXIT_MEANING.get(gate_exit, "unexpected exit") if gate_exit is not None else "no report"
    lines = ["## ❌ Compression gate: ERROR", "",
             f"`gate {command}` exited {gate_exit if gate_exit is not None else '?'}: {meaning}. {problem}".rstrip()]
    log = log.strip()
    if log:
        tail = "\n".join(log.splitlines()[-40:])
        fence = "```"
        while fence in tail:
            fence += "`"
        lines += ["", f"{fence}text", tail, fence]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the REST client

class GitHubError(Exception):
    def __init__(self, status: int | None, message: str, url: str = "") -> None:
        self.status, self.message, self.url = status, message, url
        super().__init__(f"{status or 'no answer'}: {message}" + (f" ({url})" if url else ""))


_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([^";]+)"?')


def next_link(header: str | None) -> str | None:
    """The rel="next" URL of a Link header, or None."""
    for url, rels in _LINK.findall(header or ""):
        if "next" in rels.split():
            return url
    return None


@dataclass
class GitHubClient:
    api_url: str
    token: str
    timeout: float = 30.0
    attempts: int = 3
    backoff: float = 1.0
    requests: list = field(default_factory=list)  # (method, url): what was asked, for the log

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")

    def url(self, path: str, **query) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        return f"{self.api_url}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")

    def request(self, method: str, url: str, body: dict | None = None) -> tuple[object, dict]:
        if not url.startswith(self.api_url + "/"):
            raise GitHubError(None, f"refusing to send the token to {url}: not under {self.api_url}")
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "compression-gate", "Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(1, self.attempts + 1):
            self.requests.append((method, url))
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return (json.loads(raw) if raw.strip() else None), dict(resp.headers.items())
            except urllib.error.HTTPError as exc:
                with exc:
                    text = exc.read(4000).decode("utf-8", "replace")
                try:
                    message = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text.strip() or exc.reason
                if exc.code >= 500 and attempt < self.attempts:
                    time.sleep(self.backoff * attempt)
                    continue
                raise GitHubError(exc.code, str(message), url) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.attempts:
                    time.sleep(self.backoff * attempt)
                    continue
                raise GitHubError(None, str(getattr(exc, "reason", exc)), url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def paginate(self, url: str):
        for _ in range(MAX_PAGES):
            data, headers = self.request("GET", url)
            if not isinstance(data, list):
                raise GitHubError(None, f"expected a list, got {type(data).__name__}", url)
            yield from data
            url = next_link(headers.get("Link") or headers.get("link"))
            if url is None:
                return

    # issue comments (a pull request is an issue for comments)
    def find_comment(self, repo: str, number: int, marker: str) -> dict | None:
        url = self.url(f"/repos/{repo}/issues/{number}/comments", per_page=100)
        for comment in self.paginate(url):
            if str(comment.get("body") or "").startswith(marker):
                return comment
        return None

    def upsert_comment(self, repo: str, number: int, body: str, marker: str) -> tuple[str, dict]:
        """('created' | 'updated' | 'unchanged', the comment)."""
        existing = self.find_comment(repo, number, marker)
        if existing is None:
            data, _ = self.request("POST", self.url(f"/repos/{repo}/issues/{number}/comments"), {"body": body})
            return "created", data if isinstance(data, dict) else {}
        if existing.get("body") == body:
            return "unchanged", existing
        data, _ = self.request("PATCH", self.url(f"/repos/{repo}/issues/comments/{existing['id']}"), {"body": body})
        return "updated", data if isinstance(data, dict) else {}

    def find_pull_request(self, repo: str, head_owner: str, head_branch: str, head_sha: str) -> int | None:
        url = self.url(f"/repos/{repo}/pulls", state="open", head=f"{head_owner}:{head_branch}", per_page=100)
        for pr in self.paginate(url):
            if (pr.get("head") or {}).get("sha") == head_sha:
                return int(pr["number"])
        return None


def pull_request_number(event_name: str, event: dict, client: GitHubClient | None = None,
                        repo: str = "") -> int | None:
    """The pull request this run is about, from the trusted event (never from an artifact)."""
    if event_name in ("pull_request", "pull_request_target", "pull_request_review",
                      "pull_request_review_comment"):
        pr = event.get("pull_request") or {}
        number = pr.get("number", event.get("number"))
        return int(number) if number is not None else None
    if event_name == "issue_comment":
        issue = event.get("issue") or {}
        return int(issue["number"]) if "pull_request" in issue and "number" in issue else None
    if event_name == "workflow_run":
        run = event.get("workflow_run") or {}
        if run.get("event") not in ("pull_request", "pull_request_target"):
            return None
        for pr in run.get("pull_requests") or []:  # filled for same-repository branches only
            base_repo = ((pr.get("base") or {}).get("repo") or {}).get("name")
            if pr.get("number") is not None and (not base_repo or repo.endswith("/" + base_repo)):
                if (pr.get("head") or {}).get("sha") in (None, run.get("head_sha")):
                    return int(pr["number"])
        owner = ((run.get("head_repository") or {}).get("owner") or {}).get("login")
        if client and owner and run.get("head_branch") and run.get("head_sha"):
            return client.find_pull_request(repo, owner, run["head_branch"], run["head_sha"])
    return None


# ---------------------------------------------------------------- the step

@dataclass
class Step:
    """Where the step writes: stdout (workflow commands and log), GITHUB_OUTPUT, GITHUB_STEP_SUMMARY."""
    out: object = None
    output_file: str | None = None
    summary_file: str | None = None

    def log(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def annotate(self, ann: Annotation) -> None:
        self.log(ann.render())

    def outputs(self, values: dict) -> None:
        if self.output_file:
            with open(self.output_file, "a", encoding="utf-8", newline="\n") as handle:
                handle.write(format_outputs(values))
        else:  # outside Actions: show them
            for k, v in values.items():
                self.log(f"output {k}: {v}")

    def summary(self, markdown: str) -> None:
        if self.summary_file:
            with open(self.summary_file, "a", encoding="utf-8", newline="\n") as handle:
                handle.write(markdown.rstrip("\n") + "\n\n")


def _read_event(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_url(env: dict, event: dict, event_name: str) -> str | None:
    if event_name == "workflow_run" and (event.get("workflow_run") or {}).get("html_url"):
        return event["workflow_run"]["html_url"]  # the run that made the report and holds the artifact
    server, repo, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if server and repo and run_id:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gate.github",
                                description="Publish a gate report in GitHub Actions: step summary, outputs, "
                                            "annotations and a sticky pull-request comment.")
    p.add_argument("--report-dir", required=True, type=Path, metavar="DIR", help="the --out of gate check / judge")
    p.add_argument("--command", default="check", choices=("check", "judge", "measure", "comment"),
                   help="what ran before: check/judge (a report), measure (results only), comment (publish a "
                        "report made elsewhere; never fails on the verdict)")
    p.add_argument("--gate-exit", type=int, metavar="CODE", help="the exit code of the gate command")
    p.add_argument("--gate-log", type=Path, metavar="FILE", help="the gate command's stderr (for error messages)")
    p.add_argument("--results", metavar="FILE", help="measure: the results file written")
    p.add_argument("--comment", action="store_true", help="create or update the pull-request comment")
    p.add_argument("--comment-id", default="", metavar="ID", help="tells several gates' comments on one PR apart")
    p.add_argument("--pr", type=int, metavar="N", help="the pull request (default: from the event)")
    p.add_argument("--fail-on", default="fail", choices=("fail", "warn", "never"),
                   help="fail the step on failed rules (default), also on warnings, or never (report only)")
    p.add_argument("--artifact-name", default="gate-report", metavar="NAME")
    p.add_argument("--artifact-url", default="", metavar="URL")
    p.add_argument("--no-annotations", action="store_true", help="do not print ::error / ::warning commands")
    return p


def _post_comment(step: Step, env: dict, *, body: str, marker: str, pr: int | None) -> tuple[str, str | None]:
    """(status line, comment url). Never raises: the comment is a courtesy, the gate's verdict is not."""
    event_name = env.get("GITHUB_EVENT_NAME", "")
    event = _read_event(env.get("GITHUB_EVENT_PATH"))
    repo = env.get("GITHUB_REPOSITORY", "")
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or ""
    if not repo:
        return "no GITHUB_REPOSITORY: not in GitHub Actions, comment skipped", None
    if not token:
        step.annotate(Annotation(level="notice", title="gate: no pull-request comment",
                                 message="no token (the github-token input is empty): the report is in the "
                                         "step summary only"))
        return "no token, comment skipped", None
    client = GitHubClient(env.get("GITHUB_API_URL") or "https://api.github.com", token)
    try:
        number = pr or pull_request_number(event_name, event, client, repo)
        if number is None:
            return f"no pull request for this {event_name or 'run'} event: comment skipped", None
        action, comment = client.upsert_comment(repo, number, body, marker)
    except GitHubError as exc:
        if exc.status in (401, 403, 404):
            why = ("the token may not write to pull requests: a pull request from a fork gets a read-only "
                   "token. Give the job `permissions: pull-requests: write`, and for forks post the comment "
                   "from a workflow_run job (see the gate's README)")
            step.annotate(Annotation(level="notice", title="gate: no pull-request comment",
                                     message=f"GitHub answered {exc.status} ({exc.message}); {why}. "
                                             "The report is in the step summary."))
            step.summary(f"> [!NOTE]\n> The pull-request comment could not be posted (GitHub answered "
                         f"{exc.status}: {exc.message}). This summary is the report.")
        else:
            step.annotate(Annotation(level="warning", title="gate: no pull-request comment",
                                     message=f"posting the comment failed: {exc}. The report is in the step "
                                             "summary; the gate's verdict is unaffected."))
        return f"comment not posted: {exc}", None
    url = comment.get("html_url")
    return f"pull request #{number}: comment {action}" + (f": {url}" if url else ""), url


def main(argv: list[str] | None = None, env: dict | None = None, out=None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ if env is None else env)
    step = Step(out=out, output_file=env.get("GITHUB_OUTPUT") or None,
                summary_file=env.get("GITHUB_STEP_SUMMARY") or None)
    try:
        return _main(args, env, step)
    except Exception as exc:  # a bug here must not read as a pass
        import traceback

        traceback.print_exc()
        step.annotate(Annotation(level="error", title="gate: the GitHub step failed (a bug)",
                                 message=f"{type(exc).__name__}: {exc}"))
        return EXIT_BUG


def _main(args, env: dict, step: Step) -> int:
    workspace = Path(env["GITHUB_WORKSPACE"]) if env.get("GITHUB_WORKSPACE") else Path.cwd()
    report_dir = args.report_dir
    log = ""
    if args.gate_log and args.gate_log.is_file():
        log = args.gate_log.read_text(encoding="utf-8", errors="replace")
    annotate = not args.no_annotations and args.command != "comment"
    gate_exit = args.gate_exit

    if args.command == "measure":
        step.outputs({"exit-code": gate_exit if gate_exit is not None else "", "results": args.results or "",
                      "verdict": "measured" if gate_exit == EXIT_PASS else "error"})
        if gate_exit not in (None, EXIT_PASS):
            for ann in log_annotations(log, gate_exit, workspace):
                step.annotate(ann)
            step.summary(error_markdown(command="measure", gate_exit=gate_exit, problem="No results were written.",
                                        log=log))
            return decide_exit(gate_exit=gate_exit, verdict=None, warned=0, fail_on=args.fail_on)
        return EXIT_PASS

    event_name = env.get("GITHUB_EVENT_NAME", "")
    pointer = artifact_pointer(artifact_name=args.artifact_name, artifact_url=args.artifact_url or None,
                               run_url=_run_url(env, _read_event(env.get("GITHUB_EVENT_PATH")), event_name))
    try:
        report, markdown = read_report(report_dir)
    except ReportError as exc:
        report, markdown = None, error_markdown(command=args.command if args.command != "comment" else "check",
                                                gate_exit=gate_exit, problem=str(exc), log=log)
        if annotate or args.command == "comment":
            if log and gate_exit not in (None, EXIT_PASS, EXIT_FAIL):
                anns = log_annotations(log, gate_exit, workspace)
            else:
                anns = [Annotation(level="error", title="gate: no report", message=str(exc))]
            for ann in anns:
                step.annotate(ann)

    counts = tally(report) if report else Tally()
    if report is not None and gate_exit in (None, EXIT_PASS, EXIT_FAIL):
        verdict = report["verdict"]
    else:
        verdict = "error"
    step.outputs({
        "verdict": verdict,
        "exit-code": gate_exit if gate_exit is not None else "",
        "report-dir": str(report_dir.resolve()),
        "passed": counts.passed, "failed": counts.failed, "warned": counts.warned,
        "failed-rules": "\n".join(counts.failed_rules),
    })

    if report is not None and annotate:
        for ann in report_annotations(report, workspace):
            step.annotate(ann)
    step.summary(markdown.rstrip("\n") + f"\n\n<sub>{pointer}</sub>\n")

    comment_url = None
    if args.comment:
        body = comment_body(markdown, marker=marker_for(args.comment_id), pointer=pointer)
        status, comment_url = _post_comment(step, env, body=body, marker=marker_for(args.comment_id), pr=args.pr)
        step.log(f"gate: {status}")
    step.outputs({"comment-url": comment_url or ""})

    step.log(f"gate: verdict {verdict.upper()}: {counts.passed} passed, {counts.failed} failed, "
             f"{counts.warned} warned (report: {report_dir})")
    if args.command == "comment":
        return EXIT_PASS if report is not None else EXIT_INPUT
    return decide_exit(gate_exit=gate_exit, verdict=report["verdict"] if report else None,
                       warned=counts.warned, fail_on=args.fail_on)


if __name__ == "__main__":
    raise SystemExit(main())
