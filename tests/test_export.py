"""The export targets: one export per config, reused across shapes and weights."""

from collections import Counter

import pytest
import torch
from gpt_conformance.harness.api import registry
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.targets.capture import PROGRAMS
from gpt_conformance.targets.export import ExportedProgramIgnoresParameters, check_depends_on_parameters, parameters_of

CONFIG = GPTConfig(block_size=16, vocab_size=29, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="module", autouse=True)
def builtin_targets():
    if "export" not in registry:
        registry.load_entry_points()


@pytest.mark.parametrize("name", ["export", "export-strict", "export-serdes"])
def test_one_export_per_config_across_shapes_and_weights(name):
    target = registry.get(name)
    before = target.export_count
    for seed in (0, 1):  # two models of the same config: weights are inputs, so no re-export
        torch.manual_seed(seed)
        model = GPT(CONFIG).eval()
        run = target.prepare(model, CONFIG)
        for batch, seq in [(1, 1), (3, 7), (2, 16), (5, 2)]:
            idx = torch.randint(0, 29, (batch, seq))
            targets = torch.randint(0, 29, (batch, seq))
            try:
                logits, loss = run(idx, targets)
            except ExportedProgramIgnoresParameters as exc:
                pytest.xfail(f"a torch.export bug on this torch, reported by the target as it should be: {exc}")
            ref_logits, ref_loss = model(idx, targets)
            # The exported graph runs the same aten kernels as eager: measured bit-identical.
            torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
            torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
        logits_only, no_loss = run(idx)  # the same program: logits alone are its logits for any targets
        torch.testing.assert_close(logits_only, logits, rtol=0, atol=0)
        assert no_loss is None
    assert target.export_count - before == 1  # one program per config (capture.VARIANTS)


def test_block_size_one_keeps_sequence_static():
    config = GPTConfig(block_size=1, vocab_size=5, n_layer=1, n_head=1, n_embd=4)
    model = GPT(config).eval()
    run = registry.get("export").prepare(model, config)
    idx = torch.randint(0, 5, (3, 1))
    torch.testing.assert_close(run(idx)[0], model(idx, full_logits=True)[0], rtol=0, atol=0)


def test_a_program_that_ignores_its_parameters_is_reported():
    model = GPT(CONFIG).eval()
    params = parameters_of(model)
    idx = torch.zeros(2, 2, dtype=torch.long)

    def baked(params, idx):  # what torch 2.9.1's strict export produced: the weights as constants
        return model(idx, full_logits=True)

    with pytest.raises(ExportedProgramIgnoresParameters, match="ignores its parameter inputs"):
        check_depends_on_parameters(baked, model, params, (idx,), "export-strict")
    check_depends_on_parameters(lambda p, i: torch.func.functional_call(model, p, (i,), {"full_logits": True}),
                                model, params, (idx,), "export")


def test_a_model_whose_output_ignores_its_weights_is_not_a_false_alarm():
    """n_embd=1: LayerNorm of one element is 0, so logits do not depend on the weights at all
    (found by the property search, which a doubled-weights check flagged wrongly)."""
    config = GPTConfig(block_size=4, vocab_size=2, n_layer=1, n_head=1, n_embd=1, bias=False)
    model = GPT(config).eval()
    run = registry.get("export").prepare(model, config)
    idx = torch.zeros(1, 1, dtype=torch.long)
    torch.testing.assert_close(run(idx)[0], model(idx, full_logits=True)[0], rtol=0, atol=0)


def test_export_serdes_round_trips_the_program_export_captured():
    config = GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=1, n_embd=8)  # no other test's config
    model = GPT(config).eval()
    idx = torch.randint(0, 13, (2, 5))
    logits, _ = registry.get("export").prepare(model, config)(idx)
    serdes = registry.get("export-serdes")
    round_trips, sources, captures = serdes.export_count, Counter(serdes.sources), PROGRAMS.captures
    serdes_logits, _ = serdes.prepare(model, config)(idx)
    # export's program, never traced again: its in-memory round trip ("round-trip") where this
    # process traced it, or itself ("process") where it came from the program cache, which an
    # earlier run of this test may have filled (tests/test_program_cache.py tests both).
    assert serdes.sources - sources in (Counter({"round-trip": 1}), Counter({"process": 1}))
    assert PROGRAMS.captures == captures, "export-serdes traced a program of its own"
    assert serdes.export_count - round_trips == 1
    torch.testing.assert_close(serdes_logits, logits, rtol=0, atol=0)
