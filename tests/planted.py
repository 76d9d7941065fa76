"""Planted-bug targets: each is the reference with one realistic backend bug.

The harness exists to catch bugs, so ``tests/`` proves that the parity cases flag every one of
these while the correct targets pass. Load them into a run with ``pytest -p tests.planted``.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from gpt_conformance.harness.api import Target
from gpt_conformance.reference.model import GPT, LayerNorm


def rebuilt(model: GPT, **config_changes) -> GPT:
    """A copy of ``model`` with config fields changed and the same weights."""
    clone = GPT(replace(model.config, **config_changes)).eval()
    clone.load_state_dict(model.state_dict())
    return clone


class PlantedTarget(Target):
    precision = "fp32"

    def mutate(self, model: GPT) -> GPT:
        raise NotImplementedError

    def prepare(self, model, config):
        broken = self.mutate(model)

        def run(idx, targets=None):
            return broken(idx, targets, full_logits=True)

        return run


class MaskOffByOne(PlantedTarget):
    name = "planted-mask-off-by-one"
    description = "causal mask lets each position see one future token"

    def mutate(self, model):
        broken = rebuilt(model, attn_impl="manual")
        for block in broken.transformer.h:
            size = block.attn.bias.size(-1)
            block.attn.bias = torch.ones(size, size, dtype=torch.bool).tril(diagonal=1).view(1, 1, size, size)
        return broken


class LayerNormEps(PlantedTarget):
    name = "planted-layernorm-eps"
    description = "LayerNorm eps 1e-3 instead of 1e-5"

    def mutate(self, model):
        return rebuilt(model, layer_norm_eps=1e-3)


class TransposedWeight(PlantedTarget):
    name = "planted-transposed-weight"
    description = "block 0's attention output projection loaded transposed"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        proj = broken.transformer.h[0].attn.c_proj.weight
        with torch.no_grad():
            proj.copy_(proj.t().clone())
        return broken


class DroppedLayerNormBias(PlantedTarget):
    name = "planted-dropped-layernorm-bias"
    description = "every LayerNorm's bias ignored (invisible at nanoGPT's init, where they are 0)"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        with torch.no_grad():
            for module in broken.modules():
                if isinstance(module, LayerNorm) and module.bias is not None:
                    module.bias.zero_()
        return broken


class DroppedLinearBias(PlantedTarget):
    name = "planted-dropped-linear-bias"
    description = "block 0's MLP input projection loses its bias (invisible where biases are 0)"

    def mutate(self, model):
        broken = copy.deepcopy(model)
        bias = broken.transformer.h[0].mlp.c_fc.bias
        if bias is not None:
            with torch.no_grad():
                bias.zero_()
        return broken


class TanhGelu(PlantedTarget):
    name = "planted-tanh-gelu"
    description = "GELU's tanh approximation where the model uses the exact erf form"

    def mutate(self, model):
        return rebuilt(model, gelu="tanh" if model.config.gelu == "erf" else "erf")


class AttentionScale(PlantedTarget):
    name = "planted-attention-scale"
    description = "attention scores scaled by 1/head_dim instead of 1/sqrt(head_dim)"

    def mutate(self, model):
        broken = rebuilt(model, attn_impl="manual")
        for block in broken.transformer.h:
            block.attn.scale = 1.0 / (model.config.n_embd // model.config.n_head)
        return broken


PLANTED = [MaskOffByOne(), LayerNormEps(), TransposedWeight(), DroppedLayerNormBias(), DroppedLinearBias(), TanhGelu(),
           AttentionScale()]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED:
        registry.register(target, source="tests.planted")
