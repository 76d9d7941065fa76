"""Tripy targets: the reference GPT rebuilt in nvtripy 0.1.7 and compiled to TensorRT.

Four modes, each its own registered target (entry points in ``pyproject.toml``):

============== ========= ============================================= ==============
target         activations weights                                     policy
============== ========= ============================================= ==============
tripy-fp32     float32   float32 (the control)                         fp32-reassoc
tripy-fp16     float16   float16                                       fp16
tripy-int8-wo  float16   int8 codes, per-output-channel scales [out]   int8-wo
tripy-int4-wo  float16   int4 codes, scales [out, in/block]            int4-wo
============== ========= ============================================= ==============

This module holds the targets. What can be checked without a GPU, as plain torch, is in
``targets/tripy_layout.py`` (the mapping from our reference state dict to Tripy parameter names,
the quantized-weight layout, the causal mask, the compile bounds and TensorRT's quantize/dequantize
arithmetic), and in ``targets/tripy_decode.py`` (the decode path's host side: the static cache, positions
and masks). The nvtripy graph itself lives in ``targets/tripy_gpt.py``, imported only by
``prepare`` (nvtripy's runtime needs TensorRT and a GPU), so importing, collecting and probing
these targets never touches CUDA.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

import torch
from gpt_conformance.harness.api import Capabilities, Decoding, Requirements, Runnable, Target
from gpt_conformance.harness.core.probes import AVAILABLE, Availability, probe_cuda
from gpt_conformance.harness.core.quant import LowPrecision, QuantizedLinear, default_spec, quantized_linears
from gpt_conformance.reference.model import GPT
from gpt_conformance.targets.tripy_decode import PADDING
from gpt_conformance.targets.tripy_layout import (
    MAX_BATCH,
    MODES,
    LinearQuant,
    TripyMode,
    tripy_state_dict,
)

if TYPE_CHECKING:
    from gpt_conformance.targets.tripy_gpt import TripyRunner

NVTRIPY_HINT = ("nvtripy's runtime (tensorrt, mlir-tensorrt) comes from NVIDIA's own package index, "
                "not PyPI: see docs/tripy.md, 'Install'")


Quantizer = Callable[[GPT, TripyMode], Mapping[str, QuantizedLinear]]


def harness_quantization(model: GPT, mode: TripyMode) -> Mapping[str, QuantizedLinear]:
    """The backend-neutral quantized weights (``gpt_conformance.harness.core.quant``) for ``model``: the very codes and
    scales the CPU fake-quant reference uses."""
    if mode.bits is None:
        raise ValueError(f"{mode.name} is a float mode: it has no quantized weights")
    return quantized_linears(model, bits=mode.bits)


@cache
def probe_nvtripy() -> Availability:
    """``import nvtripy`` (it imports tensorrt and mlir-tensorrt first); no CUDA context yet."""
    try:
        import nvtripy  # noqa: F401
    except (ImportError, OSError) as exc:
        return Availability(False, f"import nvtripy failed: {type(exc).__name__}: {exc}; {NVTRIPY_HINT}")
    return AVAILABLE


class TripyTarget(Target):
    # Decoding: a prefill and a step engine over a static cache of block_size slots (the model's
    # block size: max_cache_len None), positions and masks from the host (targets/tripy_decode.py).
    capabilities = Capabilities(dynamic_shapes=True, max_batch=MAX_BATCH, returns_loss=False,
                                decode=Decoding(padding=PADDING, reusable_state=True))

    def __init__(self, mode: TripyMode, quantizer: Quantizer = harness_quantization):
        self.mode = mode
        self.name = mode.name
        self.precision = mode.precision
        self.description = mode.description
        self.requirements = Requirements(packages=(("nvtripy", "tripy"),), device="cuda",
                                         min_cuda_capability=mode.min_capability)
        self.quantizer = quantizer
        if mode.torch_dtype != torch.float32:
            # Opts the reduced-precision modes into the two-level checks (cases/test_precision.py):
            # arithmetic against the fake-quant reference built from quantized_weights(), and
            # quality against fp32.
            self.low_precision = LowPrecision(mode.torch_dtype, weights=default_spec(mode.bits) if mode.bits else None)
        self._quantized: weakref.WeakKeyDictionary[GPT, Mapping[str, QuantizedLinear]] = weakref.WeakKeyDictionary()

    def probe(self) -> Availability:
        """Every failed check, named: nvtripy's import, CUDA and its compute capability."""
        checks = [probe_nvtripy(), probe_cuda(self.mode.min_capability)]
        failed = [check.reason for check in checks if not check]
        return Availability(False, "; ".join(failed)) if failed else AVAILABLE

    def prepare(self, model: torch.nn.Module, config: Any) -> Runnable:
        if not isinstance(model, GPT):
            raise TypeError(f"{self.name} rebuilds the reference GPT, got {type(model).__name__}")
        state, plans = tripy_state_dict(model, self.mode.torch_dtype, self.quantized_weights(model))
        return self._runner(model, state, plans)

    def quantized_weights(self, model: torch.nn.Module) -> Mapping[str, QuantizedLinear]:
        """The quantized weights this target loads for ``model``, computed once per model, so that
        a check can build the fake-quant reference from the very same codes and scales."""
        if self.mode.bits is None:
            return {}
        if not isinstance(model, GPT):
            raise TypeError(f"{self.name} quantizes the reference GPT, got {type(model).__name__}")
        if model not in self._quantized:
            self._quantized[model] = self.quantizer(model, self.mode)
        return self._quantized[model]

    def _runner(self, model: GPT, state: dict[str, torch.Tensor], plans: dict[str, LinearQuant]) -> TripyRunner:
        from gpt_conformance.targets.tripy_gpt import TripyRunner

        return TripyRunner(model, self.mode, state, plans, MAX_BATCH)

    def environment(self) -> dict[str, Any]:
        try:
            version = metadata.version("nvtripy")
        except metadata.PackageNotFoundError:
            version = None
        return {"nvtripy": version, "tripy_dtype": self.mode.dtype, "weight_bits": self.mode.bits,
                "attention_fp32": self.mode.attention_fp32, "max_batch": MAX_BATCH}


TRIPY_FP32, TRIPY_FP16, TRIPY_INT8_WO, TRIPY_INT4_WO = (TripyTarget(mode) for mode in MODES)
TARGETS = [TRIPY_FP32, TRIPY_FP16, TRIPY_INT8_WO, TRIPY_INT4_WO]

