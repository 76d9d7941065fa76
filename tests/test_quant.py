"""The backend-neutral quantized weights, their layout checks, and the two-level verdicts."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace

import pytest
import torch
from gpt_conformance.harness.api import TargetRegistry
from gpt_conformance.harness.checks.precision import arithmetic_verdict, quality_metrics
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.metrics import logit_metrics
from gpt_conformance.harness.core.policies import POLICIES, get_policy, judge_logits
from gpt_conformance.harness.core.quant import (
    DEFAULT_INT4_BLOCK_SIZE,
    MAXBOUND,
    QuantizedLinear,
    ScaleLayoutError,
    WeightQuantization,
    check_scales_fit,
    fake_quant_reference,
    max_ulp_distance,
    quantizable_linears,
    quantize_model,
    quantize_weight,
    quantized_linears,
)
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.targets.modelopt import quantized_weights_from_modelopt

from tests.planted_quant import TorchInt4Target, WrongAxisInt4Target

# modelopt divides by (maxbound / amax) where the contract multiplies by (amax / maxbound): each
# side rounds twice (<= 2 ulps from the exact q * amax / maxbound), so they differ by <= 4 ulps.
# Measured: 2.
MODELOPT_ULPS = 4


def seeded_weight(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.mark.parametrize("bits, block_size, scale_shape", [(8, None, (48,)), (4, 16, (48, 4)), (4, 32, (48, 2))])
def test_layout_contract(bits, block_size, scale_shape):
    weight = seeded_weight(48, 64)
    q = quantize_weight(weight, bits, block_size, "w")
    assert q.codes.dtype == torch.int8 and tuple(q.codes.shape) == (48, 64)
    assert tuple(q.scales.shape) == scale_shape
    assert int(q.codes.abs().max()) == MAXBOUND[bits]  # each group's amax maps to +-maxbound
    group = 64 if block_size is None else block_size
    expected = (q.codes.float().view(48, -1, group) * q.scales.view(48, -1, 1)).view(48, 64)
    assert torch.equal(q.dequantize(), expected)
    check_scales_fit({"w": weight}, {"w": q})


def test_dequantize_error_is_half_a_step_at_most():
    weight = seeded_weight(32, 64, seed=1)
    q = quantize_weight(weight, 4, 16)
    step = q.scales.repeat_interleave(16, dim=1)
    assert bool(((q.dequantize() - weight).abs() <= step * 0.5 + 1e-9).all())


def test_transposed_scale_shape_is_rejected_with_layer_and_shapes():
    q = quantize_weight(seeded_weight(48, 64), 4, 16, "h.0.mlp.c_fc")
    with pytest.raises(ScaleLayoutError, match=r"h\.0\.mlp\.c_fc.*\(4, 48\).*expected \(48, 4\).*transposed"):
        QuantizedLinear(q.codes, q.scales.t().contiguous(), 16, 4, "h.0.mlp.c_fc")


def test_transposed_scale_values_of_a_square_layer_are_detected():
    # [64, 64] in blocks of 8: scales are [64, 8] either way round only by value, so the shape
    # check passes and the value check must catch it.
    weight = seeded_weight(64, 64, seed=2)
    q = quantize_weight(weight, 4, 8, "h.0.attn.c_proj")
    swapped = q.scales.t().contiguous().reshape(64, 8)
    bad = QuantizedLinear(q.codes, swapped, 8, 4, "h.0.attn.c_proj")
    with pytest.raises(ScaleLayoutError, match=r"h\.0\.attn\.c_proj.*scales disagree.*codes \(64, 64\), scales \(64, 8\)"):
        check_scales_fit({"h.0.attn.c_proj": weight}, {"h.0.attn.c_proj": bad})


def test_codes_out_of_range_are_rejected():
    with pytest.raises(ScaleLayoutError, match=r"int4 codes must lie in \[-8, 7\]"):
        QuantizedLinear(torch.full((4, 8), 9, dtype=torch.int8), torch.ones(4), None, 4, "x")


def test_fake_quant_model_holds_dequantized_weights_and_keeps_lm_head():
    model, _, _ = build_case(named_case("single-head"))
    quantized = quantize_model(model, WeightQuantization(8))
    assert set(quantized) == set(quantizable_linears(model)) and not any("lm_head" in n for n in quantized)
    fq = fake_quant_reference(model, quantized)
    assert fq.lm_head.weight.dtype == torch.float32
    modules = dict(fq.named_modules())
    for name, q in quantized.items():
        assert torch.equal(modules[name].weight, q.dequantize())
    assert torch.equal(fq.lm_head.weight, model.lm_head.weight)


@pytest.fixture(scope="module")
def mtq():
    from gpt_conformance.targets.modelopt import quiet_modelopt_import

    with quiet_modelopt_import():
        return pytest.importorskip("modelopt.torch.quantization",
                                   reason="modelopt not installed (pip install 'gpt-conformance[quant]')")


@pytest.mark.parametrize("bits, block_size", [(8, None), (4, 16)])
def test_modelopt_round_trip_and_pure_torch_agree(mtq, bits, block_size):
    from gpt_conformance.targets.modelopt import ModeloptWeightOnly

    model, _, _ = build_case(named_case("no-bias"))
    runnable = ModeloptWeightOnly(bits, block_size).prepare(model, model.config)
    pure = quantize_model(model, WeightQuantization(bits, block_size))
    modelopt_weights = dict(runnable.model.named_modules())
    assert set(runnable.quantized_weights) == set(pure)
    for name, q in runnable.quantized_weights.items():
        assert torch.equal(q.codes, pure[name].codes), name
        assert torch.equal(q.scales, pure[name].scales), name
        fake = modelopt_weights[name].weight  # modelopt's own fake-quantized weight
        per_weight = q.scales[:, None] if block_size is None else q.scales.repeat_interleave(block_size, dim=1)
        assert torch.equal(torch.round(fake / per_weight).to(torch.int8), q.codes), name
        assert max_ulp_distance(q.dequantize(), fake) <= MODELOPT_ULPS, name


def test_modelopt_amax_layout_is_checked(mtq):
    from gpt_conformance.targets.modelopt import calibration_batches, weight_only_config

    model, _, _ = build_case(named_case("single-head"))
    quantized = copy.deepcopy(model)
    mtq.quantize(quantized, weight_only_config(mtq, WeightQuantization(4, 16)), forward_loop=lambda m: m(calibration_batches(m.config)[0]))
    layer = quantized.transformer.h[0].mlp.c_fc
    layer.weight_quantizer._amax = layer.weight_quantizer._amax[:-1]  # modelopt's setter refuses a new shape
    with pytest.raises(ScaleLayoutError, match=r"transformer\.h\.0\.mlp\.c_fc.*amax has 1023 values.*expected 1024"):
        quantized_weights_from_modelopt(quantized)


@pytest.fixture
def session(tmp_path):
    return ConformanceSession(TargetRegistry(), RecordWriter(tmp_path / "records.jsonl", "test"), Options())


def test_wrong_axis_int4_scales_fail_the_arithmetic_check(session):
    verdict = arithmetic_verdict(session, WrongAxisInt4Target(), named_case("single-head"))
    assert verdict.status == "fail"
    assert "scales disagree" in verdict.message and "wrong axis" in verdict.message


def test_right_int4_scales_pass_the_arithmetic_check(session):
    verdict = arithmetic_verdict(session, TorchInt4Target(), named_case("single-head"))
    assert verdict.passed, verdict.explain()


def test_unexplained_arithmetic_error_is_not_blamed_on_a_layout(session):
    class OffByOneCode(TorchInt4Target):
        name = "planted-int4-code-plus-one"

        def weights_to_apply(self, quantized):
            return {n: (q.codes.float() + 1) * q.scales.repeat_interleave(16, dim=1) for n, q in quantized.items()}

    verdict = arithmetic_verdict(session, OffByOneCode(), named_case("single-head"))
    assert verdict.status == "fail" and "no known wrong layout reproduces it" in verdict.message


def test_quality_gates_fail_an_unrelated_model():
    spec = named_case("single-head")
    model, idx, targets = build_case(spec)
    torch.manual_seed(99)
    other = type(model)(model.config).eval()
    with torch.no_grad():
        truth, loss64 = copy.deepcopy(model).double()(idx, targets)
        logits, loss = other(idx, targets)
    policy = get_policy("int4-wo")
    metrics = quality_metrics(logits, loss, truth, loss64)
    verdict = judge_logits(replace(policy, logit_gates=policy.quality_gates), metrics, {}, 1.0, check="quality")
    # Tied embeddings make any random nanoGPT predict the current token, so top-1 barely moves
    # (measured 0.965 for this unrelated model); the KL gate is the one that must catch it.
    assert verdict.status == "fail" and verdict.message == "out of tolerance: kl_mean", verdict.explain()
    assert logit_metrics(logits, truth)["kl_mean"] == metrics["kl_mean"]


@pytest.mark.parametrize("name", ["fp16", "bf16", "int8-wo", "int4-wo"])
def test_precision_policies_give_every_bound_a_reason(name):
    policy = POLICIES[name]
    gates = policy.logit_gates + policy.loss_gates + policy.arithmetic_gates + policy.arithmetic_loss_gates + policy.quality_gates
    assert policy.arithmetic_gates and policy.quality_gates
    assert all(g.reason for g in gates), [g.metric for g in gates if not g.reason]


def test_modelopt_targets_skip_naming_the_extra(monkeypatch):
    from gpt_conformance.harness.core.probes import probe_package
    from gpt_conformance.targets.modelopt import TARGETS

    # As if nvidia-modelopt were not installed, even when an earlier test imported it.
    for name in [n for n in sys.modules if n == "modelopt" or n.startswith("modelopt.")] + ["modelopt"]:
        monkeypatch.setitem(sys.modules, name, None)
    for target in TARGETS:
        ((module, extra),) = target.requirements.packages
        availability = probe_package.__wrapped__(module, extra)
        assert not availability and "pip install 'gpt-conformance[quant]'" in availability.reason


def test_precision_cost_table_pairs_quality_with_arithmetic(tmp_path, capsys):
    from gpt_conformance.harness.cli import main

    records = [
        {"target": "t4", "precision": "int4-wo", "case": "seed", "check": "arithmetic", "status": "fail"},
        {"target": "t4", "precision": "int4-wo", "case": "seed", "check": "quality", "status": "pass",
         "metrics": {"top1_agreement": 0.5, "kl_mean": 0.1}},
        {"target": "t4", "precision": "int4-wo", "case": "seed", "check": "quality", "status": "fail",
         "metrics": {"top1_agreement": 0.25, "kl_mean": 0.2}},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert main(["precision", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:6] == ["t4", "seed", "fail", "fail", "-", "0.25"]


def test_quantized_linears_defaults_and_target_method_are_accepted(session):
    model, _, _ = build_case(named_case("single-head"))
    int4 = quantized_linears(model, bits=4)
    assert {q.block_size for q in int4.values()} == {DEFAULT_INT4_BLOCK_SIZE}
    assert {q.block_size for q in quantized_linears(model, bits=8).values()} == {None}

    class ReportsThroughTarget(TorchInt4Target):
        """Like the Tripy targets: the target, not its runnable, reports the weights it loads."""

        name = "torch-int4-target-method"

        def quantized_weights(self, model):
            return quantize_model(model, self.low_precision.weights)

        def prepare(self, model, config):
            runnable = super().prepare(model, config)
            return lambda idx, targets=None: runnable(idx, targets)

    verdict = arithmetic_verdict(session, ReportsThroughTarget(), named_case("single-head"))
    assert verdict.passed, verdict.explain()
