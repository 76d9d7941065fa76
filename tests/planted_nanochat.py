"""Planted-bug targets for the nanochat family: the reference with one realistic porting bug each.

- ``planted-nanochat-rotary-sign``: rotary embeddings rotate by +angle (the textbook sign)
  instead of nanochat's -angle, in q and k alike. Relative positions still work, so a model
  trained that way is fine, but with nanochat's weights every attention score moves.
- ``planted-nanochat-kv-order``: kv heads repeated in tiled order (``x.repeat``: kv heads
  0, 1, 0, 1) instead of nanochat's ``repeat_interleave`` (0, 0, 1, 1). Invisible whenever the
  two orders coincide: with ``n_kv_head == n_head`` (nothing is repeated) and with
  ``n_kv_head == 1`` (one head repeated), so only a GQA case such as ``nanochat-gqa`` catches it.

Load them with ``pytest -p tests.planted_nanochat``. Their capabilities say they only run
nanochat models.
"""

from __future__ import annotations

import copy

from gpt_conformance.harness.api import Capabilities, Target
from gpt_conformance.reference.families import family_named
from gpt_conformance.reference.nanochat import CausalSelfAttention, NanochatGPT
from torch.nn import functional as F

NANOCHAT = family_named("nanochat")


class PlantedNanochatTarget(Target):
    precision = "fp32"
    capabilities = Capabilities(families=frozenset({"nanochat"}))

    def mutate(self, model: NanochatGPT) -> NanochatGPT:
        raise NotImplementedError

    def prepare(self, model, config):
        broken = self.mutate(model)

        def run(idx, targets=None):
            return NANOCHAT.logits_and_loss(broken, idx, targets)

        return run


class RotaryWrongSign(PlantedNanochatTarget):
    name = "planted-nanochat-rotary-sign"
    description = "rotary embeddings rotate by +angle (textbook sign) instead of nanochat's -angle"

    def mutate(self, model):
        broken = copy.deepcopy(model).eval()
        # apply_rotary_emb with -sin is the rotation by +angle. The tables are buffers, so a
        # .to()/.double() of the broken model would recompute (and fix) them: none happens here.
        broken.sin = -broken.sin
        return broken


class TiledKVAttention(CausalSelfAttention):
    """Attention whose kv heads are repeated in tiled order, the classic GQA porting bug."""

    def attend(self, q, k, v):
        n_rep = self.n_head // self.n_kv_head
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class KVHeadsWrongOrder(PlantedNanochatTarget):
    name = "planted-nanochat-kv-order"
    description = "kv heads repeated tiled (repeat) instead of interleaved (repeat_interleave)"

    def mutate(self, model):
        broken = copy.deepcopy(model).eval()
        for i, block in enumerate(broken.transformer.h):
            tiled = TiledKVAttention(model.config, i).to(block.attn.c_q.weight.dtype)
            tiled.load_state_dict(block.attn.state_dict())
            block.attn = tiled
        return broken


PLANTED_NANOCHAT = [RotaryWrongSign(), KVHeadsWrongOrder()]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED_NANOCHAT:
        registry.register(target, source="tests.planted_nanochat")

