"""Tests: a torch stand-in for the part of nvtripy 0.1.7 that ``targets/tripy_gpt.py`` calls, so
that the adapter's own graph runs on a CPU (``tests/test_tripy_standin.py`` injects it as
``nvtripy``).

What it keeps from nvtripy 0.1.7, because it decides what the adapter's graph computes:

- every public name's signature (parameter names, kinds, defaults, annotation names), checked
  against nvtripy's installed sources by ``tests/test_tripy_standin.py``; ``__all__`` lists them;
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

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Iterator, Sequence
from types import EllipsisType
from typing import Any, Union, overload

import torch
import torch.nn.functional as F

__all__ = ["DimensionSize", "Embedding", "Executable", "InputInfo", "LayerNorm", "Linear", "Module", "Stream",
           "Tensor", "TripyException", "arange", "cast", "compile", "dequantize", "device", "dtype", "float16",
           "float32", "gelu", "int32", "int4", "int8", "masked_fill", "ones", "quantize", "reshape", "softmax",
           "split", "tanh", "transpose", "unsqueeze"]


class TripyException(Exception):
    """What nvtripy's ``raise_error`` raises."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TripyException(message)


class dtype:  # noqa: N801  (nvtripy's name)
    def __init__(self, name: str, storage: torch.dtype, bits: int | None = None):
        self.name = name
        self.storage = storage  # int4 values are stored in torch.int8
        self.bits = bits  # quantized integer types only

    def __repr__(self) -> str:
        return self.name


float32 = dtype("float32", torch.float32)
float16 = dtype("float16", torch.float16)
int32 = dtype("int32", torch.int32)
int8 = dtype("int8", torch.int8, bits=8)
int4 = dtype("int4", torch.int8, bits=4)
_BOOL = dtype("bool", torch.bool)
_INT64 = dtype("int64", torch.int64)
# nvtripy has no float64: a float64 torch tensor is refused, as Tripy refuses it.
_FROM_TORCH = {t.storage: t for t in (float32, float16, int32, int8, _BOOL, _INT64)}
_FLOATS = (float32, float16)
_QUANT_RANGE = {int8: (-128, 127), int4: (-8, 7)}


class device:  # noqa: N801  (nvtripy's name; named in Tensor's signature, never used by the adapter)
    kind = "cpu"


IntLike = Union[int, "DimensionSize"]
ShapeLike = Sequence[IntLike]
TensorLike = Union["Tensor", numbers.Number]


class Tensor:
    def __init__(self, data: Any, dtype: dtype | None = None, device: device | None = None,
                 name: str | None = None) -> None:
        _require(data is not None and not isinstance(data, Tensor), "Tensor data must be a DLPack tensor or a number")
        _require(dtype is None and device is None, "the stand-in builds tensors from data alone")
        self._data = torch.from_dlpack(data) if hasattr(data, "__dlpack__") else torch.tensor(data)
        _require(self._data.dtype in _FROM_TORCH, f"nvtripy has no dtype for torch {self._data.dtype}")
        self._dtype = _FROM_TORCH[self._data.dtype]

    @classmethod
    def _wrap(cls, data: torch.Tensor, dtype: dtype) -> Tensor:
        tensor = cls.__new__(cls)
        tensor._data, tensor._dtype = data, dtype
        return tensor

    @property
    def dtype(self) -> dtype:
        return self._dtype

    @property
    def shape(self) -> tuple[IntLike]:
        return tuple(self._data.shape)  # type: ignore[return-value]  # nvtripy annotates Tuple[IntLike]

    def eval(self) -> Tensor:
        return self

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._data.__dlpack__()

    def __dlpack_device__(self) -> Any:
        return self._data.__dlpack_device__()

    def _other(self, other: TensorLike) -> torch.Tensor:
        """nvtripy's interface rules for a binary op's second operand: a Python number takes this
        tensor's dtype (never float into int), a tensor must already have it."""
        if isinstance(other, Tensor):
            _require(other.dtype is self.dtype, f"operands have dtypes {self.dtype} and {other.dtype}")
            return other._data
        _require(isinstance(other, (int, float)) and not (isinstance(other, float) and self.dtype not in _FLOATS),
                 f"cannot combine {other!r} with a {self.dtype} tensor")
        return torch.tensor(other, dtype=self.dtype.storage)

    def __add__(self, other: TensorLike) -> Tensor:
        return Tensor._wrap(self._data + self._other(other), self.dtype)

    def __mul__(self, other: TensorLike) -> Tensor:
        return Tensor._wrap(self._data * self._other(other), self.dtype)

    def __lt__(self, other: TensorLike) -> Tensor:
        return Tensor._wrap(self._data < self._other(other), _BOOL)

    def __matmul__(self, other: Tensor) -> Tensor:
        _require(self.dtype in _FLOATS and other.dtype is self.dtype, f"matmul of {self.dtype} and {other.dtype}")
        return Tensor._wrap(self._data @ other._data, self.dtype)

    def __getitem__(self, index: Tensor | slice | IntLike | EllipsisType | None
                    | Sequence[slice | IntLike | EllipsisType | None]) -> Tensor:
        _require(not isinstance(index, Tensor), "the stand-in indexes with slices and integers only")
        return Tensor._wrap(self._data[index], self.dtype)  # type: ignore[index]


class DimensionSize(Tensor):
    def __init__(self, data: int, name: str | None = None) -> None:
        super().__init__(torch.tensor(data, dtype=torch.int32), name=name)

    def __int__(self) -> int:
        return int(self._data)


# --- ops ------------------------------------------------------------------------------------

def cast(input: Tensor, dtype: dtype) -> Tensor:
    _require(input.dtype.bits is None and dtype.bits is None, "quantized casts are not part of the stand-in")
    return Tensor._wrap(input._data.to(dtype.storage), dtype)


def reshape(input: Tensor, shape: ShapeLike) -> Tensor:
    return Tensor._wrap(input._data.reshape([int(d) for d in shape]), input.dtype)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    return Tensor._wrap(input._data.transpose(dim0, dim1), input.dtype)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    return Tensor._wrap(input._data.unsqueeze(dim), input.dtype)


def split(input: Tensor, num_split_or_sizes: int | Sequence[IntLike], dim: int = 0) -> tuple[Tensor]:
    # An int: that many chunks, the last smaller if the size does not divide (nvtripy's docstring).
    if isinstance(num_split_or_sizes, int):
        size = input._data.shape[dim]
        pieces = input._data.split(-(-size // num_split_or_sizes), dim=dim)
    else:
        pieces = input._data.split([int(s) for s in num_split_or_sizes], dim=dim)
    return tuple(Tensor._wrap(p, input.dtype) for p in pieces)  # type: ignore[return-value]


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _require(input.dtype in _FLOATS, f"softmax of {input.dtype}")
    data = input._data if dim is not None else input._data.reshape(-1)
    return Tensor._wrap(torch.softmax(data, dim=0 if dim is None else dim), input.dtype)


def masked_fill(input: Tensor, mask: Tensor, value: numbers.Number) -> Tensor:
    _require(mask.dtype is _BOOL, f"masked_fill's mask must be bool, got {mask.dtype}")
    _require(isinstance(value, (int, float)), f"masked_fill value {value!r}")
    return Tensor._wrap(input._data.masked_fill(mask._data, float(value)), input.dtype)  # type: ignore[arg-type]


def tanh(input: Tensor) -> Tensor:
    _require(input.dtype in _FLOATS, f"tanh of {input.dtype}")
    return Tensor._wrap(torch.tanh(input._data), input.dtype)


def gelu(input: Tensor) -> Tensor:
    """The exact (erf) GELU: nvtripy's docstring, x * Phi(x)."""
    _require(input.dtype in _FLOATS, f"gelu of {input.dtype}")
    return Tensor._wrap(F.gelu(input._data), input.dtype)


@overload
def arange(start: numbers.Number | DimensionSize, stop: numbers.Number | DimensionSize,
           step: numbers.Number | DimensionSize = 1,  # type: ignore[assignment]  # nvtripy's default; to mypy an int is no Number
           dtype: dtype = float32) -> Tensor: ...


@overload
def arange(stop: numbers.Number | DimensionSize, dtype: dtype = float32) -> Tensor: ...


def arange(*args: Any, **kwargs: Any) -> Tensor:
    """Both of nvtripy's overloads: arange(stop, dtype) and arange(start, stop, step, dtype)."""
    kind = kwargs.pop("dtype", float32)
    bounds = [int(a) if isinstance(a, (int, DimensionSize)) else a for a in args]
    return Tensor._wrap(torch.arange(*bounds, dtype=kind.storage), kind)


def ones(shape: ShapeLike, dtype: dtype = float32) -> Tensor:
    return Tensor._wrap(torch.ones([int(d) for d in shape], dtype=dtype.storage), dtype)


def _check_qdq_args(input: Tensor, scale: Tensor, dtype: dtype, dim: int | None, is_quantize: bool) -> None:
    """nvtripy's check_qdq_args: dtypes, scale dtype == the float side's dtype, scale ranks."""
    floating, quantized = (input.dtype, dtype) if is_quantize else (dtype, input.dtype)
    _require(floating in _FLOATS and quantized in _QUANT_RANGE, f"cannot (de)quantize between {floating} and {quantized}")
    _require(scale.dtype is floating, f"scale should have dtype={floating}, got {scale.dtype}")
    rank = scale._data.dim()
    if dim is not None:
        _require(rank == 1, f"per-channel scale must be 1-D, has rank {rank}")
    elif rank == 2:
        _require(input._data.dim() == 2 and quantized is int4, "block-wise (de)quantization is 2-D and int4 only")
    else:
        _require(rank == 0, f"per-tensor scale must be a scalar, has rank {rank}")


def _full_scale(scale: torch.Tensor, shape: torch.Size, dim: int | None) -> torch.Tensor:
    """The scale broadcast to the input's shape: per tensor, per channel along ``dim``, or blocked
    along the one dimension (of the last two) where the scale's shape differs from the input's."""
    if dim is not None:
        _require(scale.shape == (shape[dim],), f"per-channel scale {tuple(scale.shape)} for dim {dim} of {tuple(shape)}")
        view = [1] * len(shape)
        view[dim] = shape[dim]
        return scale.view(view)
    if scale.dim() == 0:
        return scale
    differing = [i for i in range(len(shape)) if scale.shape[i] != shape[i]]
    _require(len(differing) == 1 and differing[0] >= len(shape) - 2 and shape[differing[0]] % scale.shape[differing[0]] == 0,
             f"block-wise scale {tuple(scale.shape)} does not block {tuple(shape)} along one of its last two dims")
    axis = differing[0]
    return scale.repeat_interleave(shape[axis] // scale.shape[axis], dim=axis)


def _scale_tensor(scale: Tensor | numbers.Number | Sequence[numbers.Number] | Sequence[Sequence[numbers.Number]],
                  like: dtype) -> Tensor:
    return scale if isinstance(scale, Tensor) else Tensor._wrap(torch.tensor(scale, dtype=like.storage), like)


def quantize(input: Tensor, scale: Tensor | numbers.Number | Sequence[numbers.Number] | Sequence[Sequence[numbers.Number]],
             dtype: dtype, dim: int | None = None) -> Tensor:
    scale_t = _scale_tensor(scale, input.dtype)
    _check_qdq_args(input, scale_t, dtype, dim, is_quantize=True)
    low, high = _QUANT_RANGE[dtype]
    # torch.round rounds half to even, as TensorRT does.
    codes = torch.round(input._data / _full_scale(scale_t._data, input._data.shape, dim)).clamp(low, high)
    return Tensor._wrap(codes.to(torch.int8), dtype)


def dequantize(input: Tensor, scale: Tensor | numbers.Number | Sequence[numbers.Number] | Sequence[Sequence[numbers.Number]],
               dtype: dtype, dim: int | None = None) -> Tensor:
    scale_t = _scale_tensor(scale, dtype)
    _check_qdq_args(input, scale_t, dtype, dim, is_quantize=False)
    full = _full_scale(scale_t._data, input._data.shape, dim)
    return Tensor._wrap(input._data.to(dtype.storage) * full, dtype)


# --- modules (nvtripy/frontend/module/) ----------------------------------------------------

class _Parameter:
    """nvtripy's DefaultParameter (must be set before a call) and OptionalParameter."""

    def __init__(self, shape: Sequence[int] | None, dtype: dtype, optional: bool = False):
        self.shape = None if shape is None else tuple(shape)
        self.dtype = dtype
        self.optional = optional


def _check_param_compatible(original: object, new: object, name: str) -> None:
    """nvtripy's _check_param_compatible: a tensor, of the declared shape (when one is declared)
    and dtype."""
    _require(isinstance(new, Tensor), f"parameter {name!r} must be a Tensor, got {type(new).__name__}")
    assert isinstance(new, Tensor)
    if isinstance(original, (Tensor, _Parameter)):
        shape = original.shape
        if shape is not None:
            _require(tuple(shape) == tuple(new.shape), f"{name}: new shape {tuple(new.shape)}, declared {tuple(shape)}")
        _require(original.dtype is new.dtype, f"{name}: new dtype {new.dtype}, declared {original.dtype}")


class Module:
    def __init__(self) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Tensor):
            _check_param_compatible(getattr(self, name, None), value, name)
        super().__setattr__(name, value)

    def _members(self, kinds: tuple[type, ...]) -> Iterator[tuple[str, Any]]:
        """Attributes of these kinds, and those inside a list or a dict attribute (one level)."""
        for name, value in vars(self).items():
            if isinstance(value, kinds):
                yield name, value
            elif isinstance(value, list):
                yield from ((f"{name}.{i}", v) for i, v in enumerate(value) if isinstance(v, kinds))
            elif isinstance(value, dict):
                yield from ((f"{name}.{k}", v) for k, v in value.items() if isinstance(v, kinds))

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._members((Module,))

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        yield from self._members((Tensor, _Parameter))

    def state_dict(self) -> dict[str, Tensor]:
        state = dict(self.named_parameters())
        for child_name, child in self.named_children():
            state.update({f"{child_name}.{name}": param for name, param in child.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True) -> tuple[set[str], set[str]]:
        original = self.state_dict()
        optional = {k for k, v in original.items() if isinstance(v, _Parameter) and v.optional}
        missing = set(original) - optional - set(state_dict)
        unexpected = set(state_dict) - set(original)
        _require(not strict or not (missing or unexpected),
                 f"state_dict is incompatible: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for key, param in state_dict.items():
            if key in unexpected:
                continue
            path, _, attr = key.rpartition(".")
            owner: Any = self
            for part in path.split(".") if path else []:
                owner = owner[int(part)] if isinstance(owner, list) else (
                    owner[part] if isinstance(owner, dict) else operator.attrgetter(part)(owner))
            if isinstance(owner, Module):
                _check_param_compatible(getattr(owner, attr), param, key)
                setattr(owner, attr, param)
            else:
                slot = int(attr) if isinstance(owner, list) else attr
                _check_param_compatible(owner[slot], param, key)
                owner[slot] = param
        return missing, unexpected

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        unset = [k for k, v in self.state_dict().items() if isinstance(v, _Parameter) and not v.optional]
        _require(not unset, f"Some parameters were never set in the module: {', '.join(unset)}")
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: dtype = float32,
                 quant_dtype: dtype | None = None, weight_quant_dim: int | None = None) -> None:
        super().__init__()
        self.dtype = dtype
        self.weight: Tensor | _Parameter = _Parameter((out_features, in_features), dtype)
        self.bias: Tensor | _Parameter | None = _Parameter((out_features,), dtype) if bias else None
        self.quant_dtype = quant_dtype
        self.weight_quant_dim = weight_quant_dim
        self.weight_scale: Tensor | _Parameter | None = None
        self.input_scale: Tensor | _Parameter | None = None
        if quant_dtype is not None:
            # Block-wise (weight_quant_dim None) declares no scale shape: any block layout loads.
            shape = None if weight_quant_dim is None else [(out_features, in_features)[weight_quant_dim]]
            self.weight_scale = _Parameter(shape, dtype)
            self.input_scale = _Parameter([], dtype, optional=True)

    def forward(self, x: Tensor) -> Tensor:
        assert isinstance(self.weight, Tensor)
        weight = self.weight
        if self.quant_dtype is not None:
            _require(not isinstance(self.input_scale, Tensor), "the stand-in quantizes weights only")
            assert isinstance(self.weight_scale, Tensor)
            codes = quantize(weight, self.weight_scale, self.quant_dtype, self.weight_quant_dim)
            weight = dequantize(codes, self.weight_scale, self.dtype, self.weight_quant_dim)
        out = x @ transpose(weight, 1, 0)
        if self.bias is not None:
            assert isinstance(self.bias, Tensor)
            out = out + unsqueeze(self.bias, 0)
        return out


class LayerNorm(Module):
    def __init__(self, normalized_shape: int | Sequence[int], dtype: dtype = float32, eps: float = 1e-5) -> None:
        super().__init__()
        self.dtype = dtype
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.weight: Tensor | _Parameter = _Parameter(self.normalized_shape, dtype)
        self.bias: Tensor | _Parameter = _Parameter(self.normalized_shape, dtype)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        assert isinstance(self.weight, Tensor) and isinstance(self.bias, Tensor)
        _require(x.dtype in _FLOATS and x.dtype is self.weight.dtype is self.bias.dtype,
                 f"layernorm of {x.dtype} with parameters in {self.weight.dtype}")
        out = F.layer_norm(x._data, self.normalized_shape, self.weight._data, self.bias._data, self.eps)
        return Tensor._wrap(out, x.dtype)


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: dtype = float32) -> None:
        super().__init__()
        self.dtype = dtype
        self.weight: Tensor | _Parameter = _Parameter((num_embeddings, embedding_dim), dtype)

    def forward(self, x: Tensor) -> Tensor:
        assert isinstance(self.weight, Tensor)
        _require(x.dtype in (int32, _INT64), f"embedding indices must be int32 or int64, got {x.dtype}")
        return Tensor._wrap(self.weight._data[x._data.long()], self.weight.dtype)


# --- compiling (nvtripy/backend/api/) ------------------------------------------------------

class InputInfo:
    def __init__(self, shape: Sequence[IntLike | tuple[IntLike, IntLike, IntLike]], dtype: dtype) -> None:
        bounds = [(int(d),) * 3 if isinstance(d, (int, Tensor)) else tuple(int(v) for v in d) for d in shape]
        _require(all(lo <= opt <= hi for lo, opt, hi in bounds), f"shape bounds must be (min, opt, max): {bounds}")
        self.bounds = bounds
        self.dtype = dtype


class Stream:
    def __init__(self) -> None:
        pass

    def synchronize(self) -> None:
        """Nothing to wait for: the stand-in runs eagerly."""


class Executable:
    def __init__(self, func: Callable[..., Any], input_infos: Sequence[InputInfo]):
        self._func = func
        self.input_infos = list(input_infos)
        self.stream = Stream()

    def __call__(self, *args: Tensor, **kwargs: Tensor) -> Tensor | Sequence[Tensor]:
        _require(not kwargs and len(args) == len(self.input_infos), f"expected {len(self.input_infos)} positional inputs")
        for i, (arg, info) in enumerate(zip(args, self.input_infos, strict=True)):
            _require(arg.dtype is info.dtype, f"input {i}: dtype {arg.dtype}, compiled for {info.dtype}")
            shape = tuple(int(d) for d in arg.shape)
            _require(len(shape) == len(info.bounds) and all(lo <= d <= hi for d, (lo, _, hi) in zip(shape, info.bounds, strict=True)),
                     f"input {i}: shape {shape} outside the compiled bounds {info.bounds}")
        result: Tensor | Sequence[Tensor] = self._func(*args)
        return result


def compile(func: Callable[..., Any], optimization_level: int = 3, *,
            args: Sequence[Any] = [], kwargs: dict[str, Any] = {}) -> Executable:  # noqa: B006  (nvtripy's defaults)
    """Traces ``func`` once at the optimum shapes, as nvtripy traces it to compile, so a graph that
    cannot be built fails here; returns an executable that runs it eagerly."""
    _require(not kwargs and all(isinstance(a, InputInfo) for a in args), "the stand-in compiles InputInfo args only")
    infos = [a for a in args if isinstance(a, InputInfo)]
    func(*(Tensor._wrap(torch.zeros([opt for _, opt, _ in i.bounds], dtype=i.dtype.storage), i.dtype) for i in infos))
    return Executable(func, infos)
