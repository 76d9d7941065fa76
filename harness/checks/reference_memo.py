"""Checks: the references a check judges against, each computed once per process.

Every target of a run is checked on the same models and inputs: the property searches are
derandomized (``conformance-dev``, ``conformance-ci``), so each target draws the same examples,
and the latency cases build the same shapes. ``reference_outputs`` (the fp64 truth and eager
fp32) of those is the same for every target; and one property example asks for the arithmetic
reference of a low-precision target on its input twice (its parity verdict and its yardstick).
Each is kept here, keyed by what it is computed from: what is computed, the model's class and
config, the bytes of every parameter and buffer, and the bytes of every other input (the swapped-in
weights, the token ids). A model or an input that differs in one bit is a different entry, never a
stale answer. Past ``MAX_BYTES`` the least recently used entries go first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from gpt_conformance.reference.goldens import reference_outputs

# Bytes of tensors kept: a search's examples on one model are a handful, and every target of the
# run asks for them in turn, so the working set is one test's examples (a few MiB for the tiny
# models), not the run's; a GPT-2-sized output (50257-wide logits in fp64, tens of MiB) is kept
# only while a few fit.
MAX_BYTES = 256 << 20


def nbytes(value: Any) -> int:
    """Bytes of the tensors in ``value``: a tensor, or a tuple or dataclass of them (others count 0)."""
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, tuple):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def fingerprint(kind: str, model: torch.nn.Module, inputs: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """sha256 of what a reference depends on: ``kind`` (what is computed, and how), the model's
    class, config and state, and the named ``inputs``."""
    digest = hashlib.sha256()
    digest.update(f"{kind}\0{type(model).__qualname__}\0{model.config!r}\0".encode())
    named = [(f"state.{name}", tensor) for name, tensor in model.state_dict().items()]
    for name, tensor in [*named, *inputs]:
        if tensor is None:
            digest.update(f"{name}\0none\0".encode())
        else:
            digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


class ReferenceMemo:
    """References by fingerprint, each distinct one computed once."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.kept_bytes = 0
        self.computed = 0  # how many were computed (not reused): for tests and benchmarks

    def get(self, kind: str, model: torch.nn.Module, inputs: Iterable[tuple[str, torch.Tensor | None]],
            compute: Callable[[], Any]) -> Any:
        """``compute()``'s result, computed once per fingerprint (``fingerprint``). The result is
        shared: callers read it and never change it."""
        key = fingerprint(kind, model, inputs)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        value = compute()
        self.computed += 1
        size = nbytes(value)
        if size <= self.max_bytes:
            self._kept[key] = (value, size)
            self.kept_bytes += size
            while self.kept_bytes > self.max_bytes:
                _, (_, dropped) = self._kept.popitem(last=False)
                self.kept_bytes -= dropped
        return value

    def outputs(self, model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor | None) -> tuple:
        """(logits64, loss64, logits32, loss32), as ``reference_outputs`` returns them."""

        def compute() -> tuple:
            # Detached: a kept output must not keep its forward pass's autograd graph alive.
            return tuple(t.detach() if isinstance(t, torch.Tensor) else t
                         for t in reference_outputs(model, idx, targets))

        return self.get("reference_outputs", model, [("idx", idx), ("targets", targets)], compute)


# Shared by every check of the process.
REFERENCES = ReferenceMemo()
