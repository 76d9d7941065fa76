"""The model a target is handed is shared: a target that changes it in place gets an ``error``
that says so, and the model is put back so that no other target's verdict depends on it."""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.harness.api import Target
from gpt_conformance.harness.checks.conformance import PreparedTargets
from gpt_conformance.harness.core.shared_model import SharedModelChanged
from gpt_conformance.reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


class Uses(Target):
    """Runs the model it is handed, after ``change`` did something to it."""

    def __init__(self, name, change=lambda m: None):
        self.name, self.change = name, change

    def prepare(self, model, config):
        self.change(model)
        return lambda idx, targets=None: model(idx, targets, full_logits=True)


def _train(m):
    m.train()


def _rebind(m):
    m.transformer.ln_f.weight = torch.nn.Parameter(torch.ones(8))


def _transpose(m):
    """The same values moved, through ``.data``: neither the version counter nor a plain sum sees it."""
    w = m.transformer.h[0].attn.c_proj.weight.data
    w.copy_(w.t().clone())


@pytest.mark.parametrize("change, phrase", [
    (lambda m: m.half(), "lm_head.weight dtype torch.float32 -> torch.float16"),
    (lambda m: m.double(), "lm_head.weight dtype torch.float32 -> torch.float64"),
    (lambda m: m.lm_head.weight.data.add_(1.0), "lm_head.weight values written in place"),
    (_transpose, "transformer.h.0.attn.c_proj.weight values written in place"),
    (_train, "mode eval -> train"),
    (_rebind, "transformer.ln_f.weight values written in place"),
])
def test_a_target_that_changes_the_shared_model_is_named_and_the_model_put_back(change, phrase):
    shared = model()
    idx = torch.randint(0, 11, (2, 8))
    expected = shared(idx, full_logits=True)[0]
    before = {name: t.clone() for name, t in shared.state_dict().items()}
    prepared = PreparedTargets()
    with pytest.raises(SharedModelChanged, match="target 'spoiler' changed the shared reference model in place "
                                                 "during prepare") as raised:
        prepared.get(Uses("spoiler", change), shared)
    assert phrase in str(raised.value)
    after = shared.state_dict()
    assert after.keys() == before.keys() and not shared.training
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=0)  # dtype and values
    assert shared.lm_head.weight is shared.transformer.wte.weight
    # Another target on the same model computes what it did before.
    honest = prepared.get(Uses("honest"), shared)
    torch.testing.assert_close(honest.runnable(idx)[0], expected, rtol=0, atol=0)
    prepared.check_unchanged(Uses("honest"), shared, "run")


def test_an_unchanged_model_passes_and_tied_weights_are_one_tensor():
    shared = model()
    prepared = PreparedTargets()
    runnable = prepared.get(Uses("honest"), shared).runnable
    runnable(torch.zeros(1, 3, dtype=torch.long))
    prepared.check_unchanged(Uses("honest"), shared, "run")
    assert shared.lm_head.weight is shared.transformer.wte.weight
