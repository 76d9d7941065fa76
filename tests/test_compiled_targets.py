"""``inductor`` and ``onnxruntime``: one compile/export serves every input shape of a config.

Both targets are slow on first use (tens of seconds per config on two cores), so these tests are
``slow``: out of ``pytest -m "cpu and not slow"``, in CI (``--hypothesis-profile=conformance-ci`` runs every
test) and nightly. The parity of both is checked by ``cases/``; here, their caching and the
environment they record.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from gpt_conformance.harness.checks.conformance import run_checked
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.reference.model import GPT
from gpt_conformance.targets import inductor as inductor_module

SHAPES = [(4, 8), (3, 5), (2, 32), (5, 17)]  # no dimension of size 1: dynamo specialises those


def test_dynamo_recompile_limit_is_raised_and_enforced_on_this_torch():
    """A silent fall-back to eager after the recompile limit would pass as "inductor"."""
    config = torch._dynamo.config
    with inductor_module.dynamo_config_patch():
        limits = [getattr(config, k) for k in ("recompile_limit", "cache_size_limit") if hasattr(config, k)]
        fail_flags = [getattr(config, k) for k in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit")
                      if hasattr(config, k)]
    assert limits and all(v == inductor_module.RECOMPILE_LIMIT for v in limits)
    assert fail_flags and all(fail_flags)
    assert inductor_module.dynamo_graph_count() is not None, "the recompile count would be missing from records"


@pytest.mark.slow
def test_inductor_compiles_once_per_config_for_every_shape():
    target = inductor_module.InductorTarget()
    if not target.probe():
        pytest.skip(target.probe().reason)
    # dynamo's compiled-graph cache is per process and serves the whole session: no reset, which
    # would throw away every program compiled before. A config no case uses starts this count clean.
    config = replace(named_case("seed").config, vocab_size=71)
    torch.manual_seed(0)
    model = GPT(config).eval()
    idx, targets = torch.randint(0, 71, (8, 32)), torch.randint(0, 71, (8, 32))
    runnable = target.prepare(model, model.config)
    for batch, seq in SHAPES:
        logits, _ = run_checked(runnable, target, model.config, idx[:batch, :seq], targets[:batch, :seq])
        expected = model(idx[:batch, :seq], targets[:batch, :seq], full_logits=True)
        # Only that each shape ran through the one program: parity itself is judged in cases/. These
        # bounds are ~25x the measured inductor/ORT differences (max_abs <= 4.4e-7 on the seed case).
        torch.testing.assert_close(logits, expected[0], rtol=1e-4, atol=1e-5)
    env = target.environment()
    assert env["programs"] == 1 and env["graphs_compiled"] == 1 and env["recompiles"] == 0, env
    assert env["calls"] == len(SHAPES)

    # A second model of the same config reuses the compiled program (weights are inputs).
    torch.manual_seed(123)
    other = type(model)(model.config).eval()
    other_run = target.prepare(other, other.config)
    logits, _ = run_checked(other_run, target, other.config, idx[:2, :7], targets[:2, :7])
    torch.testing.assert_close(logits, other(idx[:2, :7], full_logits=True)[0], rtol=1e-4, atol=1e-5)
    assert target.environment()["graphs_compiled"] == 1


@pytest.mark.slow
def test_onnxruntime_exports_once_per_model_and_says_which_exporter():
    pytest.importorskip("onnxruntime", reason="onnxruntime target needs the 'onnx' extra")
    from gpt_conformance.targets.onnx import OnnxRuntimeTarget

    target = OnnxRuntimeTarget()
    if not target.probe():
        pytest.skip(target.probe().reason)
    model, idx, targets = build_case(named_case("seed"))
    runnable = target.prepare(model, model.config)
    for batch, seq in [*SHAPES, (1, 1)]:
        logits, _ = run_checked(runnable, target, model.config, idx[:batch, :seq], targets[:batch, :seq])
        torch.testing.assert_close(logits, model(idx[:batch, :seq], full_logits=True)[0], rtol=1e-4, atol=1e-5)
    env = target.environment()
    assert env["exports"] == 1, env
    assert sum(env["exporters_used"].values()) == 1
    if "torchscript" in env["exporters_used"]:
        assert env["dynamo_exporter_fallback_reason"], "a fall-back must say why"


def test_onnxruntime_falls_back_to_the_torchscript_exporter_and_says_why(monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime target needs the 'onnx' extra")
    from gpt_conformance.targets import onnx as onnx_module

    def dynamo_unavailable(*args, **kwargs):
        raise NotImplementedError("planted: dynamo exporter unavailable on this torch")

    monkeypatch.setattr(onnx_module, "export_dynamo", dynamo_unavailable)
    target = onnx_module.OnnxRuntimeTarget()
    if not target.probe():
        pytest.skip(target.probe().reason)
    model, idx, targets = build_case(named_case("seed"))
    runnable = target.prepare(model, model.config)
    for batch, seq in [(8, 1), (3, 7), (1, 32)]:
        logits, _ = run_checked(runnable, target, model.config, idx[:batch, :seq], targets[:batch, :seq])
        torch.testing.assert_close(logits, model(idx[:batch, :seq], full_logits=True)[0], rtol=1e-4, atol=1e-5)
    env = target.environment()
    assert env["exporters_used"] == {"torchscript": 1}
    assert env["dynamo_exporter_fallback_reason"] == "NotImplementedError: planted: dynamo exporter unavailable on this torch"
