"""The decode path of the ``export`` target: two exported programs over a static KV cache.

This is what an AOT backend ships: a *prefill* program (prompt ids [B, T] -> logits and the filled
cache) and a *step* program (one token per row -> logits and the updated cache), the cache
``[n_layer, B, n_kv_head, block_size, head_dim]`` passed in and returned, never held inside.
Both are ``torch.export`` captures of the reference decoder's one tensor function
(``gpt_conformance.reference.decode.cached_forward``) with the parameters as inputs, so, as for
the forward programs of ``gpt_conformance.targets.export``, one pair serves every model of a
config; the batch is dynamic, and the prompt length too in the prefill program.
"""

from __future__ import annotations

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


def export_cached_forward(model: torch.nn.Module, params: dict[str, torch.Tensor], prompt: bool,
                          strict: bool) -> torch.nn.Module:
    """The prefill program (``prompt``: dynamic length) or the step program (one token)."""
    config = model.config
    block = family_of(config).block_size(config)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # Sizes of 2 avoid torch.export's specialisation of dimensions whose example size is 0 or 1.
    length = min(2, block) if prompt else 1
    idx = torch.zeros(2, length, dtype=torch.long)
    dtype = next(model.parameters()).dtype
    k = torch.zeros(cache_shape(config, 2, block), dtype=dtype)
    slots = torch.zeros(2, dtype=torch.long)
    idx_dims = {0: batch}
    if prompt and length == 2:
        idx_dims[1] = torch.export.Dim("seq", min=1, max=block)
    dynamic = ({name: None for name in params}, idx_dims, {1: batch}, {1: batch}, {0: batch}, {0: batch})
    ep = torch.export.export(FunctionalCachedForward(model), (params, idx, k, k.clone(), slots, slots.clone()),
                             dynamic_shapes=dynamic, strict=strict)
    return ep.module()


class DecodePrograms:
    """The prefill and step programs of each config, exported once and kept for the session."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self._programs: dict[tuple, torch.nn.Module] = {}

    def get(self, model: torch.nn.Module, params: dict[str, torch.Tensor], prompt: bool) -> torch.nn.Module:
        key = (model.config, prompt)
        if key not in self._programs:
            self._programs[key] = export_cached_forward(model, params, prompt, self.strict)
        return self._programs[key]


class ExportedDecoder(ReferenceDecoder):
    """The reference decoder's bookkeeping (slots, padding, reuse) around the two exported programs."""

    def __init__(self, programs: DecodePrograms, model: torch.nn.Module, params: dict[str, torch.Tensor]):
        super().__init__(model)
        self.programs, self.params = programs, params

    def run_prefill(self, idx, k, v, start_slot, first_slot):
        return self.programs.get(self.model, self.params, prompt=True)(self.params, idx, k, v, start_slot, first_slot)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        return self.programs.get(self.model, self.params, prompt=False)(self.params, tokens, k, v, start_slot,
                                                                        first_slot)
