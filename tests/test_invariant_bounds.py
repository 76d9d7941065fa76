"""Invariants are judged by the target's own arithmetic, not by its truth-parity bound.

A causal-mask leak in an int8 weight-only target moves the logits at the kept positions by
~0.04: inside int8-wo's truth-parity bound (6.5e-2 of the logit range), by which the invariant was
judged before, and far outside what the target's arithmetic explains (the fp32 fake-quant
reference's own error, ~1e-7), by which it is judged now. The correct int8 target still passes.
"""

from __future__ import annotations

import pytest
from gpt_conformance.harness.checks.properties import ExampleChecker, PropertyFailure
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.checks.strategies import named_example
from gpt_conformance.harness.core.policies import get_policy, judge_logits
from gpt_conformance.harness.core.records import RecordWriter, read_records
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.goldens import load_golden

from tests.planted_quant import Int8MaskLeak, TorchInt8Target

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
