"""GitHub Actions glue: step summary, outputs, annotations and the sticky pull-request comment.

`action.yml` runs `gate check` (or `gate judge`), then

    python -m gate.github --report-dir DIR --gate-exit CODE [--comment] [--fail-on fail|warn|never]

which reads DIR/report.json and DIR/report.md and
- writes the Markdown report to GITHUB_STEP_SUMMARY;
- writes verdict, exit-code, report-dir, passed, failed, warned, ... to GITHUB_OUTPUT;
- prints one ::error / ::warning workflow command per failed or warned rule
  (on the policy file's rule line when the policy is in the workspace);
- creates or updates one comment on the pull request, found by a hidden marker;
  a read-only token (a fork's pull request: 403) or GitHub's rate limit (waited out up to
  --rate-limit-wait seconds) degrades to a notice and the step summary, never to a failure of the gate;
- exits with the gate's code semantics: the gate's own 2 (wrong inputs) or 3
  (bug) always fails; a failing verdict fails; with --fail-on warn a warning
  fails too; --fail-on never only reports.

With --command comment it only posts the summary and the comment for a report
made elsewhere (a workflow_run job that must not run a fork's code): the pull
request is then found from the trusted event, never from the artifact.

Only the standard library (urllib for GitHub's REST API) and the gate's own light modules. The parts:

    commands.py  workflow commands: escaping, annotations, GITHUB_OUTPUT's format
    report.py    the report read through gate.contract, its tally and annotations, the comment body
    api.py       the REST client: the sticky comment, pagination, retries and rate limits
    step.py      the step: where its log, outputs and summary go, the comment it posts, its exit code
    release.py   command: verify / bless: their outputs, summary, annotations and exit code
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from gate.errors import EXIT_BUG, EXIT_FAIL, EXIT_INPUT, EXIT_PASS
from gate.github.api import (API_VERSION, MAX_PAGES, RATE_LIMIT_RETRIES, RATE_LIMIT_WAIT, GitHubClient,
                             GitHubError, RateLimited, next_link, pull_request_number, rate_limit_wait)
from gate.github.commands import Annotation, escape_data, escape_property, format_outputs, parse_outputs
from gate.github.release import RELEASE_COMMANDS
from gate.github.release import publish as publish_release
from gate.github.report import (COMMENT_LIMIT, MARKER, ReportError, RuleOutcome, artifact_pointer, comment_body,
                                error_markdown, github_length, log_annotation, log_annotations, marker_for,
                                read_report, report_annotations, rule_outcomes, tally)
from gate.github.step import Step, decide_exit, post_comment, read_event, run_url
from gate.tally import Tally

__all__ = [
    "API_VERSION", "COMMENT_LIMIT", "MARKER", "MAX_PAGES", "RATE_LIMIT_RETRIES", "RATE_LIMIT_WAIT",
    "Annotation", "GitHubClient", "GitHubError", "RateLimited", "ReportError", "RuleOutcome", "Step",
    "artifact_pointer", "build_parser", "comment_body", "decide_exit", "error_markdown", "escape_data",
    "escape_property", "format_outputs", "github_length", "log_annotation", "log_annotations", "main",
    "marker_for", "next_link", "parse_outputs", "post_comment", "pull_request_number", "rate_limit_wait",
    "read_event", "read_report", "report_annotations", "rule_outcomes", "run_url", "tally",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gate.github",
                                description="Publish a gate report in GitHub Actions: step summary, outputs, "
                                            "annotations and a sticky pull-request comment.")
    p.add_argument("--report-dir", required=True, type=Path, metavar="DIR", help="the --out of gate check / judge")
    p.add_argument("--command", default="check", choices=("check", "judge", "measure", "comment", "verify", "bless"),
                   help="what ran before: check/judge (a report), measure (results only), comment (publish a "
                        "report made elsewhere; never fails on the verdict), verify / bless (gate verify, gate bless "
                        "on the report)")
    p.add_argument("--gate-exit", type=int, metavar="CODE", help="the exit code of the gate command")
    p.add_argument("--gate-log", type=Path, metavar="FILE", help="the gate command's stderr (for error messages)")
    p.add_argument("--gate-stdout", type=Path, metavar="FILE", help="verify / bless: the gate command's stdout")
    p.add_argument("--results", metavar="FILE", help="measure: the results file written")
    p.add_argument("--comment", action="store_true", help="create or update the pull-request comment")
    p.add_argument("--comment-id", default="", metavar="ID", help="tells several gates' comments on one PR apart")
    p.add_argument("--pr", type=int, metavar="N", help="the pull request (default: from the event)")
    p.add_argument("--fail-on", default="fail", choices=("fail", "warn", "never"),
                   help="fail the step on failed rules (default), also on warnings, or never (report only)")
    p.add_argument("--artifact-name", default="gate-report", metavar="NAME")
    p.add_argument("--artifact-url", default="", metavar="URL")
    p.add_argument("--no-annotations", action="store_true", help="do not print ::error / ::warning commands")
    p.add_argument("--rate-limit-wait", type=_seconds, default=RATE_LIMIT_WAIT, metavar="SECONDS",
                   help=f"wait at most this long in total when GitHub's API is rate limited, then skip the "
                        f"comment with a notice (default {RATE_LIMIT_WAIT:g}; 0 never waits)")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more; got {text!r}")
    return value


def main(argv: list[str] | None = None, env: dict | None = None, out=None, *,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """The step. sleep: how a rate limit is waited out (tests pass one that only records)."""
    args = build_parser().parse_args(argv)
    env = dict(os.environ if env is None else env)
    step = Step(out=out, output_file=env.get("GITHUB_OUTPUT") or None,
                summary_file=env.get("GITHUB_STEP_SUMMARY") or None)
    try:
        return _main(args, env, step, sleep)
    except Exception as exc:  # a bug here must not read as a pass
        import traceback

        traceback.print_exc()
        step.annotate(Annotation(level="error", title="gate: the GitHub step failed (a bug)",
                                 message=f"{type(exc).__name__}: {exc}"))
        return EXIT_BUG


def _main(args, env: dict, step: Step, sleep: Callable[[float], None]) -> int:
    workspace = Path(env["GITHUB_WORKSPACE"]) if env.get("GITHUB_WORKSPACE") else Path.cwd()
    report_dir = args.report_dir
    log = ""
    if args.gate_log and args.gate_log.is_file():
        log = args.gate_log.read_text(encoding="utf-8", errors="replace")
    annotate = not args.no_annotations and args.command != "comment"
    gate_exit = args.gate_exit

    if args.command in RELEASE_COMMANDS:
        stdout = ""
        if args.gate_stdout and args.gate_stdout.is_file():
            stdout = args.gate_stdout.read_text(encoding="utf-8", errors="replace")
        return publish_release(step, command=args.command, gate_exit=gate_exit, stdout=stdout, log=log,
                               report_dir=report_dir, workspace=workspace, fail_on=args.fail_on)

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
                               run_url=run_url(env, read_event(env.get("GITHUB_EVENT_PATH")), event_name))
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
        status, comment_url = post_comment(step, env, body=body, marker=marker_for(args.comment_id), pr=args.pr,
                                           rate_limit_wait=args.rate_limit_wait, sleep=sleep)
        step.log(f"gate: {status}")
    step.outputs({"comment-url": comment_url or ""})

    step.log(f"gate: verdict {verdict.upper()}: {counts.passed} passed, {counts.failed} failed, "
             f"{counts.warned} warned (report: {report_dir})")
    if args.command == "comment":
        return EXIT_PASS if report is not None else EXIT_INPUT
    return decide_exit(gate_exit=gate_exit, verdict=report["verdict"] if report else None,
                       warned=counts.warned, fail_on=args.fail_on)
