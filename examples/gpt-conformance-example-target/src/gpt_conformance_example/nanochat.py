"""``example-nanochat-numpy``: nanochat's GPT forward pass written in NumPy float32, and only that.

A target of one model family declares it (``Capabilities(families=frozenset({"nanochat"}))``): the
harness then hands it nanochat models only, in named parity, property searches, pinned examples
and greedy text alike. Its ``prepare`` refuses any other model loudly, so a harness that broke
that promise would show as an ``error`` here.

nanochat's arithmetic, as the reference (``gpt_conformance.reference.nanochat``) computes it:
parameter-free RMSNorm with eps ``RMS_NORM_EPS``; rotary embeddings on q and k that pair the
first and second halves of each head and rotate by -angle, with tables computed in float64 and
rounded once; RMSNorm of q and k after the rotation; each kv head serving consecutive query
heads (``repeat_interleave`` order); ReLU² MLP; untied head; logits softcapped with ``SOFTCAP``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gpt_conformance.harness.api import Capabilities, Requirements, Target
from gpt_conformance.reference.nanochat import RMS_NORM_EPS, SOFTCAP, NanochatConfig

from gpt_conformance_example.targets import NUMPY_POLICY, softmax


def rms_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(RMS_NORM_EPS))


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin ``[1, T, 1, head_dim // 2]``, computed in float64 and rounded once to float32."""
    inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(seq_len, dtype=np.float64), inv_freq)
    return (np.cos(angles)[None, :, None, :].astype(np.float32), np.sin(angles)[None, :, None, :].astype(np.float32))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return np.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


def forward(weights: dict, config: NanochatConfig, idx: np.ndarray) -> np.ndarray:
    """Softcapped logits [B, T, V] of nanochat's architecture, in float32."""
    B, T = idx.shape
    H, KV, D = config.n_head, config.n_kv_head, config.head_dim
    cos, sin = rotary_tables(T, D, config.rotary_base)
    causal = np.triu(np.full((T, T), -np.inf, dtype=np.float32), k=1)
    x = rms_norm(weights["transformer.wte.weight"][idx])
    for i in range(config.n_layer):
        p = f"transformer.h.{i}"
        h = rms_norm(x)
        q = (h @ weights[f"{p}.attn.c_q.weight"].T).reshape(B, T, H, D)
        k = (h @ weights[f"{p}.attn.c_k.weight"].T).reshape(B, T, KV, D)
        v = (h @ weights[f"{p}.attn.c_v.weight"].T).reshape(B, T, KV, D)
        q, k = rms_norm(rotate(q, cos, sin)), rms_norm(rotate(k, cos, sin))
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [B, heads, T, D]
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        att = softmax(q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / math.sqrt(D)) + causal)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        x = x + y @ weights[f"{p}.attn.c_proj.weight"].T
        h = np.maximum(rms_norm(x) @ weights[f"{p}.mlp.c_fc.weight"].T, np.float32(0.0))
        x = x + (h * h) @ weights[f"{p}.mlp.c_proj.weight"].T
    logits = rms_norm(x) @ weights["lm_head.weight"].T
    return np.float32(SOFTCAP) * np.tanh(logits / np.float32(SOFTCAP))


class NumpyNanochatTarget(Target):
    name = "example-nanochat-numpy"
    precision = NUMPY_POLICY.name
    description = "nanochat's forward pass in NumPy float32 (example third-party target of one model family)"
    requirements = Requirements(packages=(("numpy", None),), device="cpu")
    capabilities = Capabilities(dynamic_shapes=True, families=frozenset({"nanochat"}), returns_loss=False)

    def environment(self) -> dict:
        return {"numpy": np.__version__}

    def prepare(self, model, config):
        if not isinstance(config, NanochatConfig):
            raise TypeError(f"{self.name} declares the nanochat family only, and was handed a {type(config).__name__}")
        weights = {name: t.detach().to(torch.float32).numpy() for name, t in model.state_dict().items()}

        def run(idx, targets=None):
            logits = forward(weights, config, idx.numpy())
            return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), None

        return run


TARGETS = [NumpyNanochatTarget()]
