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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="gpt-conformance command line")
    sub = parser.add_subparsers(dest="command", required=True)
    add_targets(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
