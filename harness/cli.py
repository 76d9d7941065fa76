"""``python -m harness``: command-line entry points. Each subcommand is one ``add_*`` function."""

from __future__ import annotations

import argparse
import sys

from harness.api import registry
from harness.report import DEFAULT_MAX_DETAILS, DEFAULT_TREND_THRESHOLD, write_report


def load_registry() -> None:
    """Fill the registry from the ``gpt_conformance.targets`` entry points (once)."""
    if not len(registry):
        for error in registry.load_entry_points():
            print(f"warning: failed to load {error}", file=sys.stderr)


def cmd_targets(args: argparse.Namespace) -> int:
    load_registry()
    for target in registry:
        availability = target.probe()
        state = "can run here" if availability else f"cannot run here: {availability.reason}"
        print(f"{target.name:<24} {target.precision:<14} [{target.marker}] {state}")
    return 0


def add_targets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list registered targets and whether each can run here")
    p.set_defaults(func=cmd_targets)


def cmd_report(args: argparse.Namespace) -> int:
    paths = args.records[1:] if args.records[0] == "merge" else args.records
    if not paths:
        print("error: report merge needs at least one records file or directory", file=sys.stderr)
        return 2
    try:
        out = write_report(paths, args.output, args.baseline or None, title=args.title,
                           trend_threshold=args.threshold, max_details=args.max_details)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render records as one self-contained HTML parity report",
                       description="python -m harness report RECORDS... -o out.html  |  "
                                   "python -m harness report merge DIR_OR_FILE... -o parity.html [--baseline PREV...]. "
                                   "Directories are searched for *.jsonl; records of several machines merge into one "
                                   "matrix, and disagreeing duplicates are shown side by side.")
    p.add_argument("records", nargs="+", metavar="[merge] RECORDS",
                   help="JSON-Lines record files or directories (a leading 'merge' word is accepted)")
    p.add_argument("-o", "--output", default="reports/parity.html", help="HTML file to write")
    p.add_argument("--baseline", nargs="+", default=[], metavar="PREV",
                   help="previous run's records: the summary lists new failures, fixes and moved metrics")
    p.add_argument("--threshold", type=float, default=DEFAULT_TREND_THRESHOLD,
                   help=f"relative change above which a metric counts as moved (default {DEFAULT_TREND_THRESHOLD})")
    p.add_argument("--max-details", type=int, default=DEFAULT_MAX_DETAILS,
                   help=f"full detail blocks at most; further failures get one line each (default {DEFAULT_MAX_DETAILS})")
    p.add_argument("--title", default="GPT parity report")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="gpt-conformance command line")
    sub = parser.add_subparsers(dest="command", required=True)
    add_targets(sub)
    add_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
