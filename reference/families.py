"""Model families: what the harness needs to know about each kind of reference model.

A family ties a config type to its model and says how to get ``(logits [B, T, V], loss or None)``
out of it, whatever the model's own forward contract is:

- ``nanogpt``: ``gpt_conformance.reference.model.GPT``; ``forward(idx, targets, full_logits=True)`` returns
  ``(logits, loss)`` in one call.
- ``nanochat``: ``gpt_conformance.reference.nanochat.NanochatGPT``; ``forward(idx)`` returns logits and
  ``forward(idx, targets)`` returns the loss, so ``logits_and_loss`` makes two calls.

``logits_and_loss`` takes ``call``, the model itself or anything with its forward signature
(for instance ``lambda *a, **kw: torch.func.functional_call(model, params, a, kw)``), so a
target that traces or exports can route its calls through its own mechanism.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.reference.nanochat import EMBEDDING_INIT_STD, NanochatConfig, NanochatGPT, linear_init_std

# nanoGPT's init: normal(0, 0.02) for every matrix.
NANOGPT_STD = 0.02
LogitsAndLoss = tuple[torch.Tensor, "torch.Tensor | None"]


class ModelFamily:
    name: str
    config_type: type
    model_type: type[nn.Module]
    # Tied parameters: state-dict key -> the key it shares storage with (stored once in goldens).
    tied_weights: dict[str, str] = {}
    # The config field that bounds the sequence length.
    length_field: str

    def build(self, config: Any, seed: int) -> nn.Module:
        """The fp32 model of ``config`` in eval mode, its weights drawn after ``torch.manual_seed(seed)``
        (which also leaves torch's global RNG there, as the named cases rely on)."""
        self.check_config(config)
        torch.manual_seed(seed)
        return self.model_type(config).eval()

    def logits_and_loss(self, call: Callable[..., Any], idx: torch.Tensor,
                        targets: torch.Tensor | None = None) -> LogitsAndLoss:
        raise NotImplementedError

    def loss(self, call: Callable[..., Any], idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy loss alone, in one call (training)."""
        raise NotImplementedError

    def init_std(self, name: str, param: torch.Tensor) -> float:
        """The std the family's init draws matrix ``name`` with: what a rescale to another std divides by."""
        raise NotImplementedError

    def block_size(self, config: Any) -> int:
        return getattr(config, self.length_field)

    def vocab_size(self, config: Any) -> int:
        return config.vocab_size

    def config_to_dict(self, config: Any) -> dict:
        return config.to_dict()

    def config_from_dict(self, data: dict) -> Any:
        return self.config_type.from_dict(data)

    def check_config(self, config: Any) -> None:
        if not isinstance(config, self.config_type):
            raise ValueError(f"family {self.name!r} needs a {self.config_type.__name__}, got {type(config).__name__}")


class NanoGPTFamily(ModelFamily):
    name = "nanogpt"
    config_type = GPTConfig
    model_type = GPT
    tied_weights = {"transformer.wte.weight": "lm_head.weight"}
    length_field = "block_size"

    def init_std(self, name, param):
        # Its residual projections are drawn smaller (0.02 / sqrt(2 * n_layer)); a rescale by
        # weight_std / 0.02 keeps that ratio, as nanoGPT's own init does.
        return NANOGPT_STD

    def logits_and_loss(self, call, idx, targets=None):
        if targets is None:
            return call(idx, full_logits=True)
        return call(idx, targets, full_logits=True)

    def loss(self, call, idx, targets):
        return call(idx, targets)[1]


class NanochatFamily(ModelFamily):
    name = "nanochat"
    config_type = NanochatConfig
    model_type = NanochatGPT
    length_field = "sequence_len"

    def init_std(self, name, param):
        if name == "transformer.wte.weight":
            return EMBEDDING_INIT_STD
        fan_out, fan_in = param.shape
        return linear_init_std(fan_out, fan_in)

    def logits_and_loss(self, call, idx, targets=None):
        logits = call(idx, full_logits=True)
        loss = None if targets is None else call(idx, targets)
        return logits, loss

    def loss(self, call, idx, targets):
        return call(idx, targets)


FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (NanoGPTFamily(), NanochatFamily())}


def family_named(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no model family {name!r}; known: {sorted(FAMILIES)}") from None


def family_of(config: Any) -> ModelFamily:
    """The family whose config type ``config`` is (a model's ``.config`` works)."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_type):
            return family
    raise ValueError(f"no model family has config type {type(config).__name__}; known: {sorted(FAMILIES)}")
