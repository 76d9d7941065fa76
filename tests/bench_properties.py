"""Examples per second of the property search on each CPU target (pytest-benchmark, not a timed test).

Not collected by default (the file name is not ``test_*.py``), so it never slows ``pytest -m cpu``
or CI's plain run. Run it on purpose::

    pytest tests/bench_properties.py -m cpu --benchmark-columns=mean,rounds

Each round searches a fresh seed, so every round draws new configs and pays each target's
preparation (torch.export per config) exactly as a real search does; ``extra_info`` holds the
examples (models) and inputs per second.
"""

from __future__ import annotations

import itertools

import pytest
from gpt_conformance.harness.checks.properties import INPUTS_PER_MODEL, run_search
from gpt_conformance.harness.pytest_plugin.profiles import property_settings
from hypothesis import settings

pytestmark = pytest.mark.gpt_conformance  # parametrized over the targets (harness/pytest_plugin/markers.py)

MODELS_PER_ROUND = 4
# Records per input: parity of logits and loss, causality, batch independence, prefix, loss consistency.
CHECKS_PER_INPUT = 6


@pytest.mark.latency
def test_property_examples_per_second(target, conformance, benchmark):
    seeds = itertools.count()
    runs = settings(property_settings("conformance-ci"), derandomize=False, max_examples=MODELS_PER_ROUND)
    before = conformance.writer.count
    benchmark.pedantic(lambda: run_search(conformance, target, runs, seed=next(seeds)), rounds=3, iterations=1)
    rounds = next(seeds)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        models_per_round=MODELS_PER_ROUND, max_inputs_per_model=INPUTS_PER_MODEL,
        examples_per_second=MODELS_PER_ROUND / mean,
        inputs_per_second=(conformance.writer.count - before) / rounds / CHECKS_PER_INPUT / mean,
        export_count=getattr(target, "export_count", None),
    )
