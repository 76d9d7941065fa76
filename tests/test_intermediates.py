"""The named intermediates (``gpt_conformance.reference.intermediates``), the truncated models
(``gpt_conformance.reference.truncate``), and the targets that return intermediates: the same names for both
families, bit for bit what the model computes."""

from __future__ import annotations

import copy

import pytest
import torch
from gpt_conformance.harness.api import registry
from gpt_conformance.harness.checks.localize import checked_intermediates
from gpt_conformance.reference import nanochat
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.intermediates import block_of, intermediate_names, intermediates_of
from gpt_conformance.reference.truncate import truncated, without_blocks

CASES = ["seed", "nanochat-gqa"]


@pytest.fixture(scope="module", autouse=True)
def builtin_targets():
    if "export" not in registry:
        registry.load_entry_points()


def test_names_in_forward_order():
    assert intermediate_names(2) == ["embed", "h.0.attn", "h.0.attn_residual", "h.0.mlp", "h.0.mlp_residual",
                                     "h.1.attn", "h.1.attn_residual", "h.1.mlp", "h.1.mlp_residual",
                                     "final_norm", "logits"]
    assert block_of("h.11.mlp_residual") == (11, "mlp_residual")
    assert block_of("final_norm") is None and block_of("h.1.bogus") is None


@pytest.mark.parametrize("case", CASES)
def test_hooks_see_what_the_forward_pass_computes(case):
    model, idx, _ = build_case(named_case(case))
    got = intermediates_of(model, idx)
    assert list(got) == intermediate_names(model.config.n_layer)
    logits, _ = family_of(model.config).logits_and_loss(model, idx)
    assert torch.equal(got["logits"], logits)
    # Each point recomputed by hand from the one before it, in the model's own arithmetic.
    blocks, head, wte = model.transformer.h, model.lm_head, model.transformer.wte
    with torch.no_grad():
        if case == "seed":
            embed = wte(idx) + model.transformer.wpe(torch.arange(idx.size(1)))
            logits = head(got["final_norm"])
        else:
            embed = nanochat.norm(wte(idx))
            logits = nanochat.SOFTCAP * torch.tanh(head(got["final_norm"]) / nanochat.SOFTCAP)
    assert torch.equal(got["embed"], embed) and torch.equal(got["logits"], logits)
    assert torch.equal(got["h.0.mlp_residual"], got["h.0.attn_residual"] + got["h.0.mlp"])
    assert torch.equal(got["h.1.attn_residual"], got["h.0.mlp_residual"] + got["h.1.attn"])
    assert not blocks[0]._forward_hooks and not head._forward_pre_hooks, "hooks are removed afterwards"


@pytest.mark.parametrize("case", CASES)
def test_truncated_models_share_the_weights_and_compute_the_same(case):
    model, idx, targets = build_case(named_case(case))
    family = family_of(model.config)
    before = torch.random.get_rng_state()
    cut = truncated(model, model.config.n_layer)
    assert torch.equal(before, torch.random.get_rng_state()), "building one must not move the global RNG"
    assert cut.config.n_layer == model.config.n_layer
    for (name, p), (_, q) in zip(model.state_dict().items(), cut.state_dict().items(), strict=True):
        assert p.data_ptr() == q.data_ptr(), f"{name} is a copy"
    full, again = family.logits_and_loss(model, idx, targets), family.logits_and_loss(cut, idx, targets)
    assert torch.equal(full[0], again[0]) and torch.equal(full[1], again[1])
    one = intermediates_of(truncated(model, 1), idx)
    reference = intermediates_of(model, idx)
    assert all(torch.equal(one[n], reference[n]) for n in ("embed", "h.0.attn", "h.0.mlp", "h.0.mlp_residual"))
    with pytest.raises(ValueError, match=r"n_blocks must be in \[1, 2\], got 0"):
        truncated(model, 0)


@pytest.mark.parametrize("case", CASES)
def test_without_blocks_the_block_adds_exactly_zero(case):
    model, idx, _ = build_case(named_case(case))
    kept = copy.deepcopy(model.state_dict())
    points = intermediates_of(without_blocks(model), idx)
    assert torch.equal(points["h.0.mlp_residual"], points["embed"])
    assert not points["h.0.attn"].any() and not points["h.0.mlp"].any()
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items()), "the original is untouched"


@pytest.mark.parametrize("name", ["eager", "export", "export-strict", "export-serdes", "torchscript-trace"])
@pytest.mark.parametrize("case", CASES)
def test_targets_return_the_intermediates_eager_computes(name, case):
    """Each runs the same kernels as eager on these shapes (torchscript-trace: the seed case fills a
    bucket, so nothing is padded), so every intermediate is bit-identical."""
    target = registry.get(name)
    spec = named_case(case)
    if spec.family not in target.capabilities.families:
        pytest.skip(f"{name} does not run {spec.family}")
    assert target.capabilities.returns_intermediates
    model, idx, _ = build_case(spec)
    got = checked_intermediates(target.prepare(model, model.config), model, idx)
    expected = intermediates_of(model, idx)
    assert list(got) == list(expected)
    for point, value in expected.items():
        assert torch.equal(got[point], value), point


def test_low_precision_targets_return_their_own_dtype_intermediates():
    model, idx, _ = build_case(named_case("seed"))
    got = registry.get("eager-bf16").prepare(model, model.config).intermediates(idx)
    expected = intermediates_of(copy.deepcopy(model).to(torch.bfloat16), idx)
    assert got["h.1.attn"].dtype == torch.bfloat16
    assert all(torch.equal(got[n], expected[n]) for n in expected)
