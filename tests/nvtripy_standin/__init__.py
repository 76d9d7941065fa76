"""Tests: a torch stand-in for the part of nvtripy 0.1.7 that ``targets/tripy_gpt.py`` calls, so
that the adapter's own graph runs on a CPU (``tests/test_tripy_standin.py`` injects it as
``nvtripy``).

What it keeps from nvtripy 0.1.7, because it decides what the adapter's graph computes:

- every public name's signature (parameter names, kinds, defaults, annotation names), checked
  against nvtripy's installed sources by ``tests/test_tripy_signatures.py``; ``__all__`` lists them;
- the modules' behaviour, after nvtripy/frontend/module/: ``Module``'s parameter naming (attributes,
  one level of lists and dicts), ``load_state_dict``'s strict key check and its shape and dtype
  check of every loaded tensor, the error on a parameter never set; ``Linear``'s forward
  ``x @ transpose(dequantize(quantize(W, s), s), 1, 0) + unsqueeze(b, 0)``; ``LayerNorm``
  over the last dims; ``Embedding`` as a gather along dim 0;
- the dtype rules nvtripy's ``wrappers.interface`` enforces on the ops used here (both operands
  of a binary op share one dtype, a Python number takes the tensor's dtype, masks are bool...),
  and ``check_qdq_args`` (nvtripy/frontend/ops/utils.py) for quantize and dequantize;
- TensorRT's quantize and dequantize arithmetic (TensorRT 10 ``IQuantizeLayer`` /
  ``IDequantizeLayer``, NvInfer.h): ``clamp(round(x / scale))`` rounding to nearest with ties to
  even, INT8 in [-128, 127] and INT4 in [-8, 7], then ``codes * scale``; the scale is per tensor
  (scalar), per channel (1-D along ``dim``), or block-wise (the input's rank, blocked along the one
  dimension where the shapes differ, one of the last two: MLIR-TensorRT's ``QuantizeOp`` verifier);
- a compiled executable's profile: inputs must have the ``InputInfo`` dtype and lie within its
  (min, max) bounds, as a TensorRT optimization profile requires.

What it does not keep: TensorRT's numerics. Ops run eagerly in torch, on the CPU, in the tensor's
dtype; kernel choice, fusion, accumulation order and TF32 are TensorRT's and only a GPU run shows
them. Written independently of ``targets/tripy_layout.py``, so a mistake there is not shared here.
"""

from tests.nvtripy_standin.modules import (
    Embedding,
    Executable,
    InputInfo,
    LayerNorm,
    Linear,
    Module,
    Stream,
    compile,
)
from tests.nvtripy_standin.tensor import (
    DimensionSize,
    Tensor,
    TripyException,
    arange,
    cast,
    concatenate,
    dequantize,
    device,
    dtype,
    float16,
    float32,
    gelu,
    int4,
    int8,
    int32,
    masked_fill,
    ones,
    quantize,
    reshape,
    softmax,
    split,
    stack,
    tanh,
    transpose,
    unsqueeze,
)

__all__ = ["DimensionSize", "Embedding", "Executable", "InputInfo", "LayerNorm", "Linear", "Module", "Stream",
           "Tensor", "TripyException", "arange", "cast", "compile", "concatenate", "dequantize", "device", "dtype", "float16",
           "float32", "gelu", "int32", "int4", "int8", "masked_fill", "ones", "quantize", "reshape", "softmax",
           "split", "stack", "tanh", "transpose", "unsqueeze"]
