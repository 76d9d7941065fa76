"""``eager``: the reference model itself in float32, the control every other target is read against."""

from __future__ import annotations

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Decoding, Target
from gpt_conformance.reference.decode import ReferenceDecoder
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.intermediates import intermediates_of


class EagerRunnable:
    """A reference model (of any family, in any dtype) run as it is; ``intermediates`` reads its
    named per-layer outputs through forward hooks. The eager targets and the planted-bug targets
    of ``tests/`` share it."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.family = family_of(model.config)

    def __call__(self, idx, targets=None):
        return self.family.logits_and_loss(self.model, idx, targets)

    def intermediates(self, idx):
        return intermediates_of(self.model, idx)


class EagerDecodingRunnable(EagerRunnable):
    """``EagerRunnable`` that also decodes with the reference decoder (``gpt_conformance.reference.decode``)."""

    def __init__(self, model: torch.nn.Module, decoder: ReferenceDecoder | None = None):
        super().__init__(model)
        self.decoder = decoder or ReferenceDecoder(self.model)

    def prefill(self, idx, lengths=None, state=None):
        return self.decoder.prefill(idx, lengths, state)

    def step(self, state, tokens):
        return self.decoder.step(state, tokens)


class EagerTarget(Target):
    name = "eager"
    precision = "fp32"
    description = "the reference GPT in eager float32 (the control)"
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES, returns_intermediates=True,
                                decode=Decoding())

    def prepare(self, model, config):
        return EagerDecodingRunnable(model)


TARGETS = [EagerTarget()]
