"""The greedy decode loop (dynamic and static-window targets) and the tie-aware comparison."""

import copy

import pytest
import torch
from gpt_conformance.harness.api import Capabilities
from gpt_conformance.harness.checks.decode import (
    ReferenceGreedy,
    StaticWindow,
    choose_window,
    compare_greedy,
    greedy_decode,
    greedy_verdict,
    reference_greedy,
    static_window_input,
)
from gpt_conformance.harness.core.policies import get_policy
from gpt_conformance.reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def full_forward(model):
    def forward(idx):
        with torch.no_grad():
            return model(idx, full_logits=True)[0]
    return forward


class FakeStaticTarget:
    """A Neuron-style runnable: it accepts exactly one (batch, seq_len) shape and nothing else."""

    def __init__(self, model, batch, seq_len):
        self.capabilities = Capabilities(dynamic_shapes=False, static_shapes=((batch, seq_len),))
        self.model, self.shape, self.calls = model, (batch, seq_len), 0

    def __call__(self, idx):
        assert tuple(idx.shape) == self.shape, f"static target got {tuple(idx.shape)}, built for {self.shape}"
        self.calls += 1
        return full_forward(self.model)(idx)


def reference_tokens(model, prompt, n):
    return model.generate(torch.tensor([prompt]), n, greedy=True)[0, len(prompt):].tolist()


def test_choose_window():
    assert choose_window(Capabilities(dynamic_shapes=True), 5, 8) is None
    static = Capabilities(dynamic_shapes=False, static_shapes=((4, 8), (1, 4), (1, 8), (1, 16)))
    assert choose_window(static, 3, 8) == StaticWindow(1, 4)
    assert choose_window(static, 6, 8) == StaticWindow(1, 8)
    # Nothing holds 20 tokens: the longest bucket the model can take (16 > block_size 8 cannot).
    assert choose_window(static, 20, 8) == StaticWindow(1, 8)
    with pytest.raises(ValueError, match="no static_shapes bucket"):
        choose_window(Capabilities(dynamic_shapes=False, static_shapes=((1, 16),)), 3, 8)


def test_static_window_right_pads_and_crops_from_the_left():
    idx, last = static_window_input([5, 6, 7], StaticWindow(2, 5), pad_id=9)
    assert idx.tolist() == [[5, 6, 7, 9, 9], [9, 9, 9, 9, 9]] and last == 2
    idx, last = static_window_input(list(range(7)), StaticWindow(1, 5))
    assert idx.tolist() == [[2, 3, 4, 5, 6]] and last == 4
    with pytest.raises(ValueError, match="empty"):
        static_window_input([], StaticWindow(1, 5))
    with pytest.raises(ValueError, match="batch >= 1"):
        StaticWindow(0, 5)


def test_dynamic_decode_matches_reference_generate_past_block_size(model):
    prompt = [1, 2, 3]
    # 12 new tokens: the sequence outgrows block_size 8, so both crop from the left.
    assert greedy_decode(full_forward(model), prompt, 12, CONFIG.block_size) == reference_tokens(model, prompt, 12)


@pytest.mark.parametrize("pad_id", [0, 10])
def test_static_decode_matches_reference_generate(model, pad_id):
    target = FakeStaticTarget(model, batch=2, seq_len=CONFIG.block_size)
    window = choose_window(target.capabilities, 3 + 12, CONFIG.block_size)
    tokens = greedy_decode(target, [1, 2, 3], 12, CONFIG.block_size, window, pad_id)
    assert tokens == reference_tokens(model, [1, 2, 3], 12)
    assert target.calls == 12


def test_static_window_shorter_than_block_size_matches_a_cropped_reference(model):
    short = GPT(CONFIG).eval()
    short.load_state_dict(model.state_dict())
    short.crop_block_size(5)
    target = FakeStaticTarget(model, batch=1, seq_len=5)
    tokens = greedy_decode(target, [4, 2], 9, CONFIG.block_size, StaticWindow(1, 5), pad_id=3)
    assert tokens == reference_tokens(short, [4, 2], 9)


def test_left_padding_without_a_mask_changes_the_text(model):
    """The Neuron sample's bug: pads in front shift every position and are attended to."""
    prompt, n = [1, 2, 3], 5
    expected = reference_tokens(model, prompt, n)
    seq = list(prompt)
    for _ in range(n):
        padded = torch.tensor([[0] * (CONFIG.block_size - len(seq)) + seq])
        seq.append(int(full_forward(model)(padded)[0, -1].argmax()))
    assert seq[len(prompt):] != expected


def test_compare_identical_target_passes(model):
    reference = reference_greedy(copy.deepcopy(model).double(), [1, 2, 3], 5)
    comparison = compare_greedy(full_forward(model), reference, tolerance=1e-3, block_size=CONFIG.block_size)
    assert comparison.passed and comparison.divergences == [] and comparison.tokens_checked == 5
    assert comparison.target_tokens == reference.tokens
    assert greedy_verdict(comparison, get_policy("fp32")).passed


def test_reference_greedy_refuses_sequences_longer_than_block_size(model):
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        reference_greedy(model, [1, 2, 3, 4, 5], 5)


# A hand-made reference over a 4-token vocabulary, one row of logits per step, so that the
# margins are known exactly. Step 1 is a near-tie between tokens 2 and 3 (margin 1e-4).
HAND_LOGITS = torch.tensor([
    [0.0, 5.0, 1.0, 0.0],      # step 0 -> 1, margin 4
    [0.0, 0.0, 2.0, 1.9999],   # step 1 -> 2, margin 1e-4
    [3.0, 0.0, 0.0, 1.0],      # step 2 -> 0, margin 2
    [0.0, 0.0, 0.0, 7.0],      # step 3 -> 3, margin 7
], dtype=torch.float64)
HAND = ReferenceGreedy(prompt=[0], tokens=[1, 2, 0, 3], logits=HAND_LOGITS)


def scripted_forward(choices):
    """A target whose next token after a sequence is ``choices(sequence)``."""
    def forward(idx):
        seq = idx[0].tolist()
        logits = torch.zeros(1, len(seq), 4)
        logits[0, -1, choices(seq)] = 1.0
        return logits
    return forward


def test_divergence_at_a_near_tie_is_accepted_and_later_steps_are_still_checked():
    # The target picks 3 at step 1 (a tie in the reference), then follows the reference.
    def choices(seq):
        step = len(seq) - 1
        return [1, 3, 0, 3][step]
    comparison = compare_greedy(scripted_forward(choices), HAND, tolerance=1e-3, block_size=16)
    assert comparison.target_tokens == [1, 3, 0, 3]
    assert [(d.step, d.target_token, d.accepted) for d in comparison.divergences] == [(1, 3, True)]
    assert comparison.passed
    summary = comparison.summary(decode=lambda ids: "".join("abcd"[i] for i in ids))
    assert summary["first_divergence"] == 1 and summary["accepted"] is True
    assert summary["margin_at_first_divergence"] == pytest.approx(1e-4)
    assert summary["reference_text"] == "bcad" and summary["target_text"] == "bdad"


def test_divergence_where_the_reference_was_decided_is_rejected():
    def choices(seq):
        return [1, 2, 1, 3][len(seq) - 1]  # step 2: 1 instead of 0, margin 2
    comparison = compare_greedy(scripted_forward(choices), HAND, tolerance=1e-3, block_size=16)
    assert [(d.step, d.accepted) for d in comparison.divergences] == [(2, False)]
    assert comparison.divergences[0].margin == pytest.approx(2.0)
    verdict = greedy_verdict(comparison, get_policy("fp32"))
    assert not verdict.passed and "step 2" in verdict.message and "REJECTED" in verdict.message


def test_teacher_forcing_checks_every_step_after_a_divergence():
    # After its own (wrong) token the target would go on wrongly; teacher forcing feeds it the
    # reference's tokens instead, so a second, independent error at step 3 is still found.
    def choices(seq):
        if seq[1:] == [1, 2, 0]:
            return 1  # step 3 given the reference's prefix: wrong (reference says 3)
        return {0: 1, 1: 2, 2: 1}.get(len(seq) - 1, 2)
    comparison = compare_greedy(scripted_forward(choices), HAND, tolerance=1e-3, block_size=16)
    assert [(d.step, d.target_token) for d in comparison.divergences] == [(2, 1), (3, 1)]
    assert comparison.target_tokens == [1, 2, 1, 2]


def test_a_tie_accepts_only_the_tied_token():
    # Margin at step 1 is 1e-4, but the target chose token 0, 2 below the top: not a tie.
    def choices(seq):
        return [1, 0, 0, 3][len(seq) - 1]
    comparison = compare_greedy(scripted_forward(choices), HAND, tolerance=1e-3, block_size=16)
    assert [(d.step, d.accepted) for d in comparison.divergences] == [(1, False)]
    assert comparison.divergences[0].gap == pytest.approx(2.0)


def test_non_finite_logits_stop_the_decode():
    from gpt_conformance.harness.checks.decode import NonFiniteLogitsError

    def forward(idx):
        logits = torch.zeros(1, idx.size(1), 4)
        logits[0, -1, 2] = float("nan")
        return logits
    with pytest.raises(NonFiniteLogitsError, match="1 non-finite logit"):
        greedy_decode(forward, [0], 3, block_size=8)
