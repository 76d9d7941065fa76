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
from collections.abc import Mapping, Sequence
from typing import Protocol

import nvtripy as tp
import torch
from gpt_conformance.harness.api import UnsupportedHere
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.targets.tripy_layout import LinearQuant, ShapeBounds, TripyMode, engine_max_batch, shape_bounds

Dim = int | tp.DimensionSize


class TensorOps(Protocol):
    """The operators nvtripy attaches to ``tp.Tensor`` at import that this graph uses."""

    @property
    def shape(self) -> Sequence[Dim]: ...

    def __matmul__(self, other: TensorOps) -> TensorOps: ...

    def __add__(self, other: Operand) -> TensorOps: ...

    def __mul__(self, other: Operand) -> TensorOps: ...

    def __lt__(self, other: Operand) -> TensorOps: ...

    def __getitem__(self, index: tuple[slice | Dim, ...]) -> TensorOps: ...


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

    def forward(self, x: TensorOps) -> TensorOps:
        batch, seq = x.shape[0], x.shape[1]
        head_size = self.n_embd // self.n_head
        qkv = self.c_attn(x)
        if self.attention_fp32:
            qkv = tp.cast(qkv, tp.float32)
        q, k, v = tp.split(qkv, 3, dim=2)
        q = tp.transpose(tp.reshape(q, (batch, seq, self.n_head, head_size)), 1, 2)
        k = tp.transpose(tp.reshape(k, (batch, seq, self.n_head, head_size)), 1, 2)
        v = tp.transpose(tp.reshape(v, (batch, seq, self.n_head, head_size)), 1, 2)
        att = (q @ tp.transpose(k, -2, -1)) * (1.0 / math.sqrt(head_size))
        future = self.mask[:, :, :seq, :seq] < 0.5
        att = tp.softmax(tp.masked_fill(att, future, float("-inf")), dim=-1)
        y = att @ v
        if self.attention_fp32:
            y = tp.cast(y, self.dtype)
        y = tp.reshape(tp.transpose(y, 1, 2), (batch, seq, self.n_embd))
        return self.c_proj(y)


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
    the first input with dynamic batch and sequence bounds, and reuses that engine afterwards."""

    # Where token ids go before the engine runs: nvtripy's executables take GPU tensors. The CPU
    # test of this graph (tests/test_tripy_standin.py, a torch stand-in for nvtripy) sets "cpu".
    device = "cuda"

    def __init__(self, config: GPTConfig, mode: TripyMode, state: Mapping[str, torch.Tensor],
                 plans: Mapping[str, LinearQuant], max_batch: int):
        self.config = config
        self.mode = mode
        self.max_batch = max_batch
        self.module = GPT(config, mode, plans)
        # strict: every parameter the graph declares must come from our state dict, and nothing else.
        self.module.load_state_dict(to_tripy(state), strict=True)
        self.bounds: ShapeBounds | None = None
        self.executable: tp.Executable | None = None
        self.compile_count = 0

    def compile(self, batch: int, seq_len: int) -> tp.Executable:
        max_batch = min(self.max_batch, engine_max_batch(self.config, self.mode.torch_dtype, batch))
        self.bounds = shape_bounds(self.config, batch, seq_len, max_batch)
        info = tp.InputInfo((self.bounds.batch, self.bounds.seq), dtype=tp.int32)
        executable: tp.Executable = tp.compile(self.module, args=[info])
        self.compile_count += 1
        return executable

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        batch, seq_len = int(idx.shape[0]), int(idx.shape[1])
        if self.executable is None:
            self.executable = self.compile(batch, seq_len)
        assert self.bounds is not None
        if not self.bounds.admits(batch, seq_len):
            raise UnsupportedHere(f"input shape ({batch}, {seq_len}) is outside the compiled bounds "
                                  f"batch {self.bounds.batch}, seq {self.bounds.seq}")
        device_idx = idx.to(device=self.device, dtype=torch.int32).contiguous()
        if self.device == "cuda":
            torch.cuda.synchronize()  # the copy runs on torch's stream; the engine runs on Tripy's
        out = self.executable(tp.Tensor(device_idx).eval())
        if not isinstance(out, tp.Tensor):
            raise TypeError(f"the compiled GPT returned {type(out).__name__}, expected one tensor of logits")
        self.executable.stream.synchronize()
        logits = torch.from_dlpack(out).to("cpu")  # keeps the model dtype
        return logits, None
