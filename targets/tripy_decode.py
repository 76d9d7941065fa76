"""The Tripy targets' decode path on the host: plain torch around two compiled TensorRT engines.

The engines (``targets/tripy_gpt.py``) are NxDI's and TensorRT-LLM's pair, one of each compiled
once per prepared model:

- the *prefill* engine: ``(idx, positions, visible) -> (logits, k, v)`` for a whole prompt, its
  attention over the prompt's own tokens, its k and v ``[n_layer, B, n_head, T, head_size]``;
- the *step* engine: ``(tokens, positions, visible, k_cache, v_cache) -> (logits, k, v)`` for one
  token per row, its attention over the cache's ``cache_len`` static slots followed by the
  token's own k and v (its own slot is not written yet), returning that token's k and v alone.

Everything else is computed here, in torch, as the reference decoder computes it
(``gpt_conformance.reference.decode``): the slots, each token's position, which keys each query
may see (a float 0/1 mask: the engines compare it with 0.5, as the forward graph reads its causal
mask), and the cache writes (nvtripy 0.1.7 has no scatter, so the cache is written here, on the
device that holds it). ``TripyDecoder`` is the reference decoder's bookkeeping (right or left
padding, reuse, the full-cache refusal) with its two cached-forward calls replaced by the engines.
"""

from __future__ import annotations

from typing import Protocol

import torch
from gpt_conformance.reference.decode import CacheOps, DecodeState, ReferenceDecoder, cache_shape

# How the Tripy targets take a ragged batch: left-padded, each row's pads masked out of its real
# tokens' attention and its positions counted from its first real token (the host computes both).
PADDING = "left"


class DecodeEngines(Protocol):
    """The two compiled engines of one model, torch tensors in and out (``TripyRunner``)."""

    def run_prefill(self, idx: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def run_step(self, tokens: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def prefill_visible(ops: CacheOps, slots: torch.Tensor, first_slot: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T, T]`` bool for a prompt at ``slots`` (0 .. T-1): the reference's mask over the
    prompt's own slots (causal, a row's left pads masked out of its real tokens)."""
    return ops.visible(slots, first_slot, slots.size(1))


def step_visible(ops: CacheOps, slots: torch.Tensor, first_slot: torch.Tensor, cache_len: int) -> torch.Tensor:
    """``[B, 1, 1, cache_len + 1]`` bool for one token per row at ``slots`` [B, 1]: the cache slots
    the reference lets it see, less its own (written only after the step), then itself."""
    visible = ops.visible(slots, first_slot, cache_len)
    own = torch.arange(cache_len)[None, None, None, :] == slots[:, None, :, None]
    itself = torch.ones(slots.size(0), 1, 1, 1, dtype=torch.bool)
    return torch.cat([visible & ~own, itself], dim=-1)


def write_layers(ops: CacheOps, cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``cache`` [n_layer, B, H, S, D] with every layer's ``new`` [n_layer, B, H, T, D] written at
    ``slots`` [B, T] (the reference's write, on the cache's device)."""
    slots = slots.to(cache.device)
    return torch.stack([ops.write(cache[i], new[i].to(cache.dtype), slots) for i in range(cache.size(0))])


class TripyDecoder(ReferenceDecoder):
    """The reference decoder's bookkeeping around a model's prefill and step engines, over a
    static cache of ``block_size`` slots in ``cache_dtype`` on ``device``. ``ops`` and
    ``step_ops`` compute the positions, masks and writes (a test plants a bug through them)."""

    def __init__(self, model: torch.nn.Module, engines: DecodeEngines, cache_dtype: torch.dtype,
                 mask_dtype: torch.dtype, device: str, padding: str = "right", ops: CacheOps | None = None,
                 step_ops: CacheOps | None = None):
        super().__init__(model, padding=padding, ops=ops, step_ops=step_ops)
        self.engines = engines
        self.cache_dtype, self.mask_dtype, self.device = cache_dtype, mask_dtype, device

    def empty_state(self, batch: int) -> DecodeState:
        shape = cache_shape(self.model.config, batch, self.cache_len)
        zeros = torch.zeros(batch, dtype=torch.long)
        return DecodeState(torch.zeros(shape, dtype=self.cache_dtype, device=self.device),
                           torch.zeros(shape, dtype=self.cache_dtype, device=self.device), zeros, zeros)

    def run_prefill(self, idx, k, v, start_slot, first_slot):
        if bool(start_slot.any()):
            # The prefill engine attends to the prompt alone: it starts from an emptied cache (reset).
            raise ValueError(f"a Tripy prefill starts at slot 0, got start slots {start_slot.tolist()}")
        slots = torch.arange(idx.size(1))[None, :].expand(idx.size(0), -1)
        visible = prefill_visible(self.ops, slots, first_slot).to(self.mask_dtype)
        logits, k_new, v_new = self.engines.run_prefill(idx, self.ops.positions(slots, first_slot), visible)
        return logits, write_layers(self.ops, k, k_new, slots), write_layers(self.ops, v, v_new, slots)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        slots = start_slot[:, None]
        visible = step_visible(self.step_ops, slots, first_slot, k.size(3)).to(self.mask_dtype)
        logits, k_new, v_new = self.engines.run_step(tokens, self.step_ops.positions(slots, first_slot), visible, k, v)
        return logits, write_layers(self.step_ops, k, k_new, slots), write_layers(self.step_ops, v, v_new, slots)
