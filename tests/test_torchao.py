"""``torchao-int8-wo`` under the two-level checks: torchao's own int8 weight-only linear passes its
arithmetic level against the reference built from the codes and scales torchao reports, a planted
int8 kernel bug fails it, and without torchao the target skips naming the extra."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from gpt_conformance.harness.api import TargetRegistry
from gpt_conformance.harness.checks.precision import arithmetic_verdict
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.quant import check_scales_fit, quantizable_linears
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.goldens import load_golden
from gpt_conformance.targets.torchao import TorchaoInt8WeightOnly


@pytest.fixture
def session(tmp_path):
    return ConformanceSession(TargetRegistry(), RecordWriter(tmp_path / "records.jsonl", "test"), Options())


@pytest.fixture(scope="module")
def available():
    found = TorchaoInt8WeightOnly().probe()
    if not found:
        pytest.skip(found.reason)


class ScalesPerInputChannel(TorchaoInt8WeightOnly):
    """An int8 kernel that multiplies the scales into the activation's columns (input channels)
    instead of the output channels: torchao's codes and scales, reported correctly, applied wrong."""

    name = "planted-torchao-scales-per-input-channel"

    def prepare(self, model, config):
        runnable = super().prepare(model, config)
        modules = dict(runnable.model.named_modules())
        for name, q in runnable.quantized_weights.items():
            linear = modules[name]
            out, inp = q.codes.shape
            per_input = q.scales.repeat(math.ceil(inp / out))[:inp]
            codes, bias = q.codes.float(), linear.bias

            def forward(x, codes=codes, per_input=per_input, bias=bias):
                return torch.nn.functional.linear(x * per_input, codes, bias)

            linear.forward = forward
        return runnable


@pytest.mark.parametrize("case", ["single-head", "scaled", "zen"])
def test_torchao_int8_passes_its_arithmetic_level(session, available, case):
    verdict = arithmetic_verdict(session, TorchaoInt8WeightOnly(), named_case(case))
    assert verdict.passed, verdict.explain()


def test_the_reference_is_built_from_torchaos_own_codes_and_scales(available):
    golden = load_golden(named_case("seed"))
    runnable = TorchaoInt8WeightOnly().prepare(golden.model, golden.model.config)
    modules = dict(runnable.model.named_modules())
    assert set(runnable.quantized_weights) == set(quantizable_linears(golden.model))
    for name, q in runnable.quantized_weights.items():
        weight = modules[name].weight
        assert type(weight).__name__ == "Int8Tensor"
        assert torch.equal(q.codes, weight.qdata) and torch.equal(q.scales, weight.scale.reshape(-1).float())
    check_scales_fit({n: m.weight for n, m in quantizable_linears(golden.model).items()}, runnable.quantized_weights)


def test_scales_applied_per_input_channel_fail_the_arithmetic_level(session, available):
    verdict = arithmetic_verdict(session, ScalesPerInputChannel(), named_case("single-head"))
    assert verdict.status == "fail", verdict.explain()


def test_without_torchao_the_target_skips_naming_the_extra(monkeypatch):
    from gpt_conformance.harness.core.probes import probe_package

    # As if torchao were not installed, even when an earlier test imported it.
    for name in [n for n in sys.modules if n == "torchao" or n.startswith("torchao.")] + ["torchao"]:
        monkeypatch.setitem(sys.modules, name, None)
    ((module, extra),) = TorchaoInt8WeightOnly.requirements.packages
    availability = probe_package.__wrapped__(module, extra)
    assert not availability and "pip install 'gpt-conformance[torchao]'" in availability.reason
