"""The decode path of the ``export`` target: two exported programs over a static KV cache.

This is what an AOT backend ships: a *prefill* program (prompt ids [B, T] -> logits and the filled
cache) and a *step* program (one token per row -> logits and the updated cache), the cache
``[n_layer, B, n_kv_head, block_size, head_dim]`` passed in and returned, never held inside.
Both are ``torch.export`` captures of the reference decoder's one tensor function
(``gpt_conformance.reference.decode.cached_forward``) with the parameters as inputs, so, as for
the forward programs of ``gpt_conformance.targets.export``, one pair serves every model of a
config; the batch is dynamic, and the prompt length too in the prefill program. They are captured
and cached across runs as the forward programs are (``gpt_conformance.targets.capture``, variants
"prefill" and "step"), and checked once per config against ``cached_forward`` run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from gpt_conformance.reference.decode import CachedForward, ReferenceDecoder, cache_shape
from gpt_conformance.reference.families import family_of


class FunctionalCachedForward(torch.nn.Module):
    """``cached_forward`` with the model's parameters passed in, so none are baked into the program."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = CachedForward(model)

    def forward(self, params, idx, k, v, start_slot, first_slot):
        named = {f"model.{name}": p for name, p in params.items()}
        return torch.func.functional_call(self.inner, named, (idx, k, v, start_slot, first_slot))


def decode_example_inputs(model: torch.nn.Module, prompt: bool) -> tuple[torch.Tensor, ...]:
    """(idx, k, v, start_slot, first_slot) to trace the prefill program (``prompt``) or the step program."""
    config = model.config
    block = family_of(config).block_size(config)
    # Sizes of 2 avoid torch.export's specialisation of dimensions whose example size is 0 or 1.
    idx = torch.zeros(2, min(2, block) if prompt else 1, dtype=torch.long)
    k = torch.zeros(cache_shape(config, 2, block), dtype=next(model.parameters()).dtype)
    slots = torch.zeros(2, dtype=torch.long)
    return idx, k, k.clone(), slots, slots.clone()


def export_cached_forward(model: torch.nn.Module, params: dict[str, torch.Tensor], prompt: bool,
                          strict: bool) -> torch.export.ExportedProgram:
    """The prefill program (``prompt``: dynamic length) or the step program (one token). Traced
    through the program store (``gpt_conformance.targets.capture``), which caches it across runs."""
    block = family_of(model.config).block_size(model.config)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    inputs = decode_example_inputs(model, prompt)
    idx_dims = {0: batch}
    if prompt and inputs[0].size(1) == 2:
        idx_dims[1] = torch.export.Dim("seq", min=1, max=block)
    dynamic = ({name: None for name in params}, idx_dims, {1: batch}, {1: batch}, {0: batch}, {0: batch})
    return torch.export.export(FunctionalCachedForward(model), (params, *inputs), dynamic_shapes=dynamic,
                               strict=strict)


class ExportedDecoder(ReferenceDecoder):
    """The reference decoder's bookkeeping (slots, padding, reuse) around the two exported programs,
    ``program(model, variant)`` for the variants "prefill" and "step" (the export target's)."""

    def __init__(self, program: Callable[[torch.nn.Module, str], Any], model: torch.nn.Module,
                 params: dict[str, torch.Tensor]):
        super().__init__(model)
        self.program, self.params = program, params

    def run_prefill(self, idx, k, v, start_slot, first_slot):
        return self.program(self.model, "prefill").module(self.params, idx, k, v, start_slot, first_slot)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        return self.program(self.model, "step").module(self.params, tokens, k, v, start_slot, first_slot)
