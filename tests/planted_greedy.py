"""Planted-bug target for the greedy-text cases: two rows of the token embedding swapped.

A realistic weight-loading bug (a permuted vocabulary, an off-by-one in a sharded embedding
copy). The embedding is tied to the output head, so the two tokens trade places both as inputs
and as predictions. Load it with ``pytest -p tests.planted_greedy``; the tiny-model greedy case
must fail on it.
"""

from __future__ import annotations

import copy

import torch

from tests.planted import PlantedTarget

SWAPPED_ROWS = (0, 1)  # in the shipped Zen model: "\n" and " "


class SwappedEmbeddingRows(PlantedTarget):
    name = "planted-swapped-embedding-rows"
    description = f"token embedding rows {SWAPPED_ROWS[0]} and {SWAPPED_ROWS[1]} swapped (tied to the head)"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        a, b = SWAPPED_ROWS
        weight = broken.transformer.wte.weight
        with torch.no_grad():
            weight[[a, b]] = weight[[b, a]].clone()
        return broken


PLANTED_GREEDY = [SwappedEmbeddingRows()]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED_GREEDY:
        registry.register(target, source="tests.planted_greedy")
