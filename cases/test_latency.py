"""Latency of every target: forward latency at named shapes, greedy generation throughput, and, for
targets that decode, prefill latency and tokens/s through the KV cache (one prefill + steps).

Each case times one target with pytest-benchmark (warm-up excluded) and the eager baseline next to
it, and records the ratio to eager with its IQR, MFU and the time to first result. No assertion
on a time: gate regressions with ``--benchmark-compare-fail`` against a saved baseline (README,
"Latency"). Under xdist, where pytest-benchmark disables itself, each case runs alone and the
harness times it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pytest
import torch
from gpt_conformance.harness.checks.decode import choose_window, greedy_decode, reference_greedy
from gpt_conformance.harness.checks.decode_checks import has_decoder
from gpt_conformance.harness.checks.latency import LatencyRun, forward_flops
from gpt_conformance.harness.checks.precision import claimed_model
from gpt_conformance.harness.checks.session import assert_verdict
from gpt_conformance.harness.core.targets import applies_to
from gpt_conformance.reference.cases import GPT2_SMALL_CONFIG, SEED_CONFIG
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.reference.train import load_zen_model
from gpt_conformance.targets.eager import EagerTarget

# Under xdist --dist loadgroup the latency cases run one after another on one worker, alone: the
# other workers' tests are waited for once (harness/pytest_plugin/quiet.py).
pytestmark = [pytest.mark.gpt_conformance, pytest.mark.latency,  # harness/pytest_plugin/markers.py
              pytest.mark.xdist_group("latency")]

# The tiny model is the shipped Zen-of-Python char model (reference/zen/: vocab 45, 2 layers of
# width 64, block 64); the other shapes are seeded random models of the named architectures.
ZEN = "zen"


@dataclass(frozen=True)
class Shape:
    name: str
    config: GPTConfig | str  # a GPTConfig, or ZEN for the shipped tiny model
    batch: int
    seq_len: int
    seed: int = 0

    def model(self) -> GPT:
        if self.config == ZEN:
            return load_zen_model()[0]
        torch.manual_seed(self.seed)
        return GPT(self.config).eval()


FORWARD_SHAPES = [
    pytest.param(Shape("seed-64x32", SEED_CONFIG, 64, 32), id="seed-64x32"),
    pytest.param(Shape("tiny-1x64", ZEN, 1, 64, seed=1), id="tiny-1x64"),
    pytest.param(Shape("gpt2-small-1x128", GPT2_SMALL_CONFIG, 1, 128, seed=2), id="gpt2-small-1x128",
                 marks=[pytest.mark.slow, pytest.mark.nightly]),
]
# Generation starts from a prompt of this many tokens and appends the profile's new_tokens.
GENERATE_SHAPES = [
    pytest.param(Shape("tiny-generate-1x16", ZEN, 1, 16, seed=3), id="tiny-1x16"),
    pytest.param(Shape("gpt2-small-generate-1x16", GPT2_SMALL_CONFIG, 1, 16, seed=4), id="gpt2-small-1x16",
                 marks=[pytest.mark.slow, pytest.mark.nightly]),
]


def build(shape: Shape) -> tuple[GPT, torch.Tensor]:
    model = shape.model()
    generator = torch.Generator().manual_seed(shape.seed)
    idx = torch.randint(0, model.config.vocab_size, (shape.batch, shape.seq_len), generator=generator)
    return model, idx


def eager_baseline(target_registry) -> EagerTarget:
    """The registered eager target, or a fresh one when a run registered none."""
    return target_registry.get("eager") if "eager" in target_registry else EagerTarget()


def greedy_generate(runnable, prompt: torch.Tensor, new_tokens: int, capabilities, block_size: int) -> list[int]:
    """The harness's one greedy loop (harness.checks.decode) through a target's runnable, batch 1."""
    tokens = prompt[0].tolist()
    window = choose_window(capabilities, len(tokens) + new_tokens - 1, block_size)
    return greedy_decode(lambda idx: runnable(idx)[0], tokens, new_tokens, block_size, window)


def greedy_generate_flops(model: GPT, prompt_len: int, new_tokens: int) -> float:
    """Forward-only FLOPs of ``greedy_generate`` on a dynamic target: one forward over the whole
    (cropped) sequence per step, no KV cache."""
    block = model.config.block_size
    return sum(forward_flops(model, 1, min(prompt_len + step, block)) for step in range(new_tokens))


@pytest.mark.parametrize("shape", FORWARD_SHAPES)
def test_forward_latency(target, shape, benchmark, conformance, latency_settings, target_registry):
    run = LatencyRun(conformance, target, eager_baseline(target_registry), benchmark, latency_settings,
                     check="latency-forward", case_id=shape.name)
    model, idx = build(shape)
    run.require_runnable(model.config, shape.batch, shape.seq_len)
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
    model, prompt = build(shape)
    new_tokens = min(profile.new_tokens, model.config.block_size - shape.seq_len)
    run.require_runnable(model.config, shape.batch, shape.seq_len + new_tokens)
    first = run.first_result(model, prompt, shape.seed)
    target_runnable = conformance.prepare(target, model, shape.name).runnable
    baseline_runnable = run.baseline_runnable(model)
    block = model.config.block_size
    target_s, baseline_s, tokens = run.measure(
        lambda: greedy_generate(target_runnable, prompt, new_tokens, target.capabilities, block),
        lambda: greedy_generate(baseline_runnable, prompt, new_tokens, run.baseline.capabilities, block),
        profile.generate_rounds, profile.generate_warmup)
    with torch.no_grad():
        eager_tokens = greedy_generate(baseline_runnable, prompt, new_tokens, run.baseline.capabilities, block)
    record = run.record(model, tuple(prompt.shape), shape.seed, target_s, baseline_s, profile.generate_warmup,
                        greedy_generate_flops(model, shape.seq_len, new_tokens), first,
                        tokens_per_call=shape.batch * new_tokens,
                        extra={"new_tokens": new_tokens, "tokens_match_eager": tokens == eager_tokens,
                               "decode": "harness.checks.decode.greedy_decode: whole sequence each step, no KV cache",
                               "first_result": "prepare + one forward on the prompt (time to first token)"})
    assert record["latency"]["new_tokens"] == new_tokens > 0
    # What was generated is judged as the greedy check judges decoding: tie-aware, against the fp64
    # greedy tokens of what the target claims to compute (a quantized target's own weights).
    reference = reference_greedy(claimed_model(target, target_runnable, model, torch.float64), prompt[0].tolist(),
                                 new_tokens)
    assert_verdict(conformance.check_greedy(target, model, reference, shape.name))


# The decode path (docs/decode.md): a prompt of this many tokens prefilled into the target's cache,
# then the profile's new_tokens steps, on the shipped tiny model. Only targets that declare a
# decoder get these cases; cases/test_decode_path.py says once per other target that it has none.
DECODE_SHAPE = Shape("tiny-decode-1x16", ZEN, 1, 16, seed=5)


def decode_tokens(decoder, prompt: torch.Tensor, new_tokens: int) -> int:
    """One prefill, then ``new_tokens`` steps feeding back the greedy token: the serving loop."""
    logits, state = decoder.prefill(prompt)
    for _ in range(new_tokens):
        logits, state = decoder.step(state, logits[:, -1:].argmax(-1))
    return new_tokens


@applies_to(has_decoder)
def test_prefill_latency(target, benchmark, conformance, latency_settings, target_registry):
    shape = DECODE_SHAPE
    run = LatencyRun(conformance, target, eager_baseline(target_registry), benchmark, latency_settings,
                     check="latency-prefill", case_id=shape.name)
    model, prompt = build(shape)
    run.require_runnable(model.config, shape.batch, shape.seq_len)
    first = run.first_result(model, prompt, shape.seed)
    decoder = conformance.prepare(target, model, shape.name).runnable
    baseline = run.baseline_runnable(model)
    profile = latency_settings.profile
    target_s, baseline_s, _ = run.measure(lambda: decoder.prefill(prompt), lambda: baseline.prefill(prompt),
                                          profile.forward_rounds, profile.forward_warmup)
    run.record(model, tuple(prompt.shape), shape.seed, target_s, baseline_s, profile.forward_warmup,
               forward_flops(model, shape.batch, shape.seq_len), first, tokens_per_call=shape.batch * shape.seq_len,
               extra={"first_result": "prepare + one forward on the prompt", "tokens": "prompt tokens prefilled"})


@applies_to(has_decoder)
def test_decode_step_latency(target, benchmark, conformance, latency_settings, target_registry):
    shape = DECODE_SHAPE
    run = LatencyRun(conformance, target, eager_baseline(target_registry), benchmark, latency_settings,
                     check="latency-decode", case_id=shape.name)
    model, prompt = build(shape)
    profile = latency_settings.profile
    new_tokens = min(profile.new_tokens, model.config.block_size - shape.seq_len)
    run.require_runnable(model.config, shape.batch, shape.seq_len + new_tokens)
    first = run.first_result(model, prompt, shape.seed)
    decoder = conformance.prepare(target, model, shape.name).runnable
    baseline = run.baseline_runnable(model)
    target_s, baseline_s, _ = run.measure(lambda: decode_tokens(decoder, prompt, new_tokens),
                                          lambda: decode_tokens(baseline, prompt, new_tokens),
                                          profile.generate_rounds, profile.generate_warmup)
    flops = forward_flops(model, 1, shape.seq_len) + sum(
        model.flops_per_token(shape.seq_len + i + 1, training=False) for i in range(new_tokens))
    run.record(model, tuple(prompt.shape), shape.seed, target_s, baseline_s, profile.generate_warmup, flops, first,
               tokens_per_call=shape.batch * new_tokens,
               extra={"new_tokens": new_tokens,
                      "decode": "one prefill, then one step per token over the target's KV cache",
                      # The prefill included: latency-prefill times it alone.
                      "per_token_s": statistics.median(target_s) / new_tokens})
