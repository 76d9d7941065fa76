"""The reference decoder: prefill a prompt into a static per-layer KV cache, then one token at a time.

Both families, in the model's dtype (fp32 or fp64), computing what the full forward pass computes:

- nanoGPT: the learned position embedding of each token's own position;
- nanochat: the rotary tables read at each token's position (the cache offset), QK RMSNorm after
  the rotation, and GQA: the cache holds ``n_kv_head`` heads, each serving ``n_head // n_kv_head``
  consecutive query heads (``repeat_interleave`` order, as the full forward pass).

The cache is static, as AOT backends ship it (NxDI, TensorRT-LLM): ``k`` and ``v`` of shape
``[n_layer, B, n_kv_head, cache_len, head_dim]``. Every row keeps two slot numbers:

- ``next_slot``: where its next token is written;
- ``first_slot``: its first real token. A ragged batch is right-padded (every row starts at slot 0,
  its pads come after its last token and are overwritten by its next steps) or left-padded (its
  pads fill slots ``0 .. first_slot - 1``, masked out of every real token's attention).

A token's position (what the position embedding or rotary table sees) is its slot minus the row's
``first_slot``; a query at slot ``s`` attends to the slots ``first_slot .. s`` of its own row (a pad
attends to itself only, so it stays finite and never reaches a real token).

``cached_forward`` is one pure tensor function for prefill and step (no Python branch on values),
so ``torch.export`` captures it as it is (``gpt_conformance.targets.export_decode``). The small
operations it is built of live on ``CacheOps``, so a test can plant one realistic decode bug by
overriding one of them (``tests/planted_decode.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.nanochat import SOFTCAP, apply_rotary_emb, norm
from torch.nn import functional as F

PADDINGS = ("right", "left")


@dataclass
class DecodeState:
    """What a decoder carries from one call to the next."""

    k: torch.Tensor  # [n_layer, B, n_kv_head, cache_len, head_dim]
    v: torch.Tensor
    next_slot: torch.Tensor  # [B] int64: the slot each row's next token is written to
    first_slot: torch.Tensor  # [B] int64: each row's first real slot (its left padding before it)

    @property
    def cache_len(self) -> int:
        return self.k.size(3)


def cache_shape(config, batch: int, cache_len: int) -> tuple[int, int, int, int, int]:
    """``[n_layer, batch, n_kv_head, cache_len, head_dim]`` of a model of either family."""
    n_kv_head = getattr(config, "n_kv_head", config.n_head)
    return (config.n_layer, batch, n_kv_head, cache_len, config.n_embd // config.n_head)


class CacheOps:
    """The operations that place tokens in the cache and let them see each other."""

    def positions(self, slots: torch.Tensor, first_slot: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` positions of the tokens at ``slots``; a left pad (before its row's first
        slot) reads position 0, which is never seen by a real token."""
        return (slots - first_slot[:, None]).clamp(min=0)

    def write(self, cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """``cache`` [B, H, S, D] with ``new`` [B, H, T, D] written at ``slots`` [B, T]."""
        index = slots[:, None, :, None].expand(new.shape)
        return cache.scatter(2, index, new)

    def visible(self, slots: torch.Tensor, first_slot: torch.Tensor, cache_len: int) -> torch.Tensor:
        """``[B, 1, T, S]`` bool: which cache slots the query at each of ``slots`` attends to."""
        s = torch.arange(cache_len, device=slots.device)
        causal = s[None, None, :] <= slots[:, :, None]
        real = s[None, None, :] >= first_slot[:, None, None]
        own = s[None, None, :] == slots[:, :, None]  # a left pad sees itself only
        return ((causal & real) | own)[:, None]

    def expand_kv(self, x: torch.Tensor, n_rep: int) -> torch.Tensor:
        """``[B, H_kv, S, D] -> [B, H_kv * n_rep, S, D]``, kv head j serving query heads
        ``j * n_rep .. (j + 1) * n_rep - 1``."""
        return x if n_rep == 1 else torch.repeat_interleave(x, n_rep, dim=1)


def attend(ops: CacheOps, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
           first_slot: torch.Tensor, n_rep: int, head_dim: int) -> torch.Tensor:
    """Masked softmax attention of ``q`` [B, H, T, D] over the cache ``k``, ``v`` [B, H // n_rep, S, D].
    ``n_rep`` and the scale come from the config, not from tensor sizes: a traced graph
    (``torch.jit.trace``, ``torch_neuronx.trace``) would freeze a size read as a Python number."""
    k, v = ops.expand_kv(k, n_rep), ops.expand_kv(v, n_rep)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
    att = att.masked_fill(~ops.visible(slots, first_slot, k.size(2)), float("-inf"))
    return F.softmax(att, dim=-1) @ v


def _nanogpt_layers(model, ops, idx, k_cache, v_cache, slots, first_slot):
    B, T = idx.shape
    cfg = model.config
    hs = cfg.n_embd // cfg.n_head
    x = model.transformer.wte(idx) + model.transformer.wpe(ops.positions(slots, first_slot))
    ks, vs = [], []
    for i, block in enumerate(model.transformer.h):
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(cfg.n_embd, dim=2)
        q, k, v = (t.view(B, T, cfg.n_head, hs).transpose(1, 2) for t in (q, k, v))
        ks.append(ops.write(k_cache[i], k, slots))
        vs.append(ops.write(v_cache[i], v, slots))
        y = attend(ops, q, ks[-1], vs[-1], slots, first_slot, n_rep=1, head_dim=hs)
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, cfg.n_embd))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.transformer.ln_f(x)), ks, vs


def _nanochat_layers(model, ops, idx, k_cache, v_cache, slots, first_slot):
    B, T = idx.shape
    cfg = model.config
    positions = ops.positions(slots, first_slot)
    cos, sin = model.cos[0][positions], model.sin[0][positions]  # [B, T, 1, head_dim // 2]
    x = norm(model.transformer.wte(idx))
    ks, vs = [], []
    for i, block in enumerate(model.transformer.h):
        attn, h = block.attn, norm(x)
        q = attn.c_q(h).view(B, T, cfg.n_head, cfg.head_dim)
        k = attn.c_k(h).view(B, T, cfg.n_kv_head, cfg.head_dim)
        v = attn.c_v(h).view(B, T, cfg.n_kv_head, cfg.head_dim)
        q, k = norm(apply_rotary_emb(q, cos, sin)), norm(apply_rotary_emb(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ks.append(ops.write(k_cache[i], k, slots))
        vs.append(ops.write(v_cache[i], v, slots))
        y = attend(ops, q, ks[-1], vs[-1], slots, first_slot, n_rep=cfg.n_head // cfg.n_kv_head,
                   head_dim=cfg.head_dim)
        x = x + attn.c_proj(y.transpose(1, 2).reshape(B, T, cfg.n_embd))
        x = x + block.mlp(norm(x))
    logits = model.lm_head(norm(x))
    return SOFTCAP * torch.tanh(logits / SOFTCAP), ks, vs


LAYERS = {"nanogpt": _nanogpt_layers, "nanochat": _nanochat_layers}


def cached_forward(model: torch.nn.Module, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   start_slot: torch.Tensor, first_slot: torch.Tensor, ops: CacheOps | None = None):
    """Run ``idx`` [B, T] written at slots ``start_slot[b] .. start_slot[b] + T - 1`` of the cache
    ``k``, ``v``; return ``(logits [B, T, V], k, v)`` with the new cache (the inputs are not changed).
    Prefill is this with an empty cache; a step is this with T = 1. The caller keeps every slot
    inside the cache (``ReferenceDecoder`` checks it)."""
    ops = ops or CacheOps()
    slots = start_slot[:, None] + torch.arange(idx.size(1), device=idx.device)[None, :]
    logits, ks, vs = LAYERS[family_of(model.config).name](model, ops, idx, k, v, slots, first_slot)
    return logits, torch.stack(ks), torch.stack(vs)


class CachedForward(torch.nn.Module):
    """``cached_forward`` of one model as a module: what a backend captures or compiles, once for
    its prefill (context-encoding) shapes and once for its step (token-generation) shapes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx, k, v, start_slot, first_slot):
        return cached_forward(self.model, idx, k, v, start_slot, first_slot)


def pad_ragged(rows: list[torch.Tensor], padding: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx [B, T], lengths [B])``: the 1-D token rows padded to the longest, on the ``padding`` side."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    width = max(len(r) for r in rows)
    idx = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for b, row in enumerate(rows):
        if padding == "left":
            idx[b, width - len(row):] = row
        else:
            idx[b, :len(row)] = row
    return idx, torch.tensor([len(r) for r in rows], dtype=torch.long)


class ReferenceDecoder:
    """The reference's incremental decoder over a static cache of ``cache_len`` slots (the
    model's block size by default); the decode protocol of ``gpt_conformance.harness.api``.

    ``prefill(idx, lengths, state)``: ``idx`` [B, T], row b's ``lengths[b]`` real tokens placed as
    ``padding`` says (all T when ``lengths`` is None); returns logits [B, T, V] and the state
    (given a state, its buffers are reused and reset). ``step(state, tokens [B, 1])``: each row's
    next token; returns logits [B, 1, V] and the advanced state."""

    def __init__(self, model: torch.nn.Module, cache_len: int | None = None, padding: str = "right",
                 ops: CacheOps | None = None, step_ops: CacheOps | None = None):
        family = family_of(model.config)
        self.model = model.eval()
        self.block_size = family.block_size(model.config)
        self.cache_len = self.block_size if cache_len is None else cache_len
        if not 1 <= self.cache_len <= self.block_size:
            raise ValueError(f"cache_len must be in [1, {family.length_field}={self.block_size}], got {self.cache_len}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        # A step may run other operations than the prefill (a backend's token-generation graph
        # is not its context-encoding graph); the reference's are the same.
        self.ops = ops or CacheOps()
        self.step_ops = step_ops or self.ops

    def empty_state(self, batch: int) -> DecodeState:
        dtype = next(self.model.parameters()).dtype
        shape = cache_shape(self.model.config, batch, self.cache_len)
        zeros = torch.zeros(batch, dtype=torch.long)
        return DecodeState(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype), zeros, zeros)

    def reset(self, state: DecodeState, batch: int) -> DecodeState:
        """The state a prefill starts from: ``state``'s buffers emptied (or new ones, when the
        batch differs). A static backend reuses its device buffers in the same way."""
        if state is None or state.k.size(1) != batch:
            return self.empty_state(batch)
        state.k.zero_()
        state.v.zero_()
        zeros = torch.zeros(batch, dtype=torch.long)
        return DecodeState(state.k, state.v, zeros, zeros)

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, lengths: torch.Tensor | None = None,
                state: DecodeState | None = None) -> tuple[torch.Tensor, DecodeState]:
        B, T = idx.shape
        if T > self.cache_len:
            raise ValueError(f"prompt of {T} tokens exceeds the cache's {self.cache_len} slots")
        lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths.long()
        state = self.reset(state, B)
        first = T - lengths if self.padding == "left" else torch.zeros(B, dtype=torch.long)
        logits, k, v = self.run_prefill(idx, state.k, state.v, state.next_slot, first)
        next_slot = torch.full((B,), T, dtype=torch.long) if self.padding == "left" else state.next_slot + lengths
        return logits, DecodeState(k, v, next_slot, first)

    @torch.no_grad()
    def step(self, state: DecodeState, tokens: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        if int(state.next_slot.max()) >= state.cache_len:
            raise ValueError(f"the cache's {state.cache_len} slots are full: no room for another token")
        logits, k, v = self.run_step(tokens, state.k, state.v, state.next_slot, state.first_slot)
        return logits, DecodeState(k, v, state.next_slot + 1, state.first_slot)

    def run_prefill(self, idx, k, v, start_slot, first_slot):
        """``cached_forward`` of the prefill: what a backend replaces with its context-encoding graph."""
        return cached_forward(self.model, idx, k, v, start_slot, first_slot, self.ops)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        """``cached_forward`` of one step: what a backend replaces with its token-generation graph."""
        return cached_forward(self.model, tokens, k, v, start_slot, first_slot, self.step_ops)
