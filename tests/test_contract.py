"""The target contract in ``gpt_conformance.harness.api``, held to what the harness does: what a
runnable is given, what it must return, and the hints a target's author reads."""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.harness import api
from gpt_conformance.harness.api import Capabilities, Requirements, Target
from gpt_conformance.harness.checks.conformance import TargetOutputError, run_checked
from gpt_conformance.harness.core.probes import probe_package
from gpt_conformance.reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


class Reference(Target):
    name = "contract-reference"
    capabilities = Capabilities(returns_loss=True)


def reference_runnable(seen: list):
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()

    def run(idx, targets=None):
        seen.append((idx.is_contiguous(), targets is None or targets.is_contiguous(), torch.is_grad_enabled()))
        return model(idx, targets, full_logits=True)

    return run


def test_run_gets_contiguous_inputs_under_no_grad():
    seen: list = []
    idx = torch.randint(0, 11, (8, 3)).t()  # [3, 8], not contiguous
    targets = torch.randint(0, 11, (8, 3)).t()
    assert not idx.is_contiguous()
    run_checked(reference_runnable(seen), Reference(), CONFIG, idx, targets)
    assert seen == [(True, True, False)]


def test_outputs_off_the_cpu_are_an_error_saying_so():
    def on_meta(idx, targets=None):
        return torch.empty(*idx.shape, 11, device="meta"), None

    with pytest.raises(TargetOutputError, match=r"returned logits on meta, expected a CPU tensor \(return logits.cpu\(\)\)"):
        run_checked(on_meta, Reference(), CONFIG, torch.zeros(1, 4, dtype=torch.long))


def test_a_missing_package_hint_names_the_distribution_that_declares_the_extra():
    class ThirdParty(Target):
        name = "contract-third-party"
        requirements = Requirements(packages=(("no_such_module_for_the_contract", "fast"),), distribution="my-backend")

    reason = ThirdParty().probe().reason
    assert "pip install 'my-backend[fast]'" in reason, reason
    assert "pip install 'gpt-conformance[onnx]'" in probe_package("no_such_module_for_the_contract", "onnx").reason


def test_what_a_target_may_declare_or_return_is_exported_and_declared():
    for name in ("LowPrecision", "WeightQuantization", "QuantizedLinear", "ReturnsIntermediates",
                 "ReturnsQuantizedWeights", "family_of", "intermediate_names"):
        assert name in api.__all__, name
    assert Target.low_precision is None
    assert Target().quantized_weights(GPT(CONFIG)) is None

    class WithIntermediates:
        def __call__(self, idx, targets=None): ...
        def intermediates(self, idx): ...

    assert isinstance(WithIntermediates(), api.ReturnsIntermediates)
    assert not isinstance(lambda idx, targets=None: None, api.ReturnsIntermediates)
