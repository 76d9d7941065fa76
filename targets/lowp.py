"""``eager-fp16`` and ``eager-bf16``: the reference GPT cast to a half-precision dtype, on CPU.

These are the half-precision *baselines*: what any fp16 or bf16 backend (Tripy in fp16, Neuron
in bf16) should be read against besides the fp64 truth. Every weight, activation, LayerNorm and
softmax runs in that dtype, as Tripy's nanoGPT does since it removed its LayerNorm casts.
"""

from __future__ import annotations

import copy

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Target, UnsupportedHere
from gpt_conformance.harness.core.quant import LowPrecision
from gpt_conformance.targets.eager import EagerRunnable


def check_dtype_supported(dtype: torch.dtype) -> None:
    """CPU half-precision matmul, LayerNorm and SDPA work on the torch versions we support
    (>= 2.5); a build without them raises here, which the harness turns into a skip."""
    try:
        x = torch.ones(2, 1, 4, 8, dtype=dtype)
        torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)
        torch.nn.functional.layer_norm(x, (8,)) @ torch.ones(8, 8, dtype=dtype)
    except RuntimeError as exc:
        raise UnsupportedHere(f"torch {torch.__version__} cannot compute in {dtype} on CPU: {exc}") from exc


class EagerCastTarget(Target):
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES, returns_intermediates=True)

    def __init__(self, name: str, dtype: torch.dtype, precision: str):
        self.name = name
        self.precision = precision
        self.dtype = dtype
        self.description = f"the reference GPT cast to {dtype} (every op in {dtype}), CPU"
        # This target *is* the level-1 reference of its dtype: its arithmetic check would compare it with itself.
        self.low_precision = LowPrecision(dtype, is_arithmetic_reference=True)

    def prepare(self, model, config):
        check_dtype_supported(self.dtype)
        return EagerRunnable(copy.deepcopy(model).to(self.dtype))

    def environment(self):
        return {"dtype": str(self.dtype)}


TARGETS = [
    EagerCastTarget("eager-fp16", torch.float16, "fp16"),
    EagerCastTarget("eager-bf16", torch.bfloat16, "bf16"),
]
