"""Expected greedy text: every target's greedy continuation against the reference's, tie-aware.

The expected tokens are the reference model's own greedy tokens in float64. A target may leave
them only where the reference's top-1 and top-2 logits were within the target policy's
``greedy_margin``; decoding then continues teacher-forced from the reference, so every step is
checked (see ``gpt_conformance.harness.checks.decode``). Each comparison is recorded with its first divergence, the
margin there and both texts.

- The shipped Zen-of-Python char models run on every target of their family: nanoGPT's
  (``reference/zen``) and nanochat's (``reference/zen-nanochat``); a target that declares one
  family only skips the other's, on the record.
- GPT-2 124M (slow: with ``--slow``) runs from a local Hugging Face directory given by ``--gpt2-dir PATH`` or
  ``$GPT_CONFORMANCE_GPT2_DIR``; without one these cases skip and say so.
"""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.harness.checks.decode import reference_greedy
from gpt_conformance.harness.checks.session import assert_verdict
from gpt_conformance.reference.checkpoint import from_pretrained
from gpt_conformance.reference.tokenizers import gpt2_tokenizer
from gpt_conformance.reference.train import ZEN_DIRS, load_zen_model

# Prompts whose continuation the shipped model has memorised (the expected text itself is
# checked against the Zen of Python in tests/test_zen_model.py).
ZEN_PROMPTS = {
    "Beautiful is": len(" better than ugly."),
    "Explicit is": len(" better than implicit."),
    "Readability": len(" counts."),
    "Flat is": len(" better than nested."),
}

# The Tripy nanoGPT example's prompt first, then a few with different token statistics.
GPT2_PROMPTS = [
    "What is the answer to life, the universe, and everything?",
    "Hello, my name is",
    "The capital of France is",
    "def fibonacci(n):",
]
GPT2_NEW_TOKENS = 20


class GreedySubject:
    """A model for targets (float32), its float64 twin for the expected tokens, its tokenizer."""

    def __init__(self, name: str, model32, model64, encode, decode):
        self.name, self.model, self.model64 = name, model32, model64
        self.encode, self.decode = encode, decode
        self._references = {}

    def reference(self, prompt: str, max_new_tokens: int):
        key = (prompt, max_new_tokens)
        if key not in self._references:
            self._references[key] = reference_greedy(self.model64, self.encode(prompt), max_new_tokens)
        return self._references[key]

    def check(self, conformance, target, prompt: str, max_new_tokens: int):
        reference = self.reference(prompt, max_new_tokens)
        verdict = conformance.check_greedy(target, self.model, reference, f"{self.name}-greedy:{prompt}", self.decode)
        assert_verdict(verdict)


# The Zen model of each family, by its greedy records' name.
ZEN_MODELS = {"zen": ZEN_DIRS["nanogpt"], "zen-nanochat": ZEN_DIRS["nanochat"]}


@pytest.fixture(scope="module", params=list(ZEN_MODELS))
def zen(request) -> GreedySubject:
    model, tokenizer = load_zen_model(ZEN_MODELS[request.param])
    model64, _ = load_zen_model(ZEN_MODELS[request.param], dtype=torch.float64)
    return GreedySubject(request.param, model, model64, tokenizer.encode, tokenizer.decode)


@pytest.fixture(scope="module")
def gpt2(gpt2_dir) -> GreedySubject:
    tokenizer = gpt2_tokenizer()
    return GreedySubject("gpt2", from_pretrained(gpt2_dir), from_pretrained(gpt2_dir, dtype=torch.float64),
                         tokenizer.encode, tokenizer.decode)


@pytest.mark.parametrize("prompt", list(ZEN_PROMPTS))
def test_zen_greedy(target, prompt, conformance, zen):
    zen.check(conformance, target, prompt, ZEN_PROMPTS[prompt])


@pytest.mark.slow
@pytest.mark.parametrize("prompt", GPT2_PROMPTS)
def test_gpt2_greedy(target, prompt, conformance, gpt2):
    gpt2.check(conformance, target, prompt, GPT2_NEW_TOKENS)
