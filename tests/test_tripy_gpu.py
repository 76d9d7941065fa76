"""GPU checks of the Tripy runner itself: one engine per model, reused across input shapes, and
logits that come back as torch tensors in the model dtype. They skip with the probe's reason
where nvtripy's runtime or a suitable GPU is missing; the numbers are judged by ``cases/``."""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.targets import tripy
from gpt_conformance.targets.tripy_layout import TORCH_DTYPES

from tests.test_tripy import TINY, case, quantize_model

pytestmark = pytest.mark.gpu


def runner_for(target: tripy.TripyTarget, model):
    availability = target.probe()
    if not availability:
        pytest.skip(f"{target.name}: {availability.reason}")
    return target.prepare(model, model.config)


@pytest.mark.parametrize("mode", tripy.MODES, ids=lambda m: m.name)
def test_one_engine_serves_every_shape(mode):
    target = tripy.TripyTarget(mode, quantizer=lambda model, m: quantize_model(model, m.bits, 8 if m.bits == 4 else None))
    model, _ = case(TINY)
    run = runner_for(target, model)
    shapes = [(4, 9), (1, 1), (7, TINY.block_size), (4, 9)]
    for batch, seq in shapes:
        logits, loss = run(torch.randint(0, TINY.vocab_size, (batch, seq)), None)
        assert logits.shape == (batch, seq, TINY.vocab_size) and logits.device.type == "cpu"
        assert logits.dtype == mode.torch_dtype and loss is None
        assert bool(torch.isfinite(logits).all())
    assert run.compile_count == 1
    assert run.bounds.batch == (1, 4, tripy.MAX_BATCH) and run.bounds.seq == (1, 9, TINY.block_size)


@pytest.mark.parametrize("mode", tripy.MODES, ids=lambda m: m.name)
def test_decode_engines_compile_once_and_keep_the_cache_on_the_gpu(mode):
    """One prefill engine and one step engine per model, reused by a second sequence of another
    batch and prompt length with the first one's state; the cache stays on the GPU in the dtype
    attention computes in; logits come back to the CPU in the model dtype. The decode numbers are
    judged by cases/test_decode_path.py."""
    target = tripy.TripyTarget(mode, quantizer=lambda model, m: quantize_model(model, m.bits, 8 if m.bits == 4 else None))
    model, idx = case(TINY)
    run = runner_for(target, model)
    state = None
    for batch, prompt in ((3, 5), (2, 9)):
        logits, state = run.prefill(idx[:batch, :prompt], None, state)
        for position in range(prompt, TINY.block_size):
            logits, state = run.step(state, idx[:batch, position:position + 1])
            assert logits.shape == (batch, 1, TINY.vocab_size) and logits.device.type == "cpu"
            assert logits.dtype == mode.torch_dtype and bool(torch.isfinite(logits).all())
        assert state.k.device.type == "cuda" and state.k.dtype == TORCH_DTYPES[mode.cache_dtype]
    assert dict(run.decode_compiles) == {"prefill": 1, "step": 1}
