"""``eager``: the reference model itself in float32, the control every other target is read against."""

from __future__ import annotations

from harness.api import ALL_FAMILIES, Capabilities, Target
from reference.families import family_of


class EagerTarget(Target):
    name = "eager"
    precision = "fp32"
    description = "the reference GPT in eager float32 (the control)"
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)

    def prepare(self, model, config):
        model = model.eval()
        family = family_of(model.config)

        def run(idx, targets=None):
            return family.logits_and_loss(model, idx, targets)

        return run


TARGETS = [EagerTarget()]
