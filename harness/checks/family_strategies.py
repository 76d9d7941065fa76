"""Checks layer: Hypothesis strategies for model-family configs, and the head dimensions both families draw.

``nanochat_configs`` draws valid ``NanochatConfig``s: ``n_kv_head`` is drawn from the divisors of
``n_head`` (full multi-head, grouped-query and, with one kv head, multi-query attention), the head
dimension is even (rotary embeddings rotate channel pairs), the rotary base is one nanochat has
used, and the attention path is SDPA or the explicit one. Shrinking goes towards the simplest
model: one layer, one head, full multi-head attention (``n_kv_head == n_head``, so no kv
repetition), the smallest sizes, base 10000, SDPA.

What the config does not vary is varied by the weights (``strategies.model_cases`` draws nanoGPT's
weight stds for both families): nanochat's head is always untied from its embedding, and at the
larger stds its pre-cap logits reach the softcap's saturated range (``tests/test_strategies.py``
checks that the draws get there).
"""

from __future__ import annotations

import math

from gpt_conformance.reference.nanochat import NanochatConfig
from hypothesis import strategies as st

# nanochat's rotary base: 10000 until 2026-03, 100000 since (karpathy/nanochat commit 6ed7d1d).
ROTARY_BASES = (10000.0, 100000.0)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def head_dims(n_head: int, max_head_dim: int, width_multiple: int = 1, even: bool = False) -> st.SearchStrategy[int]:
    """Head dimensions for ``n_head`` heads whose width ``n_head * head_dim`` is a multiple of
    ``width_multiple`` (a quantized target's block size must tile every linear's in_features:
    n_embd and 4 * n_embd); ``even`` for rotary embeddings. Multiples of the smallest such step,
    shrinking to it; beyond ``max_head_dim`` only when the step itself is."""
    step = width_multiple // math.gcd(n_head, width_multiple)
    if even:
        step = math.lcm(step, 2)
    return st.integers(1, max(1, max_head_dim // step)).map(lambda k: k * step)


@st.composite
def nanochat_configs(draw, max_layers: int = 2, max_heads: int = 4, max_head_dim: int = 16,
                     max_sequence_len: int = 32, max_vocab: int = 97, attn_impl: str | None = "sdpa",
                     width_multiple: int = 1) -> NanochatConfig:
    """``attn_impl=None`` draws the attention path too; ``n_embd`` is a multiple of ``width_multiple``
    (see ``head_dims``)."""
    n_layer = draw(st.integers(1, max_layers))
    n_head = draw(st.integers(1, max_heads))
    # Largest divisor first: shrinking moves towards n_kv_head == n_head (plain multi-head).
    n_kv_head = draw(st.sampled_from(sorted(divisors(n_head), reverse=True)))
    head_dim = draw(head_dims(n_head, max_head_dim, width_multiple, even=True))
    return NanochatConfig(
        sequence_len=draw(st.integers(1, max_sequence_len)),
        vocab_size=draw(st.integers(2, max_vocab)),
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_embd=n_head * head_dim,
        attn_impl=attn_impl or draw(st.sampled_from(("sdpa", "manual"))),
        rotary_base=draw(st.sampled_from(ROTARY_BASES)),
    )
