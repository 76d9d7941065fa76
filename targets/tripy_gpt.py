"""The reference GPT as nvtripy 0.1.7 modules, compiled once per model by ``tp.compile``.

Imported only by ``gpt_conformance.targets.tripy`` when a Tripy target is prepared: ``import nvtripy`` needs
TensorRT and MLIR-TensorRT. On a CPU, ``tests/test_tripy_standin.py`` runs this very module with a
torch stand-in for nvtripy. Everything numerical that can be checked on a CPU (parameter names,
layouts, scales, mask, bounds) is computed in ``gpt_conformance.targets.tripy`` and arrives here as torch tensors;
this module only builds the graph, loads those tensors and moves inputs and outputs.

The module tree mirrors the reference's, so Tripy's state-dict keys are the reference's keys
(``transformer.h.0.attn.c_attn.weight``...), plus ``attn.mask`` and quantized ``weight_scale``.

Typing: nvtripy declares ``tp.Tensor``'s operators (``@``, ``+``, ``*``, ``<``, indexing,
``shape``) outside its class body (``register_tensor_method`` in nvtripy/frontend/ops/), so a type
checker sees none of them; ``TensorOps`` states the ones this graph uses.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

import nvtripy as tp
import torch
from gpt_conformance.harness.api import UnsupportedHere
from gpt_conformance.reference import model as reference
from gpt_conformance.reference.decode import DecodeState
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.targets.tripy_decode import PADDING, TripyDecoder
from gpt_conformance.targets.tripy_layout import (
    TORCH_DTYPES,
    LinearQuant,
    ShapeBounds,
    TripyMode,
    engine_max_batch,
    shape_bounds,
)

Dim = int | tp.DimensionSize


class TensorOps(Protocol):
    """The operators nvtripy attaches to ``tp.Tensor`` at import that this graph uses."""

    @property
    def shape(self) -> Sequence[Dim]: ...

    def __matmul__(self, other: TensorOps) -> TensorOps: ...

    def __add__(self, other: Operand) -> TensorOps: ...

    def __mul__(self, other: Operand) -> TensorOps: ...

    def __lt__(self, other: Operand) -> TensorOps: ...

    def __getitem__(self, index: Dim | tuple[slice | Dim, ...]) -> TensorOps: ...


Operand = TensorOps | float


QUANT_DTYPES = {8: tp.int8, 4: tp.int4}


def tripy_dtype(name: str) -> tp.dtype:
    return {"float32": tp.float32, "float16": tp.float16}[name]


def make_linear(in_features: int, out_features: int, bias: bool, dtype: tp.dtype,
                quant: LinearQuant | None) -> tp.Linear:
    if quant is None:
        return tp.Linear(in_features, out_features, bias=bias, dtype=dtype)
    # weight_quant_dim=0: per-output-channel scale [out]; None with a 2-D scale [out, in/block]:
    # TensorRT blocks along in_features (see targets/tripy.py's docstring).
    return tp.Linear(in_features, out_features, bias=bias, dtype=dtype,
                     quant_dtype=QUANT_DTYPES[quant.bits], weight_quant_dim=quant.weight_quant_dim)


class CausalSelfAttention(tp.Module):
    def __init__(self, config: GPTConfig, dtype: tp.dtype, prefix: str,
                 plans: Mapping[str, LinearQuant], attention_fp32: bool):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dtype = dtype
        self.attention_fp32 = attention_fp32
        self.c_attn = make_linear(config.n_embd, 3 * config.n_embd, config.bias, dtype, plans.get(f"{prefix}.c_attn"))
        self.c_proj = make_linear(config.n_embd, config.n_embd, config.bias, dtype, plans.get(f"{prefix}.c_proj"))
        # Placeholder of the right shape and dtype; load_state_dict replaces it with causal_mask.
        self.mask = tp.ones((1, 1, config.block_size, config.block_size), dtype=dtype)

    def heads(self, x: TensorOps) -> tuple[TensorOps, TensorOps, TensorOps]:
        """q, k, v [B, n_head, T, head_size], in float32 where ``attention_fp32`` says so."""
        batch, seq = x.shape[0], x.shape[1]
        head_size = self.n_embd // self.n_head
        qkv = self.c_attn(x)
        if self.attention_fp32:
            qkv = tp.cast(qkv, tp.float32)
        q, k, v = tp.split(qkv, 3, dim=2)
        q = tp.transpose(tp.reshape(q, (batch, seq, self.n_head, head_size)), 1, 2)
        k = tp.transpose(tp.reshape(k, (batch, seq, self.n_head, head_size)), 1, 2)
        v = tp.transpose(tp.reshape(v, (batch, seq, self.n_head, head_size)), 1, 2)
        return q, k, v

    def attend(self, q: TensorOps, k: TensorOps, v: TensorOps, hidden: TensorOps) -> TensorOps:
        """Softmax attention of ``q`` over the keys ``k``, ``v`` [B, n_head, S, head_size], the
        scores where ``hidden`` (bool, broadcast to [B, n_head, T, S]) is true filled with -inf,
        then the heads merged and projected."""
        batch, seq = q.shape[0], q.shape[2]
        head_size = self.n_embd // self.n_head
        att = (q @ tp.transpose(k, -2, -1)) * (1.0 / math.sqrt(head_size))
        att = tp.softmax(tp.masked_fill(att, hidden, float("-inf")), dim=-1)
        y = att @ v
        if self.attention_fp32:
            y = tp.cast(y, self.dtype)
        y = tp.reshape(tp.transpose(y, 1, 2), (batch, seq, self.n_embd))
        return self.c_proj(y)

    def forward(self, x: TensorOps) -> TensorOps:
        q, k, v = self.heads(x)
        seq = x.shape[1]
        future = self.mask[:, :, :seq, :seq] < 0.5
        return self.attend(q, k, v, future)

    def cached(self, x: TensorOps, visible: TensorOps, k_cache: TensorOps | None,
               v_cache: TensorOps | None) -> tuple[TensorOps, TensorOps, TensorOps]:
        """The decode engines' attention: the keys are the cache's slots (a step's, [B, n_head,
        S, head_size]) then the call's own tokens; ``visible`` [B, 1, T, keys] is 1 where a query
        may attend to a key (computed on the host, ``targets/tripy_decode.py``). Returns the
        output and the call's own k and v, which the host writes into the cache."""
        q, k, v = self.heads(x)
        keys, values = k, v
        if k_cache is not None and v_cache is not None:
            keys, values = tp.concatenate([k_cache, k], dim=2), tp.concatenate([v_cache, v], dim=2)
        return self.attend(q, keys, values, visible < 0.5), k, v


class MLP(tp.Module):
    def __init__(self, config: GPTConfig, dtype: tp.dtype, prefix: str, plans: Mapping[str, LinearQuant]):
        super().__init__()
        self.gelu_tanh = config.gelu == "tanh"
        self.c_fc = make_linear(config.n_embd, 4 * config.n_embd, config.bias, dtype, plans.get(f"{prefix}.c_fc"))
        self.c_proj = make_linear(4 * config.n_embd, config.n_embd, config.bias, dtype, plans.get(f"{prefix}.c_proj"))

    def forward(self, x: TensorOps) -> TensorOps:
        h: TensorOps = self.c_fc(x)
        if self.gelu_tanh:
            # torch's approximate="tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            inner = (h + h * h * h * 0.044715) * math.sqrt(2.0 / math.pi)
            h = h * (tp.tanh(inner) + 1.0) * 0.5
        else:
            h = tp.gelu(h)  # exact erf GELU (TensorRT kGELU_ERF), the reference's default
        return self.c_proj(h)


class Block(tp.Module):
    def __init__(self, config: GPTConfig, dtype: tp.dtype, index: int,
                 plans: Mapping[str, LinearQuant], attention_fp32: bool):
        super().__init__()
        prefix = f"transformer.h.{index}"
        self.ln_1 = tp.LayerNorm(config.n_embd, dtype=dtype, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config, dtype, f"{prefix}.attn", plans, attention_fp32)
        self.ln_2 = tp.LayerNorm(config.n_embd, dtype=dtype, eps=config.layer_norm_eps)
        self.mlp = MLP(config, dtype, f"{prefix}.mlp", plans)

    def forward(self, x: TensorOps) -> TensorOps:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def cached(self, x: TensorOps, visible: TensorOps, k_cache: TensorOps | None,
               v_cache: TensorOps | None) -> tuple[TensorOps, TensorOps, TensorOps]:
        h, k, v = self.attn.cached(self.ln_1(x), visible, k_cache, v_cache)
        x = x + h
        return x + self.mlp(self.ln_2(x)), k, v


class Transformer(tp.Module):
    def __init__(self, config: GPTConfig, dtype: tp.dtype, plans: Mapping[str, LinearQuant], attention_fp32: bool):
        super().__init__()
        self.wte = tp.Embedding(config.vocab_size, config.n_embd, dtype=dtype)
        self.wpe = tp.Embedding(config.block_size, config.n_embd, dtype=dtype)
        self.h = [Block(config, dtype, i, plans, attention_fp32) for i in range(config.n_layer)]
        self.ln_f = tp.LayerNorm(config.n_embd, dtype=dtype, eps=config.layer_norm_eps)

    def forward(self, idx: TensorOps) -> TensorOps:
        positions = tp.unsqueeze(tp.arange(idx.shape[1], dtype=tp.int32), 0)
        x: TensorOps = self.wte(idx) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT(tp.Module):
    """idx int32 [B, T] -> logits [B, T, vocab] for every position, in the model dtype."""

    def __init__(self, config: GPTConfig, mode: TripyMode, plans: Mapping[str, LinearQuant]):
        super().__init__()
        dtype = tripy_dtype(mode.dtype)
        self.transformer = Transformer(config, dtype, plans, mode.attention_fp32)
        self.lm_head = make_linear(config.n_embd, config.vocab_size, False, dtype, plans.get("lm_head"))

    def forward(self, idx: TensorOps) -> TensorOps:
        return self.lm_head(self.transformer(idx))

    def prefill(self, idx: TensorOps, positions: TensorOps, visible: TensorOps
                ) -> tuple[TensorOps, TensorOps, TensorOps]:
        """The prefill engine: idx and positions int32 [B, T], visible [B, 1, T, T] -> logits
        [B, T, vocab], and k, v [n_layer, B, n_head, T, head_size] for the host to cache."""
        return self.decode(idx, positions, visible, None, None)

    def step(self, tokens: TensorOps, positions: TensorOps, visible: TensorOps, k_cache: TensorOps,
             v_cache: TensorOps) -> tuple[TensorOps, TensorOps, TensorOps]:
        """The step engine: tokens and positions int32 [B, 1], visible [B, 1, 1, S + 1] over the
        cache [n_layer, B, n_head, S, head_size] then the token -> logits [B, 1, vocab] and the
        token's k, v [n_layer, B, n_head, 1, head_size]."""
        return self.decode(tokens, positions, visible, k_cache, v_cache)

    def decode(self, idx: TensorOps, positions: TensorOps, visible: TensorOps, k_cache: TensorOps | None,
               v_cache: TensorOps | None) -> tuple[TensorOps, TensorOps, TensorOps]:
        transformer = self.transformer
        x: TensorOps = transformer.wte(idx) + transformer.wpe(positions)
        ks, vs = [], []
        for i, block in enumerate(transformer.h):
            layer_k = None if k_cache is None else k_cache[i]
            layer_v = None if v_cache is None else v_cache[i]
            x, k, v = block.cached(x, visible, layer_k, layer_v)
            ks.append(k)
            vs.append(v)
        return self.lm_head(transformer.ln_f(x)), tp.stack(ks, dim=0), tp.stack(vs, dim=0)


def to_tripy(state: Mapping[str, torch.Tensor]) -> dict[str, tp.Tensor]:
    """CPU torch tensors as Tripy constants (DLPack, no copy); a tensor shared by several keys
    (the tied embedding, the causal mask) becomes one Tripy tensor."""
    converted: dict[int, tp.Tensor] = {}
    out = {}
    for key, tensor in state.items():
        if id(tensor) not in converted:
            converted[id(tensor)] = tp.Tensor(tensor.contiguous())
        out[key] = converted[id(tensor)]
    return out


class TripyRunner:
    """The runnable of one prepared model: builds and loads the Tripy GPT at once, compiles it on
    the first input with dynamic batch and sequence bounds, and reuses that engine afterwards.

    It also decodes (``prefill``, ``step``: ``TripyDecoder``'s host bookkeeping, targets/tripy_decode.py)
    through two more engines of the same loaded module, ``GPT.prefill`` and ``GPT.step``, each
    compiled on its first call and reused by every later one; the cache stays on ``device``."""

    # Where token ids go before the engine runs: nvtripy's executables take GPU tensors. The CPU
    # test of this graph (tests/test_tripy_standin.py, a torch stand-in for nvtripy) sets "cpu".
    device = "cuda"

    def __init__(self, model: reference.GPT, mode: TripyMode, state: Mapping[str, torch.Tensor],
                 plans: Mapping[str, LinearQuant], max_batch: int):
        self.config = model.config
        self.mode = mode
        self.max_batch = max_batch
        self.module = GPT(self.config, mode, plans)
        # strict: every parameter the graph declares must come from our state dict, and nothing else.
        self.module.load_state_dict(to_tripy(state), strict=True)
        self.bounds: ShapeBounds | None = None
        self.executable: tp.Executable | None = None
        self.compile_count = 0
        # phase ("prefill", "step") -> its bounds and engine; how many times each was compiled.
        self.decode_engines: dict[str, tuple[ShapeBounds, tp.Executable]] = {}
        self.decode_compiles: Counter[str] = Counter()
        self.decoder = TripyDecoder(model, self, TORCH_DTYPES[mode.cache_dtype], mode.torch_dtype, self.device,
                                   PADDING)

    def batch_bound(self, batch: int) -> int:
        return min(self.max_batch, engine_max_batch(self.config, self.mode.torch_dtype, batch))

    def compile(self, batch: int, seq_len: int) -> tp.Executable:
        self.bounds = shape_bounds(self.config, batch, seq_len, self.batch_bound(batch))
        info = tp.InputInfo((self.bounds.batch, self.bounds.seq), dtype=tp.int32)
        executable: tp.Executable = tp.compile(self.module, args=[info])
        self.compile_count += 1
        return executable

    def run_engine(self, executable: tp.Executable, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """One engine call: torch inputs copied to ``device``, the engine's outputs as torch
        tensors on ``device`` (DLPack, no copy)."""
        tensors = [tp.Tensor(t.to(self.device).contiguous()).eval() for t in inputs]
        if self.device == "cuda":
            torch.cuda.synchronize()  # the copies run on torch's stream; the engine runs on Tripy's
        out = executable(*tensors)
        outputs = [out] if isinstance(out, tp.Tensor) else list(out)
        if not all(isinstance(o, tp.Tensor) for o in outputs):
            raise TypeError(f"an engine returned {[type(o).__name__ for o in outputs]}, expected tensors")
        executable.stream.synchronize()
        return [torch.from_dlpack(o) for o in outputs]

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        batch, seq_len = int(idx.shape[0]), int(idx.shape[1])
        if self.executable is None:
            self.executable = self.compile(batch, seq_len)
        assert self.bounds is not None
        if not self.bounds.admits(batch, seq_len):
            raise UnsupportedHere(f"input shape ({batch}, {seq_len}) is outside the compiled bounds "
                                  f"batch {self.bounds.batch}, seq {self.bounds.seq}")
        outputs = self.run_engine(self.executable, idx.to(torch.int32))
        if len(outputs) != 1:
            raise TypeError(f"the compiled GPT returned {len(outputs)} tensors, expected one tensor of logits")
        return outputs[0].to("cpu"), None  # keeps the model dtype

    # --- the decode path ----------------------------------------------------------------------
    def prefill(self, idx: torch.Tensor, lengths: torch.Tensor | None = None,
                state: DecodeState | None = None) -> tuple[torch.Tensor, DecodeState]:
        return self.decoder.prefill(idx, lengths, state)

    def step(self, state: DecodeState, tokens: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        return self.decoder.step(state, tokens)

    def decode_engine(self, phase: str, batch: int, seq_len: int) -> tp.Executable:
        """The ``phase`` engine, compiled on its first call (batch up to the forward engine's
        bound, a prompt up to ``block_size``) and reused; a shape outside its bounds is refused."""
        if phase not in self.decode_engines:
            bounds = shape_bounds(self.config, batch, seq_len, self.batch_bound(batch))
            function = self.module.prefill if phase == "prefill" else self.module.step
            executable: tp.Executable = tp.compile(function, args=self.decode_inputs(phase, bounds))
            self.decode_engines[phase] = (bounds, executable)
            self.decode_compiles[phase] += 1
        bounds, executable = self.decode_engines[phase]
        if not bounds.admits(batch, seq_len):
            raise UnsupportedHere(f"{phase} shape ({batch}, {seq_len}) is outside the {phase} engine's bounds "
                                  f"batch {bounds.batch}, seq {bounds.seq}")
        return executable

    def decode_inputs(self, phase: str, bounds: ShapeBounds) -> list[tp.InputInfo]:
        batch, mask = bounds.batch, tripy_dtype(self.mode.dtype)
        if phase == "prefill":
            seq = bounds.seq
            return [tp.InputInfo((batch, seq), dtype=tp.int32), tp.InputInfo((batch, seq), dtype=tp.int32),
                    tp.InputInfo((batch, 1, seq, seq), dtype=mask)]
        slots = self.config.block_size
        cache = tp.InputInfo((self.config.n_layer, batch, self.config.n_head, slots,
                              self.config.n_embd // self.config.n_head), dtype=tripy_dtype(self.mode.cache_dtype))
        return [tp.InputInfo((batch, 1), dtype=tp.int32), tp.InputInfo((batch, 1), dtype=tp.int32),
                tp.InputInfo((batch, 1, 1, slots + 1), dtype=mask), cache, cache]

    def run_prefill(self, idx: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        executable = self.decode_engine("prefill", int(idx.shape[0]), int(idx.shape[1]))
        logits, k, v = self.run_engine(executable, idx.to(torch.int32), positions.to(torch.int32), visible)
        return logits.to("cpu"), k, v

    def run_step(self, tokens: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        executable = self.decode_engine("step", int(tokens.shape[0]), 1)
        logits, k, v = self.run_engine(executable, tokens.to(torch.int32), positions.to(torch.int32), visible,
                                       k_cache, v_cache)
        return logits.to("cpu"), k, v
