"""Named conformance cases: a config, a seed and an input shape, built the same way everywhere.

A case is rebuilt from its seed (weights, token ids and targets all come from
``torch.manual_seed(seed)``), so the goldens under ``reference/goldens/`` can always be
regenerated and checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reference.model import GPT, GPTConfig

SEED_CONFIG = GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=64)
GPT2_SMALL_CONFIG = GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)


@dataclass(frozen=True)
class CaseSpec:
    name: str
    config: GPTConfig
    batch: int
    seq_len: int
    seed: int = 0
    slow: bool = False
    # Whether the golden file stores all fp64/fp32 logits and the weights. GPT-2-sized cases
    # would need ~100 MB per golden, so they store inputs, losses and a logit fingerprint, and
    # the fp64 truth is recomputed (and checked against the fingerprint) when they run.
    store_full: bool = True
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 1 <= self.seq_len <= self.config.block_size:
            raise ValueError(f"case {self.name}: seq_len {self.seq_len} outside [1, block_size={self.config.block_size}]")
        if self.batch < 1:
            raise ValueError(f"case {self.name}: batch must be >= 1, got {self.batch}")


NAMED_CASES: tuple[CaseSpec, ...] = (
    CaseSpec("seed", SEED_CONFIG, batch=64, seq_len=32, notes="the original torch.export check's config and batch"),
    CaseSpec("no-bias", GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=64, bias=False), 8, 32, seed=1),
    CaseSpec("single-head", GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=1, n_embd=64), 8, 32, seed=2),
    CaseSpec("one-token", SEED_CONFIG, batch=8, seq_len=1, seed=3),
    CaseSpec("full-block", GPTConfig(block_size=128, vocab_size=97, n_layer=2, n_head=4, n_embd=64), 2, 128, seed=4),
    CaseSpec("gpt2-124m-shape", GPT2_SMALL_CONFIG, batch=2, seq_len=128, seed=5, slow=True, store_full=False,
             notes="GPT-2 small's architecture with random init"),
)


def named_case(name: str) -> CaseSpec:
    for spec in NAMED_CASES:
        if spec.name == name:
            return spec
    raise KeyError(f"no named case {name!r}; known: {[c.name for c in NAMED_CASES]}")


def build_case(spec: CaseSpec) -> tuple[GPT, torch.Tensor, torch.Tensor]:
    """Build the fp32 model, token ids and targets of ``spec`` from its seed, in eval mode."""
    torch.manual_seed(spec.seed)
    model = GPT(spec.config).eval()
    idx = torch.randint(0, spec.config.vocab_size, (spec.batch, spec.seq_len))
    targets = torch.randint(0, spec.config.vocab_size, (spec.batch, spec.seq_len))
    return model, idx, targets
