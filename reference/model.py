"""The oracle: a nanoGPT-style GPT that runs in float32 and float64.

Parameter names match nanoGPT (and therefore Hugging Face GPT-2 after the Conv1D transpose), so
their state dicts load as they are. Differences from nanoGPT, each one for the harness:

- ``forward(..., full_logits=True)`` returns logits for every position without needing targets;
  nanoGPT's default (last position only when there are no targets) is kept.
- ``GPTConfig`` validates itself and names the offending field.
- ``gelu`` selects exact-erf GELU (nanoGPT) or the tanh approximation (Hugging Face GPT-2).
- ``attn_impl`` selects ``scaled_dot_product_attention`` or an explicit masked softmax, so the two
  can be checked against each other.
- Inputs are validated: a wrong dtype, rank, token id or length raises ``ValueError`` naming it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

GELU_APPROXIMATIONS = {"erf": "none", "tanh": "tanh"}
ATTENTION_IMPLS = ("sdpa", "manual")


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    gelu: str = "erf"
    attn_impl: str = "sdpa"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GPTConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {value}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by GPTConfig.n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig.bias must be a bool, got {self.bias!r}")
        if self.gelu not in GELU_APPROXIMATIONS:
            raise ValueError(f"GPTConfig.gelu must be one of {sorted(GELU_APPROXIMATIONS)}, got {self.gelu!r}")
        if self.attn_impl not in ATTENTION_IMPLS:
            raise ValueError(f"GPTConfig.attn_impl must be one of {ATTENTION_IMPLS}, got {self.attn_impl!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"GPTConfig.layer_norm_eps must be positive, got {self.layer_norm_eps}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {unknown}")
        return cls(**data)


def _is_tracing() -> bool:
    """True while torch.jit.trace, torch.export or torch.compile captures the graph.

    Value-dependent input checks (token ids in range) cannot be traced, so they run eagerly only;
    the harness validates inputs itself before it hands them to any target.
    """
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    for probe in ("is_exporting", "is_compiling"):
        check = getattr(compiler, probe, None)
        if check is not None and check():
            return True
    return False


def check_inputs(
    config: GPTConfig, idx: torch.Tensor, targets: torch.Tensor | None = None, *, length_field: str = "block_size"
) -> None:
    """Raise ValueError naming the problem if ``idx``/``targets`` cannot be fed to this config.

    ``length_field`` names the config's context-length field (nanochat calls it ``sequence_len``),
    so every model family shares these checks and its errors name its own field."""
    if not isinstance(idx, torch.Tensor):
        raise ValueError(f"idx must be a torch.Tensor, got {type(idx).__name__}")
    if idx.dim() != 2:
        raise ValueError(f"idx must be 2-D (batch, time), got shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise ValueError(f"idx must be an integer tensor, got dtype {idx.dtype}")
    t = idx.size(1)
    max_len = getattr(config, length_field)
    if t > max_len:
        raise ValueError(f"sequence length {t} exceeds {length_field} {max_len}")
    if t == 0 or idx.size(0) == 0:
        raise ValueError(f"idx must be non-empty, got shape {tuple(idx.shape)}")
    if targets is not None:
        if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets shape {shape} does not match idx shape {tuple(idx.shape)}")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    if _is_tracing():
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} outside [0, vocab_size={config.vocab_size})")
    if targets is not None:
        valid = targets[targets != -1]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= config.vocab_size):
            raise ValueError(
                f"target ids must be -1 (ignored) or in [0, vocab_size={config.vocab_size}), "
                f"got range [{int(valid.min())}, {int(valid.max())}]"
            )


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attn_impl = config.attn_impl
        # A Python float from the config, not from x.size(): tracers see sizes as values.
        self.scale = 1.0 / math.sqrt(config.n_embd // config.n_head)
        # The manual path's mask, as in nanoGPT; a buffer so it follows .double() and .to().
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("bias", mask.view(1, 1, config.block_size, config.block_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if self.attn_impl == "sdpa":
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        else:
            att = (q @ k.transpose(-2, -1)) * self.scale
            att = att.masked_fill(~self.bias[:, :, :T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=GELU_APPROXIMATIONS[config.gelu])
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_eps),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: https://paperswithcode.com/method/weight-tying
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2 paper: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are excluded by default, token embeddings are
        counted because they are tied to the output head."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, full_logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(logits, loss)``.

        With targets, or with ``full_logits=True``, logits cover every position ``[B, T, V]``;
        otherwise only the last position ``[B, 1, V]`` (nanoGPT's inference shortcut).
        """
        check_inputs(self.config, idx, targets)
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None or full_logits:
            logits = self.lm_head(x)
        else:
            logits = self.lm_head(x[:, [-1], :])
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context window (e.g. load GPT-2's 1024 and use 256)."""
        if not 0 < block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in (0, {self.config.block_size}], got {block_size}")
        self.config = GPTConfig(**{**self.config.to_dict(), "block_size": block_size})
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
        for block in self.transformer.h:
            block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]

    def configure_optimizers(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str = "cpu"
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on 2-D tensors (matmuls, embeddings) only; biases and norms
        are not decayed, as in nanoGPT."""
        return configure_adamw(self, weight_decay, learning_rate, betas, device_type)

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        """FLOPs per token from the PaLM appendix B count: 6N + 12·L·H·Q·T for training.
        Inference runs the forward pass only, a third of that: 2N + 4·L·H·Q·T."""
        cfg = self.config
        n = self.get_num_params()
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, seq_len
        forward = 2 * n + 4 * L * H * Q * T
        return 3 * forward if training else forward

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, peak_flops: float = 312e12) -> float:
        """Model FLOPs utilisation of one training iteration of ``fwdbwd_per_iter`` sequences in
        ``dt`` seconds, as a fraction of ``peak_flops`` (A100 bf16 dense by default, as nanoGPT)."""
        flops_per_iter = self.flops_per_token(self.config.block_size) * self.config.block_size * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to ``idx`` ``[B, T]``. ``greedy=True`` takes the argmax
        (ties go to the lowest id, torch.argmax's rule); otherwise sample from the tempered
        softmax, optionally restricted to the ``top_k`` logits."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be positive when sampling, got {temperature}")
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :]
            if greedy:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def configure_adamw(
    model: nn.Module, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str = "cpu"
) -> torch.optim.AdamW:
    """nanoGPT's ``configure_optimizers`` for any model: AdamW with weight decay on 2-D tensors only."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)
