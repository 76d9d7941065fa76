"""Truncated reference models: the first k blocks of a model, then its final norm and head.

A black-box target returns logits only; preparing it on truncated models and comparing each with
the same truncated model in fp64 says which block's inclusion first breaks parity
(``gpt_conformance.harness.checks.localize``). Every truncated model is an ordinary model of its family (a
config with ``n_layer=k``) whose parameters *are* the original's tensors, not copies.

Configs need ``n_layer >= 1``, so "no block at all" is a one-block model whose block adds exactly
zero: its attention and MLP output projections are zero, and ``x + 0`` is ``x``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from gpt_conformance.reference.families import family_of

# The parameters whose zeroing makes a block the identity: both families name their attention
# and MLP output projections c_proj (nanoGPT's with a bias).
OUTPUT_PROJECTIONS = ("attn.c_proj.", "mlp.c_proj.")


def _kept(name: str, n_blocks: int) -> bool:
    if not name.startswith("transformer.h."):
        return True
    return int(name.split(".")[2]) < n_blocks


def truncated(model: torch.nn.Module, n_blocks: int) -> torch.nn.Module:
    """Blocks ``0 .. n_blocks - 1`` of ``model``, then its final norm and head, in eval mode,
    sharing ``model``'s parameter tensors."""
    n_layer = model.config.n_layer
    if not 1 <= n_blocks <= n_layer:
        raise ValueError(f"n_blocks must be in [1, {n_layer}], got {n_blocks}")
    family = family_of(model.config)
    config = replace(model.config, n_layer=n_blocks)
    # The fresh model's own initialisation is replaced below; forking the RNG keeps it from
    # moving torch's global generator under the caller.
    like = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        cut = family.model_type(config).to(device=like.device, dtype=like.dtype).eval()
    state = {k: v for k, v in model.state_dict().items() if _kept(k, n_blocks)}
    cut.load_state_dict(state, assign=True)
    for tied, source in family.tied_weights.items():  # assign=True leaves two Parameters: one again
        setattr(_owner(cut, tied), tied.rsplit(".", 1)[1], cut.get_parameter(source))
    return cut


def without_blocks(model: torch.nn.Module) -> torch.nn.Module:
    """The embeddings, final norm and head of ``model`` alone: its first block with the output
    projections zeroed (new tensors; ``model`` is untouched), so the block adds exactly zero."""
    cut = truncated(model, 1)
    with torch.no_grad():
        for name, param in cut.transformer.h[0].named_parameters():
            if name.startswith(OUTPUT_PROJECTIONS):
                setattr(_owner(cut.transformer.h[0], name), name.rsplit(".", 1)[1],
                        torch.nn.Parameter(torch.zeros_like(param), requires_grad=param.requires_grad))
    return cut


def _owner(module: torch.nn.Module, name: str) -> torch.nn.Module:
    return module.get_submodule(name.rsplit(".", 1)[0])
