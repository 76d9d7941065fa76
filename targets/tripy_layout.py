"""Tripy targets' layout, plain torch and shared by the target (``targets/tripy.py``) and the
nvtripy graph (``targets/tripy_gpt.py``): the modes, the reference-to-Tripy state dict with its
quantized-weight layout, the causal mask, the compile bounds and TensorRT's quantize/dequantize
arithmetic. Everything here is checked on CPU (``tests/test_tripy.py``).

Layouts. Our reference uses ``nn.Linear`` (weight ``[out, in]``) and ``nn.Embedding``
(``[num, dim]``), which are exactly ``tp.Linear``'s and ``tp.Embedding``'s layouts
(nvtripy/frontend/module/linear.py, embedding.py), so no tensor is transposed; Hugging Face's
Conv1D transpose already happened in ``gpt_conformance.reference.checkpoint``.

Quantized weights are the backend-neutral ``QuantizedLinear`` (``gpt_conformance.harness.core.quant``): codes
``[out, in]``, scales ``[out]`` (per channel) or ``[out, in/block]`` (blocks of ``block_size``
along in_features). ``tp.Linear`` quantizes its own weight in the graph
(``dequantize(quantize(weight, weight_scale))``), so it is loaded with the fake-quant weight
``codes * scale`` and the very same scales; ``quantized_weight_tensors`` checks, with TensorRT's
rounding, that the graph re-derives exactly our codes.

int4 block axis. Tripy's ``tp.quantize`` docstring describes only scale ``[D0/B, D1]`` (blocks
along D0), and its nanoGPT loader reshapes modelopt's ``[out, in/B]`` amax into that shape, which
pairs each block with another block's scale. The compiler decides the axis from the scale's
shape: MLIR-TensorRT's ``QuantizeOp::verify`` (tensorrt/lib/TensorRT/IR/Verification.cpp,
``getQDQBlockingDim``) takes the first dimension where input and scale differ as the blocking
dimension and accepts the last or second-to-last; TensorRT's IQuantizeLayer documents the same
rule. So ``tp.Linear(..., quant_dtype=tp.int4, weight_quant_dim=None)`` with ``weight_scale`` of
shape ``[out, in/B]`` blocks along in_features: our scales load as they are, no reshape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from gpt_conformance.reference.model import GPT, GPTConfig

# Largest batch a compiled engine accepts: the largest named case ("seed") has batch 64.
MAX_BATCH = 64
# TensorRT sizes activation memory for the profile's maximum shape, and the logits alone take
# batch * block_size * vocab * itemsize bytes (GPT-2 in float16: 103 MB per sequence), so large
# models get a smaller batch bound: logits at the maximum shape stay under this.
LOGITS_BUDGET_BYTES = 4 << 30

# Integer range of each quantized type: TensorRT's IQuantizeLayer clamps INT8 to [-128, 127] and
# INT4 to [-8, 7] and rounds to nearest, ties to even.
QUANT_RANGES = {8: (-128, 127), 4: (-8, 7)}

# Compute capabilities, from NVIDIA's support matrices:
# - TensorRT 10 needs compute capability 7.5 or newer (Volta was deprecated in 10.0 and dropped);
# - weight-only INT8 and INT4 GEMMs need Ampere or newer: TensorRT-RTX's hardware table lists
#   "INT8 WoQ GEMM" and "INT4 WoQ GEMM" as No on Turing 7.5 and Yes from Ampere 8.6, and
#   ModelOpt's support matrix lists INT8 and W4A16 (INT4 weights only) as "Ampere and later" (8.0).
TENSORRT_MIN_CAPABILITY = (7, 5)
WEIGHT_ONLY_MIN_CAPABILITY = (8, 0)


class QuantizedLinearLike(Protocol):
    """Issue 5's backend-neutral quantized weight of one linear layer (``gpt_conformance.harness.quant``)."""

    # Read-only, as harness.quant's frozen QuantizedLinear has them.
    @property
    def codes(self) -> torch.Tensor:
        """int8 [out, in]; int4 codes are stored as int8 in [-8, 7]."""

    @property
    def scales(self) -> torch.Tensor:
        """float: [out] per channel, [out, in / block_size] block-wise."""

    @property
    def block_size(self) -> int | None: ...

    @property
    def bits(self) -> int: ...

    def dequantize(self) -> torch.Tensor:
        """The fake-quant float weight [out, in]: codes * scale, broadcast per block."""
        ...


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class TripyMode:
    name: str
    precision: str
    dtype: str  # "float32" | "float16": torch's and Tripy's name of the model dtype
    bits: int | None  # None: unquantized; 8: int8 per channel; 4: int4 block-wise
    min_capability: tuple[int, int]
    # Tripy's nanoGPT casts q, k, v to float32 for its int4 and fp8 modes, "for better accuracy
    # and avoid TRT compilation error in fp16" (examples/nanogpt/model.py); we keep that.
    attention_fp32: bool = False
    description: str = ""

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def cache_dtype(self) -> str:
        """The KV cache's dtype: the one attention computes in (float32 where ``attention_fp32``),
        so a step reads back exactly the k and v the prefill computed."""
        return "float32" if self.attention_fp32 else self.dtype


# tripy-fp32 may not be IEEE float32 arithmetic: TensorRT's BuilderFlag kTF32 ("Allow (but not
# require) computations on tensors of type kFLOAT to use TF32 ... Enabled by default", NvInfer.h)
# is never cleared by MLIR-TensorRT (TranslateToTensorRT.cpp sets only INT8/FP16/FP8/BF16), and
# nvtripy 0.1.7 exposes no switch. fp32-reassoc is the policy the control should meet; a TF32
# engine on Ampere or newer will show as a failure of it, which is the honest report.
MODES = (
    TripyMode("tripy-fp32", "fp32-reassoc", "float32", None, TENSORRT_MIN_CAPABILITY,
              description="nvtripy float32, compiled by TensorRT (the control)"),
    TripyMode("tripy-fp16", "fp16", "float16", None, TENSORRT_MIN_CAPABILITY,
              description="nvtripy float16 weights and activations"),
    TripyMode("tripy-int8-wo", "int8-wo", "float16", 8, WEIGHT_ONLY_MIN_CAPABILITY,
              description="nvtripy int8 weight-only (per-channel scales), float16 activations"),
    TripyMode("tripy-int4-wo", "int4-wo", "float16", 4, WEIGHT_ONLY_MIN_CAPABILITY, attention_fp32=True,
              description="nvtripy int4 weight-only (block-wise scales along in_features), float16 activations"),
)


# --- parameter names and layouts -----------------------------------------------------------

def linear_names(config: GPTConfig) -> list[str]:
    """Reference names of every linear layer, in the order the model applies them."""
    names = []
    for i in range(config.n_layer):
        names += [f"transformer.h.{i}.attn.c_attn", f"transformer.h.{i}.attn.c_proj",
                  f"transformer.h.{i}.mlp.c_fc", f"transformer.h.{i}.mlp.c_proj"]
    return names + ["lm_head"]


def mask_names(config: GPTConfig) -> list[str]:
    return [f"transformer.h.{i}.attn.mask" for i in range(config.n_layer)]


def causal_mask(block_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``tril(ones)`` as [1, 1, block_size, block_size]: 1 where a query may attend to a key.

    The values of the reference's ``attn.bias`` buffer. The graph slices it to [:T, :T] and
    fills scores where it is below 0.5 with -inf (``masked_fill``), as the reference does with
    ``~bias``. Stored in the model dtype because 0 and 1 are exact there.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    return torch.tril(torch.ones(block_size, block_size, dtype=dtype)).view(1, 1, block_size, block_size)


@dataclass(frozen=True)
class LinearQuant:
    """How one ``tp.Linear`` is quantized: ``quant_dtype`` int8/int4 and ``weight_quant_dim``
    0 (per output channel, scale [out]) or None (block-wise, scale [out, in/block])."""

    bits: int
    weight_quant_dim: int | None


def linear_quant(name: str, q: QuantizedLinearLike, weight_shape: tuple[int, int]) -> LinearQuant:
    """Validate ``q`` against the layer it belongs to and say how Tripy must quantize it."""
    out_features, in_features = weight_shape
    if q.bits not in QUANT_RANGES:
        raise ValueError(f"{name}: {q.bits}-bit codes are not supported; Tripy quantizes to int8 or int4")
    if tuple(q.codes.shape) != weight_shape:
        raise ValueError(f"{name}: codes have shape {tuple(q.codes.shape)}, the layer's weight is {weight_shape}")
    if q.scales.dim() == 1:
        if q.bits != 8:
            raise ValueError(f"{name}: per-channel scales with {q.bits}-bit codes; this harness uses int8 per channel")
        if tuple(q.scales.shape) != (out_features,):
            raise ValueError(f"{name}: per-channel scales have shape {tuple(q.scales.shape)}, expected ({out_features},)")
        return LinearQuant(8, weight_quant_dim=0)
    if q.scales.dim() == 2:
        # TensorRT block-quantizes only INT4 (and FP4/FP8); Tripy allows only tp.int4.
        if q.bits != 4:
            raise ValueError(f"{name}: block-wise scales with {q.bits}-bit codes; Tripy block-quantizes only int4")
        block = q.block_size
        if block is None or block < 2 or in_features % block:
            # A block of 1 would give a scale shaped like the weight: TensorRT would see no blocking axis.
            raise ValueError(f"{name}: block_size {block} must be >= 2 and divide in_features {in_features}")
        expected = (out_features, in_features // block)
        if tuple(q.scales.shape) != expected:
            raise ValueError(f"{name}: block-wise scales have shape {tuple(q.scales.shape)}, expected {expected} "
                             f"([out, in/block], blocks along in_features)")
        return LinearQuant(4, weight_quant_dim=None)
    raise ValueError(f"{name}: scales must be 1-D (per channel) or 2-D (block-wise), got shape {tuple(q.scales.shape)}")


def expand_scale(scale: torch.Tensor, shape: tuple[int, ...], axis: int | None) -> torch.Tensor:
    """Broadcast a TensorRT Q/DQ scale to ``shape``, by TensorRT's rules.

    Scalar: per tensor. 1-D with ``axis``: per channel along ``axis``. Same rank as the input:
    block-wise along the first dimension where the shapes differ (MLIR-TensorRT's
    ``getQDQBlockingDim``), which must be the last or second-to-last; every other dimension equal.
    """
    if scale.dim() == 0:
        return scale.expand(shape)
    if scale.dim() == 1:
        if axis is None or tuple(scale.shape) != (shape[axis],):
            raise ValueError(f"per-channel scale of shape {tuple(scale.shape)} does not fit axis {axis} of {shape}")
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return scale.view(view).expand(shape)
    if scale.dim() != len(shape) or axis is not None:
        raise ValueError(f"scale of shape {tuple(scale.shape)} is neither per-tensor, per-channel nor block-wise for {shape}")
    differing = [i for i in range(len(shape)) if scale.shape[i] != shape[i]]
    if not differing:
        return scale
    if len(differing) > 1 or differing[0] < len(shape) - 2 or shape[differing[0]] % scale.shape[differing[0]]:
        raise ValueError(f"block-wise scale of shape {tuple(scale.shape)} does not block {shape} along one of its last two axes")
    (blocking,) = differing
    return scale.repeat_interleave(shape[blocking] // scale.shape[blocking], dim=blocking)


def tensorrt_quantize(x: torch.Tensor, scale: torch.Tensor, bits: int, axis: int | None) -> torch.Tensor:
    """TensorRT's quantize: clamp(round_half_even(x / scale)) as an integer-valued float tensor."""
    low, high = QUANT_RANGES[bits]
    return torch.round(x / expand_scale(scale, tuple(x.shape), axis)).clamp(low, high)


def tensorrt_dequantize(codes: torch.Tensor, scale: torch.Tensor, axis: int | None) -> torch.Tensor:
    return codes.to(scale.dtype) * expand_scale(scale, tuple(codes.shape), axis)


def tripy_weight_scale(q: QuantizedLinearLike, dtype: torch.dtype) -> torch.Tensor:
    """``tp.Linear.weight_scale`` for ``q``: the same scales and layout ([out] or [out, in/block]),
    in the model dtype (Tripy requires scale dtype == weight dtype)."""
    return q.scales.detach().to(dtype).contiguous()


def quantized_weight_tensors(name: str, q: QuantizedLinearLike, plan: LinearQuant,
                             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, weight_scale) for a quantized ``tp.Linear``, checked against ``q``.

    The weight is the fake-quant weight ``q.dequantize()``: the graph quantizes it again with the
    same scales, and must get exactly ``q.codes`` back, which this checks in the model dtype with
    TensorRT's rounding. Scales must be strictly positive and finite (TensorRT requires it).
    """
    scale = tripy_weight_scale(q, dtype)
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        raise ValueError(f"{name}: scales must be finite and > 0 in {dtype} (TensorRT's requirement); "
                         f"min {float(q.scales.min()):.3g}, max {float(q.scales.max()):.3g}")
    weight = q.dequantize().detach().to(dtype).contiguous()
    # TensorRT may divide in float32 or in the model dtype: both must give our codes back.
    for arithmetic in dict.fromkeys((torch.float32, dtype)):
        codes = tensorrt_quantize(weight.to(arithmetic), scale.to(arithmetic), plan.bits, plan.weight_quant_dim)
        mismatched = int((codes.float() != q.codes.float()).sum())
        if mismatched:
            raise ValueError(f"{name}: re-quantizing the fake-quant weight with the Tripy scale layout in {arithmetic} "
                             f"gives {mismatched} code(s) different from harness.quant's: the scales do not fit the codes")
    return weight, scale


def tripy_state_dict(model: GPT, dtype: torch.dtype,
                     quantized: Mapping[str, QuantizedLinearLike] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, LinearQuant]]:
    """Our reference state dict as the Tripy GPT's parameters, plus how each linear is quantized.

    Names are the reference's (``targets/tripy_gpt.py`` mirrors its module tree), tensors are
    contiguous CPU tensors in ``dtype`` with no transpose (see the module docstring). Additions:
    ``tp.LayerNorm`` always has a bias, so bias-free configs get zeros; each attention gets the
    ``causal_mask``; a quantized linear gets ``weight_scale`` and its fake-quant weight.
    """
    quantized = dict(quantized or {})
    config = model.config
    reference = {k: v.detach() for k, v in model.state_dict().items()}
    unknown = sorted(set(quantized) - set(linear_names(config)))
    if unknown:
        raise ValueError(f"quantized weights for unknown linear layers: {unknown}")
    state: dict[str, torch.Tensor] = {}
    plans: dict[str, LinearQuant] = {}
    for key, tensor in reference.items():
        state[key] = tensor.to(dtype).contiguous()
    for prefix in [f"transformer.h.{i}.ln_{j}" for i in range(config.n_layer) for j in (1, 2)] + ["transformer.ln_f"]:
        if f"{prefix}.bias" not in state:
            state[f"{prefix}.bias"] = torch.zeros(config.n_embd, dtype=dtype)
    mask = causal_mask(config.block_size, dtype)
    for key in mask_names(config):
        state[key] = mask
    for name, q in quantized.items():
        weight_shape = tuple(reference[f"{name}.weight"].shape)
        plan = linear_quant(name, q, (weight_shape[0], weight_shape[1]))
        state[f"{name}.weight"], state[f"{name}.weight_scale"] = quantized_weight_tensors(name, q, plan, dtype)
        plans[name] = plan
    return state, plans


# --- compile bounds -------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeBounds:
    """(min, opt, max) of the batch and sequence dimensions, for ``tp.InputInfo``."""

    batch: tuple[int, int, int]
    seq: tuple[int, int, int]

    def admits(self, batch: int, seq_len: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.seq[0] <= seq_len <= self.seq[2]


def engine_max_batch(config: GPTConfig, dtype: torch.dtype, batch: int) -> int:
    """The batch bound of one engine: MAX_BATCH, less where the logits would pass the budget,
    never less than the batch that compiles it."""
    per_sequence = config.block_size * config.vocab_size * torch.tensor([], dtype=dtype).element_size()
    return max(batch, min(MAX_BATCH, LOGITS_BUDGET_BYTES // per_sequence))


def shape_bounds(config: GPTConfig, batch: int, seq_len: int, max_batch: int = MAX_BATCH) -> ShapeBounds:
    """Bounds for one engine per model: any batch up to ``max_batch`` and any length up to
    ``block_size``, tuned (opt) for the shape of the case that compiles it."""
    if not 1 <= batch <= max_batch:
        raise ValueError(f"batch {batch} outside [1, {max_batch}] (the Tripy engines' batch bound)")
    if not 1 <= seq_len <= config.block_size:
        raise ValueError(f"sequence length {seq_len} outside [1, block_size={config.block_size}]")
    return ShapeBounds(batch=(1, batch, max_batch), seq=(1, seq_len, config.block_size))


# --- the targets ----------------------------------------------------------------------------
