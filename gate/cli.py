"""Command line: argument parsing only; the pipeline does the work.

Exit codes: 0 every candidate passes, 1 a candidate fails the policy,
2 the inputs are wrong (the message names the file and the fix),
3 the gate itself broke (a bug: please report it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gate import __version__
from gate.errors import EXIT_BUG, EXIT_FAIL, EXIT_INPUT, EXIT_MEANING, EXIT_PASS, GateInputError


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, metavar="P",
                   help="policy YAML file, or the name of a shipped preset (see `gate policy check --help`)")
    p.add_argument("--base", metavar="M", help="base model (overrides the policy's base:)")
    p.add_argument("--candidate", action="append", metavar="[NAME=]M",
                   help="candidate model; repeat for several; NAME defaults to the file name (overrides candidates:)")
    p.add_argument("--data", metavar="D", help="calibration data: .npz, .csv, .parquet, .arrow/.feather or a folder of .npy files "
                                             "(overrides data.path)")
    p.add_argument("--cache", metavar="DIR", help="keep the base's outputs in DIR and reuse them while the base, "
                                                 "the data and the settings are unchanged (sha256 keyed; a damaged "
                                                 "entry is recomputed, with a note)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gate", description="Regression gate for compressed models: is each candidate still good enough "
                                 "compared to its base model?",
        epilog="exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_MEANING.items()))
    parser.add_argument("--version", action="version", version=f"gate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="measure, judge and report in one go",
                           description="Run base and candidates on the calibration data, judge every rule of "
                                       "the policy, write report.md, report.html, report.json and junit.xml.")
    _model_flags(check)
    check.add_argument("--out", default="gate-report", metavar="DIR", help="report directory (default: gate-report)")
    check.add_argument("--templates", metavar="DIR", help="directory of templates that override the shipped ones")

    measure = sub.add_parser("measure", help="measure only, write results.json for `gate judge`",
                             description="Measure base and candidates and write the results as JSON, to be "
                                         "judged elsewhere with `gate judge`.")
    _model_flags(measure)
    measure.add_argument("--out", default="results.json", metavar="FILE", help="results file (default: results.json)")
    measure.add_argument("--shard", metavar="I/N",
                         help="measure only shard I of N of the samples (from 1); `gate judge` joins the N results "
                              "files (each with its .outputs.npz beside it) into exactly the unsharded measurements")
    measure.add_argument("--target", metavar="NAME",
                         help="measure speed, memory and energy only, with the settings of latency.targets.NAME, "
                              "on this machine (run it on the device); `gate judge` merges the file with the "
                              "quality results measured elsewhere")

    judge = sub.add_parser("judge", help="judge results.json file(s) against a policy and report",
                           description="Judge measurements written by `gate measure` (several files are merged "
                                       "when they were measured on the same base and data).")
    judge.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results.json from `gate measure`")
    judge.add_argument("--policy", required=True, metavar="P", help="policy YAML file or preset name")
    judge.add_argument("--out", default="gate-report", metavar="DIR", help="report directory (default: gate-report)")
    judge.add_argument("--templates", metavar="DIR", help="directory of templates that override the shipped ones")

    bless = sub.add_parser("bless", help="record a judged candidate as the blessed baseline of later releases",
                           description="Record candidate NAME of a report as the next blessed release in the "
                                       "baseline folder: its sha256, the data's and the policy's, the gate version, "
                                       "its metrics, and its per-sample predictions and scores on the calibration "
                                       "data (.npz), so rules with `vs: baseline` judge later candidates against it "
                                       "paired, without the old model file. Only a candidate that passed, unless "
                                       "--force with a --reason (kept in the record).")
    bless.add_argument("report", type=Path, metavar="REPORT_DIR", help="report folder written by gate check / judge")
    bless.add_argument("--candidate", required=True, metavar="NAME", help="the candidate of that report to bless")
    bless.add_argument("--baseline", required=True, metavar="DIR",
                       help="the baseline folder (the policy's baseline:); created when missing")
    bless.add_argument("--policy", metavar="P", help="the policy the report was judged with (default: the path "
                                                    "the report recorded; its sha256 must match)")
    bless.add_argument("--model", metavar="M", help="the candidate's model file (default: the path the report "
                                                    "recorded; its sha256 must match)")
    bless.add_argument("--data", metavar="D", help="the calibration data (default: the path the report recorded; "
                                                   "its sha256 must match)")
    bless.add_argument("--force", action="store_true", help="bless a candidate that did not pass (needs --reason)")
    bless.add_argument("--reason", metavar="TEXT", help="why it is blessed (kept in the record)")
    bar = bless.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")

    verify = sub.add_parser(
        "verify", help="check that model files are candidates that passed in a report, and the report is intact",
        description="What an auditor runs on a shipped model: every file of REPORT_DIR must be as the gate wrote it "
                    "(the sha256 and size in its manifest.json; a changed, missing or added file is named), and "
                    "each MODEL's sha256 must be a candidate of report.json whose verdict is pass. A model that "
                    "failed, was never judged, or is the base is not verified.",
        epilog="exit codes: 0 verified, 1 not verified (what differs is printed), 2 the inputs are wrong (no such "
               "folder, not a report folder, an unreadable model)")
    verify.add_argument("report", type=Path, metavar="REPORT_DIR", help="report folder written by gate check / judge")
    verify.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="model file(s) to verify")
    verify.add_argument("--fail-on", default="fail", choices=("fail", "warn"),
                        help="fail: a candidate that passed with warnings is verified (default); warn: it is not")
    verify.add_argument("--json", action="store_true", help="print the outcome as JSON")

    history = sub.add_parser(
        "history", help="every judged metric across releases (reports), with intervals, verdicts and drift",
        description="Read report.json files (a report folder, a report.json, or a folder of report folders, "
                    "searched recursively), order them by the time each was judged, and write history.md and "
                    "history.html: per judged metric, every candidate's value with its interval, the rules' "
                    "statuses, the verdict, blessed releases, and the drift since the first blessed release (the "
                    "first report when none is known), with a chart.")
    history.add_argument("reports", nargs="+", type=Path, metavar="REPORT", help="report folder, report.json, or "
                                                                                 "a folder of them")
    history.add_argument("--out", default="gate-history", metavar="DIR", help="where history.md and history.html "
                                                                              "go (default: gate-history)")
    history.add_argument("--baseline", metavar="DIR", help="a baseline folder of `gate bless`: its blessed models "
                                                           "are marked and drift is measured from the first")
    history.add_argument("--order", default="time", choices=("time", "given"),
                         help="time: by when each report was judged (default); given: as named")

    demo = sub.add_parser("demo", help="build a small model, compress it five ways, and gate the candidates",
                          description="Train a small classifier on scikit-learn's bundled digits, export it to "
                                      "ONNX, compress it five ways (int8 dynamic, int8 static QDQ, fp16, "
                                      "magnitude pruning at 50% and 90%), and run the gate on it. No network, no arguments needed.")
    demo.add_argument("--out", default="gate-demo", metavar="DIR", help="where models, data, policy and reports go "
                                                                        "(default: ./gate-demo)")

    policy = sub.add_parser("policy", help="check a policy file or print the policy JSON Schema")
    policy.set_defaults(policy_help=policy.format_help)
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    pcheck = psub.add_parser("check", help="validate a policy file (exit 0 valid, 2 invalid)",
                             description="Validate a policy: every key, bound and metric; the files it names.")
    pcheck.add_argument("policy", metavar="P", help="policy YAML file or preset name")
    psub.add_parser("schema", help="print the JSON Schema of the policy format")
    return parser


def _print_summary(verdict, out_dir: Path | None, stream=None, measurements=None) -> None:
    from gate.api import summary_lines

    stream = stream or sys.stdout  # read at call time: an embedding may replace sys.stdout
    for line in summary_lines(verdict, out_dir, measurements):
        print(line, file=stream)


def _report(policy, measurements, out: str, templates: str | None) -> int:
    from gate.api import judge_and_report

    return _finish(judge_and_report(policy, measurements, Path(out), templates), templates)


def _finish(result, templates: str | None) -> int:
    """Print what the gate decided (the reports are written) and return the exit code."""
    from gate.api import render_failure

    try:
        _print_summary(result.verdict, result.report_dir, measurements=result.measurements)
    except BrokenPipeError:  # `gate check ... | head`: the verdict still decides the exit code
        _silence_stdout()
    for name, error in result.report_errors.items():
        print(f"error: {name} could not be rendered: {error}", file=sys.stderr)
    failure = render_failure(result, templates)
    if failure is not None:
        raise failure
    for error in result.input_errors:
        print(f"error: {error}", file=sys.stderr)
    return result.exit_code


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _check_templates(templates: str | None) -> None:
    """Before any model runs: a typo here must not cost a whole measurement."""
    from gate.api import check_templates

    check_templates(templates)


def _writable_dir(out: str, flag: str = "--out", fix: str | None = None) -> Path:
    """The report folder, created and probed before any model runs: a bad --out must not cost a measurement."""
    from gate.api import writable_dir

    return writable_dir(out, flag, fix)


def _writable_file(out: str, flag: str = "--out") -> Path:
    from gate.api import writable_file

    return writable_file(out, flag)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # too long a name, a NUL byte: it cannot exist
        return False


def _stopping_rule(policy):
    """The timed loop's stopping rule (gate.api.stopping_rule): the judge's decision, handed to the pipeline."""
    from gate.api import stopping_rule

    return stopping_rule(policy)


# gate check / measure / judge: thin layers over gate.api (check, measure, judge), which do the work and
# raise GateInputError for wrong inputs; here only the printing and the exit code.

def cmd_check(args) -> int:
    from gate.api import run_check

    result = run_check(args.policy, base=args.base, candidates=args.candidate, data=args.data, out=args.out,
                       templates=args.templates, progress=args.progress, cache=args.cache)
    return _finish(result, args.templates)


def cmd_measure(args) -> int:
    from gate.api import run_measure

    measurements = run_measure(args.policy, base=args.base, candidates=args.candidate, data=args.data,
                               out=args.out, target=args.target, progress=args.progress, cache=args.cache,
                               shard=args.shard)
    out = Path(args.out)
    if args.target:
        host = measurements.provenance.get("host", {}).get("hostname", "this machine")
        print(f"measured speed and memory of {len(measurements.candidates)} candidate(s) on target "
              f"{args.target!r} ({host}): {out}")
    elif measurements.provenance.get("shard"):
        shard = measurements.provenance["shard"]
        print(f"measured shard {shard['index']}/{shard['count']} (samples {shard['first']:,} to {shard['stop'] - 1:,} "
              f"of {shard['of']:,}) of {len(measurements.candidates)} candidate(s): {out}, with "
              f"{shard['outputs']['file']} beside it; join the shards with gate judge")
    else:
        print(f"measured {len(measurements.candidates)} candidate(s) on {measurements.n_samples:,} samples: {out}")
    return EXIT_PASS


def cmd_judge(args) -> int:
    from gate.api import run_judge

    return _finish(run_judge(args.results, args.policy, out=args.out, templates=args.templates), args.templates)


def cmd_bless(args) -> int:
    from gate.bless import bless

    _writable_dir(args.baseline, "--baseline")
    blessing = bless(args.report, args.candidate, args.baseline, policy=args.policy, model=args.model,
                     data=args.data, force=args.force, reason=args.reason, show_progress=args.progress)
    forced = f" (forced: {blessing.reason})" if blessing.forced else ""
    print(f"blessed {blessing.name} (sha256 {blessing.model_sha256[:12]}) as release {blessing.index} in "
          f"{args.baseline}{forced}: {blessing.n_samples:,} samples' outputs stored in {blessing.outputs}")
    return EXIT_PASS


def cmd_verify(args) -> int:
    from gate.verify import verify

    result = verify(args.report, args.models, fail_on=args.fail_on)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            print(line)
    return EXIT_PASS if result.verified else EXIT_FAIL


def cmd_history(args) -> int:
    from gate.history import blessed_in, build_history, load_reports, write_history

    if (Path(args.out) / "manifest.json").exists():
        raise GateInputError("is a report folder: history files written there would break its manifest (gate "
                             "verify would find files the gate did not write)", path=args.out,
                             fix="write the history to a folder of its own, e.g. --out gate-history")
    out = _writable_dir(args.out)
    blessed = blessed_in(Path(args.baseline)) if args.baseline else frozenset()
    history = build_history(load_reports(args.reports), blessed=blessed, order=args.order)
    written = write_history(history, out)
    print(f"history of {len(history.releases)} report(s), {len(history.metrics)} judged metric(s): "
          + ", ".join(str(p) for p in written))
    return EXIT_PASS


def cmd_demo(args) -> int:
    from gate.demo_assets import build_demo_assets
    from gate.pipeline import measure
    from gate.policy import load_policy

    out = _writable_dir(args.out)
    print(f"building a base model and 5 compressed candidates in {out}/ ...")
    assets = build_demo_assets(out)
    policy = load_policy(assets.policy)
    print(f"gating them with {assets.policy}:")
    code = _report(policy, measure(policy, settled=_stopping_rule(policy)), str(out / "report"), None)
    print("the demo shows both outcomes on purpose: a candidate that keeps the base's quality passes, "
          "one pruned too far fails.")
    print(f"try it on your models: gate check --policy {assets.policy} --base M --candidate M --data D")
    return EXIT_PASS if code in (EXIT_PASS, EXIT_FAIL) else code


def cmd_policy(args, parser) -> int:
    from gate.policy import json_schema, load_policy

    if args.policy_command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return EXIT_PASS
    if args.policy_command == "check":
        policy = load_policy(args.policy)
        missing = [ref for ref in ([policy.base] if policy.base else []) + list(policy.candidates)
                   if not _exists(ref.path)]
        if policy.data and not _exists(policy.data.path):
            missing.append(policy.data)
        if missing:
            raise GateInputError(f"names files that do not exist: {', '.join(str(m.path) for m in missing)}",
                                 path=policy.source, fix="paths in a policy are relative to the policy file")
        print(f"{policy.source}: valid ({len(policy.rules)} rule(s), {len(policy.candidates)} candidate(s))")
        return EXIT_PASS
    # `gate policy` without an action is a usage mistake: the help goes to stderr, the exit code says so
    print(args.policy_help(), file=sys.stderr)
    return EXIT_INPUT


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"check": cmd_check, "measure": cmd_measure, "judge": cmd_judge, "demo": cmd_demo,
                "bless": cmd_bless, "verify": cmd_verify, "history": cmd_history}
    try:
        if args.command in commands:
            return commands[args.command](args)
        if args.command == "policy":
            return cmd_policy(args, parser)
        parser.print_help()
        return EXIT_INPUT
    except GateInputError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (| head)
        _silence_stdout()
        return EXIT_PASS
    except Exception:  # a bug in the gate, not a user mistake: say so, keep the details
        import traceback

        traceback.print_exc()
        print("error: the gate itself failed (a bug); please report it with the trace above", file=sys.stderr)
        return EXIT_BUG
