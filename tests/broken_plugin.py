"""A third-party plugin whose targets misbehave in every way the harness must survive.

Loaded with ``pytest -p tests.broken_plugin`` by ``tests/test_plugin_api.py``: each broken target
must end as an ``error`` (or, for NaN output, ``fail``) verdict with the reason in its record,
never as a pass and never as a crash of the run. ``plugin-custom-policy`` is a correct target
judged under a precision policy the plugin registers itself, so it must pass.
"""

from __future__ import annotations

import torch
from gpt_conformance.harness.api import (
    Capabilities,
    Target,
    TolerancePolicy,
    UnsupportedHere,
    get_policy,
    register_policy,
)

CUSTOM_POLICY = register_policy(TolerancePolicy(
    name="plugin-fp32-custom",
    description="a plugin's own precision class (here: the fp32 class's gates under another name)",
    logit_gates=get_policy("fp32").logit_gates,
    loss_gates=get_policy("fp32").loss_gates,
))


class Eager(Target):
    """The reference itself; subclasses break one thing."""

    capabilities = Capabilities(dynamic_shapes=True)

    def prepare(self, model, config):
        model = model.eval()

        def run(idx, targets=None):
            return self.corrupt(*model(idx, targets, full_logits=True))

        return run

    def corrupt(self, logits, loss):
        return logits, loss


class RaisesInPrepare(Eager):
    name = "plugin-raises-in-prepare"

    def prepare(self, model, config):
        raise RuntimeError("backend compiler crashed: unsupported op aten::planted")


class WrongShape(Eager):
    name = "plugin-wrong-shape"

    def corrupt(self, logits, loss):
        return logits[:, -1:, :], loss  # last position only, as nanoGPT's inference shortcut


class WrongDtype(Eager):
    name = "plugin-wrong-dtype"

    def corrupt(self, logits, loss):
        return logits.to(torch.int32), loss


class NotATuple(Eager):
    name = "plugin-not-a-tuple"

    def corrupt(self, logits, loss):
        return logits


class NaNOutput(Eager):
    name = "plugin-nan-output"

    def corrupt(self, logits, loss):
        logits = logits.clone()
        logits[0, 0, 0] = float("nan")
        return logits, None if loss is None else torch.full_like(loss, float("nan"))


class RefusesAPromisedShape(Eager):
    """Its capabilities accept every shape; its run refuses one: a crash, not a skip."""

    name = "plugin-refuses-a-promised-shape"

    def corrupt(self, logits, loss):
        raise UnsupportedHere("this engine was built for batch 1")


class CustomPolicy(Eager):
    name = "plugin-custom-policy"
    precision = CUSTOM_POLICY.name


class HalvesSharedModel(Eager):
    """Converts the model it is handed instead of a copy, as ``model.half()`` does."""

    name = "plugin-halves-shared-model"

    def prepare(self, model, config):
        half = model.half()

        def run(idx, targets=None):
            logits, loss = half(idx, targets, full_logits=True)
            return logits.float(), loss

        return run


class WritesSharedWeights(Eager):
    """Writes into the shared weights through ``.data``, which torch's version counter misses."""

    name = "plugin-writes-shared-weights"

    def prepare(self, model, config):
        def run(idx, targets=None):
            model.lm_head.weight.data.mul_(1.5)
            return model(idx, targets, full_logits=True)

        return run


BROKEN = [RaisesInPrepare(), WrongShape(), WrongDtype(), NotATuple(), NaNOutput(), HalvesSharedModel(),
          WritesSharedWeights(), RefusesAPromisedShape()]


def pytest_gpt_conformance_register(registry):
    for target in [*BROKEN, CustomPolicy()]:
        registry.register(target, source="tests.broken_plugin")

