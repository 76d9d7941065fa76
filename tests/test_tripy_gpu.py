"""GPU checks of the Tripy runner itself: one engine per model, reused across input shapes, and
logits that come back as torch tensors in the model dtype. They skip with the probe's reason
where nvtripy's runtime or a suitable GPU is missing; the numbers are judged by ``cases/``."""

from __future__ import annotations

import pytest
import torch
from gpt_conformance.targets import tripy

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
