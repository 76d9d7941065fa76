"""The strategies give targets only what their capabilities accept, and examples round-trip."""

from __future__ import annotations

import json

import pytest
import torch
from gpt_conformance.harness.api import Capabilities
from gpt_conformance.harness.checks.properties import load_example, repro_command
from gpt_conformance.harness.checks.strategies import (
    MAX_LOGITS,
    InputCase,
    ModelCase,
    build_model,
    input_cases,
    model_cases,
    named_example,
)
from gpt_conformance.reference.cases import ALL_CASES, NAMED_CASES, NANOCHAT_SEED_CONFIG, build_case
from gpt_conformance.reference.families import FAMILIES
from gpt_conformance.reference.nanochat import SOFTCAP
from hypothesis import find, given, settings
from hypothesis import strategies as st

CAPABILITIES = [
    pytest.param(Capabilities(), id="dynamic"),
    pytest.param(Capabilities(max_batch=1, max_seq_len=5), id="maxima"),
    pytest.param(Capabilities(dynamic_shapes=False, static_shapes=((1, 4), (4, 16))), id="static"),
]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("caps", CAPABILITIES)
@settings(max_examples=40)
@given(data=st.data())
def test_inputs_respect_capabilities(caps, family, data):
    case = data.draw(model_cases(caps, family))
    assert case.family == family
    inp = data.draw(input_cases(case.config, caps))
    batch, seq_len = inp.shape
    assert caps.accepts(batch, seq_len) and seq_len <= case.block_size, (caps, inp.shape)
    assert batch * seq_len * case.config.vocab_size <= max(MAX_LOGITS, case.config.vocab_size)
    assert all(0 <= t < case.config.vocab_size for row in inp.idx for t in row)
    if inp.batch is not None:
        assert caps.accepts(len(inp.batch), seq_len) and inp.batch[inp.row] == inp.idx[inp.row]
    if inp.cut is not None:
        changed = inp.causal_variant()
        assert torch.equal(changed[:, :inp.cut + 1], inp.tensor("idx")[:, :inp.cut + 1])
        assert bool((changed[:, inp.cut + 1:] != inp.tensor("idx")[:, inp.cut + 1:]).all())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_static_target_never_gets_a_block_beyond_its_buckets(family):
    caps = Capabilities(dynamic_shapes=False, static_shapes=((2, 8),))

    @settings(max_examples=30)
    @given(model_cases(caps, family))
    def check(case):
        assert case.block_size <= 8

    check()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("block", [16, 32, 7])
def test_a_block_size_tiles_every_drawn_width(family, block):
    @settings(max_examples=40)
    @given(model_cases(family=family, width_multiple=block))
    def check(case):
        assert case.config.n_embd % block == 0, case.config

    check()


@pytest.mark.parametrize("wanted", [
    pytest.param(lambda c: 1 < c.config.n_kv_head < c.config.n_head, id="grouped-query"),
    pytest.param(lambda c: c.config.n_kv_head == 1 < c.config.n_head, id="multi-query"),
    pytest.param(lambda c: c.config.rotary_base == 100000.0, id="rotary-base-1e5"),
    pytest.param(lambda c: c.config.attn_impl == "manual", id="manual-attention"),
    pytest.param(lambda c: c.weight_std == 1.0, id="largest-weight-scale"),
    pytest.param(lambda c: c.weight_std == 0.02, id="own-init"),
])
def test_nanochat_draws_reach_every_variant(wanted):
    find(model_cases(family="nanochat"), wanted, settings=settings(max_examples=500, database=None))


def test_nanochat_weight_scales_reach_the_softcap():
    """At its own init nanochat's logits stay well inside the cap; at std 1.0 the cap bends them
    (capped at 0.85 * cap means 1.26 * cap before it), where a wrong cap, or none, shows."""
    idx = torch.arange(16).view(1, 16)
    with torch.no_grad():
        own, large = (build_model(ModelCase(NANOCHAT_SEED_CONFIG, seed=3, weight_std=std))(idx).abs().max()
                      for std in (0.02, 1.0))
    assert own < 0.5 * SOFTCAP < 0.85 * SOFTCAP < large, (float(own), float(large))


def test_nanochat_example_round_trips_and_old_examples_are_nanogpt():
    model_case, inp = named_example(ALL_CASES[-1])
    data = model_case.to_dict()
    assert data["family"] == "nanochat" and ModelCase.from_dict(json.loads(json.dumps(data))) == model_case
    legacy = named_example(NAMED_CASES[0])[0].to_dict()
    del legacy["family"]  # printed before there were families
    assert ModelCase.from_dict(legacy).family == "nanogpt"


@pytest.mark.parametrize("spec", [s for s in ALL_CASES if not s.slow and s.checkpoint is None], ids=lambda s: s.name)
def test_pinned_named_case_is_the_golden_case(spec):
    model_case, inp = named_example(spec)
    model, idx, targets = build_case(spec)
    assert torch.equal(inp.tensor("idx"), idx) and torch.equal(inp.tensor("targets"), targets)
    built = build_model(model_case).state_dict()
    assert all(torch.equal(built[k], v) for k, v in model.state_dict().items())


def test_example_round_trips_through_the_repro_json():
    model_case, inp = named_example(NAMED_CASES[3])
    example = {"target": "eager", "model": model_case.to_dict(), "input": inp.to_dict()}
    command = repro_command(example)
    text = command.split("--repro=", 1)[1].strip("'")
    assert load_example(text) == ("eager", model_case, inp)
    assert ModelCase.from_dict(json.loads(text)["model"]) == model_case


def test_bad_repro_names_the_problem():
    with pytest.raises(ValueError, match="not a property example"):
        load_example('{"model": {}}')
    with pytest.raises(ValueError, match="not a property example"):
        load_example("not json")


def test_larger_weight_std_gives_peaked_logits():
    small = ModelCase(NAMED_CASES[0].config, seed=7, weight_std=0.02)
    large = ModelCase(NAMED_CASES[0].config, seed=7, weight_std=1.0)
    idx = torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        spread = [float(build_model(c)(idx, full_logits=True)[0].std()) for c in (small, large)]
    assert spread[1] > 20 * spread[0], spread


def test_input_case_shape():
    assert InputCase(idx=((1, 2, 3),), targets=((1, 2, 3),)).shape == (1, 3)
