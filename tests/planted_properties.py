"""Planted bugs that show only for some configs or inputs, for the property search to find.

Each is the reference with one realistic weight-layout bug that is invisible on part of the
space, so a search has to reach the right region and shrink toward its edge:

- ``planted-heads-reversed``: only when n_head > 1;
- ``planted-positions-wrap-at-8``: only when seq_len > 8;
- ``planted-last-token-embedding``: only when an input token id is vocab_size - 1.

Load them with ``pytest -p tests.planted_properties``.
"""

from __future__ import annotations

import copy

import torch

from tests.planted import PlantedTarget

WRAP = 8


class HeadsReversed(PlantedTarget):
    name = "planted-heads-reversed"
    description = "attention output projection's input columns loaded with the heads in reverse order"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        n_head, n_embd = model.config.n_head, model.config.n_embd
        order = torch.arange(n_embd).view(n_head, n_embd // n_head).flip(0).reshape(-1)
        with torch.no_grad():
            for block in broken.transformer.h:
                block.attn.c_proj.weight.copy_(block.attn.c_proj.weight[:, order])
        return broken


class PositionsWrapAt8(PlantedTarget):
    name = "planted-positions-wrap-at-8"
    description = f"position embeddings past {WRAP} repeat the first {WRAP} rows (an {WRAP}-row position buffer)"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        wpe = broken.transformer.wpe.weight
        with torch.no_grad():
            wpe.copy_(wpe[torch.arange(wpe.size(0)) % WRAP])
        return broken


class LastTokenEmbedding(PlantedTarget):
    name = "planted-last-token-embedding"
    description = "the input embedding's last row reads zeros (a table sized vocab_size - 1); lm_head is intact"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        table = broken.transformer.wte.weight.detach().clone()
        table[-1] = 0.0
        broken.transformer.wte = torch.nn.Embedding.from_pretrained(table, freeze=True)  # unties it from lm_head
        return broken


PLANTED = [HeadsReversed(), PositionsWrapAt8(), LastTokenEmbedding()]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED:
        registry.register(target, source="tests.planted_properties")
