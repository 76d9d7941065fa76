"""Checks layer: greedy decoding for any target, and the tie-aware comparison of its tokens with the reference's.

One loop serves every target. A target is seen as ``forward(idx [B, T]) -> logits [B, T, V]``:

- a dynamic-shape target gets the growing sequence (cropped from the left to ``block_size``,
  as nanoGPT's ``generate`` does);
- a static-shape target (``Capabilities.dynamic_shapes=False`` with ``static_shapes`` buckets,
  Neuron-style) gets one fixed ``(batch, seq_len)`` window: the tokens right-padded with any
  token, the logits read at the last real position, the sequence cropped from the left once the
  window is full. Causal attention makes right padding harmless: no real position attends to a
  pad. (Left padding without an attention mask, as in the Neuron GPT-2 sample, is a real bug.)

Tie-aware comparison (AWS NxD Inference's ``check_accuracy_logits`` method): step through the
target's greedy tokens against the reference's. At a difference, the reference itself must have
been undecided there: the target's token is accepted only if its reference logit is within the
policy's ``greedy_margin`` of the reference's top-1 logit (so the reference's top-1/top-2 margin
was below it too). Decoding then continues teacher-forced from the reference's tokens, so every
later step is still checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice

import torch
from gpt_conformance.harness.core.policies import TolerancePolicy, Verdict
from gpt_conformance.harness.core.targets import Capabilities
from gpt_conformance.reference.families import family_of

Forward = Callable[[torch.Tensor], torch.Tensor]
"""A target seen by the decoder: ``idx`` [B, T] int64 -> logits [B, T, V]."""


@dataclass(frozen=True)
class StaticWindow:
    """The fixed input shape of a static-shape target."""

    batch: int
    seq_len: int

    def __post_init__(self) -> None:
        if self.batch < 1 or self.seq_len < 1:
            raise ValueError(f"a static window needs batch >= 1 and seq_len >= 1, got ({self.batch}, {self.seq_len})")


def choose_window(capabilities: Capabilities, tokens_needed: int, block_size: int) -> StaticWindow | None:
    """None for a dynamic-shape target. For a static one, the bucket to decode in: the shortest
    ``seq_len`` that holds ``tokens_needed`` tokens, else the longest (the decoder then crops
    from the left). Buckets longer than ``block_size`` cannot be fed to the model."""
    if capabilities.dynamic_shapes:
        return None
    buckets = [b for b in capabilities.static_shapes if b[1] <= block_size]
    if not buckets:
        raise ValueError(f"static-shape target declares no static_shapes bucket with seq_len <= block_size "
                         f"{block_size}: {capabilities.static_shapes}")
    fitting = sorted((b for b in buckets if b[1] >= tokens_needed), key=lambda b: (b[1], b[0]))
    batch, seq_len = fitting[0] if fitting else max(buckets, key=lambda b: (b[1], -b[0]))
    return StaticWindow(batch, seq_len)


def static_window_input(tokens: Sequence[int], window: StaticWindow, pad_id: int = 0) -> tuple[torch.Tensor, int]:
    """The ``[batch, seq_len]`` input for a static target and the position to read logits at.

    Row 0 holds the last ``seq_len`` tokens, right-padded with ``pad_id``; the other rows are
    all ``pad_id`` (any token works: rows are independent and a pad is never read)."""
    if not tokens:
        raise ValueError("cannot decode from an empty sequence: the prompt needs at least one token")
    context = list(tokens[-window.seq_len:])
    idx = torch.full((window.batch, window.seq_len), pad_id, dtype=torch.long)
    idx[0, : len(context)] = torch.tensor(context, dtype=torch.long)
    return idx, len(context) - 1


class NonFiniteLogitsError(ValueError):
    """A target's logits for the next token hold NaN or Inf: argmax over them means nothing."""


def next_token_logits(forward: Forward, tokens: Sequence[int], block_size: int,
                      window: StaticWindow | None = None, pad_id: int = 0) -> torch.Tensor:
    """Logits [V] for the token after ``tokens``; NaN or Inf raises NonFiniteLogitsError."""
    if window is not None:
        idx, last = static_window_input(tokens, window, pad_id)
        row = forward(idx)[0, last]
    elif not tokens:
        raise ValueError("cannot decode from an empty sequence: the prompt needs at least one token")
    else:
        row = forward(torch.tensor([list(tokens[-block_size:])], dtype=torch.long))[0, -1]
    bad = int((~torch.isfinite(row)).sum())
    if bad:
        raise NonFiniteLogitsError(f"{bad} non-finite logit(s) for the token after a sequence of {len(tokens)} tokens")
    return row


def greedy_tokens(forward: Forward, prompt: Sequence[int], block_size: int, window: StaticWindow | None = None,
                  pad_id: int = 0) -> Iterator[int]:
    """The greedy tokens after ``prompt``, one at a time, for as long as the caller takes them
    (ties go to the lowest id, as ``torch.argmax`` and the reference's ``generate`` break them)."""
    tokens = list(prompt)
    while True:
        tokens.append(int(next_token_logits(forward, tokens, block_size, window, pad_id).argmax()))
        yield tokens[-1]


def greedy_decode(forward: Forward, prompt: Sequence[int], max_new_tokens: int, block_size: int,
                  window: StaticWindow | None = None, pad_id: int = 0) -> list[int]:
    """The ``max_new_tokens`` greedy tokens after ``prompt``."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    return list(islice(greedy_tokens(forward, prompt, block_size, window, pad_id), max_new_tokens))


@dataclass
class ReferenceGreedy:
    """The reference's greedy continuation and its logits at every generated step."""

    prompt: list[int]
    tokens: list[int]
    logits: torch.Tensor  # [len(tokens), V], step i predicts tokens[i]

    def margin(self, step: int) -> float:
        """Top-1 minus top-2 logit at ``step``: how decided the reference was."""
        top = self.logits[step].topk(2).values
        return float(top[0] - top[1])

    def gap(self, step: int, token: int) -> float:
        """How far ``token``'s logit is below the reference's chosen token's at ``step``."""
        row = self.logits[step]
        return float(row[self.tokens[step]] - row[token])


def reference_greedy(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int) -> ReferenceGreedy:
    """The expected output: the reference model's own ``generate(greedy=True)`` tokens (a family
    whose model has no ``generate``: the argmax of each step's full forward pass), and its logits
    along that sequence from one full forward pass (run the model in float64 for the truth)."""
    prompt = list(prompt)
    if not prompt or max_new_tokens < 1:
        raise ValueError(f"need a non-empty prompt and max_new_tokens >= 1, got {len(prompt)} tokens and {max_new_tokens}")
    family = family_of(model.config)
    block_size = family.block_size(model.config)
    needed = len(prompt) + max_new_tokens - 1
    if needed > block_size:
        raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) - 1 = {needed} "
                         f"exceeds block_size {block_size}: the tie-aware check needs one context")

    def forward(idx: torch.Tensor) -> torch.Tensor:
        return family.logits_and_loss(model, idx)[0]

    with torch.no_grad():
        if hasattr(model, "generate"):
            full = model.generate(torch.tensor([prompt], dtype=torch.long), max_new_tokens, greedy=True)[0].tolist()
        else:
            full = prompt + greedy_decode(forward, prompt, max_new_tokens, block_size)
        logits = forward(torch.tensor([full[:-1]], dtype=torch.long))
    return ReferenceGreedy(prompt, full[len(prompt):], logits[0, len(prompt) - 1:].detach())


@dataclass
class Divergence:
    step: int
    reference_token: int
    target_token: int
    margin: float  # the reference's top-1 minus top-2 logit at this step
    gap: float  # the reference's logit of its token minus that of the target's token
    accepted: bool


@dataclass
class GreedyComparison:
    tolerance: float
    reference_tokens: list[int]
    target_tokens: list[int]  # the target's own greedy continuation from the prompt
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def tokens_checked(self) -> int:
        return len(self.reference_tokens)

    @property
    def first_divergence(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    @property
    def passed(self) -> bool:
        return all(d.accepted for d in self.divergences)

    def summary(self, decode: Callable[[list[int]], str] | None = None) -> dict:
        """What a record holds: counts, the first divergence and its margin, both texts."""
        first = self.first_divergence
        out = {
            "tokens_checked": self.tokens_checked,
            "first_divergence": first.step if first else None,
            "margin_at_first_divergence": first.margin if first else None,
            "accepted": self.passed,
            "greedy_margin": self.tolerance,
            "divergences": [asdict(d) for d in self.divergences],
            "reference_tokens": self.reference_tokens,
            "target_tokens": self.target_tokens,
        }
        if decode is not None:
            out["reference_text"] = decode(self.reference_tokens)
            out["target_text"] = decode(self.target_tokens)
        return out

    def explain(self, decode: Callable[[list[int]], str] | None = None) -> str:
        show = decode or (lambda ids: str(ids))
        lines = [(f"{self.tokens_checked} greedy tokens checked, {len(self.divergences)} divergence(s), "
                  f"greedy_margin {self.tolerance:g}")]
        for d in self.divergences:
            verdict = "accepted" if d.accepted else "REJECTED"
            lines.append(f"  step {d.step}: target {show([d.target_token])!r} (id {d.target_token}) vs reference "
                         f"{show([d.reference_token])!r} (id {d.reference_token}); reference top-1/top-2 margin "
                         f"{d.margin:.4g}, target token {d.gap:.4g} below top-1: {verdict}")
        lines.append(f"  reference: {show(self.reference_tokens)!r}")
        lines.append(f"  target:    {show(self.target_tokens)!r}")
        return "\n".join(lines)


def compare_greedy(forward: Forward, reference: ReferenceGreedy, tolerance: float, block_size: int,
                   window: StaticWindow | None = None, pad_id: int = 0) -> GreedyComparison:
    """Decode with the target and check it against ``reference`` step by step, tie-aware."""

    def decode(prompt: list[int], n: int) -> list[int]:
        return greedy_decode(forward, prompt, n, block_size, window, pad_id)

    return compare_greedy_by(decode, reference, tolerance)


def compare_greedy_by(decode: Callable[[list[int], int], list[int]], reference: ReferenceGreedy,
                      tolerance: float) -> GreedyComparison:
    """``compare_greedy`` for any way of making greedy tokens: ``decode(prompt, n)`` returns the
    ``n`` greedy tokens after ``prompt`` (full forward passes, or a prefill and steps over a cache)."""
    n = len(reference.tokens)
    target_tokens = decode(reference.prompt, n)
    comparison = GreedyComparison(tolerance, list(reference.tokens), target_tokens)
    current, step = target_tokens, 0
    while True:
        step = next((i for i in range(step, n) if current[i] != reference.tokens[i]), n)
        if step == n:
            return comparison
        token = current[step]
        gap = reference.gap(step, token)
        comparison.divergences.append(Divergence(step, reference.tokens[step], token, reference.margin(step), gap,
                                                 accepted=gap < tolerance))
        # Teacher forcing: continue from the reference's tokens up to and including this step.
        forced = reference.tokens[: step + 1]
        current = forced + decode(reference.prompt + forced, n - step - 1)
        step += 1


def greedy_verdict(comparison: GreedyComparison, policy: TolerancePolicy,
                   decode: Callable[[list[int]], str] | None = None, check: str = "greedy") -> Verdict:
    rejected = [d for d in comparison.divergences if not d.accepted]
    metrics = {
        "tokens_checked": float(comparison.tokens_checked),
        "divergences": float(len(comparison.divergences)),
        "rejected_divergences": float(len(rejected)),
    }
    if comparison.passed:
        return Verdict(check, "pass", policy.name, metrics)
    return Verdict(check, "fail", policy.name, metrics,
                   message=f"{len(rejected)} greedy divergence(s) where the reference was not tied\n"
                           + comparison.explain(decode))
