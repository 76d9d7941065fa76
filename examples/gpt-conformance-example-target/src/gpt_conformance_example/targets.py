"""``example-numpy``: the GPT forward pass written in NumPy float32 from the reference's weights.

A backend only has to turn a model into a runnable ``run(idx, targets=None) -> (logits [B, T, V],
loss or None)``; gpt-conformance judges the result against its fp64 truth. Here the "backend" is
NumPy: float32 matmuls through NumPy's BLAS, which sums in a different order than PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gpt_conformance.harness.api import Capabilities, Requirements, Target, TolerancePolicy, get_policy, register_policy

# A precision class of our own. NumPy's BLAS reorders float32 reductions, and this module computes
# erf, exp, layer norm and softmax its own way, as a compiler with kernels of its own does: so its
# gates are those of the built-in fp32-compiled class (fp32-reassoc's 4x max_abs failed it at 4.63x
# on a 4-layer model with weights of std 1.0); a plugin could define any gates here.
# Registered at import, so that it exists before the target that names it is registered.
NUMPY_POLICY = register_policy(TolerancePolicy(
    name="example-numpy-fp32",
    description="NumPy float32 (BLAS reorders reductions; its own erf, exp and softmax): fp32-compiled's gates",
    logit_gates=get_policy("fp32-compiled").logit_gates,
    loss_gates=get_policy("fp32-compiled").loss_gates,
    greedy_margin=get_policy("fp32-compiled").greedy_margin,
))

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray, approximation: str) -> np.ndarray:
    if approximation == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)))
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(eps)) * weight
    return y + bias if bias is not None else y


def linear(x: np.ndarray, weights: dict, name: str) -> np.ndarray:
    y = x @ weights[f"{name}.weight"].T
    bias = weights.get(f"{name}.bias")
    return y + bias if bias is not None else y


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(weights: dict, config, idx: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] of the nanoGPT architecture, in float32."""
    B, T = idx.shape
    C, H = config.n_embd, config.n_head
    x = weights["transformer.wte.weight"][idx] + weights["transformer.wpe.weight"][:T]
    causal = np.triu(np.full((T, T), -np.inf, dtype=np.float32), k=1)
    for i in range(config.n_layer):
        p = f"transformer.h.{i}"
        h = layer_norm(x, weights[f"{p}.ln_1.weight"], weights.get(f"{p}.ln_1.bias"), config.layer_norm_eps)
        q, k, v = np.split(linear(h, weights, f"{p}.attn.c_attn"), 3, axis=-1)
        q, k, v = (t.reshape(B, T, H, C // H).transpose(0, 2, 1, 3) for t in (q, k, v))
        att = softmax(q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / math.sqrt(C // H)) + causal)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + linear(y, weights, f"{p}.attn.c_proj")
        h = layer_norm(x, weights[f"{p}.ln_2.weight"], weights.get(f"{p}.ln_2.bias"), config.layer_norm_eps)
        x = x + linear(gelu(linear(h, weights, f"{p}.mlp.c_fc"), config.gelu), weights, f"{p}.mlp.c_proj")
    x = layer_norm(x, weights["transformer.ln_f.weight"], weights.get("transformer.ln_f.bias"), config.layer_norm_eps)
    return x @ weights["lm_head.weight"].T


class NumpyTarget(Target):
    name = "example-numpy"
    precision = NUMPY_POLICY.name
    description = "the GPT forward pass in NumPy float32 (example third-party target)"
    requirements = Requirements(packages=(("numpy", None),), device="cpu")
    capabilities = Capabilities(dynamic_shapes=True, returns_loss=False)

    def environment(self) -> dict:
        return {"numpy": np.__version__}

    def prepare(self, model, config):
        # Done once per model (the harness caches it): weights to NumPy float32.
        weights = {name: t.detach().to(torch.float32).numpy() for name, t in model.state_dict().items()}

        def run(idx, targets=None):
            logits = forward(weights, config, idx.numpy())
            return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), None

        return run


TARGETS = [NumpyTarget()]
