"""Checks layer: Hypothesis strategies for model-family configs.

``nanochat_configs`` draws valid ``NanochatConfig``s: ``n_kv_head`` is drawn from the divisors of
``n_head`` and the head dimension is even (rotary embeddings rotate channel pairs). Shrinking goes
towards the simplest model: one layer, one head, full multi-head attention (``n_kv_head ==
n_head``, so no kv repetition), the smallest sizes.
"""

from __future__ import annotations

from gpt_conformance.reference.nanochat import NanochatConfig
from hypothesis import strategies as st


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def nanochat_configs(draw, max_layers: int = 2, max_heads: int = 4, max_head_dim: int = 16,
                     max_sequence_len: int = 32, max_vocab: int = 97, attn_impl: str = "sdpa") -> NanochatConfig:
    n_layer = draw(st.integers(1, max_layers))
    n_head = draw(st.integers(1, max_heads))
    # Largest divisor first: shrinking moves towards n_kv_head == n_head (plain multi-head).
    n_kv_head = draw(st.sampled_from(sorted(divisors(n_head), reverse=True)))
    head_dim = 2 * draw(st.integers(1, max_head_dim // 2))
    return NanochatConfig(
        sequence_len=draw(st.integers(1, max_sequence_len)),
        vocab_size=draw(st.integers(2, max_vocab)),
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_embd=n_head * head_dim,
        attn_impl=attn_impl,
    )
