"""Named conformance cases: a config, a seed and an input shape, built the same way everywhere.

A case is rebuilt from its seed (weights, token ids and targets all come from
``torch.manual_seed(seed)``), so the goldens under ``reference/goldens/`` can always be
regenerated and checked.

nanoGPT's init (std 0.02, every bias 0, every LayerNorm weight 1, near-uniform attention) hides
whole bug classes: a dropped bias, tanh instead of erf GELU, a wrong attention scale compute the
same numbers on it. So two kinds of case carry weights that show them:

- ``weight_std`` other than nanoGPT's: every matrix rescaled to that std, and every bias and
  LayerNorm parameter moved by N(0, weight_std) noise (``perturb_weights``);
- ``checkpoint="zen"``: the shipped trained Zen-of-Python model (peaked attention, LayerNorm
  biases far from 0) on windows of the text it was trained on; ``checkpoint="zen-nanochat"``: its
  nanochat-family twin, trained by the same loop on the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from gpt_conformance.reference.families import NANOGPT_STD, family_named, family_of
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.reference.nanochat import NanochatConfig
from gpt_conformance.reference.train import ZEN_DIRS, load_zen_model, zen_of_python

# Trained models by checkpoint name: their directories.
CHECKPOINTS = {"zen": ZEN_DIRS["nanogpt"], "zen-nanochat": ZEN_DIRS["nanochat"]}

SEED_CONFIG = GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=64)
GPT2_SMALL_CONFIG = GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)
# The shipped trained model's config (reference/zen/config.json), checked when the case is built.
ZEN_CONFIG = GPTConfig(block_size=64, vocab_size=45, n_layer=2, n_head=4, n_embd=64)
ZEN_NANOCHAT_CONFIG = NanochatConfig(sequence_len=64, vocab_size=45, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
# nanochat's GPTConfig in the original torch.export check.
NANOCHAT_SEED_CONFIG = NanochatConfig(sequence_len=32, vocab_size=65, n_layer=2, n_head=4, n_kv_head=4, n_embd=64)


@dataclass(frozen=True)
class CaseSpec:
    name: str
    config: GPTConfig | NanochatConfig
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
    family: str = "nanogpt"  # a name in reference.families.FAMILIES
    weight_std: float = NANOGPT_STD  # see perturb_weights; 0.02 (nanoGPT's std) keeps the family's own init
    checkpoint: str | None = None  # a trained model in CHECKPOINTS instead of a seeded init

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"case {self.name}: unknown checkpoint {self.checkpoint!r}; known: {sorted(CHECKPOINTS)}")
        if self.checkpoint is not None and self.weight_std != NANOGPT_STD:
            raise ValueError(f"case {self.name}: a checkpoint's weights are trained, not rescaled")
        family = family_named(self.family)
        family.check_config(self.config)
        limit = family.block_size(self.config)
        if not 1 <= self.seq_len <= limit:
            raise ValueError(f"case {self.name}: seq_len {self.seq_len} outside [1, {family.length_field}={limit}]")
        if self.batch < 1:
            raise ValueError(f"case {self.name}: batch must be >= 1, got {self.batch}")


NAMED_CASES: tuple[CaseSpec, ...] = (
    CaseSpec("seed", SEED_CONFIG, batch=64, seq_len=32, notes="the original torch.export check's config and batch"),
    CaseSpec("no-bias", GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=64, bias=False), 8, 32, seed=1,
             notes="no bias in any Linear or LayerNorm"),
    CaseSpec("single-head", GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=1, n_embd=64), 8, 32, seed=2,
             notes="one head of 64: head splitting and merging are the identity"),
    CaseSpec("one-token", SEED_CONFIG, batch=8, seq_len=1, seed=3, notes="a single position: the causal mask is 1x1"),
    CaseSpec("full-block", GPTConfig(block_size=128, vocab_size=97, n_layer=2, n_head=4, n_embd=64), 2, 128, seed=4,
             notes="seq_len equal to block_size: every position of the mask and of the position table"),
    CaseSpec("scaled", SEED_CONFIG, batch=8, seq_len=32, seed=6, weight_std=0.3,
             notes="weights at std 0.3, biases and LayerNorm affine parameters moved off 0 and 1: a dropped bias, "
                   "tanh GELU or a wrong attention scale shows here"),
    CaseSpec("zen", ZEN_CONFIG, batch=8, seq_len=32, seed=7, checkpoint="zen",
             notes="the trained Zen-of-Python model on windows of its training text: peaked attention, "
                   "trained LayerNorm biases, confident predictions"),
    CaseSpec("gpt2-124m-shape", GPT2_SMALL_CONFIG, batch=2, seq_len=128, seed=5, slow=True, store_full=False,
             notes="GPT-2 small's architecture with random init"),
)

# The nanochat family's cases. Kept apart from NAMED_CASES until the harness and its targets are
# model-family aware (cases/ and the planted-bug tests parametrize over NAMED_CASES).
NANOCHAT_CASES: tuple[CaseSpec, ...] = (
    CaseSpec("nanochat-seed", NANOCHAT_SEED_CONFIG, batch=64, seq_len=32, family="nanochat",
             notes="nanochat's GPTConfig and batch in the original torch.export check"),
    CaseSpec("nanochat-mqa", NanochatConfig(sequence_len=32, vocab_size=65, n_layer=2, n_head=4, n_kv_head=1, n_embd=64),
             batch=8, seq_len=32, seed=11, family="nanochat", notes="multi-query attention: one kv head"),
    CaseSpec("nanochat-gqa", NanochatConfig(sequence_len=48, vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64),
             batch=4, seq_len=48, seed=12, family="nanochat",
             notes="grouped-query attention: two query heads per kv head; the only case where kv-head order shows"),
    CaseSpec("zen-nanochat", ZEN_NANOCHAT_CONFIG, batch=8, seq_len=32, seed=13, family="nanochat",
             checkpoint="zen-nanochat",
             notes="the trained nanochat-family Zen-of-Python model on windows of its training text: grouped-query "
                   "attention and softcapped logits of a trained model"),
)


ALL_CASES: tuple[CaseSpec, ...] = NAMED_CASES + NANOCHAT_CASES


def named_case(name: str) -> CaseSpec:
    for spec in ALL_CASES:
        if spec.name == name:
            return spec
    raise KeyError(f"no named case {name!r}; known: {[c.name for c in ALL_CASES]}")


def perturb_weights(model: torch.nn.Module, weight_std: float, seed: int) -> torch.nn.Module:
    """Move a freshly initialised ``model`` (in place) off its init's blind spots: every matrix
    rescaled from its family's init std (nanoGPT's 0.02; nanochat's fan-in rule) to ``weight_std``,
    and every vector (biases, LayerNorm weights and biases; nanochat has none) given
    N(0, weight_std) noise, so that a backend that drops or misplaces one is seen."""
    init_std = family_of(model.config).init_std
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.mul_(weight_std / init_std(name, param))
            else:
                param.add_(torch.randn(param.shape, generator=generator) * weight_std)
    return model


def build_case(spec: CaseSpec) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Build the fp32 model, token ids and targets of ``spec`` from its seed, in eval mode."""
    if spec.checkpoint is not None:
        return _zen_case(spec)
    family = family_named(spec.family)
    model = family.build(spec.config, spec.seed)  # seeds torch's RNG, then draws the weights
    if spec.weight_std != NANOGPT_STD:
        perturb_weights(model, spec.weight_std, spec.seed)
    vocab = family.vocab_size(spec.config)
    idx = torch.randint(0, vocab, (spec.batch, spec.seq_len))
    targets = torch.randint(0, vocab, (spec.batch, spec.seq_len))
    return model, idx, targets


def _zen_case(spec: CaseSpec) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The trained model on ``batch`` windows of its own text at seeded offsets, next characters
    as targets."""
    model, tokenizer = load_zen_model(CHECKPOINTS[spec.checkpoint])
    if model.config != spec.config:
        raise ValueError(f"case {spec.name}: the shipped model's config {model.config} is not the case's")
    text = torch.tensor(tokenizer.encode(zen_of_python()))
    generator = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(0, len(text) - spec.seq_len - 1, (spec.batch,), generator=generator)
    idx = torch.stack([text[s:s + spec.seq_len] for s in starts.tolist()])
    targets = torch.stack([text[s + 1:s + spec.seq_len + 1] for s in starts.tolist()])
    return model.eval(), idx, targets
