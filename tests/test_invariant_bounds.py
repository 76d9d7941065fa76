"""Invariants are judged by the target's own arithmetic, not by its truth-parity bound.

A causal-mask leak in an int8 weight-only target moves the logits at the kept positions by
~0.04: inside int8-wo's truth-parity bound (6.5e-2 of the logit range), by which the invariant was
judged before, and far outside what the target's arithmetic explains (the fp32 fake-quant
reference's own error, ~1e-7), by which it is judged now. The correct int8 target still passes.
"""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.harness.checks.properties import ExampleChecker, PropertyFailure
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.checks.strategies import named_example
from gpt_conformance.harness.core.policies import get_policy, judge_logits, judge_loss
from gpt_conformance.harness.core.records import RecordWriter, read_records
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.goldens import load_golden
from gpt_conformance.targets.eager import EagerRunnable
from gpt_conformance.targets.lowp import EagerCastTarget

from tests.planted_quant import Int8MaskLeak, TorchInt4Target, TorchInt8Target

SPEC = named_case("seed")


@pytest.fixture
def session(tmp_path):
    return ConformanceSession(TargetRegistry(), RecordWriter(tmp_path / "records.jsonl", "test"), Options())


def test_correct_int8_target_passes_every_invariant(session):
    model_case, inp = named_example(SPEC)
    ExampleChecker(session, TorchInt8Target(), model_case).check(inp)


def test_int8_causal_leak_fails_causality_where_the_parity_bound_passed_it(session):
    model_case, inp = named_example(SPEC)
    with pytest.raises(PropertyFailure):  # the first failure raised is parity; every check is recorded
        ExampleChecker(session, Int8MaskLeak(), model_case).check(inp)
    (record,) = [r for r in read_records([session.writer.path]) if r["check"] == "causality"]
    assert record["status"] == "fail", record["message"]
    assert 0.01 < record["metrics"]["max_abs"] < 0.1, record["metrics"]
    assert all(g["baseline"] < 1e-5 for g in record["gates"]), "the yardstick is the fp32 fake-quant reference"
    kept = load_golden(SPEC).logits64[:, : inp.cut + 1]
    before = judge_logits(get_policy("int8-wo"), record["metrics"], {}, float(kept.abs().max()))
    assert before.passed, f"int8-wo's truth-parity gates would have failed it too: {before.explain()}"


class Int4LossOff(TorchInt4Target):
    """Correct logits, a loss 0.01 above their cross-entropy: inside int4-wo's truth-parity loss bound
    (ln 1.028 = 0.0276), by which loss consistency was judged before."""

    name = "planted-int4-loss-off"

    def prepare(self, model, config):
        runnable = super().prepare(model, config)
        inner = runnable.model

        class Shifted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, idx, targets=None, **kwargs):
                logits, loss = self.inner(idx, targets, **kwargs)
                return logits, None if loss is None else loss + 0.01

        runnable.model = Shifted()
        return runnable


class FloatLossRunnable(EagerRunnable):
    def __call__(self, idx, targets=None):
        logits, loss = super().__call__(idx, targets)
        if targets is None:
            return logits, loss
        return logits, torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)


class Bf16LossInFloat32(EagerCastTarget):
    """eager-bf16 whose loss is the fp32 cross-entropy of its bf16 logits, not rounded to bf16: a
    right loss, so loss consistency must pass it (judged, not recorded as it was for bf16 before)."""

    def __init__(self):
        super().__init__("bf16-loss-in-float32", torch.bfloat16, "bf16")

    def prepare(self, model, config):
        return FloatLossRunnable(super().prepare(model, config).model)


def loss_consistency_record(session) -> dict:
    (record,) = [r for r in read_records([session.writer.path]) if r["check"] == "loss-consistency"]
    return record


def test_a_loss_off_its_own_logits_fails_loss_consistency_inside_the_truth_parity_bound(session):
    model_case, inp = named_example(SPEC)
    with pytest.raises(PropertyFailure):
        ExampleChecker(session, Int4LossOff(), model_case).check(inp)
    record = loss_consistency_record(session)
    assert record["status"] == "fail", record["message"]
    assert record["metrics"]["loss_abs"] == pytest.approx(0.01, rel=1e-3)
    assert record["gates"][0]["bound"] < 1e-5, "judged by the fp32 reference's own loss arithmetic"
    before = judge_loss(get_policy("int4-wo"), record["metrics"], {})
    assert before.passed, f"int4-wo's truth-parity loss gate would have failed it too: {before.explain()}"


@pytest.mark.parametrize("target", [TorchInt4Target(), Bf16LossInFloat32()], ids=lambda t: t.name)
def test_a_loss_consistent_with_its_logits_passes(session, target):
    model_case, inp = named_example(SPEC)
    ExampleChecker(session, target, model_case).check(inp)
    record = loss_consistency_record(session)
    assert record["status"] == "pass", record["message"]
