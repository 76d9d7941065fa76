"""Planted-bug targets that each break one named place of the model: localization must name it.

``where`` is what localization must name first: an intermediate (``gpt_conformance.reference.intermediates``)
for the white-box targets, which return intermediates through the eager runnable; a block
(``h.2``) or ``embeddings or head`` for the black boxes, which return logits only and are
therefore located by bisecting truncated models. A bug planted in block ``b`` is absent from a
model with ``b`` blocks or fewer, as a backend's bug in one layer would be.

Load them with ``pytest -p tests.planted_localize`` (or ``python -m gpt_conformance localize -p ...``).
"""

from __future__ import annotations

import copy

import torch
from gpt_conformance.harness.api import Capabilities, Target
from gpt_conformance.reference import nanochat
from gpt_conformance.reference.nanochat import CausalSelfAttention, NanochatGPT, apply_rotary_emb
from gpt_conformance.targets.eager import EagerRunnable
from torch.nn import functional as F

NANOGPT, NANOCHAT = frozenset({"nanogpt"}), frozenset({"nanochat"})


class PlantedPlace(Target):
    """The reference with one place broken, returning intermediates like the eager target."""

    precision = "fp32"
    where = ""
    block: int | None = None  # the block the bug is in, when it is in one
    families = NANOGPT

    def __init__(self, name: str, description: str, block: int | None = None):
        self.name, self.description, self.block = name, description, block
        self.capabilities = Capabilities(families=self.families, returns_intermediates=True)

    def mutate(self, model: torch.nn.Module) -> None:
        """Break ``model`` (a private copy) in place."""
        raise NotImplementedError

    def prepare(self, model, config):
        broken = copy.deepcopy(model).eval()
        if self.block is None or self.block < config.n_layer:
            self.mutate(broken)
        return EagerRunnable(broken)


class BlackBox(Target):
    """``inner``'s bug behind a runnable that returns logits and loss only."""

    precision = "fp32"

    def __init__(self, name: str, inner: PlantedPlace, where: str):
        self.name, self.inner, self.where = name, inner, where
        self.description = f"black box (logits only) around: {inner.description}"
        self.capabilities = Capabilities(families=inner.families)

    def prepare(self, model, config):
        runnable = self.inner.prepare(model, config)

        def run(idx, targets=None):
            return runnable(idx, targets)

        return run


# --- nanoGPT --------------------------------------------------------------------------------------
class AttentionScale(PlantedPlace):
    """Attention scores scaled by 1/head_dim instead of 1/sqrt(head_dim) in one block."""

    def mutate(self, model):
        attn = model.transformer.h[self.block].attn
        attn.attn_impl, attn.scale = "manual", 1.0 / (attn.n_embd // attn.n_head)


class ReluMLP(PlantedPlace):
    """ReLU instead of GELU in one block's MLP."""

    def mutate(self, model):
        model.transformer.h[self.block].mlp.gelu = torch.nn.ReLU()


class FinalNormEps(PlantedPlace):
    """The final LayerNorm with eps 1e-3 instead of 1e-5 (the blocks' norms are right)."""

    def mutate(self, model):
        model.transformer.ln_f.eps = 1e-3


# --- nanochat -------------------------------------------------------------------------------------
class PlusAngleAttention(CausalSelfAttention):
    def forward(self, x, cos_sin):
        cos, sin = cos_sin
        return super().forward(x, (cos, -sin))


class NoQKNormAttention(CausalSelfAttention):
    def forward(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rotary_emb(q, *cos_sin), apply_rotary_emb(k, *cos_sin)  # and no norm(q), norm(k)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class NanochatAttention(PlantedPlace):
    families = NANOCHAT
    attention: type[CausalSelfAttention] = CausalSelfAttention

    def __init__(self, name: str, description: str, block: int, attention: type[CausalSelfAttention]):
        super().__init__(name, description, block)
        self.attention = attention

    def mutate(self, model):
        old = model.transformer.h[self.block].attn
        new = self.attention(model.config, self.block).to(old.c_q.weight.dtype)
        new.load_state_dict(old.state_dict())
        model.transformer.h[self.block].attn = new


class ReluNotSquared(PlantedPlace):
    """ReLU instead of ReLU² in one block's MLP."""

    families = NANOCHAT

    def mutate(self, model):
        mlp = model.transformer.h[self.block].mlp
        mlp.forward = lambda x: mlp.c_proj(F.relu(mlp.c_fc(x)))


class SoftcapThirty(PlantedPlace):
    """Logits softcapped at 30 instead of 15: the forward pass runs with ``gpt_conformance.reference.nanochat``'s
    SOFTCAP (read by the model's forward only) set to 30."""

    families = NANOCHAT

    def mutate(self, model):
        forward = NanochatGPT.forward.__get__(model)

        def softcap_30(*args, **kwargs):
            saved, nanochat.SOFTCAP = nanochat.SOFTCAP, 30.0
            try:
                return forward(*args, **kwargs)
            finally:
                nanochat.SOFTCAP = saved

        model.forward = softcap_30


class FinalLayerNorm(PlantedPlace):
    """The final norm subtracts the mean (LayerNorm, not RMSNorm); the blocks' norms are right.
    The head's input is replaced: LayerNorm of the RMS-normed x is LayerNorm of x (both are
    scale-invariant), and this hook runs before any hook registered later (the recorder's)."""

    families = NANOCHAT

    def mutate(self, model):
        model.lm_head.register_forward_pre_hook(
            lambda module, args: (F.layer_norm(args[0], (args[0].size(-1),), eps=nanochat.RMS_NORM_EPS),))


# --- the targets ----------------------------------------------------------------------------------
def place(target: PlantedPlace, where: str) -> PlantedPlace:
    target.where = where
    return target


PLANTED_PLACES = [
    place(AttentionScale("planted-at-h1-attn", "block 1's attention scaled by 1/head_dim", block=1), "h.1.attn"),
    place(ReluMLP("planted-at-h0-mlp", "block 0's MLP uses ReLU instead of GELU", block=0), "h.0.mlp"),
    place(FinalNormEps("planted-at-final-norm", "the final LayerNorm's eps is 1e-3"), "final_norm"),
    place(NanochatAttention("planted-nanochat-at-h1-rotary", "block 1's rotary rotates by +angle", 1,
                            PlusAngleAttention), "h.1.attn"),
    place(NanochatAttention("planted-nanochat-at-h0-qk-norm", "block 0 skips QK-norm", 0, NoQKNormAttention),
          "h.0.attn"),
    place(ReluNotSquared("planted-nanochat-at-h0-mlp", "block 0's MLP uses ReLU instead of ReLU²", block=0),
          "h.0.mlp"),
    place(FinalLayerNorm("planted-nanochat-at-final-norm", "the final norm is a LayerNorm"), "final_norm"),
    place(SoftcapThirty("planted-nanochat-at-softcap", "logits softcapped at 30 instead of 15"), "logits"),
]
BLACK_BOXES = [
    BlackBox("planted-blackbox-h2-mlp", ReluMLP("", "block 2's MLP uses ReLU instead of GELU", block=2), "h.2"),
    BlackBox("planted-blackbox-nanochat-h2-qk-norm",
             NanochatAttention("", "block 2 skips QK-norm", 2, NoQKNormAttention), "h.2"),
    BlackBox("planted-blackbox-final-norm", FinalNormEps("", "the final LayerNorm's eps is 1e-3"), "embeddings or head"),
]
PLANTED = PLANTED_PLACES + BLACK_BOXES


def pytest_gpt_conformance_register(registry):
    for target in PLANTED:
        registry.register(target, source="tests.planted_localize")
