"""Two-level checks for low-precision and quantized targets (those declaring ``low_precision``).

1. ``test_arithmetic``: tightly, against the reference GPT with the same weights (the fake-quant
   reference built from the target's own codes and scales) in the target's compute dtype.
2. ``test_quality``: loosely, against the unquantized fp64 truth: top-1 agreement, KL divergence,
   perplexity ratio; the greedy divergence index is recorded alongside.

Both verdicts and all their metrics go into the records, so a report can show what int4 costs.
"""

import pytest

from harness.precision import QUALITY_CALIBRATED_CASES, arithmetic_verdict, quality_verdict, require_low_precision
from harness.session import assert_verdict
from reference.cases import ALL_CASES

CASES = [pytest.param(spec, id=spec.name, marks=[pytest.mark.slow] if spec.slow else []) for spec in ALL_CASES]


@pytest.mark.parametrize("spec", CASES)
def test_arithmetic(target, spec, conformance):
    conformance.require_family(target, spec.family, spec.name, spec.config)
    if require_low_precision(target).is_arithmetic_reference:
        pytest.skip(f"{target.name}: is itself the arithmetic reference of its dtype (the check would compare it with itself)")
    verdict = arithmetic_verdict(conformance, target, spec)
    conformance.record(target, spec.name, "arithmetic", verdict, spec.config, (spec.batch, spec.seq_len), spec.seed,
                       extra={"level": "arithmetic"})
    assert_verdict(verdict)


@pytest.mark.parametrize("spec", CASES)
def test_quality(target, spec, conformance):
    conformance.require_family(target, spec.family, spec.name, spec.config)
    require_low_precision(target)
    verdict, greedy = quality_verdict(conformance, target, spec)
    gated = spec.name in QUALITY_CALIBRATED_CASES
    conformance.record(target, spec.name, "quality", verdict, spec.config, (spec.batch, spec.seq_len), spec.seed,
                       extra={"level": "quality", "gated": gated, **greedy})
    if not gated:
        pytest.skip(f"{target.name} on {spec.name}: quality recorded, not gated (bounds are calibrated on "
                    f"{sorted(QUALITY_CALIBRATED_CASES)}): {verdict.explain()}")
    assert_verdict(verdict)
