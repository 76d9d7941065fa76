"""How much of a loss gate's bound its floor sets: the loss gates of ``fp32-reassoc`` and
``fp32-compiled`` (one gate) and the weight-only arithmetic level (int8-wo, int4-wo).

For each correct target of those classes that runs here, on every fast named case and every input
kept in ``cases/found_examples.json``: the target's loss error (as the harness judges it:
``parity_verdicts`` for the fp32 classes, ``output_arithmetic_verdicts`` against the fake-quant
reference for the weight-only ones), the gate's yardstick (the reference's own loss error + its
logit rmse, from the reference, never from the target), the bound with the original export check's
absolute 1e-5, the bound with only the ulps floor of |loss|, and value / bound for both. The
numbers in docs/sources.md#loss-floors-of-the-reassociating-and-weight-only-gates come from here.

    python benchmarks/loss_floors.py [TARGET ...]    # default: every such target that runs here

One target at a time, one process: inductor compiles each model (minutes on a loaded machine).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts, run_checked
from gpt_conformance.harness.checks.precision import low_precision_of, output_arithmetic_verdicts
from gpt_conformance.harness.checks.reference_memo import REFERENCES
from gpt_conformance.harness.checks.strategies import InputCase, ModelCase, build_model
from gpt_conformance.harness.core.policies import get_policy
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.reference.cases import ALL_CASES
from gpt_conformance.reference.goldens import load_golden

TARGETS = ("inductor", "onnxruntime", "torchscript-trace", "modelopt-int8-wo", "modelopt-int4-wo",
           "torchao-int8-wo", "torch-int4-wo")
# The absolute floor these gates had: the original functional_call + torch.export check's.
ORIGINAL_ATOL = 1e-5
FOUND = Path(__file__).resolve().parents[1] / "cases" / "found_examples.json"


def inputs():
    """(name, fp32 model, idx, targets, Truth) for every fast named case (its golden's truth and eager
    baseline, as cases/test_parity.py judges it), then every kept found input (computed here, as
    cases/test_properties.py does)."""
    for spec in ALL_CASES:
        if not spec.slow:
            g = load_golden(spec)
            yield spec.name, g.model, g.idx, g.targets, Truth(g.logits64, g.loss64, g.logits32, g.loss32)
    for found in json.loads(FOUND.read_text()):
        inp = InputCase.from_dict(found["input"])
        model, idx, targets = build_model(ModelCase.from_dict(found["model"])), inp.tensor("idx"), inp.tensor("targets")
        yield found["name"], model, idx, targets, Truth(*REFERENCES.outputs(model, idx, targets))


def loss_gate_result(target, model, idx, targets, truth):
    """(the harness's loss GateResult, the Gate that produced it) for one input."""
    runnable = target.prepare(model, model.config)
    logits, loss = run_checked(runnable, target, model.config, idx, targets)
    policy = get_policy(target.precision)
    if low_precision_of(target) is None:
        verdict = parity_verdicts(target, truth, logits, loss)[1]
        gate = policy.loss_gates[0]
    else:
        verdict = output_arithmetic_verdicts(target, runnable, model, idx, targets, logits, loss)[1]
        gate = policy.arithmetic_loss_gates[0]
    return verdict, gate


def main(names: list[str]) -> int:
    registry = TargetRegistry()
    registry.load_entry_points()
    print(f"torch {torch.__version__}; " + ", ".join(
        f"{m} {__import__(m).__version__}" for m in ("onnxruntime", "torchao") if _importable(m)))
    print("target | input | |loss| | loss error | yardstick | bound with 1e-5 | bound, ulps floor only "
          "| error / old | error / new | floor share of new")
    worst = 0.0
    for name in names or TARGETS:
        target = registry.get(name)
        available = target.probe()
        if not available:
            print(f"{name} | - | cannot run here: {available.reason}")
            continue
        for case, model, idx, targets, truth in inputs():
            if not target.capabilities.accepts(*idx.shape):
                print(f"{name} | {case} | not accepted: shape {tuple(idx.shape)}")
                continue
            try:
                verdict, gate = loss_gate_result(target, model, idx, targets, truth)
            except Exception as exc:  # a target that cannot take this model: say so, go on
                print(f"{name} | {case} | not run: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            result = verdict.gates[0]
            scale = abs(verdict.metrics["loss_truth"])
            new = replace(gate, floor_abs=0.0).bound(result.baseline, scale)
            old = replace(gate, floor_abs=ORIGINAL_ATOL).bound(result.baseline, scale)
            floor_share = gate.floor_rel * scale / new
            worst = max(worst, result.value / new)
            print(f"{name} | {case} | {scale:.3g} | {result.value:.3g} | {result.baseline:.3g} | {old:.3g} | {new:.3g} "
                  f"| {result.value / old:.3f} | {result.value / new:.3f} | {floor_share:.2f}", flush=True)
    print(f"worst loss error / bound without the 1e-5: {worst:.3f}")
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
