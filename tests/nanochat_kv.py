"""An outside plugin: nanochat's own ``GPT.forward(idx, kv_cache=...)``, wrapped for the decode checks.

nanochat (karpathy/nanochat, ``nanochat/engine.py`` and ``nanochat/gpt.py`` as of 2025-10) decodes
with a ``KVCache`` of shape ``(num_layers, 2, batch, num_kv_heads, seq_len, head_dim)``: each
layer's attention inserts its new k and v at the cache position and attends to everything up to
it, the position advances after the last layer, and the rotary tables are read from that
position on. This module re-creates that contract, written apart from the harness's reference
decoder (``reference/decode.py``), so that the decode checks compare two independent decoders.

``NanochatKVTarget`` is all a nanochat user writes to get decode coverage: ``prefill`` makes a
cache and calls the model once, ``step`` calls it again with the next token. nanochat's cache has
one position for the whole batch (no ragged batches) and is made anew for each sequence.
Load it with ``pytest -p tests.nanochat_kv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gpt_conformance.harness.api import Capabilities, Decoding, Target
from gpt_conformance.reference.nanochat import SOFTCAP, NanochatGPT, apply_rotary_emb, norm


class KVCache:
    """nanochat's cache: grown as tokens arrive, its position advanced by the last layer."""

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int):
        self.kv_shape = (num_layers, 2, batch_size, num_heads, seq_len, head_dim)
        self.kv_cache: torch.Tensor | None = None
        self.pos = 0

    def get_pos(self) -> int:
        return self.pos

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kv_cache is None:
            self.kv_cache = torch.empty(self.kv_shape, dtype=k.dtype, device=k.device)
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.kv_cache.size(4):
            raise ValueError(f"KVCache holds {self.kv_cache.size(4)} tokens, {t1} needed")
        self.kv_cache[layer_idx, 0, :, :, t0:t1] = k
        self.kv_cache[layer_idx, 1, :, :, t0:t1] = v
        if layer_idx == self.kv_cache.size(0) - 1:
            self.pos = t1
        return self.kv_cache[layer_idx, 0, :, :, :t1], self.kv_cache[layer_idx, 1, :, :, :t1]


def nanochat_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """nanochat's three cases: no cache or a whole prompt (causal), one new token (sees every
    cached key), a chunk after a prefix (sees the prefix and, causally, itself)."""
    Tq, Tk = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if Tq == 1:
        return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
    mask = torch.zeros(Tq, Tk, dtype=torch.bool, device=q.device)
    mask[:, :Tk - Tq] = True
    mask[:, Tk - Tq:] = torch.ones(Tq, Tq, dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def forward_with_cache(model: NanochatGPT, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
    """nanochat's ``GPT.forward(idx, kv_cache=...)``: softcapped logits [B, T, V]."""
    B, T = idx.shape
    cfg = model.config
    t0 = 0 if kv_cache is None else kv_cache.get_pos()
    cos_sin = model.cos[:, t0:t0 + T], model.sin[:, t0:t0 + T]
    x = norm(model.transformer.wte(idx))
    for i, block in enumerate(model.transformer.h):
        attn, h = block.attn, norm(x)
        q = attn.c_q(h).view(B, T, cfg.n_head, cfg.head_dim)
        k = attn.c_k(h).view(B, T, cfg.n_kv_head, cfg.head_dim)
        v = attn.c_v(h).view(B, T, cfg.n_kv_head, cfg.head_dim)
        q, k = apply_rotary_emb(q, *cos_sin), apply_rotary_emb(k, *cos_sin)
        q, k, v = norm(q).transpose(1, 2), norm(k).transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(i, k, v)
        y = nanochat_attention(q, k, v)
        x = x + attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))
        x = x + block.mlp(norm(x))
    logits = model.lm_head(norm(x))
    return SOFTCAP * torch.tanh(logits / SOFTCAP)


class NanochatKVRunnable:
    def __init__(self, model: NanochatGPT):
        self.model = model.eval()

    def __call__(self, idx, targets=None):
        return forward_with_cache(self.model, idx), None

    # The decode protocol, in a few lines over nanochat's own cache.
    def prefill(self, idx):
        cfg = self.model.config
        cache = KVCache(idx.size(0), cfg.n_kv_head, cfg.sequence_len, cfg.head_dim, cfg.n_layer)
        return forward_with_cache(self.model, idx, cache), cache

    def step(self, cache, tokens):
        return forward_with_cache(self.model, tokens, cache), cache


class NanochatKVTarget(Target):
    name = "nanochat-kv-cache"
    precision = "fp32-reassoc"
    description = "nanochat's GPT.forward(idx, kv_cache=KVCache(...)): its own cache and attention masks"
    capabilities = Capabilities(families=frozenset({"nanochat"}), returns_loss=False,
                                decode=Decoding(padding=None, reusable_state=False))

    def prepare(self, model, config):
        return NanochatKVRunnable(model)


def pytest_gpt_conformance_register(registry):
    registry.register(NanochatKVTarget())
