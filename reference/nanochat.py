"""The second oracle family: nanochat's GPT, in float32 and float64.

Architecture and parameter names follow karpathy/nanochat's ``nanochat/gpt.py`` as of its
initial commit (3a5e0bc, 2025-10) through its ``enable_gqa`` rewrite (a088b7a, 2025-10-21),
the version the original torch.export check was written for:

- token embedding ``transformer.wte`` followed by a parameter-free RMSNorm, no positional
  embedding;
- rotary embeddings on q and k (rotation halves ``x[..., :d]``/``x[..., d:]``, base 10000,
  nanochat's sign: it rotates by -theta), then QK RMSNorm;
- grouped-query / multi-query attention: ``n_kv_head`` divides ``n_head`` and each kv head
  serves ``n_head // n_kv_head`` consecutive query heads (``repeat_interleave`` order, which is
  also what ``scaled_dot_product_attention(enable_gqa=True)`` does);
- ReLU² MLP, no biases, untied ``lm_head``, logit softcap ``15 * tanh(logits / 15)``;
- ``forward(idx, targets)`` returns the mean cross-entropy loss (ignore_index=-1) when targets
  are given, logits ``[B, T, V]`` otherwise.

Differences from nanochat, each one for the harness:

- everything runs in the parameters' dtype (fp32 or fp64); nanochat's bf16 casts of the
  embedding and the rotary tables are left out;
- RMSNorm's eps is pinned to float32's machine epsilon. ``F.rms_norm``'s default is
  ``finfo(x.dtype).eps``, so fp32 and fp64 would otherwise compute different functions; pinning
  it to the fp32 value keeps the fp32 model bit-for-bit nanochat's fp32 math;
- the rotary tables are computed in float64 and rounded once to the model's dtype, also after
  ``.double()``/``.float()``, so the fp64 truth does not inherit fp32 rounding;
- the seeded init keeps nanochat's fan-in rule for every Linear but not its zero init of
  ``lm_head`` and of the ``c_proj`` projections: with those zeros every logit is exactly 0 and
  attention and MLP do not reach the output, so no rotary, attention or MLP bug could show.
  ``init_weights(nanochat_zeros=True)`` applies nanochat's zeros too (same distributions as
  nanochat; the random draws are not nanochat's, which seeds and orders them differently);
- ``NanochatConfig`` validates itself and names the offending field; inputs are validated like
  ``gpt_conformance.reference.model.check_inputs``; ``attn_impl`` selects SDPA (``enable_gqa``) or an explicit
  ``repeat_interleave`` + masked softmax path, so the two can be checked against each other;
- ``full_logits=False`` returns the last position only (``[B, 1, V]``), for generation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from gpt_conformance.reference.model import check_inputs
from torch.nn import functional as F

ATTENTION_IMPLS = ("sdpa", "manual")
SOFTCAP = 15.0
# F.rms_norm's default eps is finfo(dtype).eps; nanochat runs fp32/bf16, and fp32's value is
# what its fp32 model uses. Pinned so that fp32 and fp64 compute the same function.
RMS_NORM_EPS = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class NanochatConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # query heads
    n_kv_head: int = 6  # key/value heads; n_head must be a multiple of it
    n_embd: int = 768
    attn_impl: str = "sdpa"
    # nanochat used 10000 until 2026-03 (commit 6ed7d1d moved to 100000).
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"NanochatConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"NanochatConfig.{name} must be positive, got {value}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"NanochatConfig.n_embd ({self.n_embd}) must be divisible by NanochatConfig.n_head ({self.n_head})"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"NanochatConfig.n_embd // n_head (head_dim {self.head_dim}) must be even: rotary embeddings "
                "rotate pairs of channels"
            )
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(
                f"NanochatConfig.n_kv_head ({self.n_kv_head}) must divide NanochatConfig.n_head ({self.n_head})"
            )
        if self.attn_impl not in ATTENTION_IMPLS:
            raise ValueError(f"NanochatConfig.attn_impl must be one of {ATTENTION_IMPLS}, got {self.attn_impl!r}")
        is_number = isinstance(self.rotary_base, (int, float)) and not isinstance(self.rotary_base, bool)
        if not is_number or not self.rotary_base > 1:
            raise ValueError(f"NanochatConfig.rotary_base must be a number > 1, got {self.rotary_base!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NanochatConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown NanochatConfig fields: {unknown}")
        return cls(**data)


# nanochat's init: normal(0, 1) embedding; every Linear normal with linear_init_std.
EMBEDDING_INIT_STD = 1.0


def linear_init_std(fan_out: int, fan_in: int) -> float:
    """``1/sqrt(fan_in) * min(1, sqrt(fan_out / fan_in))`` (arXiv:2310.17813), nanochat's Linear init."""
    return 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))


def norm(x: torch.Tensor) -> torch.Tensor:
    """nanochat's parameter-free RMSNorm over the last dimension."""
    return F.rms_norm(x, (x.size(-1),), eps=RMS_NORM_EPS)


def rotary_tables(
    seq_len: int, head_dim: int, base: float, dtype: torch.dtype, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape ``[1, seq_len, 1, head_dim // 2]`` for positions ``0..seq_len-1``.

    Computed in float64 on the CPU and rounded once to ``dtype``: correctly rounded tables in
    every dtype, and no float64 kernel on the model's device.
    """
    channels = torch.arange(0, head_dim, 2, dtype=torch.float64)
    inv_freq = 1.0 / (base ** (channels / head_dim))
    positions = torch.arange(seq_len, dtype=torch.float64)
    angles = torch.outer(positions, inv_freq)
    cos = angles.cos()[None, :, None, :].to(device=device, dtype=dtype)
    sin = angles.sin()[None, :, None, :].to(device=device, dtype=dtype)
    return cos, sin


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x[..., i], x[..., i + d])`` of ``x`` ``[B, T, H, 2d]`` by -angle.

    nanochat's convention: the first and second halves are paired (not even/odd channels), and
    the rotation is the transpose of the textbook one. Either sign gives relative positions,
    but with given weights the two differ, so a backend must use this one.
    """
    d = x.size(3) // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, H_kv, T, D] -> [B, H_kv * n_rep, T, D]``; kv head j serves query heads
    ``j * n_rep .. (j + 1) * n_rep - 1`` (nanochat's original ``repeat_kv``, SDPA's enable_gqa)."""
    return x if n_rep == 1 else torch.repeat_interleave(x, n_rep, dim=1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: NanochatConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.head_dim
        self.attn_impl = config.attn_impl
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        y = self.attend(q, k, v)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n_rep = self.n_head // self.n_kv_head
        if self.attn_impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_rep > 1)
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        T = q.size(2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~causal, float("-inf"))
        return F.softmax(att, dim=-1) @ v


class MLP(nn.Module):
    def __init__(self, config: NanochatConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: NanochatConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(norm(x), cos_sin)
        return x + self.mlp(norm(x))


class NanochatGPT(nn.Module):
    def __init__(self, config: NanochatConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Not in the state dict (nanochat's persistent=False): they are a function of the config.
        cos, sin = rotary_tables(config.sequence_len, config.head_dim, config.rotary_base, torch.get_default_dtype())
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, nanochat_zeros: bool = False) -> None:
        """nanochat's init distributions: normal(0, 1) embedding; every Linear normal with std
        ``1/sqrt(fan_in) * min(1, sqrt(fan_out / fan_in))`` (arXiv:2310.17813). nanochat then zeroes
        ``lm_head`` and every ``c_proj``; that happens only with ``nanochat_zeros=True``, because
        it makes all logits exactly 0 (see the module docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=linear_init_std(*module.weight.shape))
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        if nanochat_zeros:
            nn.init.zeros_(self.lm_head.weight)
            for block in self.transformer.h:
                nn.init.zeros_(block.mlp.c_proj.weight)
                nn.init.zeros_(block.attn.c_proj.weight)

    def _apply(self, fn, *args, **kwargs):
        # .double()/.float()/.to() cast buffers; casting an fp32 table to fp64 would carry fp32's
        # rounding (~6e-8) into the fp64 truth, so the tables are recomputed for the new dtype.
        super()._apply(fn, *args, **kwargs)
        cfg = self.config
        self.cos, self.sin = rotary_tables(cfg.sequence_len, cfg.head_dim, cfg.rotary_base, self.cos.dtype,
                                           self.cos.device)
        return self

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, full_logits: bool = True
    ) -> torch.Tensor:
        """nanochat's contract: the mean cross-entropy loss (ignore_index=-1) when ``targets`` are
        given; otherwise softcapped logits ``[B, T, V]``, or ``[B, 1, V]`` (last position) with
        ``full_logits=False``."""
        check_inputs(self.config, idx, targets, length_field="sequence_len")
        T = idx.size(1)
        cos_sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, cos_sin)
        x = norm(x)
        if targets is None and not full_logits:
            x = x[:, [-1], :]
        logits = self.lm_head(x)
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
