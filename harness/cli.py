"""Command line (top layer): ``python -m gpt_conformance``: command-line entry points. Each subcommand is one ``add_*`` function.

Exit codes (also in ``python -m gpt_conformance --help``): 0 ok; 1 ``generate --compare`` rejected a
divergence; 2 bad input (usage, unreadable or unusable files); 3 the target raised or returned
malformed output; 130 interrupted (Ctrl-C). Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from gpt_conformance.harness.checks.localize import Budget
from gpt_conformance.harness.core.targets import registry
from gpt_conformance.harness.report.render import DEFAULT_MAX_DETAILS, DEFAULT_TREND_THRESHOLD, write_report
from gpt_conformance.reference.checkpoint import GPT2_DIR_ENV

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_TARGET_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = ("exit codes: 0 ok; 1 generate --compare rejected a divergence; 2 bad input; "
              "3 the target raised or returned malformed output; 130 interrupted")
# generate's longest run: one GPT-2 context. A greedy check covers one context (--compare refuses
# more), and on a CPU a GPT-2 step costs up to a second, so more is a run of tens of minutes.
MAX_NEW_TOKENS = 1024


class UsageError(Exception):
    """Bad input: printed as one ``error:`` line, exit code 2."""


class TargetError(Exception):
    """The target raised or returned malformed output: one ``error:`` line, exit code 3."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse's own exit code 2 is kept)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_registry() -> None:
    """Fill the registry from the ``gpt_conformance.targets`` entry points (once)."""
    if not len(registry):
        errors = registry.load_entry_points()
        for error in errors:
            print(f"{'error' if error.built_in else 'warning'}: failed to load {error}", file=sys.stderr)
        if any(error.built_in for error in errors):
            raise SystemExit(2)  # a built-in target that does not load is a broken install


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
    return EXIT_OK


def add_targets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list registered targets and whether each can run here")
    p.set_defaults(func=cmd_targets)


def new_tokens(text: str) -> int:
    """``--max-new-tokens``: a whole number from 1 to MAX_NEW_TOKENS."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_NEW_TOKENS:
        raise argparse.ArgumentTypeError(f"{count}: give 1 to {MAX_NEW_TOKENS} tokens (one GPT-2 context)")
    return count


class Progress:
    """``generate: 120/1000 tokens, 45.3 tokens/s`` on stderr once a run has taken ``after_s``
    seconds: in place on a terminal, else a line every ``every_s`` seconds."""

    def __init__(self, total: int, stream: TextIO | None = None, after_s: float = 2.0, every_s: float = 10.0):
        # sys.stderr as it is now, not as it was at import (a test's capture may have replaced it since)
        stream = sys.stderr if stream is None else stream
        self.total, self.stream, self.after_s = total, stream, after_s
        self.tty = stream.isatty()
        self.every_s = 0.5 if self.tty else every_s
        self.start = self.last = time.monotonic()
        self.shown = False

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.start < self.after_s or (self.shown and now - self.last < self.every_s):
            return
        self.last, self.shown = now, True
        line = f"generate: {done}/{self.total} tokens, {done / (now - self.start):.1f} tokens/s"
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")


def runnable_target(name: str):
    """The registered target ``name``, if it can run here."""
    load_registry()
    try:
        target = registry.get(name)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    availability = target.probe()
    if not availability:
        raise UsageError(f"target {target.name} cannot run here: {availability.reason}")
    return target


def decode_with_progress(forward, prompt: list[int], count: int, block_size: int, window,
                         target_name: str) -> tuple[list[int], bool]:
    """Up to ``count`` greedy tokens, with a progress line: (tokens, whether Ctrl-C stopped them)."""
    from gpt_conformance.harness.checks import decode

    tokens: list[int] = []
    progress = Progress(count)
    try:
        for token in decode.greedy_tokens(forward, prompt, block_size, window):
            tokens.append(token)
            progress.update(len(tokens))
            if len(tokens) == count:
                break
    except KeyboardInterrupt:
        return tokens, True
    except Exception as exc:
        raise TargetError(f"target {target_name} at token {len(tokens) + 1}: {type(exc).__name__}: {exc}") from None
    finally:
        progress.close()
    return tokens, False


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from gpt_conformance.harness.checks import decode
    from gpt_conformance.harness.checks.conformance import run_checked
    from gpt_conformance.harness.core.errors import UnsupportedHere
    from gpt_conformance.harness.core.policies import get_policy
    from gpt_conformance.reference.checkpoint import from_pretrained
    from gpt_conformance.reference.tokenizers import gpt2_tokenizer
    from gpt_conformance.reference.train import load_zen_model

    if not args.prompt:
        raise UsageError("--prompt: prompt is empty; give the text to continue")
    target = runnable_target(args.target)

    def load(dtype: torch.dtype):
        if args.gpt2_dir:
            return from_pretrained(args.gpt2_dir, dtype=dtype)
        return load_zen_model(dtype=dtype)[0]

    try:
        tokenizer = gpt2_tokenizer() if args.gpt2_dir else load_zen_model()[1]
        prompt = tokenizer.encode(args.prompt)
        model = load(torch.float32)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    block_size = model.config.block_size
    fed = len(prompt) + args.max_new_tokens - 1
    if args.compare and fed > block_size:
        raise UsageError(f"--compare checks one context: prompt ({len(prompt)} tokens) + --max-new-tokens "
                         f"({args.max_new_tokens}) - 1 = {fed} exceeds the model's block_size {block_size}")
    try:
        runnable = target.prepare(model, model.config)
        window = decode.choose_window(target.capabilities, fed, block_size)
    except UnsupportedHere as exc:
        raise UsageError(f"target {target.name} cannot run this model: {exc}") from None
    except Exception as exc:
        raise TargetError(f"target {target.name}: prepare raised {type(exc).__name__}: {exc}") from None

    def forward(idx: torch.Tensor) -> torch.Tensor:
        return run_checked(runnable, target, model.config, idx)[0]

    tokens, interrupted = decode_with_progress(forward, prompt, args.max_new_tokens, block_size, window, target.name)
    print(args.prompt + tokenizer.decode(tokens))
    if interrupted:
        print(f"interrupted after {len(tokens)} of {args.max_new_tokens} tokens", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.compare:
        return EXIT_OK
    reference = decode.reference_greedy(load(torch.float64), prompt, args.max_new_tokens)
    try:
        comparison = decode.compare_greedy(forward, reference, get_policy(target.precision).greedy_margin,
                                           block_size, window)
    except Exception as exc:
        raise TargetError(f"target {target.name} while compared: {type(exc).__name__}: {exc}") from None
    print(comparison.explain(tokenizer.decode))
    return EXIT_OK if comparison.passed else EXIT_REJECTED


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="greedy continuation of a prompt on any target (nanoGPT's sample.py)",
                       description="Print the target's greedy continuation of --prompt. The model is the shipped "
                                   "Zen-of-Python char model unless --gpt2-dir names a local GPT-2.",
                       epilog=EXIT_CODES)
    p.add_argument("--target", default="eager", help="registered target name (default: eager)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=new_tokens, default=32, metavar="N",
                   help=f"tokens to generate, 1 to {MAX_NEW_TOKENS} (default 32); a progress line with tokens/s "
                        "shows on stderr after 2 s, and Ctrl-C prints the text so far")
    p.add_argument("--gpt2-dir", default=os.environ.get(GPT2_DIR_ENV), metavar="PATH",
                   help=f"local Hugging Face GPT-2 directory (default ${GPT2_DIR_ENV}; unset: the tiny Zen model)")
    p.add_argument("--compare", action="store_true",
                   help="also check the tokens against the float64 reference, tie-aware; exit 1 on a rejected "
                        "divergence")
    p.set_defaults(func=cmd_generate)
def cmd_localize(args: argparse.Namespace) -> int:
    from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
    from gpt_conformance.harness.checks.localize import Budget
    from gpt_conformance.harness.checks.properties import load_example
    from gpt_conformance.harness.checks.session import ConformanceSession, Options
    from gpt_conformance.harness.checks.strategies import build_model
    from gpt_conformance.harness.core.errors import CheckError, UnsupportedHere
    from gpt_conformance.harness.core.records import RecordWriter
    from gpt_conformance.reference.cases import named_case
    from gpt_conformance.reference.goldens import reference_outputs

    try:
        load_registry()
        load_plugins(args.plugin)
        repro = Path(args.repro_file).read_text() if args.repro_file else args.repro
        example = load_example(repro) if repro else None
        name = args.target or (example[0] if example else None)
        if name is None:
            raise ValueError("--case needs --target NAME")
        target = registry.get(name)
        spec = named_case(args.case) if args.case else None
        budget = Budget(args.max_prepares, args.max_seconds)
    except OSError as exc:
        print(f"error: --repro-file: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
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
            parity = parity_verdicts(target, truth, *outputs[:2])
            verdicts = [session.judge_parity(target, model, idx, targets, truth, outputs, parity, check, "repro",
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
    failed = [v for v in verdicts if v.failed]
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
    what.add_argument("--repro", metavar="JSON", help="a property example, as a failing property test prints it")
    what.add_argument("--repro-file", metavar="PATH", help="the same, read from the file PATH")
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
        raise UsageError("report merge needs at least one records file or directory")
    try:
        out = write_report(paths, args.output, args.baseline or None, title=args.title,
                           trend_threshold=args.threshold, max_details=args.max_details)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    print(out)
    return EXIT_OK


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render records as one self-contained HTML parity report",
                       description="python -m gpt_conformance report RECORDS... -o out.html  |  "
                                   "python -m gpt_conformance report merge DIR_OR_FILE... -o parity.html [--baseline PREV...]. "
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
    from gpt_conformance.harness.report.precision_cost import precision_cost_table
    from gpt_conformance.harness.report.records_view import load_records

    try:
        records = load_records(args.records)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    table = precision_cost_table(records)
    if not table:
        raise UsageError(f"no quality records in {' '.join(args.records)} (run cases/test_precision.py first)")
    print(table)
    return EXIT_OK


def add_precision(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("precision", help="what each precision costs: quality metrics and arithmetic verdicts from records")
    p.add_argument("records", nargs="+", help="JSON-Lines record files or directories")
    p.set_defaults(func=cmd_precision)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m gpt_conformance", description="gpt-conformance command line", epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True)
    add_targets(sub)
    add_generate(sub)
    add_localize(sub)
    add_report(sub)
    add_precision(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TARGET_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
