"""Latency of every target: forward latency at named shapes and greedy generation throughput.

Each case times one target with pytest-benchmark (warm-up excluded) and the eager baseline next to
it, and records the ratio to eager with its IQR, MFU and the time to first result. No assertion
on a time: gate regressions with ``--benchmark-compare-fail`` against a saved baseline (README,
"Latency"). Under xdist pytest-benchmark disables itself, and these cases skip saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from harness.latency import LatencyRun, forward_flops
from reference.cases import GPT2_SMALL_CONFIG, SEED_CONFIG
from reference.model import GPT, GPTConfig
from targets.eager import EagerTarget

pytestmark = pytest.mark.latency

# The size of the tiny char-level model (issue 4), which is not on this branch yet: replace with its
# shipped config when it lands. vocab 64 (a char vocabulary), 4 layers of width 64, block 64.
TINY_CONFIG = GPTConfig(block_size=64, vocab_size=64, n_layer=4, n_head=4, n_embd=64)


@dataclass(frozen=True)
class Shape:
    name: str
    config: GPTConfig
    batch: int
    seq_len: int
    seed: int = 0


FORWARD_SHAPES = [
    pytest.param(Shape("seed-64x32", SEED_CONFIG, 64, 32), id="seed-64x32"),
    pytest.param(Shape("tiny-1x64", TINY_CONFIG, 1, 64, seed=1), id="tiny-1x64"),
    pytest.param(Shape("gpt2-small-1x128", GPT2_SMALL_CONFIG, 1, 128, seed=2), id="gpt2-small-1x128",
                 marks=pytest.mark.slow),
]
# Generation starts from a prompt of this many tokens and appends the profile's new_tokens.
GENERATE_SHAPES = [
    pytest.param(Shape("tiny-generate-1x16", TINY_CONFIG, 1, 16, seed=3), id="tiny-1x16"),
    pytest.param(Shape("gpt2-small-generate-1x16", GPT2_SMALL_CONFIG, 1, 16, seed=4), id="gpt2-small-1x16",
                 marks=pytest.mark.slow),
]


def build(shape: Shape) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(shape.seed)
    model = GPT(shape.config).eval()
    return model, torch.randint(0, shape.config.vocab_size, (shape.batch, shape.seq_len))


def eager_baseline(target_registry) -> EagerTarget:
    """The registered eager target, or a fresh one when a run registered none."""
    return target_registry.get("eager") if "eager" in target_registry else EagerTarget()


# The decode loop the generation case times; swap for harness/decode.py's once it lands.
def greedy_generate(runnable, idx: torch.Tensor, new_tokens: int, block_size: int) -> torch.Tensor:
    """The reference's greedy loop through a target's runnable: the whole (cropped) sequence each
    step, no KV cache, argmax of the last position (ties to the lowest id)."""
    for _ in range(new_tokens):
        logits, _ = runnable(idx[:, -block_size:])
        idx = torch.cat((idx, logits[:, -1, :].argmax(dim=-1, keepdim=True)), dim=1)
    return idx


def greedy_generate_flops(model: GPT, batch: int, prompt_len: int, new_tokens: int) -> float:
    """Forward-only FLOPs that ``greedy_generate`` executes: one forward over the sequence per step."""
    block = model.config.block_size
    return sum(forward_flops(model, batch, min(prompt_len + step, block)) for step in range(new_tokens))


@pytest.mark.parametrize("shape", FORWARD_SHAPES)
def test_forward_latency(target, shape, benchmark, conformance, latency_settings, target_registry):
    run = LatencyRun(conformance, target, eager_baseline(target_registry), benchmark, latency_settings,
                     check="latency-forward", case_id=shape.name)
    run.require_runnable(shape.config, shape.batch, shape.seq_len)
    model, idx = build(shape)
    first = run.first_result(model, idx, shape.seed)
    target_runnable = conformance.prepare(target, model, shape.name).runnable
    baseline_runnable = run.baseline_runnable(model)
    profile = latency_settings.profile
    target_s, baseline_s, _ = run.measure(lambda: target_runnable(idx), lambda: baseline_runnable(idx),
                                          profile.forward_rounds, profile.forward_warmup)
    record = run.record(model, tuple(idx.shape), shape.seed, target_s, baseline_s, profile.forward_warmup,
                        forward_flops(model, shape.batch, shape.seq_len), first,
                        extra={"first_result": "prepare + one forward on this input"})
    assert record["latency"]["rounds"] == profile.forward_rounds


@pytest.mark.parametrize("shape", GENERATE_SHAPES)
def test_generation_throughput(target, shape, benchmark, conformance, latency_settings, target_registry):
    run = LatencyRun(conformance, target, eager_baseline(target_registry), benchmark, latency_settings,
                     check="latency-generate", case_id=shape.name)
    profile = latency_settings.profile
    new_tokens = min(profile.new_tokens, shape.config.block_size - shape.seq_len)
    run.require_runnable(shape.config, shape.batch, shape.seq_len + new_tokens)
    model, prompt = build(shape)
    first = run.first_result(model, prompt, shape.seed)
    target_runnable = conformance.prepare(target, model, shape.name).runnable
    baseline_runnable = run.baseline_runnable(model)
    block = shape.config.block_size
    target_s, baseline_s, tokens = run.measure(
        lambda: greedy_generate(target_runnable, prompt, new_tokens, block),
        lambda: greedy_generate(baseline_runnable, prompt, new_tokens, block),
        profile.generate_rounds, profile.generate_warmup)
    with torch.no_grad():
        eager_tokens = greedy_generate(baseline_runnable, prompt, new_tokens, block)
    record = run.record(model, tuple(prompt.shape), shape.seed, target_s, baseline_s, profile.generate_warmup,
                        greedy_generate_flops(model, shape.batch, shape.seq_len, new_tokens), first,
                        tokens_per_call=shape.batch * new_tokens,
                        extra={"new_tokens": new_tokens, "tokens_match_eager": bool(torch.equal(tokens, eager_tokens)),
                               "decode": "greedy, whole sequence each step, no KV cache",
                               "first_result": "prepare + one forward on the prompt (time to first token)"})
    assert record["latency"]["new_tokens"] == new_tokens > 0
