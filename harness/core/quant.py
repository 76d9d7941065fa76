"""Core layer: backend-neutral quantized weights: plain tensors any backend can load, and the fake-quant reference.

The layout contract (shared with every backend adapter, Tripy's included)::

    QuantizedLinear(codes, scales, block_size, bits)

    codes       int8 tensor [out, in]; int4 codes are stored in int8 with values in [-8, 7]
    scales      float32; per output channel (block_size None): [out]
                block-wise along in_features (block_size B): [out, in / B]
    weight  ~=  codes * scales          per channel: scales[:, None]
                                        block-wise:  scales repeated B times along in_features

This is symmetric max calibration, the same math as modelopt's weight quantizers:
``amax = max |w|`` over the channel or block, ``codes = round(w * (maxbound / amax))`` clamped
to the signed range, ``scale = amax / maxbound`` with maxbound 127 (int8) or 7 (int4).

Two ways to get these tensors:

- ``quantize_model``: pure torch, no modelopt needed (CPU tests, Tripy tests);
- reading a modelopt-calibrated model's quantizers into this format is the modelopt target's
  job (``targets/modelopt.py``).

Both give bit-identical codes and scales. ``codes * scales`` is within 4 float32 ulps of
modelopt's own fake-quant weight (it divides by ``maxbound / amax`` instead; measured 2 ulps).
Only the transformer blocks' linears are quantized; ``lm_head`` (tied to wte) is not, as in
modelopt's presets.

``fake_quant_reference`` builds the *fake-quant reference*: a copy of the reference GPT whose
quantized linears hold ``dequantize()``'d weights (``fake_quant_model`` takes any float
weights). A backend with the right int arithmetic and the right scales computes what this
model computes, up to floating-point rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# Symmetric signed ranges: modelopt's maxbound is 2**(bits-1) - 1; the codes' storage range
# includes the extra negative value (-128 / -8), which symmetric calibration never produces.
MAXBOUND = {8: 127, 4: 7}
# int4 block size: modelopt's preset uses 128, wider than the tiny models' 64 features; 32 divides
# every in_features of the named cases, the Zen model and GPT-2 (64, 256, 768, 3072).
DEFAULT_INT4_BLOCK_SIZE = 32
# modelopt treats amax <= 2**-24 (below fp16's smallest subnormal) as zero: those weights quantize to 0.
ZERO_AMAX = 1.0 / (1 << 24)


class ScaleLayoutError(ValueError):
    """Quantized tensors whose shapes or values do not fit the layout contract."""


@dataclass(frozen=True)
class WeightQuantization:
    """What a weight-only quantized target does to its linear layers."""

    bits: int
    block_size: int | None = None  # None: one scale per output channel

    def __post_init__(self) -> None:
        if self.bits not in MAXBOUND:
            raise ValueError(f"bits must be one of {sorted(MAXBOUND)}, got {self.bits}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 or None (per channel), got {self.block_size}")

    def describe(self) -> str:
        layout = "per output channel" if self.block_size is None else f"blocks of {self.block_size} along in_features"
        return f"int{self.bits} weight-only, {layout}"


@dataclass(frozen=True)
class LowPrecision:
    """Declared by low-precision targets (class attribute ``low_precision``); cases read it to
    decide which checks apply, never the target's name.

    - ``compute_dtype``: the dtype the backend computes in; the level-1 (arithmetic) reference
      is the reference GPT run in this dtype with the same (dequantized) weights.
    - ``weights``: the weight quantization, or None for plain fp16/bf16.
    - ``is_arithmetic_reference``: the target *is* that level-1 reference (eager-fp16), so
      comparing it with itself would be a check that cannot fail; it gets no level-1 test.

    A target with ``weights`` set returns a runnable with a ``quantized_weights`` attribute:
    ``dict[name, QuantizedLinear]``, exactly the tensors it computes with.
    """

    compute_dtype: torch.dtype
    weights: WeightQuantization | None = None
    is_arithmetic_reference: bool = False


@dataclass(frozen=True)
class QuantizedLinear:
    codes: torch.Tensor
    scales: torch.Tensor
    block_size: int | None
    bits: int
    name: str = ""  # the linear layer's name, only for error messages

    def __post_init__(self) -> None:
        where = f"layer {self.name!r}" if self.name else "QuantizedLinear"
        if self.bits not in MAXBOUND:
            raise ScaleLayoutError(f"{where}: bits must be one of {sorted(MAXBOUND)}, got {self.bits}")
        if self.codes.dtype != torch.int8 or self.codes.dim() != 2:
            raise ScaleLayoutError(f"{where}: codes must be an int8 [out, in] tensor, got {self.codes.dtype} "
                                   f"{tuple(self.codes.shape)}")
        lo, hi = -MAXBOUND[self.bits] - 1, MAXBOUND[self.bits]
        if self.codes.numel() and (int(self.codes.min()) < lo or int(self.codes.max()) > hi):
            raise ScaleLayoutError(f"{where}: int{self.bits} codes must lie in [{lo}, {hi}], got "
                                   f"[{int(self.codes.min())}, {int(self.codes.max())}]")
        if not self.scales.dtype.is_floating_point:
            raise ScaleLayoutError(f"{where}: scales must be floating point, got {self.scales.dtype}")
        expected = self.expected_scale_shape()
        if tuple(self.scales.shape) != expected:
            transposed = tuple(reversed(expected)) == tuple(self.scales.shape) and len(expected) == 2
            hint = " (transposed: block scales must be [out, in/block])" if transposed else ""
            raise ScaleLayoutError(f"{where}: scales have shape {tuple(self.scales.shape)}, expected {expected} "
                                   f"for codes {tuple(self.codes.shape)}, block_size {self.block_size}{hint}")

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    def expected_scale_shape(self) -> tuple[int, ...]:
        out, inp = self.codes.shape
        if self.block_size is None:
            return (out,)
        if inp % self.block_size:
            raise ScaleLayoutError(f"layer {self.name!r}: in_features {inp} is not a multiple of block_size "
                                   f"{self.block_size}")
        return (out, inp // self.block_size)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``codes * scales`` (scales broadcast per channel or per block), as ``dtype`` [out, in]."""
        codes = self.codes.to(torch.float32)
        scales = self.scales.to(torch.float32)
        if self.block_size is None:
            weight = codes * scales[:, None]
        else:
            out, inp = codes.shape
            weight = (codes.view(out, inp // self.block_size, self.block_size) * scales[:, :, None]).view(out, inp)
        return weight.to(dtype)


def symmetric_codes(groups: torch.Tensor, amax: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of ``groups`` [out, G, group] with ``amax`` [out, G, 1], float32.

    modelopt's ``_tensor_quant``: ``clamp(round(w * (maxbound / amax)))``, amax <= 2**-24 giving 0.
    The division is a true division like modelopt's: torch computes ``python_float / tensor``
    as ``reciprocal(tensor) * float``, which rounds differently and flips codes near x.5."""
    maxbound = float(MAXBOUND[bits])
    zero = amax <= ZERO_AMAX
    inverse = torch.where(zero, torch.zeros_like(amax), torch.full_like(amax, maxbound) / amax)
    codes = torch.clamp(torch.round(groups * inverse), -maxbound, maxbound).to(torch.int8)
    return codes, amax / torch.full_like(amax, maxbound)


def quantize_weight(weight: torch.Tensor, bits: int, block_size: int | None = None, name: str = "") -> QuantizedLinear:
    """Symmetric max quantization of one [out, in] weight, modelopt's math, in float32."""
    spec = WeightQuantization(bits, block_size)
    w = weight.detach().to(torch.float32)
    if w.dim() != 2:
        raise ScaleLayoutError(f"layer {name!r}: expected a 2-D [out, in] weight, got shape {tuple(w.shape)}")
    out, inp = w.shape
    if spec.block_size is not None and inp % spec.block_size:
        raise ScaleLayoutError(f"layer {name!r}: in_features {inp} is not a multiple of block_size {spec.block_size}")
    # modelopt reshapes a block-quantized weight to [-1, block] in row-major order: row
    # o * (in / B) + b holds block b of output channel o, so amax viewed as [out, in / B] is
    # the right layout.
    groups = w.view(out, 1, inp) if spec.block_size is None else w.view(out, inp // spec.block_size, spec.block_size)
    amax = groups.abs().amax(dim=-1, keepdim=True)
    codes, scales = symmetric_codes(groups, amax, bits)
    codes = codes.view(out, inp)
    scales = scales.reshape(out) if spec.block_size is None else scales.reshape(out, inp // spec.block_size)
    return QuantizedLinear(codes, scales.contiguous(), spec.block_size, bits, name)


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linears a weight-only config quantizes: every nn.Linear except ``lm_head``, which
    modelopt's default configs leave unquantized (``*lm_head*`` disabled; it is tied to wte)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in name}


def quantize_model(model: nn.Module, spec: WeightQuantization) -> dict[str, QuantizedLinear]:
    """Pure-torch quantized weights of every quantizable linear of ``model``."""
    return {name: quantize_weight(linear.weight, spec.bits, spec.block_size, name)
            for name, linear in quantizable_linears(model).items()}


def default_spec(bits: int, block_size: int | None = None) -> WeightQuantization:
    """int8: per output channel; int4: blocks of ``block_size`` (default DEFAULT_INT4_BLOCK_SIZE)."""
    if bits == 8:
        return WeightQuantization(8, block_size)
    return WeightQuantization(bits, block_size or DEFAULT_INT4_BLOCK_SIZE)


def quantized_linears(model: nn.Module, bits: int, block_size: int | None = None) -> dict[str, QuantizedLinear]:
    """``quantize_model`` with this harness's defaults: what backend adapters (Tripy) load."""
    return quantize_model(model, default_spec(bits, block_size))


def check_scales_fit(weights: dict[str, torch.Tensor], quantized: dict[str, QuantizedLinear]) -> None:
    """Check that ``quantized`` really quantizes ``weights`` (the float weights by layer name).

    Shapes alone cannot catch every wrong layout (a square layer's transposed scales have the
    right shape), so the values are checked too: symmetric max quantization maps each group's
    largest |w| to ±maxbound and reconstructs every weight within half a step. A scale tensor
    from another axis breaks both. Raises ScaleLayoutError naming the layer and shapes.
    """
    missing = sorted(set(weights) - set(quantized))
    extra = sorted(set(quantized) - set(weights))
    if missing or extra:
        raise ScaleLayoutError(f"quantized layers do not match the model: missing {missing}, unexpected {extra}")
    for name, q in quantized.items():
        weight = weights[name].detach().to(torch.float32)
        if tuple(weight.shape) != tuple(q.codes.shape):
            raise ScaleLayoutError(f"layer {name!r}: codes {tuple(q.codes.shape)} do not match weight {tuple(weight.shape)}")
        error = (q.dequantize() - weight).abs()
        out, inp = weight.shape
        group = inp if q.block_size is None else q.block_size
        step = q.scales.to(torch.float32).reshape(out, -1, 1).expand(out, inp // group, group).reshape(out, inp)
        # Half a quantization step, plus float32 rounding of the product and of amax / maxbound.
        allowed = step * (0.5 + 1e-5) + 4 * torch.finfo(torch.float32).eps * weight.abs()
        bad = error > allowed
        if bool(bad.any()):
            o, i = (int(v) for v in bad.nonzero()[0])
            raise ScaleLayoutError(
                f"layer {name!r}: scales disagree with the weight: codes {tuple(q.codes.shape)}, scales "
                f"{tuple(q.scales.shape)}, block_size {q.block_size}; {int(bad.sum())} of {weight.numel()} weights are "
                f"off by more than half a step (first at [{o}, {i}]: |codes*scale - w| = {float(error[o, i]):.3g} > "
                f"{float(allowed[o, i]):.3g}); are the scales transposed or reshaped along the wrong axis?")


def dequantized_weights(quantized: dict[str, QuantizedLinear], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {name: q.dequantize(dtype) for name, q in quantized.items()}


def fake_quant_model(model: nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of ``model`` in ``dtype`` whose named linears hold ``weights`` (dequantized
    float32 weights, e.g. from ``dequantized_weights``): the fake-quant reference."""
    clone = copy.deepcopy(model).eval()
    linears = dict(clone.named_modules())
    with torch.no_grad():
        for name, weight in weights.items():
            linear = linears.get(name)
            if not isinstance(linear, nn.Linear):
                raise ScaleLayoutError(f"layer {name!r} is not a linear layer of the model")
            if tuple(linear.weight.shape) != tuple(weight.shape):
                raise ScaleLayoutError(f"layer {name!r}: dequantized weight {tuple(weight.shape)} does not match the "
                                       f"model's {tuple(linear.weight.shape)}")
            linear.weight.copy_(weight)
    return clone.to(dtype)


def fake_quant_reference(model: nn.Module, quantized: dict[str, QuantizedLinear],
                         dtype: torch.dtype = torch.float32) -> nn.Module:
    """The fake-quant reference of ``quantized`` (what a backend loading these tensors should compute)."""
    return fake_quant_model(model, dequantized_weights(quantized), dtype)


# --- known wrong layouts, for diagnosing an arithmetic failure ----------------------------------

def _wrong_axis_blocks(q: QuantizedLinear) -> torch.Tensor | None:
    """Tripy's nanoGPT int4 loader: the flat block scales reshaped to [out / B, in] and applied
    as blocks along out_features (dequantize w[o, i] = codes[o, i] * s[o // B, i])."""
    if q.block_size is None or q.out_features % q.block_size:
        return None
    wrong = q.scales.reshape(q.out_features // q.block_size, q.in_features)
    scale = wrong.repeat_interleave(q.block_size, dim=0)
    return q.codes.to(torch.float32) * scale.to(torch.float32)


def _transposed_blocks(q: QuantizedLinear) -> torch.Tensor | None:
    """Block scales stored [in / B, out] and read back as if they were [out, in / B]."""
    if q.block_size is None:
        return None
    out, blocks = q.scales.shape
    wrong = q.scales.t().contiguous().reshape(out, blocks)
    return q.codes.to(torch.float32) * wrong.repeat_interleave(q.block_size, dim=1).to(torch.float32)


def _per_input_channel(q: QuantizedLinear) -> torch.Tensor | None:
    """Per-channel scales applied along in_features instead of out_features (square layers only)."""
    if q.block_size is not None or q.out_features != q.in_features:
        return None
    return q.codes.to(torch.float32) * q.scales.to(torch.float32)[None, :]


WRONG_LAYOUTS: dict[str, Callable[[QuantizedLinear], torch.Tensor | None]] = {
    "block scales reshaped along the wrong axis ([out/B, in], as Tripy's nanoGPT int4 loader)": _wrong_axis_blocks,
    "block scales transposed ([in/B, out] read as [out, in/B])": _transposed_blocks,
    "per-channel scales applied along in_features": _per_input_channel,
}


def wrong_layout_weights(quantized: dict[str, QuantizedLinear]) -> dict[str, dict[str, torch.Tensor]]:
    """For each known wrong layout that applies to these layers: its dequantized weights."""
    variants = {}
    for label, apply in WRONG_LAYOUTS.items():
        weights = {}
        for name, q in quantized.items():
            wrong = apply(q)
            weights[name] = q.dequantize() if wrong is None else wrong
        if any(not torch.equal(weights[n], quantized[n].dequantize()) for n in quantized):
            variants[label] = weights
    return variants


def max_ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in float32 units in the last place between two float32 tensors."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    ia = a.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    ib = b.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    # Map the sign-magnitude float bit pattern onto a monotonic integer line.
    ia = torch.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int((ia - ib).abs().max()) if a.numel() else 0
