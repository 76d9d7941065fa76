"""Named intermediates of a reference model, the same names for every family, read by forward hooks.

The names, in the order the forward pass computes them (``intermediate_names``):

- ``embed``: what the first block receives (nanoGPT: token + position embeddings; nanochat: the
  RMS-normed token embeddings);
- ``h.{i}.attn``: block i's attention output, before the residual add;
- ``h.{i}.attn_residual``: the residual stream after that add;
- ``h.{i}.mlp``: block i's MLP output, before the residual add;
- ``h.{i}.mlp_residual``: the residual stream after that add (block i's output);
- ``final_norm``: what the head receives;
- ``logits``: the model's logits (nanochat's are softcapped).

Hooks observe the model's own forward pass, so they also work while torch.export or torch.jit
traces it: a target can return these as extra outputs of its captured program. Both families
build ``transformer.h`` (blocks with ``attn`` and ``mlp``) and ``lm_head``, and that is all the
hooks rely on; any module holding those two attributes works (``gpt_conformance.targets.neuron.NeuronStep``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from gpt_conformance.reference.families import family_of

BLOCK_PARTS = ("attn", "attn_residual", "mlp", "mlp_residual")
EMBED, FINAL_NORM, LOGITS = "embed", "final_norm", "logits"


def intermediate_names(n_layer: int) -> list[str]:
    """Every name of a model with ``n_layer`` blocks, in the order the forward pass computes them."""
    return [EMBED, *(f"h.{i}.{part}" for i in range(n_layer) for part in BLOCK_PARTS), FINAL_NORM, LOGITS]


def block_of(name: str) -> tuple[int, str] | None:
    """``"h.1.attn"`` -> (1, "attn"); None for ``embed``, ``final_norm`` and ``logits``."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "h" and parts[1].isdigit() and parts[2] in BLOCK_PARTS:
        return int(parts[1]), parts[2]
    return None


class IntermediateRecorder:
    """Forward hooks that keep every named intermediate (all but ``logits``) of the latest forward
    pass in ``values``. Use it as a context manager, or keep it attached for the module's life
    (a traced program: the hooks must exist before tracing starts, strict export cannot add them)."""

    def __init__(self, model: torch.nn.Module):
        self.values: dict[str, torch.Tensor] = {}
        self._block_inputs: dict[int, torch.Tensor] = {}
        self._handles = []
        for i, block in enumerate(model.transformer.h):
            self._handles += [block.register_forward_pre_hook(self._block_input(i)),
                              block.attn.register_forward_hook(self._attention(i)),
                              block.mlp.register_forward_hook(self._keep(f"h.{i}.mlp")),
                              block.register_forward_hook(self._keep(f"h.{i}.mlp_residual"))]
        self._handles.append(model.lm_head.register_forward_pre_hook(self._head_input))

    def _block_input(self, i: int) -> Callable:
        def hook(module: Any, args: tuple) -> None:
            if i == 0:
                self.values[EMBED] = args[0]
            self._block_inputs[i] = args[0]
        return hook

    def _attention(self, i: int) -> Callable:
        def hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            self.values[f"h.{i}.attn"] = out
            # Every block computes ``x = x + attn(...)``: the same elementwise add, so bitwise the
            # residual stream the block goes on with (neither family has a module to hook there).
            self.values[f"h.{i}.attn_residual"] = self._block_inputs.pop(i) + out
        return hook

    def _keep(self, name: str) -> Callable:
        def hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            self.values[name] = out
        return hook

    def _head_input(self, module: Any, args: tuple) -> None:
        self.values[FINAL_NORM] = args[0]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> IntermediateRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def ordered(values: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """``values`` in forward order (names it lacks are left out)."""
    return {name: values[name] for name in intermediate_names(n_layer) if name in values}


@torch.no_grad()
def intermediates_of(model: torch.nn.Module, idx: torch.Tensor, call: Callable | None = None) -> dict[str, torch.Tensor]:
    """Every named intermediate of ``model`` on ``idx``, ``logits`` included, in forward order.
    ``call`` runs the forward pass instead of the model itself (e.g. through functional_call)."""
    family = family_of(model.config)
    with IntermediateRecorder(model) as recorder:
        logits, _ = family.logits_and_loss(call or model, idx)
    return ordered({**recorder.values, LOGITS: logits}, model.config.n_layer)
