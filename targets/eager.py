"""``eager``: the reference model itself in float32, the control every other target is read against."""

from __future__ import annotations

from harness.api import Capabilities, Target


class EagerTarget(Target):
    name = "eager"
    precision = "fp32"
    description = "the reference GPT in eager float32 (the control)"
    capabilities = Capabilities(dynamic_shapes=True)

    def prepare(self, model, config):
        model = model.eval()

        def run(idx, targets=None):
            return model(idx, targets, full_logits=True)

        return run


TARGETS = [EagerTarget()]
