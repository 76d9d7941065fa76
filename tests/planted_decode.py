"""Planted decode bugs: each target is the reference decoder with one bug of the decode path.

Their full forward pass is the reference's own, so every forward check passes them: only the
decode checks (cases/test_decode_path.py) can see these bugs. Load them with
``pytest -p tests.planted_decode``.
"""

from __future__ import annotations

import copy

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Decoding, Target
from gpt_conformance.reference.decode import CacheOps, DecodeState, ReferenceDecoder, cached_forward
from gpt_conformance.targets.eager import EagerDecodingRunnable


class PositionNotAdvanced(CacheOps):
    def positions(self, slots, first_slot):
        # Positions counted from the call's first token: every step at position 0.
        return super().positions(slots, first_slot) - (slots[:, :1] - first_slot[:, None]).clamp(min=0)


class SlotOffByOne(CacheOps):
    def write(self, cache, new, slots):
        return super().write(cache, new, (slots + 1).clamp(max=cache.size(2) - 1))


class AttendsUnwrittenSlots(CacheOps):
    def visible(self, slots, first_slot, cache_len):
        s = torch.arange(cache_len)
        return (s[None, None, :] >= first_slot[:, None, None]).expand(slots.size(0), 1, cache_len)[:, None]


class GqaHeadOrder(CacheOps):
    def write(self, cache, new, slots):
        return super().write(cache, new.flip(1), slots)


class Bfloat16Cache(CacheOps):
    def write(self, cache, new, slots):
        # What the step stores is rounded to bfloat16 (a cache kept below the policy's precision).
        return super().write(cache, new.bfloat16().to(new.dtype), slots)


class PaddingLeaks(CacheOps):
    def visible(self, slots, first_slot, cache_len):
        # The causal mask alone: a left-padded row's tokens attend to its pads.
        return super().visible(slots, torch.zeros_like(first_slot), cache_len)


class NoReset(ReferenceDecoder):
    def reset(self, state, batch):
        if state is None or state.k.size(1) != batch:
            return self.empty_state(batch)
        # The old sequence stays: its slots visible, the new one written after it.
        return DecodeState(state.k, state.v, state.next_slot, state.first_slot)


class StaleLayerInStep(ReferenceDecoder):
    """The steps run block 1 with other weights (its attention output projection scaled by 1.05),
    as a token-generation graph that loaded one layer's weights from elsewhere; the prefill is
    right. Unlike the other bugs, it sits in one block: the block bisection must name h.1."""

    LAYER = 1

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.step_model = copy.deepcopy(self.model)
        if len(self.step_model.transformer.h) > self.LAYER:  # a model cut before block 1 has no bug
            with torch.no_grad():
                self.step_model.transformer.h[self.LAYER].attn.c_proj.weight.mul_(1.05)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        return cached_forward(self.step_model, tokens, k, v, start_slot, first_slot, self.step_ops)


class PlantedDecodeTarget(Target):
    precision = "fp32"

    """The reference decoder with a bug in its prefill (``ops``), in its steps (``step_ops``: the
    prefill is right, as when a backend's token-generation graph alone is wrong) or in itself."""

    def __init__(self, name: str, description: str, ops: CacheOps | None = None, step_ops: CacheOps | None = None,
                 decoder: type[ReferenceDecoder] = ReferenceDecoder, padding: str = "right",
                 families: frozenset[str] = ALL_FAMILIES):
        self.name, self.description = name, description
        self.ops, self.step_ops, self.decoder, self.padding = ops, step_ops, decoder, padding
        self.capabilities = Capabilities(families=families, decode=Decoding(padding=padding))

    def prepare(self, model, config):
        return EagerDecodingRunnable(model, self.decoder(model, padding=self.padding, ops=self.ops,
                                                         step_ops=self.step_ops))


PLANTED_DECODE = [
    PlantedDecodeTarget("planted-decode-position", "the position (rotary offset) does not advance at decode",
                        step_ops=PositionNotAdvanced()),
    PlantedDecodeTarget("planted-decode-slot-off-by-one", "each step writes its k/v one cache slot late",
                        step_ops=SlotOffByOne()),
    PlantedDecodeTarget("planted-decode-unwritten-slots", "a step attends to every cache slot, unwritten ones too",
                        step_ops=AttendsUnwrittenSlots()),
    PlantedDecodeTarget("planted-decode-no-reset", "a reused state keeps the old sequence in its cache",
                        decoder=NoReset),
    PlantedDecodeTarget("planted-decode-gqa-order", "a step stores its kv heads in reverse order",
                        step_ops=GqaHeadOrder(), families=frozenset({"nanochat"})),
    PlantedDecodeTarget("planted-decode-bf16-cache", "a step stores its k/v in bfloat16 under an fp32 policy",
                        step_ops=Bfloat16Cache()),
    PlantedDecodeTarget("planted-decode-stale-layer", "a step runs block 1 with other weights",
                        decoder=StaleLayerInStep),
    PlantedDecodeTarget("planted-decode-padding-leak", "left padding without a mask: tokens attend to pads",
                        ops=PaddingLeaks(), padding="left"),
]


def pytest_gpt_conformance_register(registry):
    for target in PLANTED_DECODE:
        registry.register(target)
