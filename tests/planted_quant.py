"""Quantized targets for proving the two-level checks: one correct, one with Tripy's int4 bug.

Both quantize with the pure-torch ``gpt_conformance.harness.core.quant.quantize_model`` (no modelopt needed) and
report the same, correct ``quantized_weights``. The planted one then *applies* the block
scales along the wrong axis, as Tripy's nanoGPT example loader does: it reshapes modelopt's flat
block amax to [out / B, in] and so scales blocks of output channels instead of blocks of input
features. The arithmetic check must fail it and say that the scales disagree.

Load them with ``pytest -p tests.planted_quant``.
"""

from __future__ import annotations

import torch
from gpt_conformance.harness.api import Capabilities, Target
from gpt_conformance.harness.core.quant import (
    LowPrecision,
    WeightQuantization,
    dequantized_weights,
    fake_quant_model,
    quantize_model,
    wrong_layout_weights,
)

BLOCK_SIZE = 16
WRONG_AXIS = "block scales reshaped along the wrong axis ([out/B, in], as Tripy's nanoGPT int4 loader)"


class TorchQuantRunnable:
    def __init__(self, model, quantized_weights):
        self.model = model
        self.quantized_weights = quantized_weights

    def __call__(self, idx, targets=None):
        return self.model(idx, targets, full_logits=True)


class TorchInt4Target(Target):
    """int4 weight-only with the right scale layout: the control that must pass."""

    name = "fake-quant-int4-wo"
    precision = "int4-wo"
    description = f"pure-torch int4 weight-only fake quant, blocks of {BLOCK_SIZE} (correct layout)"
    capabilities = Capabilities(dynamic_shapes=True)
    low_precision = LowPrecision(torch.float32, weights=WeightQuantization(4, BLOCK_SIZE))

    def weights_to_apply(self, quantized):
        return dequantized_weights(quantized)

    def prepare(self, model, config):
        quantized = quantize_model(model, self.low_precision.weights)
        return TorchQuantRunnable(fake_quant_model(model, self.weights_to_apply(quantized)), quantized)


class WrongAxisInt4Target(TorchInt4Target):
    name = "planted-int4-wrong-axis"
    description = "int4 block scales applied along out_features (Tripy nanoGPT loader's reshape)"

    def weights_to_apply(self, quantized):
        return wrong_layout_weights(quantized)[WRONG_AXIS]


class TorchInt8Target(TorchInt4Target):
    """int8 weight-only, per-channel scales: the control for the causal-mask leak below."""

    name = "fake-quant-int8-wo"
    precision = "int8-wo"
    description = "pure-torch int8 weight-only fake quant, per output channel"
    low_precision = LowPrecision(torch.float32, weights=WeightQuantization(8, None))


class Int8MaskLeak(TorchInt8Target):
    name = "planted-int8-mask-leak"
    description = "int8 weight-only with a causal mask that lets each position see one future token"

    def prepare(self, model, config):
        runnable = super().prepare(model, config)
        runnable.model = leaky_mask(runnable.model)
        return runnable


def leaky_mask(model):
    """``model`` on the manual attention path with a mask one token too wide (tests/planted.py's)."""
    from tests.planted import MaskOffByOne

    return MaskOffByOne().mutate(model)


PLANTED_QUANT = [TorchInt4Target(), WrongAxisInt4Target(), TorchInt8Target(), Int8MaskLeak()]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED_QUANT:
        registry.register(target, source="tests.planted_quant")
