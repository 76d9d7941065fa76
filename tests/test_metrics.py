"""Metrics and policies on hand-made tensors whose answers are worked out by hand."""

import math

import pytest
import torch
from gpt_conformance.harness.core import metrics
from gpt_conformance.harness.core.metrics import abs_error_histogram, logit_metrics, loss_metrics
from gpt_conformance.harness.core.policies import (
    Gate,
    TolerancePolicy,
    get_policy,
    judge_logits,
    judge_loss,
    register_policy,
)


def test_identical_logits_are_perfect():
    truth = torch.randn(2, 3, 11, dtype=torch.float64)
    m = logit_metrics(truth.float().double(), truth)
    assert m["top1_agreement"] == 1.0 and m["topk_overlap"] == 1.0 and m["nonfinite"] == 0
    assert m["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_known_differences():
    truth = torch.tensor([[[0.0, 1.0, 2.0, 4.0]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    m = logit_metrics(target, truth, top_k=2)
    assert m["max_abs"] == 1.0
    assert m["max_rel"] == 0.25  # 1 / max|truth| = 1 / 4
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 4))
    assert m["cosine"] == pytest.approx(17 / math.sqrt(14 * 21))  # t.r = 17, |t|^2 = 14, |r|^2 = 21
    assert m["top1_agreement"] == 1.0 and m["topk_overlap"] == 1.0
    p = torch.softmax(truth, -1)
    kl = float((p * (torch.log_softmax(truth, -1) - torch.log_softmax(target.double(), -1))).sum())
    assert m["kl_mean"] == pytest.approx(kl) and m["kl_max"] == pytest.approx(kl)


def test_top1_and_topk_count_positions():
    truth = torch.tensor([[5.0, 4.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[4.0, 5.0, 0.0], [0.0, 1.0, 2.0]])  # row 0: top-1 flips, top-2 set same
    m = logit_metrics(target, truth, top_k=2)
    assert m["top1_agreement"] == 0.5 and m["topk_overlap"] == 1.0
    target2 = torch.tensor([[0.0, 4.0, 5.0], [0.0, 1.0, 2.0]])  # row 0: top-2 {2,1} vs {0,1}
    assert logit_metrics(target2, truth, top_k=2)["topk_overlap"] == 0.75


def test_chunking_gives_the_same_answer(monkeypatch):
    torch.manual_seed(0)
    truth = torch.randn(4, 33, 17, dtype=torch.float64)
    target = (truth + 1e-3 * torch.randn_like(truth)).float()
    whole = logit_metrics(target, truth)
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 17 * 5)  # 5 rows per chunk, uneven last chunk
    chunked = logit_metrics(target, truth)
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_nonfinite_is_counted_and_never_passes():
    truth = torch.zeros(1, 2, 3, dtype=torch.float64)
    target = torch.tensor([[[0.0, float("nan"), 0.0], [float("inf"), 0.0, 0.0]]])
    m = logit_metrics(target, truth)
    assert m["nonfinite"] == 2 and math.isnan(m["rmse"])
    verdict = judge_logits(get_policy("fp32"), m, logit_metrics(truth.float(), truth), 1.0)
    assert verdict.status == "fail" and "non-finite" in verdict.message


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="logit shapes differ"):
        logit_metrics(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


def test_loss_metrics():
    m = loss_metrics(torch.tensor(2.5), torch.tensor(2.0, dtype=torch.float64))
    assert m == {"loss": 2.5, "loss_truth": 2.0, "loss_abs": 0.5, "loss_rel": 0.25, "nonfinite": 0.0}
    assert loss_metrics(float("nan"), 2.0)["nonfinite"] == 1.0
    with pytest.raises(ValueError, match="no loss"):
        loss_metrics(None, 2.0)


def test_histogram_counts_every_finite_element():
    truth = torch.zeros(2, 3, 4, dtype=torch.float64)
    target = torch.full((2, 3, 4), 1e-3)
    hist = abs_error_histogram(target, truth)
    assert sum(hist["counts"]) == 24
    peak = hist["counts"].index(24)
    assert hist["log10_edges"][peak] <= -3 < hist["log10_edges"][peak + 1]


POLICY = TolerancePolicy(
    name="unit-test",
    logit_gates=(Gate("rmse", multiplier=2.0, floor_abs=1e-6, reason="test"),
                 Gate("top1_agreement", floor_abs=0.9, direction="min", reason="test")),
    loss_gates=(Gate("loss_abs", multiplier=2.0, floor_abs=1e-5, reason="test"),),
)


def test_relative_bound_and_smallest_passing_multiplier():
    baseline = {"rmse": 1e-6, "top1_agreement": 1.0}
    ok = judge_logits(POLICY, {"rmse": 2.5e-6, "top1_agreement": 0.95}, baseline, truth_scale=1.0)
    assert ok.passed and ok.gates[0].bound == pytest.approx(3e-6)
    bad = judge_logits(POLICY, {"rmse": 5e-6, "top1_agreement": 0.5}, baseline, truth_scale=1.0)
    assert bad.status == "fail" and bad.message == "out of tolerance: rmse, top1_agreement"
    rmse_gate, top1_gate = bad.gates
    assert rmse_gate.min_multiplier == pytest.approx(4.0)  # (5e-6 - 1e-6 floor) / 1e-6
    assert top1_gate.bound == 0.9 and not top1_gate.passed
    text = bad.explain()
    assert "rmse = 5e-06 > bound 3e-06" in text and "multiplier >= 4" in text


def test_rel_floor_scales_with_logit_range():
    gate = Gate("max_abs", multiplier=1.0, floor_rel=1e-3)
    assert gate.bound(baseline=0.0, scale=10.0) == pytest.approx(1e-2)


def test_loss_verdict():
    baseline = {"loss_abs": 1e-6}
    ok = judge_loss(POLICY, {"loss": 2.0, "loss_abs": 1e-5, "nonfinite": 0.0}, baseline)
    assert ok.passed and ok.gates[0].bound == pytest.approx(1.2e-5)  # 2 x 1e-6 + 1e-5
    bad = judge_loss(POLICY, {"loss": 2.0, "loss_abs": 2e-5, "nonfinite": 0.0}, baseline)
    assert bad.status == "fail" and bad.gates[0].min_multiplier == pytest.approx(10.0)


def test_a_loss_gate_counts_the_logits_noise():
    # The nightly search's inductor input: eager's loss error 1.1e-7 by chance, its logit rmse 8.8e-4,
    # and a correct inductor 4.6e-5 off the loss. Against the loss error alone it failed at 420x.
    gate = Gate("loss_abs", multiplier=3.0, floor_abs=1e-5, plus_logit_rmse=True)
    policy = TolerancePolicy("unit-test-loss-noise", (), (gate,))
    metrics = {"loss": 64.0, "loss_truth": 64.0, "loss_abs": 4.6e-5, "nonfinite": 0.0}
    verdict = judge_loss(policy, metrics, {"loss_abs": 1.1e-7, "logit_rmse": 8.8e-4})
    assert verdict.passed and verdict.gates[0].bound == pytest.approx(3 * (1.1e-7 + 8.8e-4) + 1e-5)
    # Without the logits' noise, the same loss error fails: the term is what lets it pass.
    assert judge_loss(policy, metrics, {"loss_abs": 1.1e-7}).status == "fail"
    # The built-in loss gates that scale with a reference count it, except fp32's: its targets compute
    # eager's own arithmetic, so their loss error is eager's sample (and a tanh GELU stays caught).
    assert not any(g.plus_logit_rmse for g in get_policy("fp32").loss_gates)
    relative = [g for p in ("fp32-reassoc", "fp32-compiled", "fp16", "bf16", "int8-wo", "int4-wo", "tf32")
                for g in (*get_policy(p).loss_gates, *get_policy(p).arithmetic_loss_gates) if g.multiplier]
    assert relative and all(g.plus_logit_rmse for g in relative)


def test_policies_are_registered_data():
    assert get_policy("fp32").logit_gates and get_policy("fp32-reassoc").loss_gates
    with pytest.raises(KeyError, match="no tolerance policy 'int3'"):
        get_policy("int3")
    register_policy(POLICY)
    assert get_policy("unit-test") is POLICY
    with pytest.raises(ValueError, match="already registered"):
        register_policy(TolerancePolicy("unit-test", (), ()))


def test_rmse_gate_with_min_numel_skips_tiny_outputs_and_says_so():
    policy = TolerancePolicy("unit-test-numel", logit_gates=(Gate("rmse", floor_abs=1e-3, min_numel=1000),), loss_gates=())
    tiny = judge_logits(policy, {"rmse": 5e-3, "numel": 2.0}, {}, truth_scale=1.0)
    # No gate applied: measured, not judged (never a pass).
    assert tiny.status == "recorded" and tiny.gates == [] and "rmse not gated below 1000 elements (got 2)" in tiny.message
    big = judge_logits(policy, {"rmse": 5e-3, "numel": 4096.0}, {}, truth_scale=1.0)
    assert big.status == "fail" and big.gates[0].metric == "rmse"
