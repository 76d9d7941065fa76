"""Core layer: the reference model a target is handed is shared, so it must come back unchanged.

Every target of a run, and the fp64 truth, is computed from the same fp32 model object. A target
that converts it in place (``model.half()``, ``model.to("cuda")``, a fused weight written back)
would change every later verdict on that model, its own and other targets'. ``ModelStamp`` takes a
cheap fingerprint of the model before the first call and compares it after each one: per
parameter and buffer its dtype, device, shape, storage and version counter, checksums of its
values (which catch writes through ``.data`` that bypass the version counter), and the
model's train/eval mode. ``ModelSnapshot`` keeps a copy of the tensors to put the model
back after a change, so that one target's mistake is reported once, on that target, instead of
spoiling every later result on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class SharedModelChanged(RuntimeError):
    """A target changed the shared reference model in place."""


def _tensor_stamp(tensor: torch.Tensor) -> tuple:
    values = tensor.detach()
    return (values.dtype, values.device, tuple(values.shape), values.data_ptr(), values._version, *_checksums(values))


def _checksums(values: torch.Tensor) -> tuple[float, ...]:
    """A position-weighted sum (``rows' weights . table @ columns' weights``) and the norm of the
    values as a table: a write changes them unless it keeps both, values moved included. In the
    tensor's own float dtype, one matrix-vector product and one norm: a small fraction of a
    forward pass (float64 sums cost about ten times more)."""
    if not values.numel():
        return ()
    table = values.reshape(values.shape[0], -1) if values.dim() else values.reshape(1, 1)
    if not table.is_floating_point():
        table = table.float()
    columns = torch.arange(1, table.shape[1] + 1, dtype=table.dtype, device=table.device)
    rows = torch.arange(1, table.shape[0] + 1, dtype=torch.float64, device=table.device)
    weighted = float(rows @ (table @ columns).double())
    return (weighted, float(torch.linalg.vector_norm(table)))


def _tensors(model: torch.nn.Module):
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


@dataclass(frozen=True)
class ModelStamp:
    training: bool
    tensors: dict[str, tuple]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelStamp:
        with torch.no_grad():
            return cls(model.training, {name: _tensor_stamp(t) for name, t in _tensors(model)})

    def changes(self, model: torch.nn.Module) -> list[str]:
        """What differs between this stamp and ``model`` now, one phrase each (empty: unchanged)."""
        now = ModelStamp.of(model)
        found = []
        if now.training != self.training:
            found.append(f"mode {'train' if self.training else 'eval'} -> {'train' if now.training else 'eval'}")
        for name in sorted(self.tensors.keys() - now.tensors.keys()):
            found.append(f"{name} removed")
        for name in sorted(now.tensors.keys() - self.tensors.keys()):
            found.append(f"{name} added")
        for name in self.tensors.keys() & now.tensors.keys():
            before, after = self.tensors[name], now.tensors[name]
            if before == after:
                continue
            if before[0] != after[0]:
                found.append(f"{name} dtype {before[0]} -> {after[0]}")
            elif before[1] != after[1]:
                found.append(f"{name} device {before[1]} -> {after[1]}")
            elif before[2] != after[2]:
                found.append(f"{name} shape {list(before[2])} -> {list(after[2])}")
            else:
                found.append(f"{name} values written in place")
        return sorted(found)


def changed_message(target_name: str, during: str, changes: list[str]) -> str:
    shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
    return (f"target {target_name!r} changed the shared reference model in place during {during} ({shown}); "
            f"the model is shared by every target and the truth: convert a copy (copy.deepcopy(model))")


class ModelSnapshot:
    """The model's own tensor objects and a copy of their data, to undo in-place changes."""

    def __init__(self, model: torch.nn.Module):
        self.training = model.training
        self.slots = {}
        copies: dict[int, torch.Tensor] = {}  # tied weights appear under two names: copied once
        for name, tensor in _tensors(model):
            copies.setdefault(id(tensor), tensor.detach().clone())
            self.slots[name] = (tensor, copies[id(tensor)])

    def restore(self, model: torch.nn.Module) -> None:
        model.train(self.training)
        for name, _ in list(_tensors(model)):
            if name not in self.slots:
                module, leaf = _owner(model, name)
                module._parameters.pop(leaf, None)
                module._buffers.pop(leaf, None)
        for name, (original, saved) in self.slots.items():
            module, leaf = _owner(model, name)
            table = module._parameters if isinstance(original, torch.nn.Parameter) else module._buffers
            table[leaf] = original
            with torch.no_grad():
                original.data = saved.clone()


def _owner(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf
