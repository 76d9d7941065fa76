"""Each nanochat planted bug moves logits far beyond fp32 noise on the cases meant to catch it,
and stays invisible exactly where the bug's math says it must."""

import pytest

from reference.cases import build_case, named_case
from reference.goldens import reference_outputs
from tests.planted_nanochat import KVHeadsWrongOrder, RotaryWrongSign

# A bug must move the logits by this many times eager fp32's own error against fp64 (measured
# ~1.3e-6 to 1.9e-6 max abs on these cases). The fp32 tolerance policies allow a few times the
# fp32 error; 1000x leaves no doubt that a parity case fails.
FAR_BEYOND_NOISE = 1000.0


def errors(planted, case_name):
    spec = named_case(case_name)
    model, idx, targets = build_case(spec)
    logits64, loss64, logits32, loss32 = reference_outputs(model, idx, targets)
    logits, loss = planted.prepare(model, spec.config)(idx, targets)
    noise = float((logits32 - logits64).abs().max())
    return float((logits - logits64).abs().max()), noise, abs(float(loss - loss64)), abs(float(loss32 - loss64))


@pytest.mark.parametrize("planted, case_name", [
    (RotaryWrongSign(), "nanochat-seed"),
    (RotaryWrongSign(), "nanochat-mqa"),
    (RotaryWrongSign(), "nanochat-gqa"),
    (KVHeadsWrongOrder(), "nanochat-gqa"),
], ids=lambda x: getattr(x, "name", x))
def test_planted_bug_moves_logits_far_beyond_fp32_noise(planted, case_name):
    err, noise, loss_err, loss_noise = errors(planted, case_name)
    assert noise > 0
    assert err > FAR_BEYOND_NOISE * noise, f"{planted.name} on {case_name}: {err:.3g} vs fp32 noise {noise:.3g}"
    assert loss_err > 10 * max(loss_noise, 1e-7), f"{planted.name} on {case_name}: loss {loss_err:.3g}"


@pytest.mark.parametrize("case_name", ["nanochat-seed", "nanochat-mqa"])
def test_kv_order_bug_is_invisible_without_grouping(case_name):
    """n_kv_head == n_head repeats nothing and n_kv_head == 1 repeats one head: tiled and
    interleaved orders coincide, so only nanochat-gqa can catch this bug."""
    err, noise, _, _ = errors(KVHeadsWrongOrder(), case_name)
    # The same math as the reference through a different SDPA call: fp32 noise only.
    assert err <= 10 * noise
