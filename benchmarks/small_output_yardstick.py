"""How far a correct weight-only target's arithmetic error is from its yardstick on small outputs,
with the yardstick from the input alone and pooled over ``YARDSTICK_INPUTS`` more inputs
(``gpt_conformance.harness.checks.precision.pooled_logit_baseline``). The figures quoted in
docs/sources.md#small-outputs-yardstick come from here.

    python benchmarks/small_output_yardstick.py [MODELS] [TARGET ...]

MODELS (default 80) small random models, drawn with a fixed seed: nanoGPT or nanochat, 1 or 2
layers, width 32 or 64, vocabulary 2..100, 1..8 tokens, weight std 0.02..1.0, the suite's first
drawn model (nanochat, 2 logits) first. Prints, per target, each model's error / yardstick for
rmse and max_abs, one-input and pooled, and the worst of each, overall and on outputs of more than
``SMALL_OUTPUT_NUMEL`` logits (the gates' small-output multiplier applies up to it).
"""

from __future__ import annotations

import random
import sys

import torch
from gpt_conformance.harness.checks.conformance import run_checked
from gpt_conformance.harness.checks.precision import (
    YARDSTICK_INPUTS,
    arithmetic_reference,
    low_precision_of,
    pooled_logit_baseline,
    reported_quantized_weights,
)
from gpt_conformance.harness.checks.strategies import ModelCase, build_model
from gpt_conformance.harness.core.metrics import logit_metrics
from gpt_conformance.harness.core.policies import SMALL_OUTPUT_NUMEL
from gpt_conformance.harness.core.quant import dequantized_weights
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.reference.nanochat import NanochatConfig

TARGETS = ("modelopt-int4-wo", "torch-int4-wo", "torchao-int8-wo", "modelopt-int8-wo")
METRICS = ("rmse", "max_abs")
LARGE = SMALL_OUTPUT_NUMEL + 1


def models(count: int):
    """(ModelCase, sequence length, input seed), the first the suite's first drawn nanochat model."""
    first = NanochatConfig(sequence_len=1, vocab_size=2, n_layer=1, n_head=1, n_kv_head=1, n_embd=32)
    yield ModelCase(first), 1, 0
    rng = random.Random(0)
    for _ in range(count - 1):
        width, vocab, tokens, layers = rng.choice([32, 64]), rng.choice([2, 3, 8, 50, 100]), rng.choice([1, 2, 4, 8]), rng.choice([1, 2])
        if rng.random() < 0.5:
            config = NanochatConfig(sequence_len=tokens, vocab_size=vocab, n_layer=layers, n_head=1, n_kv_head=1, n_embd=width)
        else:
            config = GPTConfig(block_size=tokens, vocab_size=vocab, n_layer=layers, n_head=1, n_embd=width, dropout=0.0,
                               bias=rng.random() < 0.5)
        yield ModelCase(config, seed=rng.randrange(100), weight_std=rng.choice([0.02, 0.2, 1.0])), tokens, rng.randrange(10**6)


def main(args: list[str]) -> int:
    count = int(args[0]) if args else 80
    registry = TargetRegistry()
    registry.load_entry_points()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{count} models, pooled over 1 + {YARDSTICK_INPUTS} inputs")
    for name in args[1:] or TARGETS:
        target = registry.get(name)
        available = target.probe()
        if not available:
            print(f"{name}: cannot run here: {available.reason}")
            continue
        worst = {(kind, metric, large): 0.0 for kind in ("one", "pooled") for metric in METRICS for large in (0, 1)}
        for case, tokens, seed in models(count):
            model = build_model(case)
            idx = torch.randint(0, case.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(seed))
            try:
                runnable = target.prepare(model, model.config)
            except Exception as exc:  # a shape the target cannot take: say so, go on
                print(f"{name} | {case.family} | not prepared: {type(exc).__name__}: {str(exc)[:100]}")
                continue
            logits, _ = run_checked(runnable, target, model.config, idx, None)
            dtype = low_precision_of(target).compute_dtype
            weights = dequantized_weights(reported_quantized_weights(target, runnable, model))
            ref = arithmetic_reference(model, weights, dtype, idx, None)
            pooled = pooled_logit_baseline(model, weights, dtype, idx, ref.baseline_logits)
            error = logit_metrics(logits, ref.logits64)
            cells = []
            for metric in METRICS:
                for kind, baseline in (("one", ref.baseline_logits), ("pooled", pooled)):
                    ratio = error[metric] / baseline[metric] if baseline[metric] else float("inf")
                    for large in (0, 1) if logits.numel() >= LARGE else (0,):
                        worst[(kind, metric, large)] = max(worst[(kind, metric, large)], ratio)
                    cells.append(f"{metric} {kind} {ratio:.2f}")
            print(f"{name} | {case.family} V={case.config.vocab_size} C={case.config.n_embd} L={case.config.n_layer} "
                  f"T={tokens} std={case.weight_std} | {logits.numel()} logits | " + " | ".join(cells), flush=True)
        print(f"WORST {name}: " + ", ".join(
            f"{metric} {kind}{f' (>= {LARGE} logits)' if large else ''} {worst[(kind, metric, large)]:.2f}"
            for metric in METRICS for kind in ("one", "pooled") for large in (0, 1)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
