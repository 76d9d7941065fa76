"""Checks layer: a gate that cannot tell right from wrong is not a pass.

On a named case, the *unrelated model* is the case's architecture with another seed and the same
init statistics (the same ``weight_std`` perturbation; for a trained checkpoint, nanoGPT's init),
run in float64 on the case's input. If its output passes the very gates the target's output is
judged by, those gates cannot separate a correct target from a wrong model on this case: the
target's pass is reported as ``recorded`` (measured, shown, not judged), never as a pass.

Measured when this was introduced: on nanoGPT-init cases an unrelated model passes int4-wo's
logit gates on 4 cases and the loss gates of bf16 (5 cases), int4-wo (3), fp16 (1) and int8-wo (1):
near-uniform random models all have a loss of about ln(vocab) and flat logits.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
from gpt_conformance.harness.core.policies import Verdict, get_policy
from gpt_conformance.reference.cases import NANOGPT_STD, CaseSpec, perturb_weights
from gpt_conformance.reference.families import family_named

# Another seed for the same case: a prime far from the named cases' seeds (0..12).
UNRELATED_SEED_OFFSET = 7919


def unrelated_model(spec: CaseSpec) -> torch.nn.Module:
    """The case's architecture with another seed and the same init statistics, in float64."""
    family = family_named(spec.family)
    seed = spec.seed + UNRELATED_SEED_OFFSET
    model = family.build(spec.config, seed)
    if spec.weight_std != NANOGPT_STD:
        perturb_weights(model, spec.weight_std, seed)
    return model.double().eval()


@torch.no_grad()
def unrelated_outputs(spec: CaseSpec, idx: torch.Tensor, targets: torch.Tensor | None):
    """(logits, loss) of the unrelated model on the case's input, in float64."""
    return family_named(spec.family).logits_and_loss(unrelated_model(spec), idx, targets)


def discriminated(verdict: Verdict, unrelated: Verdict) -> Verdict:
    """``verdict``, or ``recorded`` in its place when it passed and so did the unrelated model's
    output under the same gates. A fail stays a fail: worse than any wrong model is still wrong."""
    if not (verdict.passed and unrelated.passed):
        return verdict
    values = ", ".join(f"{g.metric} {g.value:.3g} <= {g.bound:.3g}" if g.direction == "max"
                       else f"{g.metric} {g.value:.3g} >= {g.bound:.3g}" for g in unrelated.gates)
    message = (f"recorded, not judged: an unrelated model (another seed) passes these gates on this case too "
               f"({values})")
    return replace(verdict, status="recorded", message="; ".join(m for m in (message, verdict.message) if m))


def uncalibrated(verdict: Verdict, policy: str) -> Verdict:
    """``verdict`` as ``recorded`` on a case outside its policy's calibration (a non-finite output
    still fails: that is never a question of calibration)."""
    if verdict.metrics.get("nonfinite"):
        return verdict
    message = (f"recorded, not judged: policy {policy!r}'s truth-parity bounds are calibrated on nanoGPT-init "
               f"weights; on trained or rescaled weights the arithmetic level judges the target (would be "
               f"{verdict.status})")
    return replace(verdict, status="recorded", message=message)


def named_parity_verdicts(policy_name: str, spec: CaseSpec, truth: Truth, logits: torch.Tensor,
                          loss: torch.Tensor | None,
                          unrelated: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[Verdict, Verdict | None]:
    """``parity_verdicts`` on a named case, each ``discriminated`` by the unrelated model's output,
    and ``uncalibrated`` where the case's weights are outside the policy's calibration."""
    own = parity_verdicts(None, truth, logits, loss, policy_name)
    if get_policy(policy_name).parity_on_init_weights_only and not has_init_weights(spec):
        return uncalibrated(own[0], policy_name), (uncalibrated(own[1], policy_name) if own[1] else None)
    other = parity_verdicts(None, truth, *unrelated, policy_name)
    loss_verdict = discriminated(own[1], other[1]) if own[1] is not None and other[1] is not None else own[1]
    return discriminated(own[0], other[0]), loss_verdict


def has_init_weights(spec: CaseSpec) -> bool:
    """Whether the case's model is its family's own seeded init (not trained, not rescaled)."""
    return spec.checkpoint is None and spec.weight_std == NANOGPT_STD
