"""Checks layer: property checks on one (model, input) example: parity with the fp64 oracle, and invariants.

Every check is judged under the target's own tolerance policy and recorded:

- ``property-parity-logits`` / ``property-parity-loss``: the target against the fp64 truth,
  exactly as the named cases are judged (``parity_verdicts``).
- ``causality``: changing the tokens after position ``cut`` leaves the logits at positions
  ``<= cut`` unchanged.
- ``batch-independence``: a row's logits do not depend on the other rows of its batch.
- ``prefix-consistency``: the logits of ``idx[:, :p]`` are the first ``p`` positions of the logits
  of ``idx``.
- ``loss-consistency``: the returned loss is the cross-entropy of the returned logits.

**Bounds of the invariants.** The two runs an invariant compares are both the target's own, so
they may differ only by what the target's arithmetic explains, not by what its precision costs
against the truth. The yardstick is the reference run in the target's compute dtype with the
target's own weights (eager fp32 for an fp32 target; the fake-quant reference for a quantized
one: the arithmetic level's reference), on the same positions: its error against fp64, or its own
difference under the same change if that is larger. The gates are the policy's logit gates for
an fp32 target and its arithmetic gates for a low-precision one. So a causal-mask leak of 0.04 in
an int8 target fails against an fp32 yardstick of ~1e-7, where the int8 truth-parity bound (0.088)
would pass it. Loss consistency is judged the same way: the target's loss against the fp64
cross-entropy of its own logits, by 3x the reference's own such difference in the compute dtype
plus about one ulp of the loss in that dtype and 4 fp32 ulps for the mean's summation order
(``loss_consistency_gates``), never by the policy's
truth-parity loss gates (int4-wo's allowed 0.0276; bf16 has none).

A failing check raises a ``PropertyFailure`` subclass (one per property, so that Hypothesis
shrinks each distinct failure on its own) whose message holds the example and a one-line
command that replays it alone.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from typing import Any

import torch
from gpt_conformance.harness.checks.conformance import Truth, cross_entropy, parity_verdicts
from gpt_conformance.harness.checks.precision import (
    ArithmeticReference,
    arithmetic_reference,
    low_precision_of,
    output_arithmetic_verdicts,
    reported_quantized_weights,
)
from gpt_conformance.harness.checks.reference_memo import REFERENCES
from gpt_conformance.harness.checks.strategies import InputCase, ModelCase, build_model, input_cases, model_cases
from gpt_conformance.harness.core.errors import CheckError, UnsupportedHere
from gpt_conformance.harness.core.metrics import logit_metrics, loss_metrics
from gpt_conformance.harness.core.policies import Verdict, get_policy, judge_logits, judge_loss, loss_consistency_gates
from gpt_conformance.harness.core.quant import dequantized_weights
from gpt_conformance.harness.core.records import CheckRecord
from gpt_conformance.harness.core.targets import Target
from hypothesis import given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

CASE_ID = "property"
REPRO_TEST = "cases/test_properties.py::test_property_repro"


class PropertyFailure(AssertionError):
    check = "property"

    def __init__(self, message: str, example: dict, verdict: Verdict | None = None):
        super().__init__(message)
        self.example = example
        self.verdict = verdict


class ParityFailure(PropertyFailure):
    check = "property-parity"


class CausalityFailure(PropertyFailure):
    check = "causality"


class BatchIndependenceFailure(PropertyFailure):
    check = "batch-independence"


class PrefixConsistencyFailure(PropertyFailure):
    check = "prefix-consistency"


class LossConsistencyFailure(PropertyFailure):
    check = "loss-consistency"


class TargetCrash(PropertyFailure):
    check = "run"


CHECKS = ("property-parity-logits", "property-parity-loss", "causality", "batch-independence",
          "prefix-consistency", "loss-consistency")
FAILURES = {cls.check: cls for cls in (CausalityFailure, BatchIndependenceFailure, PrefixConsistencyFailure,
                                       LossConsistencyFailure)}
FAILURES["property-parity-logits"] = FAILURES["property-parity-loss"] = ParityFailure


def example_dict(target: Target, model_case: ModelCase, inp: InputCase) -> dict:
    return {"target": target.name, "model": model_case.to_dict(), "input": inp.to_dict()}


@dataclass(frozen=True)
class Replay:
    """How a printed repro command reaches the repro test from the directory of the failing run:
    the test file's path as seen from there, the ``-p`` plugins of that run and the directories
    that made them importable (``PYTHONPATH``; a plugin module outside the repository)."""

    test_file: str = REPRO_TEST.split("::")[0]
    plugins: tuple[str, ...] = ()
    pythonpath: tuple[str, ...] = ()


def repro_command(example: dict, replay: Replay = Replay()) -> str:
    """One shell line replaying ``example`` alone through ``test_property_repro``."""
    prefix = ""
    if replay.pythonpath:
        prefix = "PYTHONPATH=" + ":".join(shlex.quote(p) for p in replay.pythonpath) + "${PYTHONPATH:+:$PYTHONPATH} "
    parts = ["pytest", f"{replay.test_file}::{REPRO_TEST.split('::')[1]}[{example['target']}]"]
    for plugin in replay.plugins:
        parts += ["-p", plugin]
    parts.append("--repro=" + json.dumps(example, separators=(",", ":")))
    return prefix + " ".join(shlex.quote(p) for p in parts)


def describe(example: dict) -> str:
    model, inp = example["model"], example["input"]
    fields = " ".join(f"{k}={v}" for k, v in model["config"].items())
    batch, seq_len = len(inp["idx"]), len(inp["idx"][0])
    return (f"config ({model.get('family', 'nanogpt')}): {fields}\nweights: seed={model['seed']} "
            f"std={model['weight_std']}\ninput shape: ({batch}, {seq_len})  tokens: {inp['idx']}")


def is_final_run() -> bool:
    """True while Hypothesis replays the shrunk failing example (or outside Hypothesis): failures
    are recorded only then, so a shrink does not leave hundreds of records of the same bug."""
    from hypothesis.control import current_build_context
    from hypothesis.errors import InvalidArgument

    try:
        return bool(getattr(current_build_context(), "is_final", True))
    except InvalidArgument:  # no Hypothesis run (the repro test): every run is final
        return True


@dataclass
class ExampleChecker:
    """Runs and judges every property on the inputs of one model, recording each check."""

    session: Any  # harness.checks.session.ConformanceSession
    target: Target
    model_case: ModelCase
    replay: Replay = Replay()

    def __post_init__(self) -> None:
        # A pinned or replayed example of a family the target does not declare skips, on the
        # record, before its model is built or handed over.
        self.session.require_family(self.target, self.model_case.family, CASE_ID, self.model_case.config)
        self.require_tiling()
        self.model = build_model(self.model_case)
        self.policy = get_policy(self.target.precision)

    def require_tiling(self) -> None:
        """Skip, on the record and before prepare, a model whose linears the target's declared
        weight blocks cannot tile (searches draw only widths they tile; a pinned or replayed
        example may have any)."""
        block, config = weight_block_size(self.target), self.model_case.config
        if block > 1 and config.n_embd % block:
            message = (f"n_embd {config.n_embd} is not a multiple of the target's weight block size {block}: "
                       "its blocks cannot tile the linears' in_features")
            self.session.record(CheckRecord(self.target, CASE_ID, "width", config=config, seed=self.model_case.seed,
                                            status="skip", message=message))
            raise UnsupportedHere(f"{self.target.name}: {message}")

    def check(self, inp: InputCase) -> None:
        """Check every property on ``inp``; raise the first failure (in the order listed in the
        module docstring) after all of them have been judged and recorded."""
        example = example_dict(self.target, self.model_case, inp)
        caps = self.target.capabilities
        if not caps.accepts(*inp.shape):  # only a pinned example can be outside what the target declares
            for check in CHECKS:
                self.record(check, None, inp, example, status="skip",
                            message=f"the target does not accept input shape {inp.shape}")
            return
        idx, targets = inp.tensor("idx"), inp.tensor("targets")
        with self.session.timed(self.target, "reference"):
            logits64, loss64, logits32, loss32 = REFERENCES.outputs(self.model, idx, targets)
        truth = Truth(logits64, loss64, logits32, loss32)
        logits, loss = self.run(idx, targets, example)
        verdicts: list[tuple[str, Verdict | None, str]] = []
        declared = low_precision_of(self.target)
        if declared is None:
            logits_verdict, loss_verdict = parity_verdicts(self.target, truth, logits, loss)
            verdicts += [("property-parity-logits", logits_verdict, ""), ("property-parity-loss", loss_verdict, "")]
        elif declared.is_arithmetic_reference:
            # eager-fp16/bf16 *are* the reference of their dtype: what they cost against fp64
            # depends on the model and is measured on calibrated cases (cases/test_precision.py).
            reason = "the target is its dtype's reference; its cost is measured by cases/test_precision.py"
            verdicts += [("property-parity-logits", None, reason), ("property-parity-loss", None, reason)]
        else:
            # A low-precision backend on an arbitrary model: is it what the reference computes with
            # its own (quantized) weights in its compute dtype (the arithmetic level)?
            runnable = self.session.prepare(self.target, self.model, CASE_ID).runnable
            logits_verdict, loss_verdict = output_arithmetic_verdicts(
                self.target, runnable, self.model, idx, targets, logits, loss)
            verdicts += [("property-parity-logits", logits_verdict, ""), ("property-parity-loss", loss_verdict, "")]

        # The reference in the target's compute dtype with its own weights, on this input (None: eager fp32).
        own = None if declared is None else self.compute_dtype_reference(idx, targets)
        yardstick = (logits64, logits32) if own is None else (own.logits64, own.logits)
        if inp.cut is not None:
            keep = (slice(None), slice(0, inp.cut + 1))
            changed_idx = inp.causal_variant()
            changed, _ = self.run(changed_idx, targets, example)
            verdicts.append(("causality", self.invariant("causality", changed[keep], logits[keep], yardstick,
                                                         self.yardstick(changed_idx, targets), keep, keep), ""))
        else:
            verdicts.append(("causality", None, "vacuous at seq_len 1"))

        if inp.batch is not None and caps.accepts(len(inp.batch), inp.shape[1]):
            # The batch's own tokens serve as its targets: always valid ids, and with targets every
            # run of an example uses one exported program (export caches one per config and arity).
            batch = inp.tensor("batch")
            partner, _ = self.run(batch, batch, example)
            row = slice(inp.row, inp.row + 1)
            verdicts.append(("batch-independence", self.invariant(
                "batch-independence", partner[row], logits[row], yardstick, self.yardstick(batch, batch), row, row), ""))
        else:
            verdicts.append(("batch-independence", None, "the target accepts no batch of 2 at this seq_len"))

        if inp.prefix is not None:
            p = inp.prefix
            short_idx, short_targets = idx[:, :p].contiguous(), targets[:, :p].contiguous()
            short, _ = self.run(short_idx, short_targets, example)
            head = (slice(None), slice(0, p))
            verdicts.append(("prefix-consistency", self.invariant(
                "prefix-consistency", short, logits[head], yardstick, self.yardstick(short_idx, short_targets),
                head, (slice(None), slice(None))), ""))
        else:
            verdicts.append(("prefix-consistency", None, "vacuous at seq_len 1"))

        if self.target.capabilities.returns_loss:
            verdicts.append(("loss-consistency", self.loss_consistency(logits, loss, targets, truth, own), ""))
        else:
            verdicts.append(("loss-consistency", None, "the target returns no loss; the harness computes it"))

        failures = [(check, v) for check, v, _ in verdicts if v is not None and v.failed]
        final = is_final_run()
        for check, verdict, skip_reason in verdicts:
            if verdict is None:
                self.record(check, None, inp, example, status="skip", message=skip_reason)
            elif not verdict.failed or final:
                self.record(check, verdict, inp, example)
        if failures:
            check, verdict = failures[0]
            raise FAILURES[check](self.explain(check, verdict, example), example, verdict)

    def loss_consistency(self, logits: torch.Tensor, loss: torch.Tensor | None, targets: torch.Tensor, truth: Truth,
                         own: ArithmeticReference | None) -> Verdict:
        """The target's loss against the fp64 cross-entropy of its own logits, by the gates of its
        compute dtype (``loss_consistency_gates``): the yardstick is the reference in that dtype with
        the target's own weights (eager fp32 for an fp32 target) doing the same."""
        ref_logits, ref_loss = (truth.logits32, truth.loss32) if own is None else (own.logits, own.loss)
        dtype = ref_logits.dtype
        baseline = loss_metrics(ref_loss, cross_entropy(ref_logits, targets))
        got = loss_metrics(loss, cross_entropy(logits, targets))
        gates = loss_consistency_gates(str(dtype).removeprefix("torch."), torch.finfo(dtype).eps)
        return judge_loss(replace(self.policy, loss_gates=gates), got, baseline, check="loss-consistency")

    def compute_dtype_reference(self, idx: torch.Tensor, targets: torch.Tensor | None) -> ArithmeticReference:
        """The reference in a low-precision target's compute dtype with its own (quantized) weights."""
        declared = low_precision_of(self.target)
        assert declared is not None
        runnable = self.session.prepare(self.target, self.model, CASE_ID).runnable
        with self.session.timed(self.target, "reference"):
            quantized = reported_quantized_weights(self.target, runnable, self.model) if declared.weights else {}
            return arithmetic_reference(self.model, dequantized_weights(quantized), declared.compute_dtype, idx, targets)

    def yardstick(self, idx: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp64 truth, the reference in the target's compute dtype), both with the target's own
        weights, on ``idx``: what the target's arithmetic explains."""
        if low_precision_of(self.target) is None:
            with self.session.timed(self.target, "reference"):
                logits64, _, logits32, _ = REFERENCES.outputs(self.model, idx, targets)
            return logits64, logits32
        ref = self.compute_dtype_reference(idx, targets)
        return ref.logits64, ref.logits

    def invariant(self, check: str, got: torch.Tensor, expected: torch.Tensor,
                  run_a: tuple[torch.Tensor, torch.Tensor], run_b: tuple[torch.Tensor, torch.Tensor],
                  where_a: Any, where_b: Any) -> Verdict:
        """Judge two of the target's own runs (``expected`` from input A, ``got`` from input B) by
        the yardstick's own error there and its own difference between A and B, the larger."""
        truth_a, ref_a = run_a[0][where_a], run_a[1][where_a]
        ref_b = run_b[1][where_b]
        own_error, own_change = logit_metrics(ref_a, truth_a), logit_metrics(ref_b, ref_a)
        baseline = {k: max(v, own_change.get(k, 0.0)) for k, v in own_error.items()}
        gates = self.policy.arithmetic_gates if low_precision_of(self.target) else self.policy.logit_gates
        policy = replace(self.policy, logit_gates=gates)
        return judge_logits(policy, logit_metrics(got, expected), baseline, float(truth_a.abs().max()), check=check)

    def run(self, idx: torch.Tensor, targets: torch.Tensor | None, example: dict):
        try:
            # While Hypothesis shrinks, every step would record the same crash again: record it once.
            logits, loss, _ = self.session.run(self.target, self.model, idx, targets, CASE_ID,
                                               seed=self.model_case.seed, check="property-run",
                                               record_errors=is_final_run())
        except CheckError as exc:
            raise TargetCrash(f"{exc}\n{self.context(example)}", example) from None
        return logits, loss

    def explain(self, check: str, verdict: Verdict, example: dict) -> str:
        return f"{self.target.name} {check}: {verdict.explain()}\n{self.context(example)}"

    def context(self, example: dict) -> str:
        return f"{describe(example)}\nreproduce with:\n  {repro_command(example, self.replay)}"

    def record(self, check: str, verdict: Verdict | None, inp: InputCase, example: dict, **kwargs) -> None:
        extra = {"weight_std": self.model_case.weight_std, "example": example}
        if verdict is not None and verdict.failed:
            extra["repro"] = repro_command(example, self.replay)
        self.session.record(CheckRecord(self.target, CASE_ID, check, verdict=verdict, config=self.model_case.config,
                                        input_shape=inp.shape, seed=self.model_case.seed, extra=extra, **kwargs))


def weight_block_size(target: Target) -> int:
    """The block size of the target's declared block-wise weight quantization, else 1."""
    declared = low_precision_of(target)
    weights = declared.weights if declared is not None else None
    return weights.block_size if weights is not None and weights.block_size else 1


def invocation_plugins(args: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ``-p`` plugins among a pytest invocation's ``args`` (test-only targets), for repro commands."""
    args = list(args)
    plugins = []
    for i, arg in enumerate(args):
        if arg == "-p" and i + 1 < len(args):
            plugins.append(args[i + 1])
        elif arg.startswith("-p") and len(arg) > 2:
            plugins.append(arg[2:])
    return tuple(p for p in plugins if not p.startswith("no:"))


def load_example(text: str) -> tuple[str, ModelCase, InputCase]:
    """Parse the JSON of a ``--repro`` value (or of a ``--repro-file``)."""
    try:
        data = json.loads(text)
        return data["target"], ModelCase.from_dict(data["model"]), InputCase.from_dict(data["input"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"--repro: not a property example ({type(exc).__name__}: {exc}); expected the JSON "
                         "a failing property test prints") from exc


# --- searching ---------------------------------------------------------------------------
# Inputs checked on each drawn model: a model is prepared once (an export, a compile) and then
# reused, so several inputs per model make each example's preparation cost count.
INPUTS_PER_MODEL = 3


def check_drawn(session: Any, target: Target, data: Any, replay: Replay = Replay(), family: str = "nanogpt") -> None:
    """The body of a property example: draw a model of ``family``, then up to INPUTS_PER_MODEL
    inputs for it, and check every property on each. ``data`` is Hypothesis's ``st.data()`` or
    ``PinnedDraws`` (whose model is fixed, of its own family)."""
    model_case = data.draw(model_cases(target.capabilities, family, width_multiple=weight_block_size(target)),
                           label="model")
    checker = ExampleChecker(session, target, model_case, replay)
    for i in range(data.draw(st.integers(1, INPUTS_PER_MODEL), label="number of inputs")):
        try:
            checker.check(data.draw(input_cases(model_case.config, target.capabilities), label=f"input {i}"))
        except UnsupportedHere:
            if isinstance(data, PinnedDraws):
                raise
            # The target cannot prepare this drawn model (UnsupportedHere, e.g. int4 blocks that do
            # not divide n_embd; recorded as a skip): draw another model instead of ending the search.
            reject()


class PinnedDraws:
    """Stands in for ``st.data()`` in an ``@example``: its draws return a fixed model and input,
    so a pinned example runs through exactly the code the generated ones do."""

    def __init__(self, model_case: ModelCase, inp: InputCase, name: str = ""):
        # Keyed by check_drawn's draw labels, not consumed: one example object serves every target.
        self._values = {"model": model_case, "number of inputs": 1, "input 0": inp}
        self.name = name

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self._values[label]

    def __repr__(self) -> str:
        return f"PinnedDraws({self.name})"


def run_search(session: Any, target: Target, hypothesis_settings: settings, seed: int | None = None,
               replay: Replay = Replay(), family: str = "nanogpt") -> None:
    """Search ``target`` for a property failure outside pytest's parametrization (tests, benchmarks):
    the same example body as ``cases/test_properties.py``, with explicit settings and seed."""

    @hypothesis_settings
    @given(data=st.data())
    def search(data):
        check_drawn(session, target, data, replay, family)

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    search()
