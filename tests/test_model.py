"""The reference model: config validation, input errors, fp64, attention paths, utilities."""

import math

import pytest
import torch
from gpt_conformance.reference.model import GPT, GPTConfig

TINY = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=4, n_embd=32)


def tiny_model(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY.to_dict(), **changes})).eval()


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(n_embd=30, n_head=4), "n_embd"),
        (dict(n_layer=0), "n_layer"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(block_size=0), "block_size"),
        (dict(n_head=0), "n_head"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(gelu="relu"), "gelu"),
        (dict(attn_impl="flash"), "attn_impl"),
        (dict(n_layer=2.0), "n_layer"),
    ],
)
def test_config_rejects_impossible_values_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"GPTConfig\.{field}"):
        GPTConfig(**{**TINY.to_dict(), **changes})


def test_config_round_trips_and_rejects_unknown_fields():
    assert GPTConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown GPTConfig fields: \\['n_ctx'\\]"):
        GPTConfig.from_dict({**TINY.to_dict(), "n_ctx": 3})


@pytest.mark.parametrize(
    "idx, targets, message",
    [
        (torch.zeros(4, dtype=torch.long), None, "must be 2-D"),
        (torch.zeros(2, 4), None, "integer tensor"),
        (torch.full((2, 4), 37), None, "token id 37 outside"),
        (torch.full((2, 4), -1), None, "token id -1 outside"),
        (torch.zeros(2, 17, dtype=torch.long), None, "sequence length 17 exceeds block_size 16"),
        (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), "does not match idx shape"),
        (torch.zeros(2, 4, dtype=torch.long), torch.full((2, 4), 99), "target ids must be"),
    ],
)
def test_bad_input_raises_a_clear_error(idx, targets, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(idx, targets)


def test_targets_of_minus_one_are_ignored():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 8))
    targets = torch.randint(0, 37, (2, 8))
    masked = targets.clone()
    masked[:, 4:] = -1
    logits, loss = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, 37), targets[:, :4].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_default_forward_returns_last_position_and_full_logits_on_request():
    model = tiny_model()
    idx = torch.randint(0, 37, (3, 9))
    last, loss = model(idx)
    full, _ = model(idx, full_logits=True)
    assert loss is None and last.shape == (3, 1, 37) and full.shape == (3, 9, 37)
    torch.testing.assert_close(last[:, 0], full[:, -1])


@pytest.mark.parametrize("bias", [True, False])
def test_sdpa_and_manual_attention_agree_in_fp64(bias):
    # In fp64 the two paths differ only by reassociation (~1e-16 relative); 1e-12 leaves margin.
    torch.manual_seed(1)
    sdpa = GPT(GPTConfig(**{**TINY.to_dict(), "bias": bias})).double().eval()
    with torch.no_grad():  # larger weights make attention peaked, so a mask error would show
        for p in sdpa.parameters():
            p.mul_(20)
    manual = GPT(GPTConfig(**{**TINY.to_dict(), "bias": bias, "attn_impl": "manual"})).double().eval()
    manual.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 37, (4, 16))
    a, _ = sdpa(idx, full_logits=True)
    b, _ = manual(idx, full_logits=True)
    assert float(a.detach().abs().max()) > 1.0
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_model_runs_in_float64_close_to_float32():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 16))
    l32, _ = model(idx, full_logits=True)
    l64, _ = model.double()(idx, full_logits=True)
    assert l64.dtype == torch.float64
    # fp32 vs fp64 on this 2-layer model: ~1e-8; assert_close's fp32 defaults bound it.
    torch.testing.assert_close(l32.double(), l64, rtol=1.3e-6, atol=1e-5)


def test_weight_tying_and_nanogpt_init():
    model = tiny_model(n_layer=4)
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = torch.cat([b.attn.c_proj.weight.detach().flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.detach().flatten() for b in model.transformer.h])
    # std estimates over ~4k/16k samples are within a few percent of their targets.
    assert abs(float(proj.std()) - 0.02 / math.sqrt(8)) < 0.1 * 0.02 / math.sqrt(8)
    assert abs(float(fc.std()) - 0.02) < 0.05 * 0.02


def test_num_params_excludes_position_embeddings():
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    assert model.get_num_params(non_embedding=False) == total
    assert model.get_num_params() == total - 16 * 32


def test_crop_block_size():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 8))
    before, _ = model(idx, full_logits=True)
    model.crop_block_size(8)
    after, _ = model(idx, full_logits=True)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size must be in"):
        model.crop_block_size(9)


def test_configure_optimizers_splits_decay_groups():
    model = tiny_model(bias=True)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.get_num_params(False)


def test_flop_count_and_mfu():
    model = tiny_model()
    n = model.get_num_params()
    assert model.flops_per_token(16, training=True) == 6 * n + 12 * 2 * 4 * 8 * 16
    assert model.flops_per_token(16, training=False) == 2 * n + 4 * 2 * 4 * 8 * 16
    flops = model.flops_per_token(16) * 16 * 4
    assert model.estimate_mfu(4, dt=2.0, peak_flops=flops) == pytest.approx(0.5)


def test_greedy_generate_takes_argmax_and_crops_context():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 12))
    out = model.generate(idx, max_new_tokens=8, greedy=True)
    assert out.shape == (2, 20) and torch.equal(out[:, :12], idx)
    for step in range(8):
        context = out[:, : 12 + step][:, -16:]
        logits, _ = model(context)
        assert torch.equal(out[:, 12 + step], logits[:, -1].argmax(-1))


def test_sampling_with_top_k_only_picks_top_tokens():
    model = tiny_model()
    idx = torch.randint(0, 37, (1, 4))
    torch.manual_seed(3)
    out = model.generate(idx, max_new_tokens=1, temperature=1.0, top_k=1)
    logits, _ = model(idx)
    assert out[0, -1] == logits[0, -1].argmax()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 1, temperature=0.0)
