"""Checks layer: the decode path: a target's prefill and its steps over its own KV cache.

A target whose ``Capabilities.decode`` is set is also a ``Decoder`` (``gpt_conformance.harness.api``).
Its decode path is judged like its forward pass, under its precision policy and relative to eager
fp32's own error, where eager fp32 here is the reference decoder (``gpt_conformance.reference.decode``)
run in fp32:

- *decode parity*: prefill a prompt, then feed the input's next tokens one step at a time
  (teacher forcing); every logit is judged against the fp64 full-forward truth at its position;
- *invariants*: the steps against the target's own full forward pass, a ragged batch against
  each row decoded alone, a reused state against a fresh one. Each is judged against eager's own
  difference on the same comparison.

A failure names the first call (``prefill`` or ``step i``) whose logits break the policy's
gates on their own, judged against that call's slice of eager's error: that is where the decode
path first diverges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from gpt_conformance.harness.checks.decode import NonFiniteLogitsError
from gpt_conformance.harness.core.metrics import logit_metrics
from gpt_conformance.harness.core.policies import Verdict, get_policy, judge_logits
from gpt_conformance.harness.core.targets import Capabilities, Decoder
from gpt_conformance.reference.decode import pad_ragged

PREFILL = "prefill"


class DecodeOutputError(RuntimeError):
    """A decoder returned something that is not (logits of the expected shape, state)."""


@dataclass(frozen=True)
class DecodePlan:
    """Prefill ``prompt`` tokens of each row, then ``steps`` teacher-forced steps."""

    prompt: int
    steps: int

    @property
    def length(self) -> int:
        return self.prompt + self.steps


def plan_calls(plan: DecodePlan) -> list[tuple[str, int, int]]:
    """(call, first position, end position) of the prefill and of each step."""
    return [(PREFILL, 0, plan.prompt)] + [(f"step {i + 1}", plan.prompt + i, plan.prompt + i + 1)
                                          for i in range(plan.steps)]


def plan_for(seq_len: int, capabilities: Capabilities, block_size: int, steps: int, full: bool = False) -> DecodePlan:
    """``steps`` teacher-forced steps (fewer when the input is short) within the target's cache:
    after a prompt of half the input, or, with ``full``, after a prompt that leaves exactly
    ``steps`` slots, so that the last step writes the cache's (or the block's) last slot."""
    assert capabilities.decode is not None
    cache = min(block_size, capabilities.decode.max_cache_len or block_size)
    length = min(seq_len, cache)
    prompt = max(1, length - steps if full else length // 2)
    return DecodePlan(prompt, min(steps, length - prompt))


def checked(out: Any, batch: int, length: int, vocab: int, call: str) -> tuple[torch.Tensor, Any]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise DecodeOutputError(f"{call} returned {type(out).__name__}, expected (logits, state)")
    logits, state = out
    expected = (batch, length, vocab)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected or not logits.dtype.is_floating_point:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DecodeOutputError(f"{call} returned logits {got}, expected float logits of shape {expected}")
    return logits, state


@torch.no_grad()
def teacher_forced(decoder: Decoder, idx: torch.Tensor, plan: DecodePlan, vocab: int,
                   state: Any = None) -> torch.Tensor:
    """Logits [B, plan.length, V]: prefill ``idx[:, :prompt]`` (reusing ``state`` when given),
    then one step per token, each fed the input's own next token (teacher forcing)."""
    B = idx.size(0)
    prompt = idx[:, :plan.prompt]
    # A decoder that reuses no state may define prefill(idx) alone.
    out = decoder.prefill(prompt) if state is None else decoder.prefill(prompt, None, state)
    logits, state = checked(out, B, plan.prompt, vocab, PREFILL)
    out = [logits]
    for i in range(plan.steps):
        position = plan.prompt + i
        logits, state = checked(decoder.step(state, idx[:, position:position + 1]), B, 1, vocab, f"step {i + 1}")
        out.append(logits)
    return torch.cat(out, dim=1)


@torch.no_grad()
def ragged_teacher_forced(decoder: Decoder, rows: list[torch.Tensor], prompts: list[int], steps: int, padding: str,
                          vocab: int, pad_id: int = 0) -> list[torch.Tensor]:
    """Each row's logits [prompt_b + steps, V]: the rows' prompts prefilled as one ragged batch
    (padded on the ``padding`` side), then ``steps`` steps, every row fed its own next token."""
    idx, lengths = pad_ragged([row[:p] for row, p in zip(rows, prompts, strict=True)], padding, pad_id)
    # Rows of one length need no lengths: a decoder without ragged batches may define prefill(idx) alone.
    prefilled = decoder.prefill(idx, lengths) if len(set(prompts)) > 1 else decoder.prefill(idx)
    logits, state = checked(prefilled, len(rows), idx.size(1), vocab, PREFILL)
    width = idx.size(1)
    out = [[logits[b, width - p:] if padding == "left" else logits[b, :p]] for b, p in enumerate(prompts)]
    for i in range(steps):
        tokens = torch.stack([row[p + i] for row, p in zip(rows, prompts, strict=True)])[:, None]
        logits, state = checked(decoder.step(state, tokens), len(rows), 1, vocab, f"step {i + 1}")
        for b in range(len(rows)):
            out[b].append(logits[b])
    return [torch.cat(parts, dim=0) for parts in out]


def first_diverging_call(policy_name: str, plan: DecodePlan, logits: torch.Tensor, truth: torch.Tensor,
                         baseline: torch.Tensor, scale: float) -> str | None:
    """The first call (``prefill``, ``step i``) whose logits fail the policy's gates on their own,
    with eager's error on the same call as the yardstick; None when none does (the error is spread)."""
    policy = get_policy(policy_name)
    for name, lo, hi in plan_calls(plan):
        own = logit_metrics(logits[:, lo:hi], truth[:, lo:hi])
        base = logit_metrics(baseline[:, lo:hi], truth[:, lo:hi])
        if judge_logits(policy, own, base, scale).failed:
            return name
    return None


def located(verdict: Verdict, plan: DecodePlan, where: str | None, what: str = "decode path") -> Verdict:
    """``verdict`` with its localization line: the first diverging call and its position."""
    if not verdict.failed or verdict.status == "error":
        return verdict
    if where is None:
        line = f"{what}: no single call breaks the gates alone; the error is spread over the {plan.steps} steps"
    elif where == PREFILL:
        line = f"{what} first diverges at the prefill (positions 0..{plan.prompt - 1})"
    else:
        step = int(where.split()[1])
        line = f"{what} first diverges at {where} of {plan.steps} (position {plan.prompt + step - 1})"
    return replace(verdict, localization=line)


def invariant_verdict(check: str, policy_name: str, got: torch.Tensor, expected: torch.Tensor,
                      eager_got: torch.Tensor, eager_expected: torch.Tensor) -> Verdict:
    """``got`` against ``expected`` (two ways of computing the same logits on the target), with
    eager fp32's difference between the same two ways as the yardstick."""
    baseline = logit_metrics(eager_got, eager_expected)
    return judge_logits(get_policy(policy_name), logit_metrics(got, expected), baseline,
                        float(expected.detach().abs().max()), check=check)


def greedy_through(decoder: Decoder, vocab: int) -> Callable[[list[int], int], list[int]]:
    """``decode(prompt, n)``: the ``n`` greedy tokens after ``prompt``, made by one prefill and
    then steps over the decoder's cache (ties to the lowest id, as ``torch.argmax``)."""

    @torch.no_grad()
    def decode(prompt: list[int], n: int) -> list[int]:
        if n == 0:
            return []
        idx = torch.tensor([prompt], dtype=torch.long)
        logits, state = checked(decoder.prefill(idx), 1, len(prompt), vocab, PREFILL)
        tokens = [int(finite_row(logits[0, -1], len(prompt)).argmax())]
        while len(tokens) < n:
            logits, state = checked(decoder.step(state, torch.tensor([[tokens[-1]]])), 1, 1, vocab,
                                    f"step {len(tokens)}")
            tokens.append(int(finite_row(logits[0, -1], len(prompt) + len(tokens)).argmax()))
        return tokens

    return decode


def finite_row(row: torch.Tensor, after: int) -> torch.Tensor:
    bad = int((~torch.isfinite(row)).sum())
    if bad:
        raise NonFiniteLogitsError(f"{bad} non-finite logit(s) for the token after a sequence of {after} tokens")
    return row
