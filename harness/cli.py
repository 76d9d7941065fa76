"""Command line (top layer): ``python -m harness``: command-line entry points. Each subcommand is one ``add_*`` function."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from harness.checks.localize import Budget
from harness.core.targets import registry
from harness.report.render import DEFAULT_MAX_DETAILS, DEFAULT_TREND_THRESHOLD, write_report
from reference.checkpoint import GPT2_DIR_ENV


def load_registry() -> None:
    """Fill the registry from the ``gpt_conformance.targets`` entry points (once)."""
    if not len(registry):
        for error in registry.load_entry_points():
            print(f"warning: failed to load {error}", file=sys.stderr)


def load_plugins(modules: list[str]) -> None:
    """Register the targets of ``-p MODULE`` plugins (their ``pytest_gpt_conformance_register``
    hook), as pytest would: test-only targets such as ``tests.planted``."""
    for name in modules:
        register = getattr(importlib.import_module(name), "pytest_gpt_conformance_register", None)
        if register is None:
            raise ValueError(f"-p {name}: the module defines no pytest_gpt_conformance_register(registry)")
        register(registry=registry)


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


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from harness.checks.conformance import run_checked
    from harness.checks.decode import choose_window, compare_greedy, greedy_decode, reference_greedy
    from harness.core.policies import get_policy
    from reference.checkpoint import from_pretrained
    from reference.tokenizers import gpt2_tokenizer
    from reference.train import load_zen_model

    load_registry()
    try:
        target = registry.get(args.target)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    availability = target.probe()
    if not availability:
        print(f"error: target {target.name} cannot run here: {availability.reason}", file=sys.stderr)
        return 2

    def load(dtype: torch.dtype):
        if args.gpt2_dir:
            return from_pretrained(args.gpt2_dir, dtype=dtype)
        return load_zen_model(dtype=dtype)[0]

    tokenizer = gpt2_tokenizer() if args.gpt2_dir else load_zen_model()[1]
    try:
        prompt = tokenizer.encode(args.prompt)
        model = load(torch.float32)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    block_size = model.config.block_size
    runnable = target.prepare(model, model.config)

    def forward(idx: torch.Tensor) -> torch.Tensor:
        return run_checked(runnable, target, model.config, idx)[0]

    window = choose_window(target.capabilities, len(prompt) + args.max_new_tokens - 1, block_size)
    tokens = greedy_decode(forward, prompt, args.max_new_tokens, block_size, window)
    print(args.prompt + tokenizer.decode(tokens))
    if args.compare:
        try:
            reference = reference_greedy(load(torch.float64), prompt, args.max_new_tokens)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        comparison = compare_greedy(forward, reference, get_policy(target.precision).greedy_margin, block_size, window)
        print(comparison.explain(tokenizer.decode))
        return 0 if comparison.passed else 1
    return 0


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="greedy continuation of a prompt on any target (nanoGPT's sample.py)",
                       description="Print the target's greedy continuation of --prompt. The model is the shipped "
                                   "Zen-of-Python char model unless --gpt2-dir names a local GPT-2.")
    p.add_argument("--target", default="eager", help="registered target name (default: eager)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="tokens to generate (default 32)")
    p.add_argument("--gpt2-dir", default=os.environ.get(GPT2_DIR_ENV), metavar="PATH",
                   help=f"local Hugging Face GPT-2 directory (default ${GPT2_DIR_ENV}; unset: the tiny Zen model)")
    p.add_argument("--compare", action="store_true",
                   help="also check the tokens against the float64 reference, tie-aware; exit 1 on a mismatch")
    p.set_defaults(func=cmd_generate)
def cmd_localize(args: argparse.Namespace) -> int:
    from harness.checks.conformance import Truth
    from harness.checks.localize import Budget
    from harness.checks.properties import load_example
    from harness.checks.session import ConformanceSession, Options
    from harness.checks.strategies import build_model
    from harness.core.errors import CheckError, UnsupportedHere
    from harness.core.records import RecordWriter
    from reference.cases import named_case
    from reference.goldens import reference_outputs

    try:
        load_registry()
        load_plugins(args.plugin)
        example = load_example(args.repro) if args.repro else None
        name = args.target or (example[0] if example else None)
        if name is None:
            raise ValueError("--case needs --target NAME")
        target = registry.get(name)
        spec = named_case(args.case) if args.case else None
        budget = Budget(args.max_prepares, args.max_seconds)
    except (ImportError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    availability = target.probe()
    if not availability:
        print(f"error: target {target.name} cannot run here: {availability.reason}", file=sys.stderr)
        return 2
    run_id = "localize-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    writer = RecordWriter(Path(args.report_dir) / f"records-{run_id}.jsonl", run_id)
    session = ConformanceSession(registry, writer, Options(report_dir=Path(args.report_dir), localize_budget=budget))
    try:
        if spec is not None:
            verdicts = [session.check_named_parity(target, spec, check) for check in ("logits", "loss")]
            where = spec.name
        else:
            model_case, inp = example[1], example[2]
            model, idx, targets = build_model(model_case), inp.tensor("idx"), inp.tensor("targets")
            truth = Truth(*reference_outputs(model, idx, targets))
            outputs = session.run(target, model, idx, targets, "repro", seed=model_case.seed)
            verdicts = [session.judge_parity(target, model, idx, targets, truth, outputs, check, "repro",
                                             model_case.seed, extra={"example": {"target": target.name,
                                             "model": model_case.to_dict(), "input": inp.to_dict()}})
                        for check in ("logits", "loss")]
            where = "the --repro example"
    except UnsupportedHere as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 2
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{target.name} on {where}: " + ", ".join(f"{v.check} {v.status}" for v in verdicts)
          + f" (records: {writer.path})")
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        print("it conforms: nothing to localize")
        return 0
    print(failed[0].explain())
    print_localization(session.localization_of(target, "repro" if spec is None else spec.name))
    return 1


def print_localization(localization) -> None:
    """Every point the localization judged, one line each."""
    if localization is None or not localization.points:
        return
    print(f"\n{'':2}{'point':<24}{'status':<8}{'metric':<10}{'value':>11}{'eager fp32':>12}{'ratio':>10}{'bound':>11}")
    for p in localization.points:
        value, eager, bound = p.get("value"), p.get("eager"), p.get("bound")
        ratio = f"{value / eager:.3g}x" if isinstance(value, float) and eager else "-"
        mark = ">" if p.get("first") else " "
        print(f"{mark:2}{p['name']:<24}{p['status']:<8}{p.get('metric', ''):<10}{_g(value):>11}{_g(eager):>12}"
              f"{ratio:>10}{_g(bound):>11}")
    for line in ([localization.skipped] if localization.skipped else []) + localization.notes:
        print(line)


def _g(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def add_localize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="where a failing target first diverges, on one named case or --repro example",
                       description="Judge one target's logits and loss on a named case (or a property example), and "
                                   "when they fail, say where it first diverges: per intermediate for targets that "
                                   "return them, else by bisecting truncated models. Exit 0: it conforms; 1: it "
                                   "fails (localized); 2: it could not run.")
    p.add_argument("--target", help="registered target name (default with --repro: the example's target)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--case", help="a named case (reference/cases.py)")
    what.add_argument("--repro", metavar="JSON|@FILE", help="a property example, as a failing property test prints it")
    p.add_argument("-p", dest="plugin", action="append", default=[], metavar="MODULE",
                   help="register the targets of this pytest plugin module too (repeatable), e.g. tests.planted")
    p.add_argument("--max-prepares", type=int, default=Budget.max_prepares, metavar="N",
                   help=f"bisection budget: truncated models prepared (default {Budget.max_prepares})")
    p.add_argument("--max-seconds", type=float, default=Budget.max_seconds, metavar="S",
                   help=f"bisection budget: seconds (default {Budget.max_seconds:g})")
    p.add_argument("--report-dir", default="reports", metavar="DIR", help="where the records go (default reports/)")
    p.set_defaults(func=cmd_localize)


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
def cmd_precision(args: argparse.Namespace) -> int:
    from harness.core.records import read_records
    from harness.report.precision_cost import COST_COLUMNS, precision_cost_rows

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
    add_generate(sub)
    add_localize(sub)
    add_report(sub)
    add_precision(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
