"""``torch-int4-wo``: the reference GPT's linears computed by torch's own int4 weight-only CPU kernel
(``torch.ops.aten._weight_int4pack_mm_for_cpu``), no extra package.

Each transformer-block linear is quantized with the harness's symmetric int4 math (blocks of
``DEFAULT_INT4_BLOCK_SIZE`` along in_features, codes in [-7, 7]) and handed to the kernel in its
own layout:

- codes: unsigned nibbles, ``signed code + 8``, as int32 ``[out, in]``, packed by
  ``torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, inner_k_tiles)``;
- ``qScaleAndZeros``: float32 ``[in / B, out, 2]``, scale then zero point per block. The kernel
  computes each weight as ``(nibble - 8) * scale + zero`` (torchao's ``Int4CPULayout``, which
  wraps the same two ops from torch 2.6 on), so a zero point of 0 makes it ``code * scale``.

Measured (torch 2.13, CPU): the kernel's output is within 9.5e-7 of the float32 matmul of the
dequantized weights. The arithmetic level's reference is built from what this target packs
(``quantized_weights``: the nibbles minus 8 and the scale column of ``qScaleAndZeros``), never
recomputed from the float weights. The kernel needs out_features divisible by 16, in_features
divisible by the block, and a block of 32, 64, 128 or 256: other shapes skip in ``prepare`` and
say which layer.
"""

from __future__ import annotations

import copy
from functools import cache

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, AVAILABLE, Availability, Capabilities, Target, UnsupportedHere
from gpt_conformance.harness.core.quant import (
    DEFAULT_INT4_BLOCK_SIZE,
    LowPrecision,
    QuantizedLinear,
    ScaleLayoutError,
    WeightQuantization,
    quantizable_linears,
    quantize_weight,
)
from gpt_conformance.targets.modelopt import QuantizedRunnable

# The kernel's unsigned nibble is the signed code plus this (it subtracts 8 before scaling).
NIBBLE_OFFSET = 8
# What aten's _weight_int4pack_mm_cpu accepts (torch 2.13: "expect qGroupSize to be 32, 64, 128 or 256").
KERNEL_GROUP_SIZES = (32, 64, 128, 256)
# _convert_weight_to_int4pack_cpu: "expect N to be dividable by 16".
KERNEL_OUT_MULTIPLE = 16
# The CPU packing ignores it (torchao passes 1 with "innerKTiles is not needed for CPU").
INNER_K_TILES = 1


def unsupported_layer(name: str, out_features: int, in_features: int, block_size: int) -> str | None:
    """Why the kernel cannot compute this linear, or None."""
    if block_size not in KERNEL_GROUP_SIZES:
        return f"the int4 CPU kernel takes blocks of {KERNEL_GROUP_SIZES}, not {block_size}"
    if out_features % KERNEL_OUT_MULTIPLE:
        return (f"layer {name} has out_features {out_features}; torch's int4 CPU packing needs a multiple of "
                f"{KERNEL_OUT_MULTIPLE}")
    if in_features % block_size:
        return f"layer {name} has in_features {in_features}, not a multiple of block_size {block_size}"
    return None


class Int4PackedLinear(torch.nn.Module):
    """A linear computed by ``_weight_int4pack_mm_for_cpu`` from packed nibbles and ``qScaleAndZeros``."""

    def __init__(self, packed: torch.Tensor, scale_and_zeros: torch.Tensor, block_size: int,
                 bias: torch.Tensor | None, out_features: int):
        super().__init__()
        self.block_size = block_size
        self.out_features = out_features
        self.register_buffer("packed", packed)
        self.register_buffer("scale_and_zeros", scale_and_zeros)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The kernel takes a contiguous 2-D activation.
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.block_size, self.scale_and_zeros)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


def pack_int4(nibbles: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's (packed nibbles, qScaleAndZeros) for int32 nibbles [out, in] and block scales
    [out, in / B], zero point 0."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.contiguous(), INNER_K_TILES)
    by_block = scales.to(torch.float32).t()
    return packed, torch.stack([by_block, torch.zeros_like(by_block)], dim=-1).contiguous()


def packed_as_quantized(nibbles: torch.Tensor, scale_and_zeros: torch.Tensor, block_size: int,
                        name: str) -> QuantizedLinear:
    """What the kernel is handed, in the harness's layout: codes = nibbles - 8, scales from
    ``qScaleAndZeros[..., 0]`` transposed to [out, in / B]; a zero point other than 0 is not
    ``code * scale`` and is refused."""
    if bool(scale_and_zeros[..., 1].ne(0).any()):
        raise ScaleLayoutError(f"layer {name!r}: qScaleAndZeros holds a zero point other than 0")
    codes = (nibbles - NIBBLE_OFFSET).to(torch.int8)
    return QuantizedLinear(codes, scale_and_zeros[..., 0].t().contiguous(), block_size, 4, name)


def int4_linear(linear: torch.nn.Linear, name: str, block_size: int) -> tuple[Int4PackedLinear, QuantizedLinear]:
    """The kernel's module for ``linear``, and the codes and scales read back from exactly the
    nibbles and qScaleAndZeros it was handed."""
    quantized = quantize_weight(linear.weight, 4, block_size, name)
    nibbles = quantized.codes.to(torch.int32) + NIBBLE_OFFSET
    packed, scale_and_zeros = pack_int4(nibbles, quantized.scales)
    module = Int4PackedLinear(packed, scale_and_zeros, block_size, linear.bias, linear.out_features)
    return module, packed_as_quantized(nibbles, scale_and_zeros, block_size, name)


@cache
def probe_int4_kernel() -> Availability:
    """Whether this torch packs and multiplies int4 on CPU in the layout above (the int32 [N, K]
    packing input and float32 activations date from torch 2.6): one 16x32 layer against its
    dequantized matmul."""
    try:
        generator = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(32, 16)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(16, 32, generator=generator))
        module, reported = int4_linear(linear, "probe", 32)
        x = torch.randn(3, 32, generator=generator)
        got = module(x)
        want = torch.nn.functional.linear(x, reported.dequantize(), linear.bias)
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"max |error| {float((got - want).abs().max()):.3g} against the dequantized matmul")
    except Exception as exc:  # noqa: BLE001  (any failure here is the reason to skip, said precisely)
        return Availability(False, f"torch {torch.__version__}'s _weight_int4pack_mm_for_cpu cannot compute an int4 "
                                   f"linear in float32: {type(exc).__name__}: {exc}")
    return AVAILABLE


class TorchInt4WeightOnly(Target):
    name = "torch-int4-wo"
    precision = "int4-wo"
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)

    def __init__(self, block_size: int = DEFAULT_INT4_BLOCK_SIZE):
        self.block_size = block_size
        self.low_precision = LowPrecision(torch.float32, weights=WeightQuantization(4, block_size))
        self.description = (f"torch's _weight_int4pack_mm_for_cpu kernel, int4 codes + 8 packed by "
                            f"_convert_weight_to_int4pack_for_cpu, blocks of {block_size}, fp32, CPU")

    def probe(self) -> Availability:
        found = super().probe()
        return found if not found.available else probe_int4_kernel()

    def prepare(self, model, config):
        linears = quantizable_linears(model)
        for name, linear in linears.items():
            reason = unsupported_layer(name, linear.out_features, linear.in_features, self.block_size)
            if reason:
                raise UnsupportedHere(reason)
        quantized = copy.deepcopy(model).eval()
        reported = {}
        with torch.no_grad():
            for name, linear in linears.items():
                module, reported[name] = int4_linear(linear, name, self.block_size)
                parent, _, child = name.rpartition(".")
                setattr(quantized.get_submodule(parent) if parent else quantized, child, module)
        return QuantizedRunnable(quantized, reported)

    def environment(self):
        return {"torch": torch.__version__, "bits": 4, "block_size": self.block_size,
                "kernel": "aten._weight_int4pack_mm_for_cpu"}


TARGETS = [TorchInt4WeightOnly()]
