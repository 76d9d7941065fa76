"""Tests: the nvtripy stand-in's modules (after nvtripy/frontend/module/) and its compile and
executable (after nvtripy/backend/api/); see the package docstring."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tests.nvtripy_standin.tensor import (
    _FLOATS,
    _INT64,
    IntLike,
    Tensor,
    _require,
    dequantize,
    dtype,
    float32,
    int32,
    quantize,
    transpose,
    unsqueeze,
)


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
