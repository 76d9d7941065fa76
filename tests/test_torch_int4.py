"""``torch-int4-wo`` under the two-level checks: torch's int4 CPU kernel passes its arithmetic level
against the reference built from the nibbles and scales the target packs, and planted kernel bugs
(the +8 offset dropped, block scales laid out [out, in/B] where the kernel reads [in/B, out]) fail it."""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.harness.api import TargetRegistry
from gpt_conformance.harness.checks.precision import arithmetic_verdict
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.errors import UnsupportedHere
from gpt_conformance.harness.core.quant import check_scales_fit, quantizable_linears, quantize_weight
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.goldens import load_golden
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.targets.torch_int4 import Int4PackedLinear, TorchInt4WeightOnly


@pytest.fixture
def session(tmp_path):
    return ConformanceSession(TargetRegistry(), RecordWriter(tmp_path / "records.jsonl", "test"), Options())


@pytest.fixture(scope="module")
def available():
    found = TorchInt4WeightOnly().probe()
    if not found:
        pytest.skip(found.reason)


class PlantedInt4(TorchInt4WeightOnly):
    """Reports the right codes and scales, then hands the kernel something else (``mangle``)."""

    def mangle(self, module: Int4PackedLinear, codes: torch.Tensor) -> None:
        raise NotImplementedError

    def prepare(self, model, config):
        runnable = super().prepare(model, config)
        modules = dict(runnable.model.named_modules())
        for name, q in runnable.quantized_weights.items():
            self.mangle(modules[name], q.codes)
        return runnable


class OffsetDropped(PlantedInt4):
    """Signed codes packed as two's-complement nibbles, without the +8 the kernel subtracts."""

    name = "planted-int4-offset-dropped"

    def mangle(self, module, codes):
        nibbles = (codes.to(torch.int32) & 0xF).contiguous()
        module.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles, 1)


class ScalesNotTransposed(PlantedInt4):
    """The [out, in/B] block scales reshaped, not transposed, into the kernel's [in/B, out]."""

    name = "planted-int4-scales-reshaped"

    def mangle(self, module, codes):
        scales = module.scale_and_zeros[..., 0].t().contiguous()  # [out, in/B], as reported
        wrong = scales.reshape(scales.shape[1], scales.shape[0])
        module.scale_and_zeros = torch.stack([wrong, torch.zeros_like(wrong)], dim=-1).contiguous()


@pytest.mark.parametrize("case", ["seed", "single-head", "scaled", "zen", "nanochat-gqa"])
def test_torch_int4_passes_its_arithmetic_level(session, available, case):
    verdict = arithmetic_verdict(session, TorchInt4WeightOnly(), named_case(case))
    assert verdict.passed, verdict.explain()


@pytest.mark.parametrize("planted", [OffsetDropped, ScalesNotTransposed])
def test_planted_int4_kernel_bugs_fail_the_arithmetic_level(session, available, planted):
    verdict = arithmetic_verdict(session, planted(), named_case("single-head"))
    assert verdict.status == "fail", verdict.explain()


def test_the_kernel_computes_with_the_codes_and_scales_the_target_reports(available):
    """The runnable's linears are the packed kernel, and its reported codes and scales are the
    harness's int4 quantization of the float weights (the kernel's weight read back through an
    identity input equals codes * scales)."""
    golden = load_golden(named_case("seed"))
    runnable = TorchInt4WeightOnly().prepare(golden.model, golden.model.config)
    floats = quantizable_linears(golden.model)
    modules = dict(runnable.model.named_modules())
    assert set(runnable.quantized_weights) == set(floats)
    check_scales_fit({n: m.weight for n, m in floats.items()}, runnable.quantized_weights)
    for name, q in runnable.quantized_weights.items():
        module = modules[name]
        assert isinstance(module, Int4PackedLinear)
        expected = quantize_weight(floats[name].weight, 4, 32, name)
        assert torch.equal(q.codes, expected.codes) and torch.equal(q.scales, expected.scales)
        bias = torch.zeros(q.out_features) if module.bias is None else module.bias
        seen = (module(torch.eye(q.in_features)) - bias).t()
        torch.testing.assert_close(seen, q.dequantize(), rtol=0, atol=0)


def test_shapes_the_kernel_cannot_take_skip_naming_the_layer():
    narrow = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=24))
    with pytest.raises(UnsupportedHere, match=r"c_attn has out_features 72; .* needs a multiple of 16"):
        TorchInt4WeightOnly().prepare(narrow, narrow.config)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=48))
    with pytest.raises(UnsupportedHere, match=r"c_attn has in_features 48, not a multiple of block_size 32"):
        TorchInt4WeightOnly().prepare(model, model.config)
    with pytest.raises(UnsupportedHere, match=r"blocks of \(32, 64, 128, 256\), not 16"):
        TorchInt4WeightOnly(block_size=16).prepare(model, model.config)


def test_a_torch_without_the_kernel_skips_with_the_reason(monkeypatch):
    from gpt_conformance.targets import torch_int4

    def missing(*args):
        raise RuntimeError("No such operator aten::_weight_int4pack_mm_for_cpu")

    monkeypatch.setattr(torch_int4, "pack_int4", missing)
    availability = torch_int4.probe_int4_kernel.__wrapped__()
    assert not availability
    assert "_weight_int4pack_mm_for_cpu cannot compute an int4 linear" in availability.reason
    assert "No such operator" in availability.reason
