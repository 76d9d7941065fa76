"""Every gate can fail: a teeth test for every policy.

For every policy registered by this distribution (its own and its targets'), wrong targets are
wrapped in that policy's precision class (the dtype and weight quantization that a target of the
policy declares) and judged on the fast nanoGPT named cases by the harness's own judging code:

- an *unrelated model* (the case's architecture, another seed, the same init statistics), and
- every planted bug of ``tests/planted.py``.

Three properties, each a test:

1. every wrong target fails at least one gated check of the policy (a policy that a wrong model
   passes everywhere is no policy);
2. every check kind that the policy gates (logits, loss, arithmetic, arithmetic loss, quality)
   fails for at least one wrong target on some case (a gate that cannot fail is a defect);
3. the correct model in the same precision class fails nothing (teeth, not a gate that fails all).

``recorded`` (a gate that cannot tell right from wrong on that case) counts as neither.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest
import torch
from gpt_conformance.harness.checks.conformance import Truth
from gpt_conformance.harness.checks.discrimination import named_parity_verdicts, unrelated_model, unrelated_outputs
from gpt_conformance.harness.checks.precision import (
    ArithmeticReference,
    arithmetic_reference,
    judge_arithmetic,
    judge_quality,
    quality_metrics,
)
from gpt_conformance.harness.core.policies import POLICIES, Verdict, get_policy
from gpt_conformance.harness.core.quant import LowPrecision, dequantized_weights, fake_quant_model, quantize_model
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.reference.cases import NAMED_CASES, CaseSpec
from gpt_conformance.reference.families import family_named
from gpt_conformance.reference.goldens import Golden, load_golden

from tests.planted import PLANTED

CASES = [spec for spec in NAMED_CASES if not spec.slow]
# Bugs a precision class cannot show, with why. Each is checked to be real (the bug passes every
# gated check of the policy), so the list cannot go stale.
BLIND_SPOTS = {
    ("fp16", "planted-tanh-gelu"): "tanh-approximate and exact GELU differ by less than fp16's own rounding noise "
                                   "in the logits (its arithmetic level is 3-4x the fp16 reference's error)",
    ("bf16", "planted-tanh-gelu"): "tanh-approximate and exact GELU differ by less than bf16's own rounding noise",
    ("tf32", "planted-tanh-gelu"): "tanh-approximate and exact GELU differ by less than what TF32's 10-bit matmul "
                                   "operands explain (the tf32 bound is 2^13 x eager fp32's error)",
}
CHECK_KINDS = {"logits": "logit_gates", "loss": "loss_gates", "arithmetic": "arithmetic_gates",
               "arithmetic-loss": "arithmetic_loss_gates", "quality": "quality_gates"}


@cache
def own_targets() -> TargetRegistry:
    registry = TargetRegistry()
    errors = registry.load_entry_points()
    assert not [e for e in errors if e.built_in], errors
    return registry


def own_policies() -> list[str]:
    """Policies a target of this distribution is judged by."""
    return sorted({t.precision for t in own_targets() if t.precision in POLICIES})


def precision_class(policy: str) -> LowPrecision | None:
    """The dtype and quantization a target of ``policy`` declares (None: float32)."""
    declared = [t.low_precision for t in own_targets() if t.precision == policy and getattr(t, "low_precision", None)]
    return declared[0] if declared else None


@cache
def golden(name: str) -> Golden:
    return load_golden(next(spec for spec in CASES if spec.name == name))


def wrapped(model: torch.nn.Module, declared: LowPrecision | None) -> Callable:
    """``model`` computed as a target of the precision class would: weights quantized the
    declared way, every op in the declared dtype."""
    if declared is not None:
        weights = dequantized_weights(quantize_model(model, declared.weights)) if declared.weights else {}
        model = fake_quant_model(model, weights, declared.compute_dtype)
    family = family_named("nanogpt")

    @torch.no_grad()
    def run(idx, targets):
        logits, loss = family.logits_and_loss(model, idx, targets)
        return logits.float(), loss.float()

    return run


def wrong_models() -> dict[str, Callable[[CaseSpec, torch.nn.Module], torch.nn.Module]]:
    wrong = {"unrelated-model": lambda spec, model: unrelated_model(spec).float()}
    wrong.update({t.name: (lambda spec, model, t=t: t.mutate(model)) for t in PLANTED})
    return wrong


@cache
def unrelated(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = golden(name)
    return unrelated_outputs(g.spec, g.idx, g.targets)


@cache
def claimed_reference(policy_name: str, name: str) -> ArithmeticReference:
    """The arithmetic level's reference for the weights a target of the policy claims: the
    correct model's, quantized the declared way, in the declared dtype."""
    g, declared = golden(name), precision_class(policy_name)
    weights = dequantized_weights(quantize_model(g.model, declared.weights)) if declared.weights else {}
    return arithmetic_reference(g.model, weights, declared.compute_dtype, g.idx, g.targets)


def verdicts(policy_name: str, spec: CaseSpec, wrong: Callable | None) -> dict[str, Verdict]:
    """Each gated check kind's verdict for ``wrong`` (None: the correct model) in the policy's
    precision class on ``spec``, judged as the cases judge a target."""
    g = golden(spec.name)
    policy, declared = get_policy(policy_name), precision_class(policy_name)
    model = g.model if wrong is None else wrong(spec, g.model)
    logits, loss = wrapped(model, declared)(g.idx, g.targets)
    truth = Truth(g.logits64, g.loss64, g.logits32, g.loss32)
    other = unrelated(spec.name)
    out = dict(zip(("logits", "loss"), named_parity_verdicts(policy_name, spec, truth, logits, loss, other),
                   strict=True))
    if declared is not None and policy.arithmetic_gates:
        # The target claims the correct model's quantized weights; it computes with its own.
        ref = claimed_reference(policy_name, spec.name)
        out["arithmetic"], out["arithmetic-loss"] = judge_arithmetic(policy, ref, logits, loss)
    if policy.quality_gates:
        out["quality"] = judge_quality(policy, spec.name, quality_metrics(logits, loss, g.logits64, g.loss64),
                                       quality_metrics(*other, g.logits64, g.loss64), float(g.logits64.abs().max()))
    return {kind: v for kind, v in out.items() if v is not None and getattr(policy, CHECK_KINDS[kind])}


@cache
def matrix(policy: str) -> dict[tuple[str, str], dict[str, Verdict]]:
    """{(wrong target or "correct", case): {check kind: verdict}}."""
    out = {("correct", spec.name): verdicts(policy, spec, None) for spec in CASES}
    for name, wrong in wrong_models().items():
        out.update({(name, spec.name): verdicts(policy, spec, wrong) for spec in CASES})
    return out


def failed(found: dict[str, Verdict]) -> list[str]:
    return [kind for kind, v in found.items() if v.failed]


@pytest.mark.parametrize("policy", own_policies())
def test_every_wrong_target_fails_a_gated_check(policy):
    got = matrix(policy)
    blind = {name for name in wrong_models() if not any(failed(got[(name, spec.name)]) for spec in CASES)}
    declared = {bug for (p, bug) in BLIND_SPOTS if p == policy}
    assert blind == declared, (f"policy {policy!r}: wrong targets that pass every named case {sorted(blind)}; "
                               f"declared blind spots {sorted(declared)}")


@pytest.mark.parametrize("policy", own_policies())
def test_every_gate_can_fail(policy):
    got = matrix(policy)
    gated = {kind for kind, field in CHECK_KINDS.items() if getattr(get_policy(policy), field)}
    if precision_class(policy) is None:
        gated -= {"arithmetic", "arithmetic-loss"}  # float32 targets have no arithmetic level
    fired = {kind for (name, _), found in got.items() if name != "correct" for kind in failed(found)}
    assert gated <= fired, f"policy {policy!r}: no wrong target fails {sorted(gated - fired)} on any named case"


@pytest.mark.parametrize("policy", own_policies())
def test_the_correct_model_fails_nothing(policy):
    got = matrix(policy)
    bad = {spec.name: failed(got[("correct", spec.name)]) for spec in CASES}
    assert not any(bad.values()), f"policy {policy!r} fails the correct model: {bad}"
