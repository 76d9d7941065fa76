"""The reference decoder computes what the full forward pass computes, at every step, both families."""

import pytest
import torch
from gpt_conformance.reference.cases import ALL_CASES, build_case
from gpt_conformance.reference.decode import ReferenceDecoder, pad_ragged
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.model import GPT, GPTConfig

FAST = [s for s in ALL_CASES if not s.slow]
# Measured (torch 2.13, CPU) on these cases: the cached fp64 logits are at most 8.1 fp64 eps of
# max|logit| off the full forward pass's (masked softmax over the whole cache, another summation
# order than SDPA's causal kernel). 32 eps leaves room for another BLAS; a position, slot or mask
# bug moves logits by O(1e-3) of their range or more.
FP64_ULPS = 32


def teacher_forced(decoder: ReferenceDecoder, idx: torch.Tensor, prompt: int) -> torch.Tensor:
    """Logits [B, T, V]: prefill ``idx[:, :prompt]``, then one step per remaining token."""
    logits, state = decoder.prefill(idx[:, :prompt])
    out = [logits]
    for t in range(prompt, idx.size(1)):
        step, state = decoder.step(state, idx[:, t:t + 1])
        out.append(step)
    return torch.cat(out, dim=1)


def case_inputs(spec, rows=3):
    model, idx, _ = build_case(spec)
    return model, idx[:rows]


@pytest.mark.parametrize("spec", FAST, ids=lambda s: s.name)
def test_fp64_cached_logits_equal_the_full_forward_at_every_step(spec):
    model, idx = case_inputs(spec)
    model = model.double()
    with torch.no_grad():
        full, _ = family_of(model.config).logits_and_loss(model, idx)
    got = teacher_forced(ReferenceDecoder(model), idx, max(1, idx.size(1) // 2))
    scale = float(full.detach().abs().max())
    per_step = (got - full).abs().amax(dim=(0, 2)) / scale
    assert float(per_step.max()) <= FP64_ULPS * torch.finfo(torch.float64).eps, per_step


@pytest.mark.parametrize("spec", [s for s in FAST if s.name in ("scaled", "nanochat-gqa")], ids=lambda s: s.name)
def test_fp32_decoder_error_is_the_full_forward_s(spec):
    """In fp32 the decoder is off the fp64 truth by about what the fp32 full forward pass is:
    measured 0.5x..1.6x of its max_abs."""
    model, idx = case_inputs(spec)
    family = family_of(model.config)
    truth, _ = family.logits_and_loss(model.double(), idx)
    model = model.float()
    full32, _ = family.logits_and_loss(model, idx)
    got = teacher_forced(ReferenceDecoder(model), idx, idx.size(1) // 2)
    full_error = float((full32.double() - truth).abs().max())
    assert float((got.double() - truth).abs().max()) <= 4 * full_error


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("name", ["scaled", "nanochat-gqa"])
def test_a_ragged_batch_decodes_each_row_as_alone(name, padding):
    spec = next(s for s in FAST if s.name == name)
    model, idx = case_inputs(spec)
    model = model.double()
    full, _ = family_of(model.config).logits_and_loss(model, idx)
    prompt = idx.size(1) // 2
    lengths = torch.tensor([prompt, prompt - 3, 1])
    padded, lengths = pad_ragged([idx[b, :n] for b, n in enumerate(lengths.tolist())], padding)
    decoder = ReferenceDecoder(model, padding=padding)
    logits, state = decoder.prefill(padded, lengths)
    for step in range(3):
        tokens = torch.stack([idx[b, n + step] for b, n in enumerate(lengths.tolist())])[:, None]
        logits, state = decoder.step(state, tokens)
        expected = torch.stack([full[b, n + step] for b, n in enumerate(lengths.tolist())])
        assert torch.allclose(logits[:, 0], expected, rtol=0, atol=1e-12), step


def test_a_reused_state_decodes_as_a_fresh_one():
    spec = next(s for s in FAST if s.name == "scaled")
    model, idx = case_inputs(spec)
    decoder = ReferenceDecoder(model.double())
    _, old = decoder.prefill(idx[:, :20])
    _, old = decoder.step(old, idx[:, 20:21])
    fresh = teacher_forced(decoder, idx[:, :12], 6)
    logits, state = decoder.prefill(idx[:, :6], state=old)
    reused = [logits]
    for t in range(6, 12):
        step, state = decoder.step(state, idx[:, t:t + 1])
        reused.append(step)
    assert torch.equal(torch.cat(reused, dim=1), fresh)


def test_decoding_fills_the_whole_cache_then_refuses():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)).double().eval()
    idx = torch.randint(0, 11, (2, 8))
    full, _ = model(idx, full_logits=True)
    decoder = ReferenceDecoder(model)
    got = teacher_forced(decoder, idx, 1)
    assert torch.allclose(got, full, rtol=0, atol=1e-14)
    _, state = decoder.prefill(idx)
    with pytest.raises(ValueError, match="slots are full"):
        decoder.step(state, idx[:, :1])
    with pytest.raises(ValueError, match="cache_len must be in"):
        ReferenceDecoder(model, cache_len=9)
    with pytest.raises(ValueError, match="exceeds the cache"):
        ReferenceDecoder(model, cache_len=4).prefill(idx[:, :5])
