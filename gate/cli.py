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


def _print_summary(verdict, out_dir: Path | None, stream=None) -> None:
    from gate.api import summary_lines

    stream = stream or sys.stdout  # read at call time: an embedding may replace sys.stdout
    for line in summary_lines(verdict, out_dir):
        print(line, file=stream)


def _report(policy, measurements, out: str, templates: str | None) -> int:
    from gate.api import judge_and_report

    return _finish(judge_and_report(policy, measurements, Path(out), templates), templates)


def _finish(result, templates: str | None) -> int:
    """Print what the gate decided (the reports are written) and return the exit code."""
    from gate.api import render_failure

    try:
        _print_summary(result.verdict, result.report_dir)
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
                       templates=args.templates, progress=args.progress)
    return _finish(result, args.templates)


def cmd_measure(args) -> int:
    from gate.api import run_measure

    measurements = run_measure(args.policy, base=args.base, candidates=args.candidate, data=args.data,
                               out=args.out, target=args.target, progress=args.progress)
    out = Path(args.out)
    if args.target:
        host = measurements.provenance.get("host", {}).get("hostname", "this machine")
        print(f"measured speed and memory of {len(measurements.candidates)} candidate(s) on target "
              f"{args.target!r} ({host}): {out}")
    else:
        print(f"measured {len(measurements.candidates)} candidate(s) on {measurements.n_samples:,} samples: {out}")
    return EXIT_PASS


def cmd_judge(args) -> int:
    from gate.api import run_judge

    return _finish(run_judge(args.results, args.policy, out=args.out, templates=args.templates), args.templates)


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
    commands = {"check": cmd_check, "measure": cmd_measure, "judge": cmd_judge, "demo": cmd_demo}
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
