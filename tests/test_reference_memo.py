"""The reference memo (``harness/checks/reference_memo.py``): the fp64 truth of a model on an input,
and a low-precision target's arithmetic reference, are computed once for every check that asks,
and any change to the weights, the dtype or the input is a different entry."""

import torch
from gpt_conformance.harness.checks.reference_memo import ReferenceMemo, nbytes
from gpt_conformance.reference.goldens import reference_outputs
from gpt_conformance.reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


def built(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def test_the_same_model_and_input_built_twice_is_computed_once_and_equals_reference_outputs():
    memo = ReferenceMemo()
    idx, targets = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 5))
    first = memo.outputs(built(), idx, targets)
    again = memo.outputs(built(), idx.clone(), targets.clone())  # another target's copy of the same example
    assert memo.computed == 1 and again is first
    for got, expected in zip(first, reference_outputs(built(), idx, targets), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_one_changed_weight_bit_or_input_token_is_a_different_entry():
    memo = ReferenceMemo()
    idx = torch.randint(0, 11, (2, 5))
    model = built()
    memo.outputs(model, idx, None)
    changed = built()
    with torch.no_grad():
        weight = changed.lm_head.weight.view(-1)
        weight[0] = torch.nextafter(weight[0], torch.tensor(float("inf")))
    memo.outputs(changed, idx, None)
    other_idx = idx.clone()
    other_idx[0, 0] = (other_idx[0, 0] + 1) % 11
    memo.outputs(model, other_idx, None)
    memo.outputs(model, idx, idx)  # with targets
    assert memo.computed == 4
    assert memo.outputs(built(1), idx, None) is not memo.outputs(model, idx, None)
    assert memo.computed == 5


def test_past_its_byte_budget_the_least_recently_used_entry_goes_first():
    model = built()
    a, b, c = (torch.full((1, 3), token) for token in (1, 2, 3))
    one = nbytes(ReferenceMemo().outputs(model, a, None))
    memo = ReferenceMemo(max_bytes=2 * one)
    memo.outputs(model, a, None)
    memo.outputs(model, b, None)
    memo.outputs(model, a, None)  # a is now the most recent
    memo.outputs(model, c, None)  # evicts b
    assert memo.computed == 3 and memo.kept_bytes == 2 * one
    memo.outputs(model, a, None)
    assert memo.computed == 3
    memo.outputs(model, b, None)
    assert memo.computed == 4


def test_an_output_larger_than_the_budget_is_returned_but_not_kept():
    model, idx = built(), torch.randint(0, 11, (2, 5))
    memo = ReferenceMemo(max_bytes=1)
    assert memo.outputs(model, idx, None) is not memo.outputs(model, idx, None)
    assert (memo.computed, memo.kept_bytes) == (2, 0)


def test_the_arithmetic_reference_is_computed_once_per_weights_dtype_and_input(monkeypatch):
    from gpt_conformance.harness.checks import precision

    memo = ReferenceMemo()
    monkeypatch.setattr(precision, "REFERENCES", memo)
    model, idx = built(), torch.randint(0, 11, (2, 5))
    weights = {"transformer.h.0.mlp.c_fc": model.transformer.h[0].mlp.c_fc.weight.detach().half().float()}
    first = precision.arithmetic_reference(model, weights, torch.float16, idx, None)
    assert memo.computed == 2  # the fp64 and the fp16 forward
    again = precision.arithmetic_reference(built(), dict(weights), torch.float16, idx.clone(), None)
    assert memo.computed == 2 and again.logits is first.logits and again.logits64 is first.logits64
    precision.arithmetic_reference(model, weights, torch.bfloat16, idx, None)
    assert memo.computed == 3  # the fp64 forward is shared between dtypes
    changed = {name: w.clone() for name, w in weights.items()}
    changed["transformer.h.0.mlp.c_fc"][0, 0] += 1
    precision.arithmetic_reference(model, changed, torch.float16, idx, None)
    precision.arithmetic_reference(model, {}, torch.float16, idx, None)
    assert memo.computed == 7
    fresh = precision.fake_quant_model(model, weights, torch.float16)
    torch.testing.assert_close(first.logits, precision._forward(fresh, idx, None)[0], rtol=0, atol=0)
