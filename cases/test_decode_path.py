"""The decode path: a target's prefill and steps over its own KV cache (docs/decode.md).

Every check is judged under the target's precision policy against eager fp32's own decode error
(the reference decoder in fp32), and recorded; a failure names the first diverging call. The
cases apply to the targets that declare a decoder (``Capabilities.decode``); every other target
gets one test, ``test_without_a_decoder``, that skips and records why: its greedy text is checked
by full forward passes (cases/test_greedy.py).
"""

import pytest
import torch
from gpt_conformance.harness.checks.decode import reference_greedy
from gpt_conformance.harness.checks.decode_checks import (
    NO_DECODER_CASE,
    DecodeChecks,
    check_drawn_decode,
    has_decoder,
)
from gpt_conformance.harness.checks.session import assert_verdict
from gpt_conformance.harness.core.targets import applies_to
from gpt_conformance.harness.pytest_plugin.profiles import property_settings
from gpt_conformance.reference.cases import ALL_CASES
from gpt_conformance.reference.train import load_zen_model
from hypothesis import given
from hypothesis import strategies as st

# The named cases whose configs differ for the decode path (bias and head count do not change
# what a cache holds): every exported decoder compiles two programs per config.
pytestmark = pytest.mark.gpt_conformance  # a harness test (harness/pytest_plugin/markers.py)

DECODE_CASES = ("seed", "scaled", "zen", "full-block", "nanochat-seed", "nanochat-mqa", "nanochat-gqa")
FAST = [pytest.param(spec, id=spec.name) for spec in ALL_CASES if spec.name in DECODE_CASES]
# Decoding to the end of the block: the longest nanoGPT block (128) and nanochat's GQA case.
FULL_LENGTH = [p for p in FAST if p.id in ("full-block", "nanochat-gqa")]
# Ragged batches and reused states: rescaled weights, the trained model, and GQA.
STATEFUL = [p for p in FAST if p.id in ("scaled", "zen", "nanochat-gqa")]
# Prompts the shipped Zen model has memorised, and the length of their continuation.
ZEN_PROMPTS = {"Beautiful is": len(" better than ugly."), "Flat is": len(" better than nested.")}


@pytest.fixture(scope="module")
def decode_checks(conformance):
    return DecodeChecks(conformance)


@applies_to(has_decoder)
@pytest.mark.parametrize("spec", FAST)
def test_decode_parity(target, spec, decode_checks):
    assert_verdict(decode_checks.check_parity(target, spec))


@applies_to(has_decoder)
@pytest.mark.parametrize("spec", FULL_LENGTH)
def test_decode_to_full_length(target, spec, decode_checks):
    assert_verdict(decode_checks.check_parity(target, spec, full=True))


@applies_to(has_decoder)
@pytest.mark.parametrize("spec", FAST)
def test_decode_matches_own_forward(target, spec, decode_checks):
    assert_verdict(decode_checks.check_against_forward(target, spec))


@applies_to(has_decoder)
@pytest.mark.parametrize("spec", STATEFUL)
def test_ragged_batch_matches_rows_alone(target, spec, decode_checks):
    assert_verdict(decode_checks.check_ragged(target, spec))


@applies_to(has_decoder)
@pytest.mark.parametrize("spec", STATEFUL)
def test_reused_state_matches_fresh(target, spec, decode_checks):
    assert_verdict(decode_checks.check_reuse(target, spec))


@pytest.fixture(scope="module")
def zen():
    model, tokenizer = load_zen_model()
    model64, _ = load_zen_model(dtype=torch.float64)
    return model, model64, tokenizer


@applies_to(has_decoder)
@pytest.mark.parametrize("prompt", list(ZEN_PROMPTS))
def test_zen_greedy_through_cache(target, prompt, decode_checks, zen):
    model, model64, tokenizer = zen
    reference = reference_greedy(model64, tokenizer.encode(prompt), ZEN_PROMPTS[prompt])
    assert_verdict(decode_checks.check_greedy(target, model, reference, f"zen-greedy-cached:{prompt}",
                                              tokenizer.decode))


@applies_to(has_decoder)
def test_decode_properties(target, decode_checks):
    """Hypothesis draws models (DECODE_PROPERTY_CONFIGS: both families, several cache lengths),
    ragged batches of prompts and step counts; each row is judged against its fp64 full forward."""

    @property_settings()
    @given(data=st.data())
    def search(data):
        check_drawn_decode(decode_checks, target, data)

    search()


@applies_to(lambda target: not has_decoder(target))
def test_without_a_decoder(target, decode_checks):
    """One skip, recorded, per target without a decoder, in place of a skipped test per decode case
    (the decode cases above and the decode latency cases): the report's decode section lists it."""
    decode_checks.require_decoder(target, NO_DECODER_CASE, "decode", None)
