"""A planted slow target: eager plus a sleep in every forward. The latency tier must show it as
clearly slower than eager in the records. Load it with ``pytest -p tests.planted_latency``."""

from __future__ import annotations

import os
import time

from gpt_conformance.harness.api import Target

# 100 ms: well above the tiny model's forward (about 2 ms on an idle 2-core laptop, tens of ms on
# the loaded shared machine this was written on), so the ratio stays far above 1 under noise.
# The environment variable lets the regression-gate test save a baseline without the sleep.
SLEEP_S = float(os.environ.get("PLANTED_LATENCY_SLEEP_S", "0.1"))


class SleepyEager(Target):
    name = "planted-slow-eager"
    precision = "fp32"
    description = f"eager with a {SLEEP_S * 1e3:.0f} ms sleep in every forward"

    def prepare(self, model, config):
        model = model.eval()

        def run(idx, targets=None):
            time.sleep(SLEEP_S)
            return model(idx, targets, full_logits=True)

        return run


PLANTED_SLOW = SleepyEager()


def pytest_gpt_conformance_register(registry):
    registry.register(PLANTED_SLOW, source="tests.planted_latency")
