"""Checks layer: the decode-path checks of one run, judged and recorded through its ``ConformanceSession``.

``DecodeChecks(session)`` runs each check of ``gpt_conformance.harness.checks.decode_path`` on a
target, computes eager fp32's yardstick once per case (the reference decoder in fp32), and
records one verdict per check:

- ``decode``: teacher-forced prefill and steps on a named case, against the fp64 truth;
- ``decode-full``: the same, its last step at the last slot of the block (or of a static cache);
- ``decode-forward``, ``decode-ragged``, ``decode-reuse``: the invariants;
- ``greedy-cached``: the tie-aware greedy check, made by a prefill and steps over the cache.

A target without a decoder skips each with the reason (its greedy text is checked by full
forward passes, ``greedy``); a decoder that raises or returns garbage is an ``error``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from gpt_conformance.harness.checks.conformance import Truth
from gpt_conformance.harness.checks.decode import ReferenceGreedy, compare_greedy_by, greedy_verdict
from gpt_conformance.harness.checks.decode_path import (
    PREFILL,
    DecodePlan,
    first_diverging_call,
    greedy_through,
    invariant_verdict,
    located,
    plan_calls,
    plan_for,
    ragged_teacher_forced,
    teacher_forced,
)
from gpt_conformance.harness.checks.discrimination import UnrelatedOutput, named_parity_verdicts
from gpt_conformance.harness.checks.localize import Localization, by_bisection, point, truncated_name
from gpt_conformance.harness.checks.session import ConformanceSession
from gpt_conformance.harness.core.errors import CheckError, CheckFailed, UnsupportedHere
from gpt_conformance.harness.core.metrics import logit_metrics
from gpt_conformance.harness.core.policies import Verdict, error_verdict, get_policy, judge_logits
from gpt_conformance.harness.core.records import CheckRecord
from gpt_conformance.harness.core.targets import Target
from gpt_conformance.reference.cases import NANOGPT_STD, CaseSpec, perturb_weights
from gpt_conformance.reference.decode import ReferenceDecoder
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.goldens import Golden, reference_outputs
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.reference.nanochat import NanochatConfig
from hypothesis import strategies as st

# Rows of a named case's input that decode: the bugs of this path are per row or per position, and
# two rows are enough to show a row mix-up; each step costs a call on every target.
DECODE_ROWS = 2
# Teacher-forced steps on a named case (decode-full's steps end at the last slot of the block).
DECODE_STEPS = 4
# A ragged batch: rows whose prompts are the plan's, 3 tokens shorter and 1 token, then 3 steps.
RAGGED_STEPS = 3

NO_DECODER = ("target has no decoder (Capabilities.decode is None): its greedy text is checked by full "
              "forward passes (the greedy check) and its decode path is neither checked nor timed")
# The one record that says so, per target without a decoder (cases/test_decode_path.py).
NO_DECODER_CASE = "decode-path"


def has_decoder(target: Target) -> bool:
    """Whether ``target`` declares a decoder: the decode cases apply to those targets alone, and
    each other target gets one skip that says why (``DecodeChecks.require_decoder``)."""
    return target.capabilities.decode is not None


class DecodeChecks:
    def __init__(self, session: ConformanceSession):
        self.session = session
        self._eager: dict[tuple, torch.Tensor] = {}
        self._decoded: dict[tuple, torch.Tensor] = {}

    # --- plumbing ---------------------------------------------------------------------------
    def require_decoder(self, target: Target, case_id: str, check: str, config: Any, shape=None) -> None:
        """Skip (recorded) a target without a decoder."""
        if not has_decoder(target):
            self.session.record(CheckRecord(target, case_id, check, config=config, input_shape=shape, status="skip",
                                            message=NO_DECODER))
            raise UnsupportedHere(f"{target.name}: {NO_DECODER}")

    def decoder_of(self, target: Target, model: torch.nn.Module, case_id: str, check: str, shape) -> Any:
        """The target's prepared runnable as a decoder; skips (recorded) without one."""
        self.require_decoder(target, case_id, check, model.config, shape)
        return self.session.prepare(target, model, case_id).runnable

    def decoded(self, target: Target, model: torch.nn.Module, case_id: str, check: str, shape,
                call: Callable[[Any], Any]) -> Any:
        """``call(decoder)`` on the target, timed; a decoder that raises is an error verdict."""
        decoder = self.decoder_of(target, model, case_id, check, shape)
        try:
            with self.session.timed(target, "run"):
                return call(decoder)
        except UnsupportedHere as exc:
            self.session.record(CheckRecord(target, case_id, check, config=model.config, input_shape=shape,
                                            status="skip", message=str(exc)))
            raise UnsupportedHere(f"{target.name}: {exc}") from None
        except Exception as exc:
            self.session.record(CheckRecord(target, case_id, check, verdict=error_verdict(check, target.precision, exc),
                                            config=model.config, input_shape=shape))
            raise CheckError(f"{target.name} on {case_id} ({check}): {type(exc).__name__}: {exc}") from None

    def golden(self, target: Target, spec: CaseSpec, check: str) -> Golden:
        self.session.require_family(target, spec.family, spec.name, spec.config)
        try:
            return self.session.golden(spec)
        except Exception as exc:
            self.session.record(CheckRecord(target, spec.name, check,
                                            verdict=error_verdict(check, target.precision, exc), config=spec.config,
                                            seed=spec.seed))
            raise CheckError(f"golden for {spec.name!r} unusable: {exc}") from None

    def plan(self, target: Target, spec: CaseSpec, golden: Golden, full: bool) -> DecodePlan:
        block = family_of(spec.config).block_size(spec.config)
        if target.capabilities.decode is None:
            return DecodePlan(max(1, spec.seq_len // 2), 0)
        return plan_for(spec.seq_len, target.capabilities, block, DECODE_STEPS, full)

    def eager(self, target: Target, golden: Golden, plan: DecodePlan, rows: torch.Tensor) -> torch.Tensor:
        """Eager fp32's decode of ``rows`` (the reference decoder), computed once per case and plan."""
        full_key = (golden.spec.name, plan)
        if full_key not in self._eager:
            with self.session.timed(target, "reference"):
                self._eager[full_key] = teacher_forced(ReferenceDecoder(golden.model), rows, plan,
                                                       golden.spec.config.vocab_size)
        return self._eager[full_key]

    # --- decode parity ----------------------------------------------------------------------
    def check_parity(self, target: Target, spec: CaseSpec, full: bool = False) -> Verdict:
        """Prefill and teacher-forced steps on a named case, each logit judged against the fp64
        full-forward truth at its position; ``full`` decodes up to the last slot of the block or cache."""
        check = "decode-full" if full else "decode"
        golden = self.golden(target, spec, check)
        plan = self.plan(target, spec, golden, full)
        rows = golden.idx[:DECODE_ROWS, :plan.length]
        shape = tuple(rows.shape)
        vocab = spec.config.vocab_size
        start = time.perf_counter()
        logits = self.decoded(target, golden.model, spec.name, check, shape,
                              lambda decoder: teacher_forced(decoder, rows, plan, vocab))
        seconds = time.perf_counter() - start
        self._decoded[(target.name, spec.name, plan)] = logits
        eager = self.eager(target, golden, plan, rows)
        truth64 = golden.logits64[:DECODE_ROWS, :plan.length]
        truth = Truth(truth64, None, eager, None)
        # The unrelated models' logits on the same rows and positions: the decode verdict is
        # discriminated like the forward one.
        unrelated = [UnrelatedOutput(u.name, u.logits[:DECODE_ROWS, :plan.length], None)
                     for u in self.session.unrelated(golden)]
        verdict, _ = named_parity_verdicts(target.precision, spec, truth, logits, None, unrelated)
        verdict = replace(verdict, check=check)
        extra: dict[str, Any] = {}
        if verdict.status == "fail":
            where = first_diverging_call(target.precision, plan, logits, truth64, eager, truth.scale)
            verdict = located(verdict, plan, where)
            blocks = self.bisect_blocks(target, golden, rows, plan, verdict)
            verdict = replace(verdict, localization=f"{verdict.localization}; {blocks.summary}")
            extra["localization"] = blocks.to_record()
        per_call = per_call_errors(plan, logits, eager, truth64)
        self.session.record(CheckRecord(target, spec.name, check, verdict=verdict, config=spec.config,
                                        input_shape=shape, seed=spec.seed, duration=seconds,
                                        extra={**extra, "decode": {"prompt": plan.prompt, "steps": plan.steps,
                                                                   **per_call,
                                                                   "first_diverging": verdict.localization or None}}))
        return verdict

    def bisect_blocks(self, target: Target, golden: Golden, rows: torch.Tensor, plan: DecodePlan,
                      failed: Verdict) -> Localization:
        """The block where the decode path first diverges: the target decodes truncated models
        (``gpt_conformance.reference.truncate``), each judged like the case against that model's
        fp64 full forward pass, with the reference decoder's error as the yardstick: the forward
        checks' bisection (``gpt_conformance.harness.checks.localize``), on the decode path. A
        localization never changes the verdict; one that crashes says so."""
        vocab = golden.spec.config.vocab_size

        def judge(cut: torch.nn.Module, blocks: int) -> dict:
            name = truncated_name(blocks)
            start = time.perf_counter()
            try:
                decoder = self.session.prepare(target, cut, f"{golden.spec.name} · {name}").runnable
                with self.session.timed(target, "run"):
                    logits = teacher_forced(decoder, rows, plan, vocab)
            except Exception as exc:  # a prepare's crash is recorded by the session; a decoder's is named here
                status = "skip" if isinstance(exc, UnsupportedHere) else "error"
                return {"verdict": None, "point": {"name": name, "blocks": blocks, "status": status,
                                                   "message": f"{type(exc).__name__}: {exc}",
                                                   "seconds": time.perf_counter() - start}}
            finally:
                self.session.prepared.forget(target, cut)
            truth64 = reference_outputs(cut, rows, None)[0]
            eager = teacher_forced(ReferenceDecoder(cut), rows, plan, vocab)
            verdict = judge_logits(get_policy(target.precision), logit_metrics(logits, truth64),
                                   logit_metrics(eager, truth64), float(truth64.abs().max()), check=failed.check)
            entry = point(name, verdict)
            entry.update(blocks=blocks, seconds=time.perf_counter() - start)
            return {"verdict": verdict, "point": entry}

        try:
            return by_bisection(self.session, target, golden.model, rows, None, failed, golden.spec.name,
                                self.session.options.localize_budget, judge)
        except Exception as exc:
            return Localization("none", f"localization could not run: {type(exc).__name__}: {exc}", None)

    # --- invariants -------------------------------------------------------------------------
    def check_against_forward(self, target: Target, spec: CaseSpec) -> Verdict:
        """The target's decode logits against its own full forward pass on the same tokens."""
        check = "decode-forward"
        golden = self.golden(target, spec, check)
        plan = self.plan(target, spec, golden, full=False)
        rows = golden.idx[:DECODE_ROWS, :plan.length]
        key = (target.name, spec.name, plan)
        got = self._decoded.get(key)
        if got is None:
            got = self.decoded(target, golden.model, spec.name, check, tuple(rows.shape),
                               lambda decoder: teacher_forced(decoder, rows, plan, spec.config.vocab_size))
        forward, _, _ = self.session.run(target, golden.model, rows, None, spec.name, seed=spec.seed, check=check)
        eager = self.eager(target, golden, plan, rows)
        eager_forward = golden.logits32[:DECODE_ROWS, :plan.length]
        return self.judged_invariant(target, spec, check, plan, got, forward, eager, eager_forward, rows.shape)

    def check_ragged(self, target: Target, spec: CaseSpec) -> Verdict:
        """A ragged batch (prompts of different lengths, padded as the target declares) against
        each row decoded alone."""
        check = "decode-ragged"
        golden = self.golden(target, spec, check)
        decoding = target.capabilities.decode
        if decoding is not None and decoding.padding is None:
            message = "the target's decoder takes no ragged batches (Decoding.padding is None)"
            self.session.record(CheckRecord(target, spec.name, check, config=spec.config, seed=spec.seed, status="skip",
                                            message=message))
            raise UnsupportedHere(f"{target.name}: {message}")
        plan = self.plan(target, spec, golden, full=False)
        if plan.prompt < 2:
            message = f"a {spec.seq_len}-token case leaves no room for prompts of different lengths"
            self.session.record(CheckRecord(target, spec.name, check, config=spec.config, seed=spec.seed, status="skip",
                                            message=message))
            raise UnsupportedHere(f"{target.name}: {message}")
        prompts = [plan.prompt, max(1, plan.prompt - 3), 1]
        steps = min(RAGGED_STEPS, plan.length - plan.prompt) or 1
        rows = [golden.idx[b % golden.idx.size(0)] for b in range(len(prompts))]
        vocab = spec.config.vocab_size
        padding = decoding.padding if decoding is not None else "right"

        def ragged_and_alone(decoder) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            ragged = ragged_teacher_forced(decoder, rows, prompts, steps, padding, vocab)
            alone = [teacher_forced(decoder, row[None, :p + steps], DecodePlan(p, steps), vocab)[0]
                     for row, p in zip(rows, prompts, strict=True)]
            return ragged, alone

        got, alone = self.decoded(target, golden.model, spec.name, check, (len(rows), plan.prompt), ragged_and_alone)
        with self.session.timed(target, "reference"):
            eager_got, eager_alone = ragged_and_alone(ReferenceDecoder(golden.model, padding=padding))
        calls = ragged_calls(prompts, steps)
        verdict = invariant_verdict(check, target.precision, torch.cat(got), torch.cat(alone), torch.cat(eager_got),
                                    torch.cat(eager_alone))
        if verdict.status == "fail":
            where = next((name for name, pick in calls
                          if invariant_verdict(check, target.precision, pick(got), pick(alone), pick(eager_got),
                                               pick(eager_alone)).failed), None)
            verdict = located(verdict, DecodePlan(plan.prompt, steps), where, "the ragged batch")
        self.session.record(CheckRecord(target, spec.name, check, verdict=verdict, config=spec.config,
                                        input_shape=(len(rows), plan.prompt), seed=spec.seed,
                                        extra={"decode": {"prompts": prompts, "steps": steps, "padding": padding,
                                              "first_diverging": verdict.localization or None}}))
        return verdict

    def check_reuse(self, target: Target, spec: CaseSpec) -> Verdict:
        """A state reused after another sequence against a fresh one, on the same tokens."""
        check = "decode-reuse"
        golden = self.golden(target, spec, check)
        decoding = target.capabilities.decode
        if decoding is not None and not decoding.reusable_state:
            message = "the target's decoder states are not reused (Decoding.reusable_state is False)"
            self.session.record(CheckRecord(target, spec.name, check, config=spec.config, seed=spec.seed, status="skip",
                                            message=message))
            raise UnsupportedHere(f"{target.name}: {message}")
        plan = self.plan(target, spec, golden, full=False)
        rows = golden.idx[:DECODE_ROWS, :plan.length]
        # Another sequence first: two tokens and one step (short, so that a decoder that appends
        # the new sequence after it still has room in its cache, and decodes wrongly instead).
        other = golden.idx[:DECODE_ROWS].flip(1)[:, :3]
        vocab = spec.config.vocab_size

        def reused_and_fresh(decoder) -> tuple[torch.Tensor, torch.Tensor]:
            _, old = decoder.prefill(other[:, :2])
            _, old = decoder.step(old, other[:, 2:3])
            reused = teacher_forced(decoder, rows, plan, vocab, state=old)
            return reused, teacher_forced(decoder, rows, plan, vocab)

        got, fresh = self.decoded(target, golden.model, spec.name, check, tuple(rows.shape), reused_and_fresh)
        with self.session.timed(target, "reference"):
            eager_got, eager_fresh = reused_and_fresh(ReferenceDecoder(golden.model))
        return self.judged_invariant(target, spec, check, plan, got, fresh, eager_got, eager_fresh, rows.shape)

    def judged_invariant(self, target, spec, check, plan, got, expected, eager_got, eager_expected, shape) -> Verdict:
        verdict = invariant_verdict(check, target.precision, got, expected, eager_got, eager_expected)
        if verdict.status == "fail":
            where = next((name for name, lo, hi in plan_calls(plan)
                          if invariant_verdict(check, target.precision, got[:, lo:hi], expected[:, lo:hi],
                                               eager_got[:, lo:hi], eager_expected[:, lo:hi]).failed), None)
            verdict = located(verdict, plan, where)
        self.session.record(CheckRecord(target, spec.name, check, verdict=verdict, config=spec.config,
                                        input_shape=tuple(shape), seed=spec.seed,
                                        extra={"decode": {"prompt": plan.prompt, "steps": plan.steps,
                                              "first_diverging": verdict.localization or None}}))
        return verdict

    # --- greedy through the cache -----------------------------------------------------------
    def check_greedy(self, target: Target, model: torch.nn.Module, reference: ReferenceGreedy, case_id: str,
                     decode: Callable[[list[int]], str] | None = None) -> Verdict:
        """The tie-aware greedy check (``gpt_conformance.harness.checks.decode``), its tokens made by
        a prefill and steps over the target's cache."""
        check = "greedy-cached"
        config = model.config
        self.session.require_family(target, family_of(config).name, case_id, config)
        fed = len(reference.prompt) + len(reference.tokens) - 1
        shape = (1, fed)
        decoding = target.capabilities.decode
        limit = decoding.max_cache_len if decoding is not None else None
        if limit is not None and fed > limit:
            message = f"the greedy check needs {fed} cache slots; the target's cache has {limit}"
            self.session.record(CheckRecord(target, case_id, check, config=config, input_shape=shape, status="skip",
                                            message=message))
            raise UnsupportedHere(f"{target.name}: {message}")
        policy = get_policy(target.precision)
        start = time.perf_counter()
        comparison = self.decoded(
            target, model, case_id, check, shape,
            lambda decoder: compare_greedy_by(greedy_through(decoder, config.vocab_size), reference,
                                              policy.greedy_margin))
        verdict = greedy_verdict(comparison, policy, decode, check=check)
        self.session.record(CheckRecord(target, case_id, check, verdict=verdict, config=config, input_shape=shape,
                                        duration=time.perf_counter() - start,
                                        extra={"greedy": comparison.summary(decode)}))
        return verdict


def ragged_calls(prompts: list[int], steps: int) -> list[tuple[str, Callable[[list[torch.Tensor]], torch.Tensor]]]:
    """(call, the rows' logits of that call, concatenated) for a ragged batch's prefill and steps."""

    def prefill(rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([row[:p] for row, p in zip(rows, prompts, strict=True)])

    def step(i: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        return lambda rows: torch.stack([row[p + i] for row, p in zip(rows, prompts, strict=True)])

    return [(PREFILL, prefill)] + [(f"step {i + 1}", step(i)) for i in range(steps)]


def per_call_errors(plan: DecodePlan, logits: torch.Tensor, eager: torch.Tensor, truth: torch.Tensor) -> dict:
    """max_abs against the truth of each call, the target's and eager's: the report's decode section."""
    target, baseline = [], []
    for _, lo, hi in plan_calls(plan):
        target.append(logit_metrics(logits[:, lo:hi], truth[:, lo:hi])["max_abs"])
        baseline.append(logit_metrics(eager[:, lo:hi], truth[:, lo:hi])["max_abs"])
    return {"calls": [name for name, _, _ in plan_calls(plan)], "max_abs": target, "eager_max_abs": baseline}


# --- the property search ------------------------------------------------------------------------
# Drawn models come from a few configs (an exported decoder compiles two programs per config) that
# differ where the decode path does: both families, cache lengths (block sizes) of 8 to 16, one and
# several heads, GQA and MQA. Seeds, weight scales, rows, prompt lengths and steps are drawn freely.
DECODE_PROPERTY_CONFIGS = (
    GPTConfig(block_size=8, vocab_size=23, n_layer=1, n_head=2, n_embd=16),
    GPTConfig(block_size=16, vocab_size=31, n_layer=2, n_head=1, n_embd=16, bias=False),
    NanochatConfig(sequence_len=12, vocab_size=29, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
    NanochatConfig(sequence_len=8, vocab_size=19, n_layer=1, n_head=2, n_kv_head=1, n_embd=16),
)


@dataclass(frozen=True)
class DrawnDecode:
    """One drawn decode example: a model and a ragged batch of prompts decoded for some steps."""

    config: Any
    seed: int
    weight_std: float
    prompts: tuple[int, ...]
    steps: int

    def describe(self) -> str:
        return (f"{type(self.config).__name__}({self.config.to_dict()}), seed {self.seed}, weight std "
                f"{self.weight_std}, prompts {list(self.prompts)}, {self.steps} step(s)")


def draw_decode(data: Any, target: Target) -> DrawnDecode:
    """Draw an example the target can decode (its families, its cache, its ragged batches)."""
    decoding = target.capabilities.decode
    configs = [c for c in DECODE_PROPERTY_CONFIGS if family_of(c).name in target.capabilities.families]
    config = data.draw(st.sampled_from(configs), label="config")
    block = family_of(config).block_size(config)
    cache = min(block, decoding.max_cache_len or block) if decoding is not None else block
    rows = data.draw(st.integers(1, 3), label="rows")
    longest = data.draw(st.integers(1, cache - 1), label="longest prompt")
    if decoding is not None and decoding.padding is None:
        prompts = (longest,) * rows
    else:
        prompts = (longest,) + tuple(data.draw(st.lists(st.integers(1, longest), min_size=rows - 1,
                                                        max_size=rows - 1), label="other prompts"))
    steps = data.draw(st.integers(1, cache - longest), label="steps")
    return DrawnDecode(config, data.draw(st.integers(0, 2**16), label="seed"),
                       data.draw(st.sampled_from((NANOGPT_STD, 0.3)), label="weight std"), prompts, steps)


def drawn_inputs(example: DrawnDecode) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    family = family_of(example.config)
    model = family.build(example.config, example.seed)
    if example.weight_std != NANOGPT_STD:
        perturb_weights(model, example.weight_std, example.seed)
    length = max(example.prompts) + example.steps
    rows = [torch.randint(0, example.config.vocab_size, (length,)) for _ in example.prompts]
    return model, rows


def check_drawn_decode(checks: DecodeChecks, target: Target, data: Any) -> Verdict:
    """Decode one drawn ragged batch on the target; each row's logits judged against the fp64 full
    forward pass of that row alone, with eager's decode of the same batch as the yardstick."""
    example = draw_decode(data, target)
    model, rows = drawn_inputs(example)
    family = family_of(example.config)
    padding = (target.capabilities.decode.padding if target.capabilities.decode is not None else None) or "right"
    vocab = example.config.vocab_size
    check, case_id = "decode-property", example.describe()
    ragged = list(example.prompts)

    def decode(decoder) -> list[torch.Tensor]:
        return ragged_teacher_forced(decoder, rows, ragged, example.steps, padding, vocab)

    got = checks.decoded(target, model, case_id, check, (len(rows), max(ragged)), decode)
    with torch.no_grad():
        model64 = copy.deepcopy(model).double()
        truth = [family.logits_and_loss(model64, row[None, :p + example.steps])[0][0]
                 for row, p in zip(rows, ragged, strict=True)]
    eager = decode(ReferenceDecoder(model, padding=padding))
    got_all, truth_all, eager_all = torch.cat(got), torch.cat(truth), torch.cat(eager)
    policy = get_policy(target.precision)
    verdict = judge_logits(policy, logit_metrics(got_all, truth_all), logit_metrics(eager_all, truth_all),
                           float(truth_all.abs().max()), check=check)
    if verdict.status == "fail":
        where = next((name for name, pick in ragged_calls(ragged, example.steps)
                      if judge_logits(policy, logit_metrics(pick(got), pick(truth)),
                                      logit_metrics(pick(eager), pick(truth)),
                                      float(truth_all.abs().max())).failed), None)
        verdict = located(verdict, DecodePlan(max(ragged), example.steps), where, "the drawn decode")
    checks.session.record(CheckRecord(target, case_id, check, verdict=verdict, config=example.config,
                                      input_shape=(len(rows), max(ragged)), seed=example.seed,
                                      extra={"decode": {"prompts": ragged, "steps": example.steps, "padding": padding,
                                            "first_diverging": verdict.localization or None}}))
    if verdict.failed:
        raise CheckFailed(f"{target.name} on {case_id}\n{verdict.explain()}", verdict)
    return verdict
