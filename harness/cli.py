"""``python -m harness``: command-line entry points. Each subcommand is one ``add_*`` function."""

from __future__ import annotations

import argparse
import sys

from harness.api import registry


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


def cmd_precision(args: argparse.Namespace) -> int:
    from harness.precision import COST_COLUMNS, precision_cost_rows
    from harness.records import read_records

    rows = precision_cost_rows(read_records(args.records))
    if not rows:
        print("no quality records found (run cases/test_precision.py first)", file=sys.stderr)
        return 1
    header = ["target", "case", "arithmetic", "quality", *COST_COLUMNS]
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        cells = [row[h] for h in header]
        print("  ".join(f"{c:>14.4g}" if isinstance(c, float) else f"{c!s:>14}" for c in cells))
    return 0


def add_precision(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("precision", help="what each precision costs: quality metrics and arithmetic verdicts from records")
    p.add_argument("records", nargs="+", help="JSON-Lines record files or directories")
    p.set_defaults(func=cmd_precision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="gpt-conformance command line")
    sub = parser.add_subparsers(dest="command", required=True)
    add_targets(sub)
    add_precision(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
