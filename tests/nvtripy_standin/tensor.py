"""Tests: the nvtripy stand-in's tensors, dtypes and functional ops, with nvtripy's dtype rules
and TensorRT's quantize/dequantize arithmetic (see the package docstring)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from types import EllipsisType
from typing import Any, Union, overload

import torch
import torch.nn.functional as F


class TripyException(Exception):
    """What nvtripy's ``raise_error`` raises."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TripyException(message)


class dtype:  # nvtripy's name
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


class device:  # nvtripy's name; in Tensor's signature, never used by the adapter
    kind = "cpu"


IntLike = Union[int, "DimensionSize"]
ShapeLike = Sequence[IntLike]
TensorLike = Union["Tensor", numbers.Number]
# nvtripy annotates arange's bounds numbers.Number with a default of 1, but to mypy an int is no
# numbers.Number (python/mypy#3186): this alias says what nvtripy means, and the signature test
# reads it by its name, Number, as it reads nvtripy's numbers.Number.
Number = numbers.Number | int | float


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
    def shape(self) -> tuple[IntLike, ...]:  # nvtripy's Tuple[IntLike], with the length it means
        return tuple(self._data.shape)

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
        # nvtripy indexes with an IntLike (int or DimensionSize); torch with an int: each
        # DimensionSize becomes its value, so torch sees only what its own indexing takes.
        def torch_int(value: Any) -> Any:
            return int(value) if isinstance(value, DimensionSize) else value

        def torch_part(part: slice | IntLike | EllipsisType | None) -> slice | int | EllipsisType | None:
            if isinstance(part, slice):
                return slice(torch_int(part.start), torch_int(part.stop), torch_int(part.step))
            return torch_int(part)

        if isinstance(index, Tensor):  # a raise, not _require: mypy narrows the index on it
            raise TripyException("the stand-in indexes with slices and integers only")
        if isinstance(index, Sequence):
            return Tensor._wrap(self._data[tuple(torch_part(part) for part in index)], self.dtype)
        return Tensor._wrap(self._data[torch_part(index)], self.dtype)


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


def split(input: Tensor, num_split_or_sizes: int | Sequence[IntLike], dim: int = 0) -> tuple[Tensor, ...]:
    # An int: that many chunks, the last smaller if the size does not divide (nvtripy's docstring).
    if isinstance(num_split_or_sizes, int):
        size = input._data.shape[dim]
        pieces = input._data.split(-(-size // num_split_or_sizes), dim=dim)
    else:
        pieces = input._data.split([int(s) for s in num_split_or_sizes], dim=dim)
    # nvtripy annotates the result Tuple[Tensor] (one element): the signature test compares type
    # names, so the stand-in says what it means, any number of them.
    return tuple(Tensor._wrap(p, input.dtype) for p in pieces)


def _same_dtype(tensors: Sequence[Tensor], op: str) -> dtype:
    _require(len(tensors) > 0, f"{op} of an empty sequence")
    kinds = {t.dtype for t in tensors}
    _require(len(kinds) == 1, f"{op} of tensors of dtypes {sorted(map(repr, kinds))}")
    return tensors[0].dtype


def concatenate(tensors: Sequence[Tensor], dim: int) -> Tensor:
    """Along ``dim``; one dtype, equal ranks and every other dimension equal (nvtripy's docstring)."""
    kind = _same_dtype(tensors, "concatenate")
    return Tensor._wrap(torch.cat([t._data for t in tensors], dim=dim), kind)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Along a new dimension ``dim``; one dtype and one shape (nvtripy's docstring)."""
    kind = _same_dtype(tensors, "stack")
    _require(len({tuple(t._data.shape) for t in tensors}) == 1, "stack of tensors of different shapes")
    return Tensor._wrap(torch.stack([t._data for t in tensors], dim=dim), kind)


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _require(input.dtype in _FLOATS, f"softmax of {input.dtype}")
    data = input._data if dim is not None else input._data.reshape(-1)
    return Tensor._wrap(torch.softmax(data, dim=0 if dim is None else dim), input.dtype)


def masked_fill(input: Tensor, mask: Tensor, value: numbers.Number) -> Tensor:
    _require(mask.dtype is _BOOL, f"masked_fill's mask must be bool, got {mask.dtype}")
    if not isinstance(value, (int, float)):
        raise TripyException(f"masked_fill value {value!r}")
    return Tensor._wrap(input._data.masked_fill(mask._data, float(value)), input.dtype)


def tanh(input: Tensor) -> Tensor:
    _require(input.dtype in _FLOATS, f"tanh of {input.dtype}")
    return Tensor._wrap(torch.tanh(input._data), input.dtype)


def gelu(input: Tensor) -> Tensor:
    """The exact (erf) GELU: nvtripy's docstring, x * Phi(x)."""
    _require(input.dtype in _FLOATS, f"gelu of {input.dtype}")
    return Tensor._wrap(F.gelu(input._data), input.dtype)


@overload
def arange(start: Number | DimensionSize, stop: Number | DimensionSize, step: Number | DimensionSize = 1,
           dtype: dtype = float32) -> Tensor: ...


@overload
def arange(stop: Number | DimensionSize, dtype: dtype = float32) -> Tensor: ...


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
