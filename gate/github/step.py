"""The step: where its log, outputs and summary go, the pull-request comment it posts, and its exit code.

Step writes workflow commands and the log to stdout, outputs to GITHUB_OUTPUT and Markdown to
GITHUB_STEP_SUMMARY. post_comment never raises: the comment is a courtesy, the gate's verdict is not, so a
read-only token (a fork's pull request), a rate limit or an unreachable API each end in a notice or a
warning and the step summary. decide_exit alone turns the gate's exit code and verdict into the step's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import EXIT_BUG, EXIT_FAIL, EXIT_INPUT, EXIT_PASS
from gate.github.api import RATE_LIMIT_WAIT, GitHubClient, GitHubError, RateLimited, pull_request_number
from gate.github.commands import Annotation, format_outputs


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


def read_event(path: str | None) -> dict:
    """GITHUB_EVENT_PATH's payload; {} when absent or unreadable."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_url(env: dict, event: dict, event_name: str) -> str | None:
    """The workflow run that made the report (and holds its artifact)."""
    if event_name == "workflow_run" and (event.get("workflow_run") or {}).get("html_url"):
        return event["workflow_run"]["html_url"]  # the run that made the report and holds the artifact
    server, repo, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if server and repo and run_id:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}"
    return None


_NO_COMMENT = "gate: no pull-request comment"


def post_comment(step: Step, env: dict, *, body: str, marker: str, pr: int | None,
                 rate_limit_wait: float = RATE_LIMIT_WAIT,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[str, str | None]:
    """(status line, comment url). Never raises: the comment is a courtesy, the gate's verdict is not."""
    event_name = env.get("GITHUB_EVENT_NAME", "")
    event = read_event(env.get("GITHUB_EVENT_PATH"))
    repo = env.get("GITHUB_REPOSITORY", "")
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or ""
    if not repo:
        return "no GITHUB_REPOSITORY: not in GitHub Actions, comment skipped", None
    if not token:
        step.annotate(Annotation(level="notice", title=_NO_COMMENT,
                                 message="no token (the github-token input is empty): the report is in the "
                                         "step summary only"))
        return "no token, comment skipped", None
    client = GitHubClient(env.get("GITHUB_API_URL") or "https://api.github.com", token,
                          rate_limit_wait=rate_limit_wait, sleep=sleep)
    try:
        number = pr or pull_request_number(event_name, event, client, repo)
        if number is None:
            return f"no pull request for this {event_name or 'run'} event: comment skipped", None
        action, comment = client.upsert_comment(repo, number, body, marker)
    except RateLimited as exc:
        step.annotate(Annotation(level="notice", title=_NO_COMMENT,
                                 message=f"GitHub's API rate limit: {exc.why} (GitHub answered {exc.status}: "
                                         f"{exc.message}). The comment was skipped; the report is in the step "
                                         "summary and the gate's verdict is unaffected. Re-run the job later "
                                         "to post it."))
        step.summary(f"> [!NOTE]\n> The pull-request comment could not be posted: GitHub's API rate limit "
                     f"({exc.why}). This summary is the report.")
        return f"comment not posted: rate limited: {exc.why}", None
    except GitHubError as exc:
        if exc.status in (401, 403, 404):
            why = ("the token may not write to pull requests: a pull request from a fork gets a read-only "
                   "token. Give the job `permissions: pull-requests: write`, and for forks post the comment "
                   "from a workflow_run job (see the gate's README)")
            step.annotate(Annotation(level="notice", title=_NO_COMMENT,
                                     message=f"GitHub answered {exc.status} ({exc.message}); {why}. "
                                             "The report is in the step summary."))
            step.summary(f"> [!NOTE]\n> The pull-request comment could not be posted (GitHub answered "
                         f"{exc.status}: {exc.message}). This summary is the report.")
        else:
            step.annotate(Annotation(level="warning", title=_NO_COMMENT,
                                     message=f"posting the comment failed: {exc}. The report is in the step "
                                             "summary; the gate's verdict is unaffected."))
        return f"comment not posted: {exc}", None
    url = comment.get("html_url")
    return f"pull request #{number}: comment {action}" + (f": {url}" if url else ""), url
