"""Targets with declared expected failures, for ``tests/test_expected_failures.py``.

``xf-planted-eps`` carries a planted bug (LayerNorm eps 1e-3) and declares that its ``seed``
logits and loss fail: they must be reported as ``xfail``, never as a pass. ``xf-fixed`` is correct,
yet declares (itself, and through this plugin's ``registry.expect_failure``) that its ``seed``
checks fail: a declaration that passes must turn the run red, naming it.
"""

from __future__ import annotations

import copy

from gpt_conformance.harness.api import ExpectedFailure, Target

from tests.planted import rebuilt


class PlantedEps(Target):
    name = "xf-planted-eps"
    expected_failures = (ExpectedFailure("seed", "logits", "LayerNorm eps 1e-3: a known bug of this backend"),
                         ExpectedFailure("seed", "loss", "LayerNorm eps 1e-3: a known bug of this backend"))

    def prepare(self, model, config):
        broken = rebuilt(model, layer_norm_eps=1e-3)
        return lambda idx, targets=None: broken(idx, targets, full_logits=True)


class Fixed(Target):
    name = "xf-fixed"
    expected_failures = (ExpectedFailure("seed", "logits", "was off before backend 2.0"),)

    def prepare(self, model, config):
        own = copy.deepcopy(model)
        return lambda idx, targets=None: own(idx, targets, full_logits=True)


def pytest_gpt_conformance_register(registry):
    registry.register(PlantedEps(), source=__name__)
    registry.register(Fixed(), source=__name__)
    registry.expect_failure("xf-fixed", "seed", "loss", "declared by the plugin, not the target")
