"""The nanochat reference: config validation, precision, attention paths, rotary, softcap,
causality, nanochat's forward contract, its model family, and the original torch.export check."""

import copy
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from gpt_conformance.harness.checks.family_strategies import nanochat_configs
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.reference.families import FAMILIES, family_named, family_of
from gpt_conformance.reference.goldens import GOLDEN_DIR, GoldenError, load_golden
from gpt_conformance.reference.model import GPTConfig
from gpt_conformance.reference.nanochat import SOFTCAP, NanochatConfig, NanochatGPT, apply_rotary_emb, rotary_tables
from hypothesis import given
from hypothesis import strategies as st
from torch.nn import functional as F

SMALL = dict(sequence_len=16, vocab_size=37, n_layer=2, n_head=4, n_kv_head=4, n_embd=32)


def build(seed: int = 0, **fields) -> NanochatGPT:
    torch.manual_seed(seed)
    return NanochatGPT(NanochatConfig(**{**SMALL, **fields})).eval().requires_grad_(False)


def tokens(config: NanochatConfig, batch: int = 3, seed: int = 100) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, config.sequence_len), generator=generator)


@pytest.mark.parametrize("fields, message", [
    (dict(n_kv_head=3), r"n_kv_head \(3\) must divide NanochatConfig.n_head \(4\)"),
    (dict(n_kv_head=8), r"n_kv_head \(8\) must divide NanochatConfig.n_head \(4\)"),
    (dict(n_embd=30), r"n_embd \(30\) must be divisible by NanochatConfig.n_head \(4\)"),
    (dict(n_embd=12), r"head_dim 3\) must be even"),
    (dict(n_layer=0), r"NanochatConfig.n_layer must be positive, got 0"),
    (dict(sequence_len=-1), r"NanochatConfig.sequence_len must be positive"),
    (dict(n_kv_head=0), r"NanochatConfig.n_kv_head must be positive"),
    (dict(vocab_size=2.0), r"NanochatConfig.vocab_size must be an int"),
    (dict(n_head=True), r"NanochatConfig.n_head must be an int"),
    (dict(attn_impl="flash"), r"NanochatConfig.attn_impl must be one of"),
    (dict(rotary_base=1), r"NanochatConfig.rotary_base must be a number > 1"),
])
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        NanochatConfig(**{**SMALL, **fields})


def test_config_dict_round_trip_rejects_unknown_fields():
    config = NanochatConfig(**{**SMALL, "n_kv_head": 2})
    assert NanochatConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown NanochatConfig fields: \['window_pattern'\]"):
        NanochatConfig.from_dict({**config.to_dict(), "window_pattern": "L"})


def test_bad_inputs_name_the_problem():
    model = build(n_kv_head=2)
    with pytest.raises(ValueError, match="sequence length 17 exceeds sequence_len 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token id 37 outside \[0, vocab_size=37\)"):
        model(torch.full((1, 4), 37))
    with pytest.raises(ValueError, match="idx must be an integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_parameter_names_are_nanochats():
    names = set(build(n_kv_head=2).state_dict())
    per_block = {"attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.c_proj.weight",
                 "mlp.c_fc.weight", "mlp.c_proj.weight"}
    expected = {"transformer.wte.weight", "lm_head.weight"} | {f"transformer.h.{i}.{n}" for i in range(2) for n in per_block}
    assert names == expected  # no biases, no positional embedding, no norm weights, rotary not saved
    model = build(n_kv_head=2)
    assert model.transformer.h[0].attn.c_k.weight.shape == (2 * 8, 32)  # n_kv_head * head_dim rows
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()  # untied


def test_nanochat_zero_init_makes_every_logit_zero():
    """Why the conformance init keeps lm_head and c_proj nonzero: nanochat's own init hides everything."""
    model = build()
    model.init_weights(nanochat_zeros=True)
    assert torch.equal(model(tokens(model.config)), torch.zeros(3, 16, 37))
    seeded = build()(tokens(model.config))
    assert float(seeded.std()) > 0.5  # measured 0.95: logits that depend on every layer


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_fp64_and_fp32_agree(n_kv_head):
    model = build(n_kv_head=n_kv_head)
    idx = tokens(model.config)
    model64 = copy.deepcopy(model).double()
    logits64, logits32 = model64(idx), model(idx)
    assert logits64.dtype == torch.float64 and logits32.dtype == torch.float32
    # fp32 rounding through two layers of O(1) activations: measured 1.1e-6 to 1.3e-6 here;
    # 1e-4 is ~80x that and still ~10^4x below the planted bugs' smallest effect (0.94).
    assert float((logits64 - logits32).abs().max()) < 1e-4
    assert float((logits64 - logits32).abs().max()) > 0  # the two precisions really differ


def test_rotary_tables_are_exact_in_each_dtype():
    model64 = copy.deepcopy(build()).double()
    cos64, sin64 = rotary_tables(16, 8, 10000.0, torch.float64)
    assert model64.cos.dtype == torch.float64
    # Recomputed, not cast up from float32 (which would be off by ~1e-8).
    assert torch.equal(model64.cos, cos64) and torch.equal(model64.sin, sin64)
    assert torch.equal(model64.float().cos, cos64.float())


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_sdpa_enable_gqa_and_manual_repeat_agree_in_fp64(n_kv_head):
    sdpa = build(n_kv_head=n_kv_head, attn_impl="sdpa").double()
    manual = build(n_kv_head=n_kv_head, attn_impl="manual").double()
    manual.load_state_dict(sdpa.state_dict())
    idx = tokens(sdpa.config)
    # Same math, different reduction order: measured 1.6e-15 to 1.9e-15 (fp64 reassociation).
    torch.testing.assert_close(manual(idx), sdpa(idx), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_kv_head", [2, 1])
@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_grouped_kv_equals_full_attention_with_duplicated_kv_heads(n_kv_head, attn_impl):
    grouped = build(n_kv_head=n_kv_head, attn_impl=attn_impl).double()
    full = build(n_kv_head=4, attn_impl=attn_impl).double()
    state = grouped.state_dict()
    n_rep, head_dim = 4 // n_kv_head, 8
    for i in range(2):
        for name in ("c_k", "c_v"):
            key = f"transformer.h.{i}.attn.{name}.weight"
            heads = state[key].view(n_kv_head, head_dim, -1)
            # kv head j serves query heads j*n_rep .. j*n_rep + n_rep - 1 (nanochat's order).
            state[key] = heads.repeat_interleave(n_rep, dim=0).reshape(4 * head_dim, -1)
    full.load_state_dict(state)
    idx = tokens(grouped.config)
    torch.testing.assert_close(full(idx), grouped(idx), rtol=0, atol=1e-12)


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    head_dim, length = 16, 64
    cos, sin = rotary_tables(length, head_dim, 10000.0, torch.float64)
    q = torch.randn(1, 1, 1, head_dim, dtype=torch.float64)
    k = torch.randn(1, 1, 1, head_dim, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        qm = apply_rotary_emb(q, cos[:, m:m + 1], sin[:, m:m + 1])
        kn = apply_rotary_emb(k, cos[:, n:n + 1], sin[:, n:n + 1])
        return float((qm * kn).sum())

    for m, n, shift in [(5, 2, 7), (20, 0, 30), (3, 3, 50), (1, 9, 11)]:
        assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=0, abs_tol=1e-12)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # and they do depend on it
    # A rotation: norms kept, position 0 is the identity.
    rotated = apply_rotary_emb(q, cos[:, 40:41], sin[:, 40:41])
    assert math.isclose(float(rotated.norm()), float(q.norm()), rel_tol=1e-14)
    assert torch.equal(apply_rotary_emb(q, cos[:, :1], sin[:, :1]), q)


def test_rotary_follows_nanochats_half_split_and_sign():
    """Position 1, head_dim 2: one pair (x[0], x[1]) rotated by -1 radian (nanochat's transpose)."""
    cos, sin = rotary_tables(2, 2, 10000.0, torch.float64)
    x = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 1, 2)
    y = apply_rotary_emb(x, cos[:, 1:2], sin[:, 1:2]).flatten()
    torch.testing.assert_close(y, torch.tensor([math.cos(1.0), -math.sin(1.0)], dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softcap_bounds_logits(dtype):
    model = build().to(dtype)
    idx = tokens(model.config)
    assert float(model(idx).abs().max()) < SOFTCAP
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)
    logits = model(idx)
    # tanh saturates to exactly 1.0 in floating point, so the cap is reached but never exceeded.
    assert float(logits.abs().max()) <= SOFTCAP
    assert float(logits.abs().max()) > SOFTCAP - 0.01  # the cap is what bounds them here


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_future_tokens_do_not_change_earlier_logits(attn_impl):
    model = build(n_kv_head=2, attn_impl=attn_impl).double()
    idx = tokens(model.config)
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % model.config.vocab_size
    before, after = model(idx), model(changed)
    # Masked keys contribute exact zeros: measured bit-identical (0.0) in both paths; the bound
    # allows fp64 reassociation only, while a leaking mask moves these logits by > 1e-2.
    torch.testing.assert_close(after[:, :9], before[:, :9], rtol=0, atol=1e-12)
    assert float((after[:, 9:] - before[:, 9:]).abs().max()) > 1e-2


def test_loss_contract():
    model = build(n_kv_head=2)
    idx = tokens(model.config)
    targets = tokens(model.config, seed=101)
    logits = model(idx)
    assert logits.shape == (3, 16, 37)
    loss = model(idx, targets)
    assert loss.shape == ()  # nanochat returns the loss alone when targets are given
    expected = F.cross_entropy(logits.view(-1, 37), targets.view(-1))
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    ignored = targets.clone()
    ignored[:, :5] = -1  # ignore_index=-1, and the mean is over the rest
    expected = F.cross_entropy(logits[:, 5:].reshape(-1, 37), targets[:, 5:].reshape(-1))
    torch.testing.assert_close(model(idx, ignored), expected, rtol=1e-6, atol=0)
    # The last-position shortcut runs smaller matmuls (measured 7e-7 apart in fp32): compare in fp64.
    model64 = model.double()
    torch.testing.assert_close(model64(idx, full_logits=False), model64(idx)[:, -1:], rtol=0, atol=1e-12)


def test_families_describe_both_models():
    assert sorted(FAMILIES) == ["nanochat", "nanogpt"]
    nanochat = family_named("nanochat")
    config = NanochatConfig(**{**SMALL, "n_kv_head": 2})
    model = nanochat.build(config, seed=3)
    assert not model.training
    assert torch.equal(model.lm_head.weight, nanochat.build(config, seed=3).lm_head.weight)
    assert family_of(model.config) is nanochat and family_of(GPTConfig()) is family_named("nanogpt")
    assert nanochat.block_size(config) == 16 and nanochat.vocab_size(config) == 37
    assert nanochat.config_from_dict(nanochat.config_to_dict(config)) == config
    idx, targets = tokens(config), tokens(config, seed=101)
    logits, loss = nanochat.logits_and_loss(model, idx, targets)
    assert logits.shape == (3, 16, 37) and torch.equal(loss, model(idx, targets))
    assert nanochat.logits_and_loss(model, idx)[1] is None
    with pytest.raises(ValueError, match="family 'nanochat' needs a NanochatConfig, got GPTConfig"):
        nanochat.build(GPTConfig(), seed=0)
    with pytest.raises(KeyError, match="no model family 'llama'"):
        family_named("llama")


def test_golden_of_another_family_is_reported(tmp_path):
    spec = named_case("nanochat-mqa")
    for suffix in (".json", ".safetensors"):
        shutil.copy(GOLDEN_DIR / f"{spec.name}{suffix}", tmp_path)
    meta_path = tmp_path / f"{spec.name}.json"
    meta = json.loads(meta_path.read_text())
    assert meta["family"] == "nanochat"
    meta["family"] = "nanogpt"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GoldenError, match=r"different case definition: \{'family': \('nanogpt', 'nanochat'\)\}"):
        load_golden(spec, tmp_path)


def test_nanochat_seed_case_is_the_original_config():
    spec = named_case("nanochat-seed")
    assert spec.config == NanochatConfig(sequence_len=32, vocab_size=65, n_layer=2, n_head=4, n_kv_head=4, n_embd=64)
    assert (spec.batch, spec.seq_len, spec.seed, spec.family) == (64, 32, 0, "nanochat")
    _, idx, _ = build_case(spec)
    torch.manual_seed(0)
    NanochatGPT(spec.config)
    assert torch.equal(idx, torch.randint(0, 65, (64, 32)))


def test_functional_call_export_matches_eager_loss():
    """The original check: nanochat's loss through functional_call + torch.export(strict=False)."""
    model, idx, targets = build_case(named_case("nanochat-seed"))
    params = {name: p.detach() for name, p in model.named_parameters()}

    class Functional(torch.nn.Module):
        def forward(self, params, idx, targets):
            return torch.func.functional_call(model, params, (idx, targets))

    program = torch.export.export(Functional(), (params, idx, targets), strict=False)
    with torch.no_grad():
        exported = program.module()(params, idx, targets)
        eager = model(idx, targets)
    # The issue asks for 1e-5 absolute or better; measured 0.0 (same aten kernels as eager).
    difference = float((exported - eager).abs())
    assert difference <= 1e-5, f"exported loss differs from eager by {difference:.3g}"


@given(config=nanochat_configs(), data=st.data())
def test_any_valid_config_agrees_across_attention_paths_and_is_causal(config, data):
    sdpa = NanochatGPT(config).eval().requires_grad_(False).double()
    manual = NanochatGPT(replace(config, attn_impl="manual")).eval().requires_grad_(False).double()
    manual.load_state_dict(sdpa.state_dict())
    seq = data.draw(st.integers(1, config.sequence_len), label="seq")
    idx = data.draw(st.lists(st.integers(0, config.vocab_size - 1), min_size=2 * seq, max_size=2 * seq), label="ids")
    idx = torch.tensor(idx).view(2, seq)
    logits = sdpa(idx)
    # fp64 reassociation between the two paths: measured <= 2e-15 on the fixed configs above.
    torch.testing.assert_close(manual(idx), logits, rtol=0, atol=1e-12)
    cut = data.draw(st.integers(0, seq - 1), label="cut")
    changed = idx.clone()
    changed[:, cut:] = (changed[:, cut:] + 1) % config.vocab_size
    torch.testing.assert_close(sdpa(changed)[:, :cut], logits[:, :cut], rtol=0, atol=1e-12)
