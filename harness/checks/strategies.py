"""Checks layer: Hypothesis strategies for GPT conformance: configs, weights and inputs, limited by what a target accepts.

Each model family has its config strategy: ``gpt_configs`` (nanoGPT) here, ``nanochat_configs`` in
``gpt_conformance.harness.checks.family_strategies``; ``model_cases(capabilities, family)`` draws from the one named.

Reusable by any target's tests::

    from hypothesis import given, strategies as st
    from gpt_conformance.harness.checks.strategies import model_cases, input_cases, build_model

    @given(data=st.data())
    def test_mine(data):
        case = data.draw(model_cases(my_target.capabilities))
        model = build_model(case)
        inp = data.draw(input_cases(case.config, my_target.capabilities))

Shrinking goes toward the smallest model and the simplest input: every draw's minimum is the
small, plain choice (1 layer, 1 head, head_dim 1, block_size 1, no bias, nanoGPT's init, batch 1,
one repeated token 0), and the draws that decide the model's size come first, because Hypothesis
shrinks earlier choices first.

Everything an example uses is held explicitly (token ids as lists, not seeds), so an example
serialises to JSON (``to_dict``/``from_dict``) and replays the same on any torch version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from gpt_conformance.harness.checks.family_strategies import head_dims, nanochat_configs
from gpt_conformance.harness.core.targets import Capabilities
from gpt_conformance.reference.cases import NANOGPT_STD, CaseSpec, build_case, perturb_weights
from gpt_conformance.reference.families import family_named, family_of
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.reference.nanochat import NanochatConfig
from hypothesis import strategies as st

MAX_LAYERS = 4
MAX_HEADS = 8
MAX_HEAD_DIM = 32
MAX_BLOCK_SIZE = 128
SMALL_VOCAB = 512
# nanoGPT's padded GPT-2 vocabulary: the "much larger" end of the vocabulary range.
LARGE_VOCAB = 50304
# One model in this many gets a large vocabulary ("sometimes much larger"); the rest stay <= 512.
LARGE_VOCAB_ODDS = 8
MAX_BATCH = 8
# Bound on batch * seq_len * vocab_size, so a large-vocabulary example stays at ~32 MB of fp64 logits.
MAX_LOGITS = 1 << 22
# nanoGPT's std 0.02 gives near-uniform attention and flat logits, which hide mask, softmax and
# scaling bugs; larger scales give peaked attention (at std 1.0 the attention scores span tens).
WEIGHT_STDS = (NANOGPT_STD, 0.05, 0.1, 0.2, 0.5, 1.0)
MAX_PATCHES = 3


@dataclass(frozen=True)
class ModelCase:
    """A model: config (its type says the family), init seed, and the std its weights are rescaled
    to (``perturb_weights``; nanoGPT's 0.02 keeps the family's own init)."""

    config: GPTConfig | NanochatConfig
    seed: int = 0
    weight_std: float = NANOGPT_STD

    @property
    def family(self) -> str:
        return family_of(self.config).name

    @property
    def block_size(self) -> int:
        return family_of(self.config).block_size(self.config)

    def to_dict(self) -> dict:
        return {"family": self.family, "config": self.config.to_dict(), "seed": self.seed,
                "weight_std": self.weight_std}

    @classmethod
    def from_dict(cls, data: dict) -> ModelCase:
        # Examples printed before there were families hold no "family": they are nanoGPT's.
        family = family_named(data.get("family", "nanogpt"))
        return cls(family.config_from_dict(data["config"]), int(data["seed"]), float(data["weight_std"]))


@dataclass(frozen=True)
class InputCase:
    """One input and the variations the invariants compare it with (token ids as nested tuples).

    - ``idx``/``targets``: the input ``[B, T]`` (targets may hold -1, ignored by the loss).
    - ``cut``/``future``: causality replaces every token after position ``cut`` by ``future``
      (each one different from the token it replaces); None when T == 1.
    - ``row``/``batch``: batch independence runs ``batch``, whose row ``row`` is ``idx[row]`` and
      whose other rows are fresh (two rows when idx has one); None when the target accepts no such batch.
    - ``prefix``: prefix consistency runs ``idx[:, :prefix]``; None when T == 1.
    """

    idx: tuple[tuple[int, ...], ...]
    targets: tuple[tuple[int, ...], ...]
    cut: int | None = None
    future: tuple[tuple[int, ...], ...] | None = None
    row: int | None = None
    batch: tuple[tuple[int, ...], ...] | None = None
    prefix: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.idx), len(self.idx[0])

    def tensor(self, name: str) -> torch.Tensor:
        return torch.tensor(getattr(self, name), dtype=torch.long)

    def causal_variant(self) -> torch.Tensor:
        changed = self.tensor("idx")
        changed[:, self.cut + 1:] = self.tensor("future")
        return changed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputCase:
        def rows(value):
            return None if value is None else tuple(tuple(int(v) for v in r) for r in value)

        return cls(idx=rows(data["idx"]), targets=rows(data["targets"]), cut=data.get("cut"),
                   future=rows(data.get("future")), row=data.get("row"), batch=rows(data.get("batch")),
                   prefix=data.get("prefix"))


# --- models ------------------------------------------------------------------------------
@st.composite
def gpt_configs(draw, max_layers: int = MAX_LAYERS, max_heads: int = MAX_HEADS, max_head_dim: int = MAX_HEAD_DIM,
                max_block_size: int = MAX_BLOCK_SIZE, large_vocab: int = LARGE_VOCAB,
                width_multiple: int = 1) -> GPTConfig:
    """GPTConfigs, drawn size-first so that shrinking reaches the smallest model: n_layer, n_head,
    head_dim (odd ones too; n_embd = n_head * head_dim, a multiple of ``width_multiple``),
    block_size, vocab_size (2..512, one in eight up to ``large_vocab``), then bias, GELU and
    attention variants (plain one first)."""
    n_layer = draw(st.integers(1, max_layers))
    n_head = draw(st.integers(1, max_heads))
    head_dim = draw(head_dims(n_head, max_head_dim, width_multiple))
    block_size = draw(st.integers(1, max_block_size))
    large = draw(st.integers(0, LARGE_VOCAB_ODDS - 1)) == LARGE_VOCAB_ODDS - 1
    vocab_size = draw(st.integers(SMALL_VOCAB + 1, large_vocab) if large else st.integers(2, SMALL_VOCAB))
    bias = draw(st.booleans())
    gelu = draw(st.sampled_from(("erf", "tanh")))
    attn_impl = draw(st.sampled_from(("sdpa", "manual")))
    return GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                     n_embd=n_head * head_dim, bias=bias, gelu=gelu, attn_impl=attn_impl)


def model_cases(capabilities: Capabilities | None = None, family: str = "nanogpt",
                **config_limits) -> st.SearchStrategy[ModelCase]:
    """A config of ``family``, an init seed and a weight std. A target that accepts no sequence
    longer than ``max_seq_len`` gets no block_size (nanochat: sequence_len) beyond it (its
    positions past that could never run); ``width_multiple=B`` draws widths that blocks of B tile."""
    caps = capabilities or Capabilities()
    family_named(family)  # an unknown family is a KeyError that names the known ones
    length_limit = "max_block_size" if family == "nanogpt" else "max_sequence_len"
    longest = max_seq_len(caps)
    if longest is not None:
        config_limits[length_limit] = min(config_limits.get(length_limit, MAX_BLOCK_SIZE), longest)
    if family == "nanogpt":
        configs = gpt_configs(**config_limits)
    else:  # nanoGPT's sizes; vocabularies up to 512 (a large one costs seconds per example on CPU)
        limits = dict(max_layers=MAX_LAYERS, max_heads=MAX_HEADS, max_head_dim=MAX_HEAD_DIM,
                      max_sequence_len=MAX_BLOCK_SIZE, max_vocab=SMALL_VOCAB, attn_impl=None)
        configs = nanochat_configs(**{**limits, **config_limits})
    return st.builds(ModelCase, configs, st.integers(0, 2**16), st.sampled_from(WEIGHT_STDS))


def max_seq_len(caps: Capabilities) -> int | None:
    limits = [caps.max_seq_len] if caps.max_seq_len is not None else []
    if not caps.dynamic_shapes and caps.static_shapes:
        limits.append(max(s for _, s in caps.static_shapes))
    return min(limits) if limits else None


@lru_cache(maxsize=8)
def build_model(case: ModelCase) -> torch.nn.Module:
    """The fp32 eval-mode model of ``case``, built once per case: the same object comes back for
    the same case, so prepared targets are reused across inputs and across Hypothesis examples.

    The family's init under ``torch.manual_seed(seed)``, then ``gpt_conformance.reference.cases.perturb_weights``
    when the std is not nanoGPT's: exactly ``build_case``'s model for a named case of the same seed and std."""
    model = family_of(case.config).build(case.config, case.seed)
    if case.weight_std != NANOGPT_STD:
        perturb_weights(model, case.weight_std, case.seed)
    return model


# --- inputs ------------------------------------------------------------------------------
def shape_limits(config: GPTConfig | NanochatConfig, caps: Capabilities) -> list[tuple[int, int]]:
    """The largest (batch, seq_len) boxes the target accepts for this config: its static buckets,
    or one box bounded by its maxima, the config's block_size and MAX_BATCH."""
    block_size = family_of(config).block_size(config)
    top_seq = min(block_size, caps.max_seq_len or block_size)
    top_batch = min(MAX_BATCH, caps.max_batch or MAX_BATCH)
    if not caps.dynamic_shapes and caps.static_shapes:
        boxes = [(min(b, top_batch), min(s, top_seq)) for b, s in caps.static_shapes]
    else:
        boxes = [(top_batch, top_seq)]
    boxes = [(b, s) for b, s in boxes if b >= 1 and s >= 1]
    if not boxes:
        raise ValueError(f"capabilities {caps} accept no input for block_size {block_size}")
    return boxes


def token_ids(vocab_size: int) -> st.SearchStrategy[int]:
    """Any token id, with 0 and vocab_size - 1 (the embedding table's edges) favoured."""
    return st.sampled_from((0, vocab_size - 1)) | st.integers(0, vocab_size - 1)


@st.composite
def token_rows(draw, vocab_size: int, length: int) -> tuple[int, ...]:
    """One sequence: a repeated token or seeded random ids, then up to three patched positions
    holding favoured ids. Shrinks to all zeros."""
    if draw(st.sampled_from(("repeated", "random"))) == "repeated":
        row = [draw(token_ids(vocab_size))] * length
    else:
        generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        row = torch.randint(0, vocab_size, (length,), generator=generator).tolist()
    for _ in range(draw(st.integers(0, MAX_PATCHES))):
        row[draw(st.integers(0, length - 1))] = draw(token_ids(vocab_size))
    return tuple(row)


def _seeded(draw, high: int, shape: tuple[int, int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return torch.randint(0, high, shape, generator=generator)


def _rows(t: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(r) for r in t.tolist())


@st.composite
def input_cases(draw, config: GPTConfig | NanochatConfig, capabilities: Capabilities | None = None,
                max_logits: int = MAX_LOGITS) -> InputCase:
    """An input the target accepts (batch first, then seq_len, both shrinking to 1; T = 1 and
    T = the longest are favoured), its targets, and the variations the invariants need."""
    caps = capabilities or Capabilities()
    box_batch, box_seq = draw(st.sampled_from(shape_limits(config, caps)))
    budget = max(1, max_logits // config.vocab_size)  # batch * seq_len
    batch = draw(st.integers(1, max(1, min(box_batch, budget))))
    top_seq = max(1, min(box_seq, budget // batch))
    seq_len = draw(st.sampled_from((1, top_seq)) | st.integers(1, top_seq))
    vocab = config.vocab_size
    idx = torch.tensor([draw(token_rows(vocab, seq_len)) for _ in range(batch)], dtype=torch.long)
    targets = _seeded(draw, vocab, (batch, seq_len))
    if draw(st.booleans()):  # some positions ignored (-1); position (0, 0) always counts
        ignored = _seeded(draw, 4, (batch, seq_len)) == 0
        ignored[0, 0] = False
        targets[ignored] = -1
    fields = {}
    if seq_len >= 2:
        cut = draw(st.integers(0, seq_len - 2))
        shift = 1 + _seeded(draw, vocab - 1, (batch, seq_len - cut - 1))
        fields.update(cut=cut, future=_rows((idx[:, cut + 1:] + shift) % vocab),
                      prefix=draw(st.integers(1, seq_len - 1)))
    partner_batch = max(batch, 2)
    if caps.accepts(partner_batch, seq_len) and partner_batch * seq_len <= budget:
        row = draw(st.integers(0, batch - 1))
        others = _seeded(draw, vocab, (partner_batch, seq_len))
        others[row] = idx[row]
        fields.update(row=row, batch=_rows(others))
    return InputCase(idx=_rows(idx), targets=_rows(targets), **fields)


# --- the named cases, pinned -------------------------------------------------------------
def named_example(spec: CaseSpec) -> tuple[ModelCase, InputCase]:
    """A named case as a property example: its model (its family's init under its seed, exactly
    ``build_case``'s) and its seeded input, with the invariants' variations drawn from the seed:
    causality cuts in the middle, prefix consistency keeps half, batch independence reruns the
    last row among fresh neighbours."""
    _, idx, targets = build_case(spec)
    batch, seq_len = idx.shape
    vocab = spec.config.vocab_size
    generator = torch.Generator().manual_seed(spec.seed)
    fields = {}
    if seq_len >= 2:
        cut = (seq_len - 1) // 2
        shift = 1 + torch.randint(0, vocab - 1, (batch, seq_len - cut - 1), generator=generator)
        fields.update(cut=cut, future=_rows((idx[:, cut + 1:] + shift) % vocab), prefix=max(1, seq_len // 2))
    partner_batch = max(batch, 2)
    others = torch.randint(0, vocab, (partner_batch, seq_len), generator=generator)
    others[batch - 1] = idx[batch - 1]
    fields.update(row=batch - 1, batch=_rows(others))
    return ModelCase(spec.config, spec.seed, spec.weight_std), InputCase(_rows(idx), _rows(targets), **fields)


def example_size(model: ModelCase, inp: InputCase) -> dict[str, int]:
    """The numbers a shrunk example is judged small by."""
    cfg = model.config
    return {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head,
            "block_size": model.block_size, "vocab_size": cfg.vocab_size, "batch": inp.shape[0],
            "seq_len": inp.shape[1], "params": sum(math.prod(p.shape) for p in build_model(model).parameters())}
